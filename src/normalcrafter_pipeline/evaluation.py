"""Score normal estimators on the published benchmarks and on datasets in our clip format.

    normalcrafter-evaluate --benchmark paper --root /data/dsine_eval --out results/paper
    normalcrafter-evaluate --benchmark dsine:sintel --root /data/dsine_eval/sintel --model Yanrui95/NormalCrafter \
        --model per-frame:Yanrui95/NormalCrafter --model marigold:prs-eth/marigold-normals-v1-1 --out results/sintel
    normalcrafter-evaluate --model ./my_model --data ./clips --out results/mine

(`python benchmarks/evaluate.py ...` from a checkout runs the same command.)

A benchmark (`--benchmark`, read by `formats.benchmarks` straight from the files as published: `dsine:<set>`,
`marigold:<set>`, or `paper` for the four DSINE sets of the NormalCrafter paper under one `dsine_eval` folder) or a
folder of clips in our format (`--data`) is a list of sequences: videos in frame order, single images as sequences
of one frame. Every file is checked before a model loads. Each model (`evaluation_models`: NormalCrafter, its
per-frame baseline, Marigold or any diffusers normals pipeline, any callable) predicts every sequence, and the
sequence's angular-error statistics (pooled and per frame) and temporal metrics go to `<out>/clips/<sequence>.json`.
`<out>/metrics.json` holds the totals in both aggregations (`evaluation_report`: pixels pooled over the dataset as
DSINE scores, and per-image means as Marigold does) and `<out>/metrics.md` the Markdown table; `--heatmaps` adds
per-frame error images under `<out>/heatmaps/<sequence>/`. With several models or benchmarks each run gets its own
folder `<out>/<benchmark>/<model>/` and `<out>/metrics.json` / `metrics.md` hold the comparison, shaped like the
paper's Table 1. Every file is written under a temporary name and renamed, so an interrupted run leaves no
half-written file, and a rerun skips sequences whose JSON was written with the same settings (`--no-resume`
re-scores everything).

From Python: `evaluate_model(model, root, out_dir, benchmark=...)` for one model on one benchmark (`model` may be any
`evaluation_models.NormalsPredictor`, e.g. `CallablePredictor(fn, "name")`), `evaluate_comparison(models,
benchmarks, out_dir)` for the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from .dtypes import DTYPE_NAMES
from .evaluation_models import NormalCrafterPredictor, NormalsPredictor, model_label, predictor_from_spec
from .evaluation_report import AGGREGATIONS, aggregations, comparison_markdown, summary_markdown
from .formats.benchmarks import PAPER_BENCHMARKS, check_benchmark_name, open_benchmark
from .formats.clips import read_meta
from .formats.sequences import ClipFolderSequence
from .metrics import (
    THRESHOLDS_DEG,
    ErrorAccumulator,
    MeanAccumulator,
    angular_error_map_deg,
    mean_of_means,
    reprojection_error,
    temporal_change_error,
)
from .normalcrafter_checks import DEFAULT_MODEL_ID
from .normals_writers import atomic_output

logger = logging.getLogger(__name__)

RESULTS_VERSION = 2
# Heat-map colour ramp (0 degrees -> dark blue ... `heatmap_max_deg` and above -> dark red); invalid pixels are black.
_RAMP = np.array(
    [[0.19, 0.07, 0.23], [0.16, 0.47, 0.93], [0.10, 0.84, 0.62], [0.64, 0.99, 0.24], [0.98, 0.73, 0.22],
     [0.89, 0.27, 0.05], [0.48, 0.02, 0.01]]
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def _write_text(path: str, text: str) -> None:
    with atomic_output(path) as temp_path, open(temp_path, "w") as handle:
        handle.write(text)


def _write_json(path: str, data: dict) -> None:
    _write_text(path, json.dumps(data, indent=1) + "\n")


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def error_heatmap(errors: np.ndarray, max_deg: float = 45.0) -> np.ndarray:
    """uint8 `(H, W, 3)` colour image of an angular-error map (degrees; NaN = not scored, drawn black)."""
    scaled = np.clip(np.nan_to_num(errors, nan=0.0) / max_deg, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(scaled).astype(np.int64).clip(0, len(_RAMP) - 2)
    weight = (scaled - low)[..., None]
    colour = _RAMP[low] * (1.0 - weight) + _RAMP[low + 1] * weight
    colour[np.isnan(errors)] = 0.0
    return np.round(colour * 255.0).astype(np.uint8)


def _write_png(path: str, image: np.ndarray) -> None:
    with atomic_output(path) as temp_path:
        PIL.Image.fromarray(image).save(temp_path, format="PNG", compress_level=1)


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------


def _optional_summary(accumulator: ErrorAccumulator) -> dict | None:
    return accumulator.compute() if accumulator.count else None


def score_clip(
    pred: np.ndarray, clip: dict, depth_tolerance: float = 0.05, heatmap_dir: str | None = None, **heatmap_kwargs
) -> dict:
    """All metrics of one clip's predictions `pred` `(F, H, W, 3)` against `clip` (a `load_clip` dict).

    Returns the clip record: pooled `normals` summary, per-frame summaries (None for a frame with no valid pixel),
    `temporal_change` and `reprojection` means (None when not defined), and the accumulator states used for
    pooling over the dataset.
    """
    target, mask = clip["normal"], clip["mask"]
    errors = angular_error_map_deg(pred, target, mask)  # [F, H, W], NaN where not scored
    accumulator = ErrorAccumulator()
    frames = []
    for index, frame_errors in enumerate(errors):
        frame = ErrorAccumulator().update(frame_errors)
        accumulator.merge(frame)
        summary = _optional_summary(frame)
        if summary is not None:
            valid = frame_errors[~np.isnan(frame_errors)]
            summary["median"] = float(np.median(valid))  # exact for a frame
        frames.append(summary)
        if heatmap_dir is not None:
            _write_png(os.path.join(heatmap_dir, f"{index:05d}.png"), error_heatmap(frame_errors, **heatmap_kwargs))
    if accumulator.count == 0:
        raise ValueError(
            "the clip has no valid pixel (empty masks, or every ground-truth normal is zero/NaN); fix its mask/ or "
            "normal/ files, or move the clip out of the dataset root."
        )
    normals = accumulator.compute()
    normals["median"] = float(np.nanmedian(errors))  # exact for a clip; the dataset median uses the histogram

    temporal = MeanAccumulator()
    if pred.shape[0] > 1:
        result = temporal_change_error(pred, target, mask)
        temporal = MeanAccumulator(result["sum"], result["num_pixels"])
    reprojection = None
    meta = clip["meta"]
    if clip["depth"] is not None and "intrinsics" in meta and "poses" in meta and pred.shape[0] > 1:
        result = reprojection_error(
            pred, clip["depth"], meta["intrinsics"], meta["poses"], mask, depth_tolerance, target=target
        )
        reprojection = MeanAccumulator(result["sum"], result["num_pixels"])
    return {
        "num_frames": int(pred.shape[0]),
        "height": int(pred.shape[1]),
        "width": int(pred.shape[2]),
        "normals": normals,
        "temporal_change": temporal.compute(),
        "reprojection": reprojection.compute() if reprojection is not None else None,
        "frames": frames,
        "state": {
            "normals": accumulator.state_dict(),
            "temporal_change": temporal.state_dict(),
            "reprojection": reprojection.state_dict() if reprojection is not None else None,
        },
    }


def pool_clips(records: dict[str, dict]) -> dict:
    """Dataset totals from clip records: pixels pooled over all clips, plus the mean of clip means for reference."""
    if not records:
        raise ValueError("`records` is empty; there is no clip to pool.")
    normals, temporal, reprojection = ErrorAccumulator(), MeanAccumulator(), MeanAccumulator()
    num_reprojection = 0
    for record in records.values():
        normals.merge(ErrorAccumulator.from_state_dict(record["state"]["normals"]))
        temporal.merge(MeanAccumulator.from_state_dict(record["state"]["temporal_change"]))
        if record["state"]["reprojection"] is not None:
            reprojection.merge(MeanAccumulator.from_state_dict(record["state"]["reprojection"]))
            num_reprojection += 1
    pooled = normals.compute()
    return {
        "num_clips": len(records),
        "num_frames": sum(record["num_frames"] for record in records.values()),
        "normals": pooled,
        "aggregations": aggregations(pooled, [frame for record in records.values() for frame in record["frames"]]),
        "temporal_change": temporal.compute(),
        "reprojection": reprojection.compute(),
        "num_clips_with_reprojection": num_reprojection,
        "mean_of_clip_means": mean_of_means([record["normals"] for record in records.values()]),
        "pooling": "pixels pooled over the dataset; median from a 0.01-degree histogram",
    }


# --------------------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------------------


def _cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(total: dict, records: dict[str, dict], settings: dict) -> str:
    """The Markdown report: settings, one row per clip and the pooled total."""
    header = ["clip", "frames", "mean", "median", "RMSE"] + [f"< {t:g}" for t in THRESHOLDS_DEG]
    header += ["temporal change", "reprojection"]
    lines = [
        "# Normal estimation metrics",
        "",
        "Angular error in degrees (mean, median, RMSE) and % of pixels under each threshold; totals pool the pixels "
        "of all clips. Temporal change: mean |predicted - true| per-pixel angular change between consecutive frames. "
        "Reprojection: angle between a normal and its reprojected, rotated prediction in the next frame (synthetic "
        "clips with depth and poses). Lower is better except for the '<' columns.",
        "",
        "Settings: " + ", ".join(f"`{key}={value}`" for key, value in settings.items()),
        "",
        "## Totals in both aggregations",
        "",
        *(f"- `{name}`: {description}" for name, description in AGGREGATIONS.items()),
        "",
        summary_markdown({settings["model"]: total["aggregations"]}),
        f"## Per {'clip' if settings.get('benchmark', 'clips') == 'clips' else 'sequence'} (pixels pooled)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]

    def row(name, frames, normals, temporal, reprojection):
        cells = [name, str(frames)] + [_cell(normals[key]) for key in ("mean", "median", "rmse")]
        cells += [_cell(normals[f"under_{t:g}"], 1) for t in THRESHOLDS_DEG]
        cells += [_cell(temporal), _cell(reprojection)]
        return "| " + " | ".join(cells) + " |"

    for name, record in records.items():
        lines.append(
            row(name, record["num_frames"], record["normals"], record["temporal_change"], record["reprojection"])
        )
    lines.append(
        row(
            f"**all ({total['num_clips']} clips, pooled)**",
            total["num_frames"],
            total["normals"],
            total["temporal_change"],
            total["reprojection"],
        )
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------


def _sequence_clip(sequence, records) -> dict:
    """A sequence's frames as the dict `score_clip` reads (our clips also bring the camera of the reprojection)."""
    depth = None
    if all(record.depth is not None for record in records):
        depth = np.stack([record.depth for record in records])
    return {
        "rgb": np.stack([record.rgb for record in records]),
        "normal": np.stack([record.normal for record in records]),
        "mask": np.stack([record.valid for record in records]),
        "depth": depth,
        "meta": read_meta(sequence.folder) if isinstance(sequence, ClipFolderSequence) else {},
    }


def evaluate_model(
    model,
    dataset_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    benchmark: str = "clips",
    split: str | os.PathLike | None = None,
    window_size: int = 14,
    overlap: int = 4,
    num_inference_steps: int = 1,
    decode_chunk_size: int = 7,
    max_res: int | None = None,
    per_frame: bool = False,
    heatmaps: bool = False,
    resume: bool = True,
    device: str | None = None,
    dtype=None,
    depth_tolerance: float = 0.05,
    heatmap_max_deg: float = 45.0,
    model_name: str | None = None,
    show_progress: bool = True,
    load_kwargs: dict | None = None,
) -> dict:
    """Run one model over every sequence of a benchmark and write per-sequence JSON, `metrics.json`, `metrics.md`.

    Args:
        model: a `evaluation_models.NormalsPredictor` (any model: `NormalCrafterPredictor`,
            `DiffusersNormalsPredictor`, `CallablePredictor`), or a NormalCrafter model folder, Hub repo id or
            pipeline object (run by a `NormalCrafterPredictor` with the options below).
        dataset_root: the benchmark's folder as published (see `formats.benchmarks.open_benchmark`), or for
            `benchmark="clips"` a folder of clip folders in our format.
        out_dir: where results go (created).
        benchmark: `"clips"`, `"dsine:<set>"` or `"marigold:<set>"` (`formats.benchmarks.BENCHMARK_NAMES`).
        split: optional split file of the benchmark's protocol, to score exactly the frames it lists.
        window_size, overlap, num_inference_steps, decode_chunk_size, max_res, per_frame, device, dtype,
            load_kwargs: NormalCrafter options when `model` is not a predictor already; `per_frame` means window 1,
            overlap 0 (the image-model baseline); `max_res` downscales the input frames, the predictions are
            resampled back to the ground truth's resolution, where all metrics are computed.
        heatmaps: write per-frame error images to `out_dir/heatmaps/<sequence>/<frame>.png` (0 to
            `heatmap_max_deg`).
        resume: skip sequences whose JSON in `out_dir/clips/` was written with the same settings. The settings name
            the model by its label: when scoring different pipeline objects (say, checkpoints of one training run)
            into one `out_dir`, give each its own `model_name`, or use one `out_dir` per model.
        device, dtype: where and in which precision to run (`"fp32"`, `"fp16"`, `"bf16"`, `"auto"` or a dtype).
        depth_tolerance: relative depth agreement for the reprojection metric's co-visibility test (clips with
            depth and cameras).
        model_name: the label in settings and tables (default: the path, or the pipeline's `_name_or_path`).
        load_kwargs: extra keyword arguments for `from_pretrained`.

    Returns:
        `{"total": dataset metrics (with `aggregations`: the columns pooled over pixels and as per-image means),
        "clips": {sequence name: record}, "settings": ..., "num_scored": sequences predicted in this call,
        "num_skipped": sequences taken from earlier results, "out_dir": ...}`.

    Raises:
        ValueError, FileNotFoundError: a bad argument, or benchmark data that is not as published (the message
            names the file), before any model loads.
    """
    if isinstance(model, NormalsPredictor):
        predictor = model
    else:
        if per_frame:
            window_size, overlap = 1, 0
        predictor = NormalCrafterPredictor(
            model,
            window_size=window_size,
            overlap=overlap,
            num_inference_steps=num_inference_steps,
            decode_chunk_size=decode_chunk_size,
            max_res=max_res,
            device=device,
            dtype=dtype,
            load_kwargs=load_kwargs,
            name=model_name or model_label(model),
        )
    if not (isinstance(depth_tolerance, (int, float)) and depth_tolerance > 0):
        raise ValueError(f"`depth_tolerance` must be a positive number, got {depth_tolerance!r}.")
    check_benchmark_name(benchmark)
    sequences = open_benchmark(benchmark, dataset_root, split)

    settings = {
        **predictor.settings,
        "benchmark": benchmark,
        "depth_tolerance": float(depth_tolerance),
        "results_version": RESULTS_VERSION,
    }
    out_dir = os.fspath(out_dir)
    clips_dir = os.path.join(out_dir, "clips")
    os.makedirs(clips_dir, exist_ok=True)

    records: dict[str, dict] = {}
    num_scored = num_skipped = 0
    for sequence in tqdm(sequences, desc=predictor.name, unit="sequence", disable=not show_progress):
        name = sequence.name
        record_path = os.path.join(clips_dir, f"{name}.json")
        heatmap_dir = os.path.join(out_dir, "heatmaps", name) if heatmaps else None
        if resume:
            previous = _read_json(record_path)
            if (
                previous is not None
                and previous.get("settings") == settings
                and (heatmap_dir is None or os.path.isdir(heatmap_dir))
            ):
                records[name] = previous
                num_skipped += 1
                continue

        clip = _sequence_clip(sequence, list(sequence))
        start = time.perf_counter()
        pred = predictor(clip["rgb"])
        seconds = time.perf_counter() - start
        if pred.shape != clip["normal"].shape:
            raise ValueError(
                f"Model {predictor.name!r} returned normals of shape {pred.shape} for sequence {name!r} of "
                f"{clip['rgb'].shape[0]} frames of {clip['rgb'].shape[2]}x{clip['rgb'].shape[1]}; a predictor returns "
                "(F, H, W, 3) at the frames' resolution."
            )
        if heatmap_dir is not None:
            os.makedirs(heatmap_dir, exist_ok=True)
        try:
            record = score_clip(pred, clip, depth_tolerance, heatmap_dir, max_deg=heatmap_max_deg)
        except ValueError as error:
            raise ValueError(f"Sequence {name!r} of {dataset_root}: {error}") from error
        record = {"clip": name, "settings": settings, **record, "predict_seconds": seconds}
        _write_json(record_path, record)
        records[name] = record
        num_scored += 1
        logger.info("%s: mean %.2f deg over %d frames", name, record["normals"]["mean"], record["num_frames"])

    if num_skipped:
        logger.info("Reused the results of %d sequences from %s (same settings).", num_skipped, clips_dir)
    total = pool_clips(records)
    summary = {
        "settings": settings,
        "benchmark": benchmark,
        "root": os.fspath(dataset_root),
        "aggregations": dict(AGGREGATIONS),
        "models": {predictor.name: {**total["aggregations"], "temporal_change": total["temporal_change"]}},
        "total": total,
        "clips": {
            name: {key: record[key] for key in ("num_frames", "normals", "temporal_change", "reprojection")}
            for name, record in records.items()
        },
    }
    _write_json(os.path.join(out_dir, "metrics.json"), summary)
    _write_text(os.path.join(out_dir, "metrics.md"), markdown_table(total, records, settings))
    return {
        "total": total,
        "clips": records,
        "settings": settings,
        "num_scored": num_scored,
        "num_skipped": num_skipped,
        "out_dir": out_dir,
    }


def _slug(name: str) -> str:
    """A folder name for a model or benchmark label (`marigold:prs-eth/x` -> `marigold-prs-eth-x`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def expand_benchmarks(benchmarks, root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """`(name, folder)` pairs from `NAME=DIR` entries, or names with one shared `root`; `paper` is the four DSINE sets
    of the NormalCrafter paper, each in `root/<set>` (a `dsine_eval` folder)."""
    pairs = []
    for entry in benchmarks:
        name, _, folder = str(entry).partition("=")
        if name == "paper":
            base = folder or root
            if base is None:
                raise ValueError("`--benchmark paper` needs the dsine_eval folder: `--root DIR` or `paper=DIR`.")
            pairs += [(b, os.path.join(os.fspath(base), b.partition(":")[2])) for b in PAPER_BENCHMARKS]
            continue
        check_benchmark_name(name)
        if not folder:
            if root is None:
                raise ValueError(f"Benchmark {name!r} needs its folder: `--root DIR`, or `{name}=DIR`.")
            folder = os.fspath(root)
        pairs.append((name, folder))
    if not pairs:
        raise ValueError("`benchmarks` is empty; name at least one (e.g. dsine:sintel).")
    return pairs


def evaluate_comparison(
    models,
    benchmarks,
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    **options,
) -> dict:
    """Score every model on every benchmark and write the Table-1-shaped comparison.

    Args:
        models: model names or predictors (`evaluation_models.predictor_from_spec`: `Yanrui95/NormalCrafter`,
            `per-frame:...`, `marigold:...`, `diffusers:...`, or any `NormalsPredictor`).
        benchmarks: `NAME=DIR` entries, or names sharing `root` (`paper` = the paper's four DSINE sets under a
            `dsine_eval` root); see `expand_benchmarks`.
        out_dir: each run goes to `out_dir/<benchmark>/<model>/` (an `evaluate_model` folder); the comparison to
            `out_dir/metrics.json` (per benchmark, model and aggregation, every column) and `out_dir/metrics.md`.
        options: NormalCrafter options (`window_size`, `overlap`, `num_inference_steps`, `decode_chunk_size`,
            `max_res`, `device`, `dtype`), baseline options (`baseline_kwargs`, `baseline_seed`) and evaluation
            options (`heatmaps`, `resume`, `depth_tolerance`, `heatmap_max_deg`, `show_progress`).

    Every benchmark's files are checked before the first model runs. Returns the comparison dict.
    """
    model_keys = ("window_size", "overlap", "num_inference_steps", "decode_chunk_size", "max_res", "device", "dtype")
    model_keys += ("baseline_kwargs", "baseline_seed")
    model_options = {key: options.pop(key) for key in model_keys if key in options}
    predictors = [predictor_from_spec(model, **model_options) for model in models]
    if not predictors:
        raise ValueError("`models` is empty; name at least one model.")
    names = [predictor.name for predictor in predictors]
    if len(set(names)) != len(names):
        raise ValueError(f"`models` names a model twice ({names}); give each predictor its own name.")
    pairs = expand_benchmarks(benchmarks, root)
    for name, folder in pairs:
        open_benchmark(name, folder)  # every file checked before any model loads

    out_dir = os.fspath(out_dir)
    comparison = {"aggregations": dict(AGGREGATIONS), "models": names, "benchmarks": {}}
    for name, folder in pairs:
        entry = {"root": folder, "models": {}}
        for predictor in predictors:
            run_dir = os.path.join(out_dir, _slug(name), _slug(predictor.name))
            result = evaluate_model(predictor, folder, run_dir, benchmark=name, **options)
            total = result["total"]
            entry["models"][predictor.name] = {
                **total["aggregations"],
                "temporal_change": total["temporal_change"],
                "num_frames": total["num_frames"],
                "num_sequences": total["num_clips"],
                "settings": result["settings"],
                "dir": os.path.relpath(run_dir, out_dir),
            }
        comparison["benchmarks"][name] = entry
    _write_json(os.path.join(out_dir, "metrics.json"), comparison)
    _write_text(os.path.join(out_dir, "metrics.md"), comparison_markdown(comparison))
    return comparison


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="normalcrafter-evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        help="model to score; repeat for several. A NormalCrafter folder or Hub id (video mode), per-frame:<id>\n"
        "(window 1), marigold:<id> (MarigoldNormalsPipeline), diffusers:<id> (any diffusers normals pipeline).\n"
        f"Default: {DEFAULT_MODEL_ID}",
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data",
        help="a folder of clip folders in our clip format, or a training set as published: LAYOUT:PATH with LAYOUT "
        "one of hypersim, matrixcity, kenburns, rendered",
    )
    data.add_argument(
        "--benchmark",
        action="append",
        help="a published benchmark: dsine:{nyuv2,scannet,ibims,sintel,vkitti},\n"
        "marigold:{nyuv2,scannet,ibims,diode,oasis}, or paper (dsine scannet, sintel, nyuv2, ibims under\n"
        "one dsine_eval --root); NAME=DIR gives its folder; repeat for several",
    )
    parser.add_argument("--root", help="the benchmark's folder as published (for paper: the dsine_eval folder)")
    parser.add_argument("--split", help="the benchmark's split file, to score exactly the frames it lists")
    parser.add_argument("--out", required=True, help="output folder for the JSON files, tables and heat maps")
    parser.add_argument("--window-size", type=int, default=14)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1, help="denoising steps per window")
    parser.add_argument("--decode-chunk-size", type=int, default=7)
    parser.add_argument("--max-res", type=int, default=None, help="downscale inputs to this longer side")
    parser.add_argument("--per-frame", action="store_true", help="window 1, overlap 0: the image-model baseline")
    parser.add_argument("--marigold-steps", type=int, default=None, help="denoising steps of marigold:/diffusers:")
    parser.add_argument("--marigold-ensemble-size", type=int, default=None, help="ensemble of marigold:/diffusers:")
    parser.add_argument(
        "--marigold-processing-resolution", type=int, default=None, help="processing resolution of marigold:"
    )
    parser.add_argument("--baseline-seed", type=int, default=0, help="noise seed of marigold:/diffusers: models")
    parser.add_argument("--heatmaps", action="store_true", help="write per-frame angular-error images")
    parser.add_argument("--heatmap-max-deg", type=float, default=45.0)
    parser.add_argument("--no-resume", action="store_true", help="re-score sequences that already have results")
    parser.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: where the model loads)")
    parser.add_argument("--dtype", default=None, choices=("auto", *DTYPE_NAMES))
    parser.add_argument("--depth-tolerance", type=float, default=0.05)
    return parser.parse_args(input_args)


def main(argv: list[str] | None = None) -> int:
    """The `normalcrafter-evaluate` command: score, print the Markdown table and a one-line summary.

    Returns 0, or 1 after printing the message when the arguments, the data or the output folder are wrong (no
    traceback: the message names the argument or file and the fix), as `normalcrafter-publish` does.
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # a no-op when the caller configured logging
    try:
        result = _run(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with open(os.path.join(result["out_dir"], "metrics.md")) as handle:
        print(handle.read())
    print(f"scored {result['num_scored']} sequences, reused {result['num_skipped']}; results in {result['out_dir']}")
    return 0


def _run(args: argparse.Namespace) -> dict:
    models = args.model or [DEFAULT_MODEL_ID]
    normalcrafter = {
        "window_size": 1 if args.per_frame else args.window_size,
        "overlap": 0 if args.per_frame else args.overlap,
        "num_inference_steps": args.steps,
        "decode_chunk_size": args.decode_chunk_size,
        "max_res": args.max_res,
        "device": args.device,
        "dtype": args.dtype,
    }
    baseline_kwargs = {
        "num_inference_steps": args.marigold_steps,
        "ensemble_size": args.marigold_ensemble_size,
        "processing_resolution": args.marigold_processing_resolution,
    }
    evaluation = {
        "heatmaps": args.heatmaps,
        "resume": not args.no_resume,
        "depth_tolerance": args.depth_tolerance,
        "heatmap_max_deg": args.heatmap_max_deg,
    }
    if args.data is not None:
        benchmarks = [("clips", args.data)]
        if args.root is not None or args.split is not None:
            raise ValueError("`--root` and `--split` go with `--benchmark`; `--data` names the clips folder itself.")
    else:
        benchmarks = expand_benchmarks(args.benchmark, args.root)
    if args.split is not None and len(benchmarks) != 1:
        raise ValueError("`--split` names the frames of one benchmark; score one benchmark with it.")
    if len(models) == 1 and len(benchmarks) == 1:
        predictor = predictor_from_spec(
            models[0], **normalcrafter, baseline_kwargs=baseline_kwargs, baseline_seed=args.baseline_seed
        )
        ((name, folder),) = benchmarks
        return evaluate_model(predictor, folder, args.out, benchmark=name, split=args.split, **evaluation)
    comparison = evaluate_comparison(
        models,
        [f"{name}={folder}" for name, folder in benchmarks],
        args.out,
        **normalcrafter,
        baseline_kwargs=baseline_kwargs,
        baseline_seed=args.baseline_seed,
        **evaluation,
    )
    runs = [run for entry in comparison["benchmarks"].values() for run in entry["models"].values()]
    return {"out_dir": os.fspath(args.out), "num_scored": len(runs), "num_skipped": 0}


if __name__ == "__main__":
    sys.exit(main())
