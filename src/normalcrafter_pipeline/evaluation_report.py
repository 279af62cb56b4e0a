"""The two aggregations of the normal-estimation literature, and the comparison tables built from them.

- `pooled_pixels` (DSINE's protocol, used by E2E-FT and the NormalCrafter paper): every valid pixel of the dataset
  weighs the same; the columns are statistics of all pixels pooled.
- `per_image_mean` (Marigold's protocol): each column is computed per image (per frame of a video) and averaged over
  the images, so an image with few valid pixels weighs as much as one with many.

The columns, in both: `mean`, `median`, `rmse` (degrees) and `a5`, `a7_5`, `a11_25`, `a22_5`, `a30` (% of pixels
under 5, 7.5, 11.25, 22.5 and 30 degrees). `comparison_markdown` lays results out like the paper's Table 1: one row
per model, per benchmark the columns that table reports, one table per aggregation, each named in its heading.
Nothing here runs a model; `evaluation` fills these structures.
"""

from __future__ import annotations

import math

from .metrics import THRESHOLDS_DEG

COLUMNS = ("mean", "median", "rmse", "a5", "a7_5", "a11_25", "a22_5", "a30")
# `metrics` names the threshold columns `under_<t>`.
_SUMMARY_KEYS = dict(zip(COLUMNS, ("mean", "median", "rmse") + tuple(f"under_{t:g}" for t in THRESHOLDS_DEG)))
AGGREGATIONS = {
    "pooled_pixels": "pixels pooled over the dataset (DSINE's protocol)",
    "per_image_mean": "metrics per image (per frame), averaged over images (Marigold's protocol)",
}
# The columns of the paper's Table 1 per benchmark, in the Markdown comparison (the JSON holds all of COLUMNS).
TABLE_COLUMNS = ("mean", "median", "a11_25", "a22_5", "a30")
_HEADINGS = {
    "mean": "mean",
    "median": "med.",
    "rmse": "RMSE",
    "a5": "5°",
    "a7_5": "7.5°",
    "a11_25": "11.25°",
    "a22_5": "22.5°",
    "a30": "30°",
}
BENCHMARK_TITLES = {
    "dsine:scannet": "ScanNet",
    "dsine:sintel": "Sintel",
    "dsine:nyuv2": "NYUv2",
    "dsine:ibims": "iBims-1",
    "dsine:vkitti": "vKITTI",
    "marigold:nyuv2": "NYUv2 (Marigold)",
    "marigold:scannet": "ScanNet (Marigold)",
    "marigold:ibims": "iBims-1 (Marigold)",
    "marigold:diode": "DIODE (Marigold)",
    "marigold:oasis": "OASIS (Marigold)",
    "clips": "clips",
}


def columns(summary: dict) -> dict:
    """The `COLUMNS` of a `metrics` summary (`ErrorAccumulator.compute()` or `summarize_errors`)."""
    return {column: summary[key] for column, key in _SUMMARY_KEYS.items()}


def per_image_mean(frame_summaries) -> dict:
    """Mean over images of each column of their summaries (`None` entries, frames without valid pixels, skipped)."""
    scored = [summary for summary in frame_summaries if summary is not None]
    if not scored:
        raise ValueError("no image has a valid pixel; there is no per-image mean to take.")
    means = {column: math.fsum(columns(s)[column] for s in scored) / len(scored) for column in COLUMNS}
    return {**means, "num_images": len(scored)}


def aggregations(pooled_summary: dict, frame_summaries) -> dict:
    """`{"pooled_pixels": columns + num_pixels, "per_image_mean": columns + num_images}` of one evaluation."""
    return {
        "pooled_pixels": {**columns(pooled_summary), "num_pixels": pooled_summary["num_pixels"]},
        "per_image_mean": per_image_mean(frame_summaries),
    }


def _cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_markdown(results: dict) -> str:
    """Both aggregations of one evaluation as a Markdown table: `results` maps a model name to `aggregations()`."""
    header = ["model", "aggregation"] + [_HEADINGS[c] for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(COLUMNS)) + "|"]
    for model, result in results.items():
        for aggregation in AGGREGATIONS:
            values = result[aggregation]
            cells = [_cell(values[c]) if c in ("mean", "median", "rmse") else _cell(values[c], 1) for c in COLUMNS]
            lines.append("| " + " | ".join([f"`{model}`", aggregation] + cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(comparison: dict) -> str:
    """The Table-1-shaped Markdown of `comparison` (as `evaluation.evaluate_comparison` writes it to metrics.json):
    one table per aggregation, one row per model, per benchmark the `TABLE_COLUMNS`; plus temporal change."""
    benchmarks = list(comparison["benchmarks"])
    models = comparison["models"]
    lines = [
        "# Surface-normal benchmarks",
        "",
        "Angular error in degrees (mean, median; lower is better) and % of pixels under 11.25, 22.5 and 30 degrees "
        "(higher is better), at each benchmark's own resolution. Every model saw the same frames and was scored on "
        "the same pixels. `metrics.json` beside this file holds all columns (also RMSE, < 5 and < 7.5 degrees) and "
        "each run's settings.",
    ]
    for aggregation, description in AGGREGATIONS.items():
        header = ["model"] + [
            f"{BENCHMARK_TITLES.get(b, b)} {_HEADINGS[c]}" + (" ↓" if c in ("mean", "median") else " ↑")
            for b in benchmarks
            for c in TABLE_COLUMNS
        ]
        lines += ["", f"## Aggregation `{aggregation}`: {description}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for model in models:
            cells = [f"`{model}`"]
            for benchmark in benchmarks:
                result = comparison["benchmarks"][benchmark]["models"].get(model)
                for column in TABLE_COLUMNS:
                    value = None if result is None else result[aggregation][column]
                    cells.append(_cell(value, 2 if column in ("mean", "median") else 1))
            lines.append("| " + " | ".join(cells) + " |")
    video = [b for b in benchmarks if any(
        r.get("temporal_change") is not None for r in comparison["benchmarks"][b]["models"].values()
    )]  # fmt: skip
    if video:
        lines += [
            "",
            "## Temporal change (sequences of two frames or more)",
            "",
            "Mean |predicted - true| angular change of a pixel between consecutive frames, degrees (lower is better).",
            "",
            "| model | " + " | ".join(BENCHMARK_TITLES.get(b, b) for b in video) + " |",
            "|" + "|".join(["---"] + ["---:"] * len(video)) + "|",
        ]
        for model in models:
            cells = [f"`{model}`"]
            for benchmark in video:
                result = comparison["benchmarks"][benchmark]["models"].get(model)
                cells.append(_cell(None if result is None else result.get("temporal_change")))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs:", ""]
    for benchmark, entry in comparison["benchmarks"].items():
        lines.append(f"- `{benchmark}` from `{entry['root']}`: " + ", ".join(
            f"`{model}` in `{result['dir']}`" for model, result in entry["models"].items()
        ))  # fmt: skip
    return "\n".join(lines) + "\n"
