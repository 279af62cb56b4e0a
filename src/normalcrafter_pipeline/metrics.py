"""Surface-normal metrics: angular error, its summary statistics, and two temporal-consistency measures.

Conventions:

- Normals are `(..., 3)` arrays in the camera frame (+x right, +y up, +z toward the camera; OpenGL), as produced by
  [`NormalCrafterPipeline`] and stored in the training clip format. Both inputs are normalised before comparison, in
  float64, so predictions need not be exactly unit length.
- A pixel is scored when its ground-truth normal is finite and non-zero (zero normals mark invalid pixels in the clip
  format) and, if a mask is given, the mask is true there. A prediction of length zero has no direction: it counts
  as 90 degrees from any target; a non-finite prediction counts as 180 degrees.
- Statistics are the columns of normal-estimation papers (NYUv2, iBims-1, ScanNet, Sintel): mean, median and RMSE of
  the angular error in degrees, and the percentage of pixels under 5, 7.5, 11.25, 22.5 and 30 degrees.
- Aggregation: per frame, per clip and per dataset, **pixels are pooled** over the unit (every valid pixel weighs
  the same, so a clip with more frames or more valid pixels weighs more), as in those papers' evaluation code. The
  mean of clip means is a different number; `mean_of_means` gives it where wanted.
- [`ErrorAccumulator`] pools pixels without holding them: counts are exact integers, sums are float64 (each batch
  summed with `math.fsum`, batches combined with `math.fsum`), and the median comes from a histogram of
  `HISTOGRAM_BIN_DEG` = 0.01 degree bins over [0, 180], interpolated linearly inside the bin that holds the middle
  rank, so it is within 0.01 degree of the exact median. Frame and clip summaries of in-memory arrays
  ([`summarize_errors`]) use the exact median.

Temporal consistency:

- [`temporal_change_error`] (needs no optical flow): for each pixel and each pair of consecutive frames, the angle
  between the two predicted normals and the angle between the two ground-truth normals; the metric is the mean
  absolute difference of the two, over pixels valid in both frames. A perfect or a constant-offset prediction scores
  0 on a static camera; flicker raises it.
- [`reprojection_error`] (synthetic clips with depth, intrinsics and camera poses): every valid pixel of frame t is
  unprojected with its z-depth, moved into frame t+1's camera with the poses and projected; it is co-visible when it
  lands inside the image (the *nearest* pixel, i.e. the one whose square contains the projected point), in front of
  the camera, on a valid pixel whose depth agrees with the reprojected depth within `depth_tolerance` (relative).
  Frame t's predicted normal is rotated into camera t+1 and compared with the prediction at that pixel. Exact normals
  of a static scene score ~0 (small residuals on curved surfaces come from the nearest-pixel lookup).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

THRESHOLDS_DEG = (5.0, 7.5, 11.25, 22.5, 30.0)
HISTOGRAM_BIN_DEG = 0.01
_NUM_BINS = int(round(180.0 / HISTOGRAM_BIN_DEG))
METRIC_NAMES = ("mean", "median", "rmse") + tuple(f"under_{t:g}" for t in THRESHOLDS_DEG)

__all__ = [
    "HISTOGRAM_BIN_DEG",
    "METRIC_NAMES",
    "THRESHOLDS_DEG",
    "ErrorAccumulator",
    "MeanAccumulator",
    "angle_between_deg",
    "angular_error_map_deg",
    "mean_of_means",
    "normal_metrics",
    "per_frame_metrics",
    "reprojection_error",
    "summarize_errors",
    "temporal_change_error",
    "valid_pixels",
]


def _as_normals(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim < 1 or array.shape[-1] != 3:
        raise ValueError(f"`{name}` must be an array of normals with a last axis of 3, got shape {array.shape}.")
    return array


def _check_mask(mask, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(
            f"`mask` has shape {mask.shape} but the normals have {shape} (+ a last axis of 3); pass one boolean "
            "per pixel, or None to score every valid pixel."
        )
    return mask.astype(bool)


def _unit(normals: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    return normals / np.maximum(norm, 1e-12)


def angle_between_deg(a, b) -> np.ndarray:
    """Angle in degrees between the vectors of `a` and `b` (`(..., 3)`), normalised in float64; acos is clamped.

    Zero vectors are 90 degrees from anything; non-finite vectors are 180 degrees from anything.
    """
    a, b = _as_normals("a", a), _as_normals("b", b)
    dot = np.sum(_unit(a) * _unit(b), axis=-1)
    dot = np.where(np.isfinite(dot), dot, -1.0)
    return np.degrees(np.arccos(np.clip(dot, -1.0, 1.0)))


def valid_pixels(target, mask=None) -> np.ndarray:
    """Boolean `(...)` map of scored pixels: finite, non-zero ground truth, and `mask` where given."""
    target = _as_normals("target", target)
    valid = np.all(np.isfinite(target), axis=-1) & (np.linalg.norm(np.nan_to_num(target), axis=-1) > 1e-6)
    mask = _check_mask(mask, target.shape[:-1])
    return valid if mask is None else valid & mask


def angular_error_map_deg(pred, target, mask=None) -> np.ndarray:
    """Per-pixel angular error in degrees (float64, shape `pred.shape[:-1]`); NaN where the pixel is not scored.

    Args:
        pred: predicted normals `(..., 3)`; target: ground-truth normals, same shape.
        mask: optional boolean `(...)`; pixels where it is false are not scored (NaN).
    """
    pred, target = _as_normals("pred", pred), _as_normals("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"`pred` has shape {pred.shape} but `target` has {target.shape}; they must match.")
    valid = valid_pixels(target, mask)
    error = angle_between_deg(pred, np.where(valid[..., None], target, 1.0))
    return np.where(valid, error, np.nan)


def _scored(errors, what: str) -> np.ndarray:
    errors = np.asarray(errors, dtype=np.float64).ravel()
    errors = errors[~np.isnan(errors)]
    if errors.size == 0:
        raise ValueError(
            f"{what} has no valid pixel (empty mask, or every ground-truth normal is zero/NaN); nothing to score. "
            "Check the mask and normal maps, or leave such frames out."
        )
    return errors


def summarize_errors(errors, what: str = "`errors`") -> dict:
    """Mean, exact median, RMSE and % under each of `THRESHOLDS_DEG` of the non-NaN entries of `errors` (degrees).

    Returns a dict with `METRIC_NAMES` and `num_pixels`. Raises `ValueError` when no entry is valid.
    """
    errors = _scored(errors, what)
    summary = {
        "mean": math.fsum(errors) / errors.size,
        "median": float(np.median(errors)),
        "rmse": math.sqrt(math.fsum(errors * errors) / errors.size),
    }
    for threshold in THRESHOLDS_DEG:
        summary[f"under_{threshold:g}"] = 100.0 * int(np.count_nonzero(errors < threshold)) / errors.size
    summary["num_pixels"] = int(errors.size)
    return summary


def normal_metrics(pred, target, mask=None) -> dict:
    """`summarize_errors` of all scored pixels of `pred` vs `target` pooled together (a frame, a clip, ...)."""
    return summarize_errors(angular_error_map_deg(pred, target, mask), what="`mask`")


def per_frame_metrics(pred, target, mask=None) -> list[dict]:
    """One `normal_metrics` dict per frame of `(F, H, W, 3)` inputs; a frame with no valid pixel raises."""
    errors = angular_error_map_deg(pred, target, mask)
    if errors.ndim != 3:
        raise ValueError(f"`pred` must be (F, H, W, 3) for per-frame metrics, got shape {np.shape(pred)}.")
    return [summarize_errors(frame, what=f"frame {index} of `mask`") for index, frame in enumerate(errors)]


def mean_of_means(summaries: Sequence[dict], key: str = "mean") -> float:
    """The unweighted mean of `summaries[i][key]` (e.g. the mean of clip means, which differs from pooling)."""
    if not summaries:
        raise ValueError("`summaries` is empty; pass at least one summary dict.")
    return math.fsum(s[key] for s in summaries) / len(summaries)


def _pooled_pairs(accumulator: MeanAccumulator, per_pair: list) -> dict:
    """The result of a metric over consecutive frame pairs: the pooled mean, its pixel count and sum, and each
    pair's mean."""
    return {
        "mean": accumulator.compute(),
        "num_pixels": accumulator.count,
        "sum": accumulator.total,
        "per_pair": per_pair,
    }


def _without_nan(values) -> np.ndarray:
    """`values` as a flat float64 array without its NaNs (pixels without ground truth)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[~np.isnan(values)]


class ErrorAccumulator:
    """Pools angular errors of many frames or clips without storing them (see the module docstring).

    `update(errors)` adds the non-NaN entries of an error map; `merge(other)` adds another accumulator;
    `compute()` returns the same keys as `summarize_errors` (median from the 0.01-degree histogram);
    `state_dict()` / `from_state_dict()` round-trip through JSON so resumed evaluations pool exactly.
    """

    def __init__(self):
        self.count = 0
        self._sums: list[float] = []
        self._square_sums: list[float] = []
        self.under = [0] * len(THRESHOLDS_DEG)
        self.histogram = np.zeros(_NUM_BINS, dtype=np.int64)

    @property
    def total(self) -> float:
        return math.fsum(self._sums)

    @property
    def total_square(self) -> float:
        return math.fsum(self._square_sums)

    def update(self, errors) -> ErrorAccumulator:
        errors = _without_nan(errors)
        if errors.size == 0:
            return self
        self.count += int(errors.size)
        self._sums.append(math.fsum(errors))
        self._square_sums.append(math.fsum(errors * errors))
        for i, threshold in enumerate(THRESHOLDS_DEG):
            self.under[i] += int(np.count_nonzero(errors < threshold))
        bins = np.clip((errors / HISTOGRAM_BIN_DEG).astype(np.int64), 0, _NUM_BINS - 1)
        self.histogram += np.bincount(bins, minlength=_NUM_BINS)
        return self

    def merge(self, other: ErrorAccumulator) -> ErrorAccumulator:
        self.count += other.count
        self._sums.append(other.total)
        self._square_sums.append(other.total_square)
        self.under = [a + b for a, b in zip(self.under, other.under)]
        self.histogram += other.histogram
        return self

    def median(self) -> float:
        cumulative = np.cumsum(self.histogram)
        half = 0.5 * self.count
        index = int(np.searchsorted(cumulative, half, side="left"))
        before = int(cumulative[index - 1]) if index > 0 else 0
        inside = int(self.histogram[index])
        fraction = (half - before) / inside if inside else 0.5
        return (index + fraction) * HISTOGRAM_BIN_DEG

    def compute(self, what: str = "the dataset") -> dict:
        if self.count == 0:
            raise ValueError(
                f"{what} has no valid pixel (empty masks, or every ground-truth normal is zero/NaN); nothing to score."
            )
        summary = {
            "mean": self.total / self.count,
            "median": self.median(),
            "rmse": math.sqrt(self.total_square / self.count),
        }
        for threshold, under in zip(THRESHOLDS_DEG, self.under):
            summary[f"under_{threshold:g}"] = 100.0 * under / self.count
        summary["num_pixels"] = self.count
        return summary

    def state_dict(self) -> dict:
        nonzero = np.flatnonzero(self.histogram)
        return {
            "count": self.count,
            "sum": self.total,
            "sum_sq": self.total_square,
            "under": list(self.under),
            "bin_deg": HISTOGRAM_BIN_DEG,
            "histogram_bins": nonzero.tolist(),
            "histogram_counts": self.histogram[nonzero].tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> ErrorAccumulator:
        if state.get("bin_deg") != HISTOGRAM_BIN_DEG or len(state.get("under", ())) != len(THRESHOLDS_DEG):
            raise ValueError(
                f"Accumulator state has bin width {state.get('bin_deg')!r} and {len(state.get('under', ()))} "
                f"thresholds; this version uses {HISTOGRAM_BIN_DEG} and {len(THRESHOLDS_DEG)}. Re-score the clip."
            )
        accumulator = cls()
        accumulator.count = int(state["count"])
        accumulator._sums = [float(state["sum"])]
        accumulator._square_sums = [float(state["sum_sq"])]
        accumulator.under = [int(u) for u in state["under"]]
        accumulator.histogram[np.asarray(state["histogram_bins"], dtype=np.int64)] = state["histogram_counts"]
        return accumulator


class MeanAccumulator:
    """A pooled mean (exact integer count, `math.fsum` sums) for the temporal metrics; `compute()` is None if empty."""

    def __init__(self, total: float = 0.0, count: int = 0):
        self._sums = [float(total)]
        self.count = int(count)

    @property
    def total(self) -> float:
        return math.fsum(self._sums)

    def update(self, values) -> MeanAccumulator:
        values = _without_nan(values)
        self._sums.append(math.fsum(values))
        self.count += int(values.size)
        return self

    def merge(self, other: MeanAccumulator) -> MeanAccumulator:
        self._sums.append(other.total)
        self.count += other.count
        return self

    def compute(self) -> float | None:
        return self.total / self.count if self.count else None

    def state_dict(self) -> dict:
        return {"sum": self.total, "count": self.count}

    @classmethod
    def from_state_dict(cls, state: dict) -> MeanAccumulator:
        return cls(state["sum"], state["count"])


def _check_video(pred, target, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, target = _as_normals("pred", pred), _as_normals("target", target)
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"`pred` ({pred.shape}) and `target` ({target.shape}) must both be (F, H, W, 3) of the same shape."
        )
    valid = valid_pixels(target, mask)
    if not valid.any():
        raise ValueError("`mask` selects no valid pixel (or every ground-truth normal is zero/NaN); nothing to score.")
    return pred, target, valid


def temporal_change_error(pred, target, mask=None) -> dict:
    """Mean |predicted - ground-truth angular change| (degrees) of each pixel between consecutive frames.

    Args:
        pred, target: `(F, H, W, 3)` normals; mask: optional boolean `(F, H, W)`.

    Returns:
        `{"mean": float or None, "num_pixels": int, "sum": float, "per_pair": [F - 1 means or None]}`, pooled over
        pixels valid in both frames of a pair (`mean` is None for a one-frame clip).
    """
    pred, target, valid = _check_video(pred, target, mask)
    accumulator = MeanAccumulator()
    per_pair = []
    for t in range(pred.shape[0] - 1):
        both = valid[t] & valid[t + 1]
        change_pred = angle_between_deg(pred[t][both], pred[t + 1][both])
        change_target = angle_between_deg(target[t][both], target[t + 1][both])
        pair = MeanAccumulator().update(np.abs(change_pred - change_target))
        per_pair.append(pair.compute())
        accumulator.merge(pair)
    return _pooled_pairs(accumulator, per_pair)


def _check_camera(depth, intrinsics, poses, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    depth = np.asarray(depth, dtype=np.float64)
    if depth.shape != shape:
        raise ValueError(f"`depth` has shape {depth.shape}; expected {shape} (one z-depth per pixel and frame).")
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if intrinsics.shape != (4,):
        raise ValueError(f"`intrinsics` must be [fx, fy, cx, cy] in pixels, got {intrinsics.tolist()!r}.")
    poses = np.asarray(poses, dtype=np.float64)
    if poses.shape != (shape[0], 4, 4):
        raise ValueError(
            f"`poses` has shape {poses.shape}; expected ({shape[0]}, 4, 4) camera-to-world matrices (OpenGL camera)."
        )
    return depth, intrinsics, poses


def reprojection_error(pred, depth, intrinsics, poses, mask=None, depth_tolerance: float = 0.05, target=None) -> dict:
    """Angle between each pixel's predicted normal, rotated into the next frame's camera, and the prediction where
    that pixel reprojects (see the module docstring for the co-visibility rule).

    Args:
        pred: `(F, H, W, 3)` predicted camera-space normals (OpenGL axes).
        depth: `(F, H, W)` z-depth (positive, camera units; <= 0 or non-finite is invalid).
        intrinsics: `[fx, fy, cx, cy]` in pixels, pixel centres at integer + 0.5 (the clip format's convention).
        poses: `(F, 4, 4)` camera-to-world matrices of OpenGL cameras (looking down -z).
        mask: optional boolean `(F, H, W)` of valid pixels, applied in both frames.
        depth_tolerance: co-visible when `|depth[t+1] at the pixel - reprojected depth| <= tol * reprojected depth`.
        target: optional ground-truth normals; when given, pixels with zero/NaN ground truth are also invalid.

    Returns:
        `{"mean": float or None, "num_pixels": int, "sum": float, "per_pair": [...]}` pooled over co-visible pixels.
    """
    pred = _as_normals("pred", pred)
    if pred.ndim != 4:
        raise ValueError(f"`pred` must be (F, H, W, 3), got shape {pred.shape}.")
    if not (isinstance(depth_tolerance, (int, float)) and depth_tolerance > 0):
        raise ValueError(
            f"`depth_tolerance` must be a positive number (relative, e.g. 0.05), got {depth_tolerance!r}."
        )
    num_frames, height, width = pred.shape[:3]
    depth, intrinsics, poses = _check_camera(depth, intrinsics, poses, pred.shape[:3])
    valid = np.isfinite(depth) & (depth > 0)
    if target is not None:
        valid &= valid_pixels(target)
    mask = _check_mask(mask, pred.shape[:3])
    if mask is not None:
        valid &= mask
    if not valid.any():
        raise ValueError(
            "`mask` and `depth` select no valid pixel (empty mask or no positive depth); nothing to score."
        )

    fx, fy, cx, cy = intrinsics
    rows, cols = np.mgrid[0:height, 0:width]
    ray = np.stack([(cols + 0.5 - cx) / fx, -(rows + 0.5 - cy) / fy, -np.ones((height, width))], axis=-1)
    accumulator = MeanAccumulator()
    per_pair = []
    for t in range(num_frames - 1):
        sel = valid[t]
        points = ray[sel] * depth[t][sel][:, None]  # camera t, [N, 3]
        to_next = np.linalg.inv(poses[t + 1]) @ poses[t]  # camera t -> camera t+1
        moved = points @ to_next[:3, :3].T + to_next[:3, 3]
        z = -moved[:, 2]
        in_front = z > 1e-9
        safe_z = np.where(in_front, z, 1.0)
        col = np.floor(cx + fx * moved[:, 0] / safe_z).astype(np.int64)
        row = np.floor(cy - fy * moved[:, 1] / safe_z).astype(np.int64)
        inside = in_front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        col, row = np.where(inside, col, 0), np.where(inside, row, 0)
        next_depth = depth[t + 1][row, col]
        covisible = (
            inside & valid[t + 1][row, col] & (np.abs(next_depth - z) <= depth_tolerance * np.maximum(z, 1e-12))
        )
        rotated = pred[t][sel][covisible] @ to_next[:3, :3].T
        pair = MeanAccumulator().update(angle_between_deg(rotated, pred[t + 1][row[covisible], col[covisible]]))
        per_pair.append(pair.compute())
        accumulator.merge(pair)
    return _pooled_pairs(accumulator, per_pair)
