"""Flat-memory guard: what `NormalCrafterPipeline.stream` adds to a process's peak RSS does not grow with the length.

A fresh Python process (its peak RSS, `ru_maxrss`, is its own) streams a synthetic video through a tiny random
pipeline, then one ten times longer; the peak RSS above the process's RSS before the first stream (the imported
libraries and the model, about 0.4 GB that would hide a leak) may grow by at most 15 % from the first to the second,
comparing the lowest of a few repeats (single peaks vary from run to run). Encode and decode chunks of one frame keep
the working set small, so anything the pipeline keeps per frame (pixels, outputs, CLIP inputs) shows: `stream` holds
O(window) frames. Figures in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# Streams a panning random picture twice, `num_frames` frames then ten times as many, and prints the peak RSS above
# the RSS before the first stream after each (KiB).
STREAM_PEAK_RSS = """
import os, resource, sys
import numpy as np
from normalcrafter_pipeline.testing_utils import tiny_pipeline

num_frames, height, width = map(int, sys.argv[1:4])
pipe = tiny_pipeline(seed=0)
pipe.set_progress_bar_config(disable=True)
picture = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
with open("/proc/self/statm") as statm:
    before = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
peaks = []
for length in (num_frames, 10 * num_frames):
    frames = (np.roll(picture, 3 * i, axis=1) for i in range(length))
    streamed = sum(len(chunk) for chunk in pipe.stream(frames, encode_chunk_size=1, decode_chunk_size=1))
    if streamed != length:
        raise SystemExit(f"streamed {streamed} of {length} frames")
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
print(*peaks)
"""

SHORT_FRAMES = 20
HEIGHT, WIDTH = 64, 64
REPEATS = 2
ALLOWED_GROWTH = 1.15


def stream_peaks_mib(num_frames: int) -> tuple[float, float]:
    """(short, long) peak RSS above the RSS before streaming, MiB, from a fresh process."""
    command = [sys.executable, "-c", STREAM_PEAK_RSS, str(num_frames), str(HEIGHT), str(WIDTH)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    short, long = (int(kib) / 1024 for kib in result.stdout.strip().splitlines()[-1].split())
    return short, long


@pytest.mark.slow
def test_stream_peak_memory_stays_flat_from_a_short_video_to_one_ten_times_longer():
    runs = [stream_peaks_mib(SHORT_FRAMES) for _ in range(REPEATS)]
    short, long = min(run[0] for run in runs), min(run[1] for run in runs)
    figures = (
        f"stream's peak RSS {short:.1f} MiB at {SHORT_FRAMES} frames, {long:.1f} MiB at {10 * SHORT_FRAMES} frames "
        f"(best of {REPEATS}: {runs})"
    )
    assert long <= ALLOWED_GROWTH * short, figures
