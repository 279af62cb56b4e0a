"""Score a NormalCrafter pipeline on a dataset in the training clip format.

    normalcrafter-evaluate --model Yanrui95/NormalCrafter --data /data/scannet_clips --out results/scannet
    normalcrafter-evaluate --model ./my_model --data ./clips --out results/per_frame --per-frame

(`python benchmarks/evaluate.py ...` from a checkout runs the same command.)

For every clip folder under `--data` (see `training/README.md` for the format, `benchmarks/EVALUATION.md` for how to
lay out the public benchmarks) the pipeline predicts normals for all frames, and the clip's angular-error statistics,
per-frame statistics and temporal-consistency metrics (`normalcrafter_pipeline.metrics`) are written to
`<out>/clips/<clip>.json`. The dataset totals, with pixels pooled over all clips, go to `<out>/metrics.json` and a
Markdown table to `<out>/metrics.md`; `--heatmaps` adds per-frame error images under `<out>/heatmaps/<clip>/`. Every
file is written under a temporary name and renamed, so an interrupted run leaves no half-written file, and a rerun
skips clips whose JSON was written with the same settings (`--no-resume` re-scores everything).

From Python: `evaluate_model(pipe_or_model_path, dataset_root, out_dir, ...)` returns the same totals as a dict.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .dtypes import DTYPE_NAMES
from .formats.clips import list_clips, load_clip
from .metrics import (
    THRESHOLDS_DEG,
    ErrorAccumulator,
    MeanAccumulator,
    angular_error_map_deg,
    mean_of_means,
    reprojection_error,
    temporal_change_error,
)
from .model_setup import load_pipeline, resolve_dtype
from .normalcrafter_checks import DEFAULT_MODEL_ID, check_window_args
from .normalcrafter_video_processor import normalize_normals
from .normals_writers import atomic_output

logger = logging.getLogger(__name__)

RESULTS_VERSION = 1
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


def _resize_frames(rgb: np.ndarray, max_res: int | None) -> np.ndarray:
    """Downscale `(F, H, W, 3)` uint8 frames so the longer side is at most `max_res` (aspect kept)."""
    height, width = rgb.shape[1:3]
    if max_res is None or max(height, width) <= max_res:
        return rgb
    scale = max_res / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(PIL.Image.fromarray(frame).resize(size, PIL.Image.BICUBIC)) for frame in rgb])


def _to_size(normals: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resample `(F, h, w, 3)` normals to `(F, height, width, 3)` and renormalise."""
    if normals.shape[1:3] == (height, width):
        return normals
    tensor = torch.from_numpy(np.ascontiguousarray(normals)).permute(0, 3, 1, 2).float()
    tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    tensor = normalize_normals(tensor, dim=1)
    return tensor.permute(0, 2, 3, 1).numpy()


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
    return {
        "num_clips": len(records),
        "num_frames": sum(record["num_frames"] for record in records.values()),
        "normals": normals.compute(),
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


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


def _model_name(model, model_name: str | None) -> str:
    if model_name is not None:
        return model_name
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    name = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    return name or type(model).__name__


def evaluate_model(
    pipe_or_model_path,
    dataset_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
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
    """Run a pipeline over every clip of `dataset_root` and write per-clip JSON, `metrics.json` and `metrics.md`.

    Args:
        pipe_or_model_path: a model folder or Hub repo id (loaded with `NormalCrafterPipeline.from_pretrained`), or
            a pipeline object (called as `pipe(frames, window_size=..., ...).normals`).
        dataset_root: a folder of clip folders in the training clip format.
        out_dir: where results go (created).
        window_size, overlap, num_inference_steps, decode_chunk_size: passed to the pipeline.
        max_res: downscale input frames so the longer side is at most this; predictions are resampled back to the
            ground-truth resolution, where all metrics are computed.
        per_frame: predict every frame on its own (window 1, overlap 0): the image-model baseline.
        heatmaps: write per-frame error images to `out_dir/heatmaps/<clip>/<frame>.png` (0 to `heatmap_max_deg`).
        resume: skip clips whose JSON in `out_dir/clips/` was written with the same settings. The settings name the
            model by `model_name`: when scoring different pipeline objects (say, checkpoints of one training run)
            into one `out_dir`, give each its own `model_name`, or use one `out_dir` per model.
        device, dtype: where and in which precision to run (`"fp32"`, `"fp16"`, `"bf16"`, `"auto"` or a dtype).
        depth_tolerance: relative depth agreement for the reprojection metric's co-visibility test.
        model_name: the label stored in the settings (defaults to the path, or the pipeline's `_name_or_path`).
        load_kwargs: extra keyword arguments for `from_pretrained`.

    Returns:
        `{"total": pooled dataset metrics, "clips": {clip name: record}, "settings": ..., "num_scored": clips
        predicted in this call, "num_skipped": clips taken from earlier results, "out_dir": ...}`.
    """
    if per_frame:
        window_size, overlap = 1, 0
    check_window_args(window_size, overlap)
    _check_positive_int("num_inference_steps", num_inference_steps)
    _check_positive_int("decode_chunk_size", decode_chunk_size)
    if max_res is not None:
        _check_positive_int("max_res", max_res, minimum=8)
    if not (isinstance(depth_tolerance, (int, float)) and depth_tolerance > 0):
        raise ValueError(f"`depth_tolerance` must be a positive number, got {depth_tolerance!r}.")
    torch_dtype = resolve_dtype(dtype)
    clip_folders = list_clips(dataset_root)

    settings = {
        "model": _model_name(pipe_or_model_path, model_name),
        "window_size": window_size,
        "overlap": overlap,
        "num_inference_steps": num_inference_steps,
        "decode_chunk_size": decode_chunk_size,
        "max_res": max_res,
        "per_frame": bool(per_frame),
        "dtype": str(torch_dtype).replace("torch.", "") if torch_dtype is not None else "default",
        "depth_tolerance": float(depth_tolerance),
        "results_version": RESULTS_VERSION,
    }
    out_dir = os.fspath(out_dir)
    clips_dir = os.path.join(out_dir, "clips")
    os.makedirs(clips_dir, exist_ok=True)

    pipe = None
    records: dict[str, dict] = {}
    num_scored = num_skipped = 0
    for folder in tqdm(clip_folders, desc="Clips", unit="clip", disable=not show_progress):
        name = os.path.basename(os.path.normpath(folder))
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
        if pipe is None:
            pipe = load_pipeline(pipe_or_model_path, device=device, dtype=dtype, **(load_kwargs or {}))

        clip = load_clip(folder)
        frames = _resize_frames(clip["rgb"], max_res)
        start = time.perf_counter()
        with torch.no_grad():
            pred = pipe(
                frames,
                window_size=window_size,
                overlap=overlap,
                num_inference_steps=num_inference_steps,
                decode_chunk_size=decode_chunk_size,
            ).normals
        seconds = time.perf_counter() - start
        pred = _to_size(np.asarray(pred, dtype=np.float32), *clip["normal"].shape[1:3])
        if heatmap_dir is not None:
            os.makedirs(heatmap_dir, exist_ok=True)
        try:
            record = score_clip(pred, clip, depth_tolerance, heatmap_dir, max_deg=heatmap_max_deg)
        except ValueError as error:
            raise ValueError(f"Clip {folder!r}: {error}") from error
        record = {"clip": name, "settings": settings, **record, "predict_seconds": seconds}
        _write_json(record_path, record)
        records[name] = record
        num_scored += 1
        logger.info("%s: mean %.2f deg over %d frames", name, record["normals"]["mean"], record["num_frames"])

    if num_skipped:
        logger.info("Reused the results of %d clips from %s (same settings).", num_skipped, clips_dir)
    total = pool_clips(records)
    summary = {
        "settings": settings,
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


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="normalcrafter-evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL_ID, help="model folder or Hub repo id")
    parser.add_argument("--data", required=True, help="dataset root: a folder of clip folders")
    parser.add_argument("--out", required=True, help="output folder for the JSON files, table and heat maps")
    parser.add_argument("--window-size", type=int, default=14)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1, help="denoising steps per window")
    parser.add_argument("--decode-chunk-size", type=int, default=7)
    parser.add_argument("--max-res", type=int, default=None, help="downscale inputs to this longer side")
    parser.add_argument("--per-frame", action="store_true", help="window 1, overlap 0: the image-model baseline")
    parser.add_argument("--heatmaps", action="store_true", help="write per-frame angular-error images")
    parser.add_argument("--heatmap-max-deg", type=float, default=45.0)
    parser.add_argument("--no-resume", action="store_true", help="re-score clips that already have results")
    parser.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: where the model loads)")
    parser.add_argument("--dtype", default=None, choices=("auto", *DTYPE_NAMES))
    parser.add_argument("--depth-tolerance", type=float, default=0.05)
    return parser.parse_args(input_args)


def main(argv: list[str] | None = None) -> int:
    """The `normalcrafter-evaluate` command: score, print the Markdown table and a one-line summary.

    Returns 0, or 1 after printing the message when the arguments, the data or the output folder are wrong (no
    traceback: the message names the argument or clip and the fix), as `normalcrafter-publish` does.
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
    print(f"scored {result['num_scored']} clips, reused {result['num_skipped']}; results in {result['out_dir']}")
    return 0


def _run(args: argparse.Namespace) -> dict:
    return evaluate_model(
        args.model,
        args.data,
        args.out,
        window_size=args.window_size,
        overlap=args.overlap,
        num_inference_steps=args.steps,
        decode_chunk_size=args.decode_chunk_size,
        max_res=args.max_res,
        per_frame=args.per_frame,
        heatmaps=args.heatmaps,
        resume=not args.no_resume,
        device=args.device,
        dtype=args.dtype,
        depth_tolerance=args.depth_tolerance,
        heatmap_max_deg=args.heatmap_max_deg,
    )


if __name__ == "__main__":
    sys.exit(main())
