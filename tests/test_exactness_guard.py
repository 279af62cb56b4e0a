"""Float32 exactness guard: the pipeline in float32 stays at float32 rounding of itself in float64.

Tiny random models amplify rounding (their outputs are far from unit-length before normalisation), which is what
makes them a sensitive guard: a kernel that loses precision in float32 (as CPU GroupNorm on channels_last tensors
does on white-padded frames) moves the normals by tenths of a degree to degrees, where plain float32 rounding moves
them by thousandths. Bounds come from the measured float32 figures with a wide margin (benchmarks/BENCHMARKS.md,
"Float32 exactness and the VAE encoder's input layout"). Each case has its own seeded model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normalcrafter_pipeline.testing_utils import tiny_pipeline

# Measured in float32 against float64 with NCHW encoder input (seeds 0-2, 1 thread): mean angle at most 0.0004 degrees
# and no pixel beyond 0.05 degrees (largest 0.025) in every case below. With channels_last encoder input: mean angles
# of 0.004-0.084 degrees and 0.05-59 % of pixels beyond 0.05 degrees on the padded cases.
MEAN_ANGLE_BOUND_DEG = 0.002
SHARE_BEYOND_BOUND = 0.001  # of pixels beyond 0.05 degrees


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed,num_frames,height,width,window_size,overlap",
    [
        (0, 29, 72, 72, 14, 4),  # three windows, the last a tail window; padded to 128x128
        (1, 20, 40, 50, 14, 4),  # two windows, odd padding to 64x64
        (2, 16, 100, 60, 8, 3),  # short windows, a tall frame padded to 128x64
        (0, 9, 33, 70, 6, 2),  # windows of 6, padded to 64x128
        (1, 3, 64, 64, 14, 4),  # shorter than a window, no padding
    ],
)
def test_float32_stays_at_rounding_distance_of_float64(seed, num_frames, height, width, window_size, overlap):
    """The same seeded tiny model (weights and video from `seed`) in float32 and in float64."""
    pipe32, pipe64 = tiny_pipeline(seed=seed), tiny_pipeline(seed=seed).to(dtype=torch.float64)
    video = np.random.RandomState(seed).randint(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    kwargs = {"window_size": window_size, "overlap": overlap}
    for pipe in (pipe32, pipe64):
        pipe.set_progress_bar_config(disable=True)
    angles = angles_deg(pipe32(video, **kwargs).normals, pipe64(video, **kwargs).normals)
    mean, share_beyond = float(angles.mean()), float((angles > 0.05).mean())
    figures = f"mean {mean:.4f} deg, {100 * share_beyond:.2f} % beyond 0.05 deg, max {angles.max():.3f} deg"
    assert mean < MEAN_ANGLE_BOUND_DEG, figures
    assert share_beyond < SHARE_BEYOND_BOUND, figures
