"""What scoring the released model on the full `dsine_eval` sets of the paper costs, from a measured slice.

The slice runs through the evaluator itself (`evaluation.evaluate_model` on miniature DSINE sets written at the sets'
own resolutions: one 480x640 image as NYUv2, ScanNet and iBims-1 publish them, and one Sintel sequence of
`--sintel-frames` frames at 436x1024) with the real SVD-xt architecture at random weights (`testing_utils`;
the released model has the same sizes, so the same cost). Forward hooks time the CLIP image encoder, the VAE
encoder, the UNet and the VAE decoder. The full run is extrapolated from those figures:

- single-image sets (654 + 300 + 100 images): each image is one window of one frame, so the measured image's time;
- Sintel (1064 frames in 23 sequences of up to 50 frames, default windows of 14 with overlap 4): per frame one CLIP
  pass, one encode, one decode and the rest of the harness; per frame *in each window* one UNet frame-pass (the
  windows of `plan_windows` over each published sequence length; the temporal layers' share of a window is small,
  so a frame-pass costs about what it costs in the measured window).

    python benchmarks/bench_eval_cost.py --dtype bf16 --sintel-frames 2
    python benchmarks/bench_eval_cost.py --dtype fp32 --sintel-frames 1 --skip-sintel   # about 9 GB of RAM

Figures go to benchmarks/EVALUATION.md with the host's state; a shared host slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import PIL.Image
import torch

from normalcrafter_pipeline import NormalCrafterPipeline
from normalcrafter_pipeline.evaluation import evaluate_model
from normalcrafter_pipeline.formats.exr import write_exr
from normalcrafter_pipeline.normalcrafter_windows import plan_windows
from normalcrafter_pipeline.testing_utils import svd_xt_components

# Frames of each published DSINE evaluation set (its split files), and the lengths of Sintel's 23 sequences.
SINGLE_IMAGE_SETS = {"nyuv2": 654, "scannet": 300, "ibims": 100}
SINTEL_SEQUENCE_LENGTHS = [50, 50, 21, 33, 50, 20, 50, 50, 50, 50, 50, 50, 50, 50, 50, 40, 50, 50, 50, 50, 50, 50, 50]
STAGES = {"clip": "image_encoder", "vae_encode": "vae.encoder", "unet": "unet", "vae_decode": "vae.decoder"}


class StageTimer:
    """Wall time spent in each timed module's forward, and the frames the UNet saw."""

    def __init__(self, pipe):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.unet_frames = 0
        for stage, path in STAGES.items():
            module = pipe
            for part in path.split("."):
                module = getattr(module, part)
            module.register_forward_pre_hook(self._start(stage))
            module.register_forward_hook(self._stop(stage))
        self._started = {}

    def _start(self, stage):
        def hook(module, args):
            self._started[stage] = time.perf_counter()
            if stage == "unet":
                self.unet_frames += args[0].shape[0] * args[0].shape[1]  # [B, F, C, h, w]

        return hook

    def _stop(self, stage):
        def hook(module, args, output):
            self.seconds[stage] += time.perf_counter() - self._started.pop(stage)

        return hook

    def reset(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.unet_frames = 0


def write_slice(root: str, sintel_frames: int) -> None:
    rng = np.random.default_rng(0)
    normal = np.zeros((480, 640, 3), np.uint8)
    normal[...] = (128, 128, 255)
    folder = os.path.join(root, "nyuv2", "test")
    os.makedirs(folder)
    PIL.Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(os.path.join(folder, "0_img.png"))
    PIL.Image.fromarray(normal).save(os.path.join(folder, "0_normal.png"))
    folder = os.path.join(root, "sintel", "alley_1")
    os.makedirs(folder)
    stored = np.zeros((436, 1024, 3), np.float32)
    stored[..., 2] = 1.0
    for index in range(1, sintel_frames + 1):
        image = rng.integers(0, 256, (436, 1024, 3), dtype=np.uint8)
        PIL.Image.fromarray(image).save(os.path.join(folder, f"frame_{index:04d}_img.png"))
        write_exr(os.path.join(folder, f"frame_{index:04d}_normal.exr"), stored)


def measure(pipe, timer, root, benchmark, out) -> dict:
    timer.reset()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = evaluate_model(pipe, root, out, benchmark=benchmark, resume=False, show_progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    frames = result["total"]["num_frames"]
    return {"wall": wall, "cpu": cpu, "frames": frames, "unet_frames": timer.unet_frames, **timer.seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--sintel-frames", type=int, default=2)
    parser.add_argument("--skip-sintel", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    start = time.perf_counter()
    pipe = NormalCrafterPipeline(**svd_xt_components(seed=0, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - start
    timer = StageTimer(pipe)
    with tempfile.TemporaryDirectory() as root:
        write_slice(root, args.sintel_frames)
        image = measure(pipe, timer, os.path.join(root, "nyuv2"), "dsine:nyuv2", os.path.join(root, "out_nyu"))
        sintel = None
        if not args.skip_sintel:
            sintel = measure(pipe, timer, os.path.join(root, "sintel"), "dsine:sintel", os.path.join(root, "out_s"))

    single_images = sum(SINGLE_IMAGE_SETS.values())
    report = {"dtype": args.dtype, "threads": args.threads, "build_s": load, "image_480x640": image}
    # Wall hours on this host as it was; CPU hours (process CPU time, all threads) do not depend on what else ran.
    report["single_image_sets_hours"] = single_images * image["wall"] / 3600
    report["single_image_sets_cpu_hours"] = single_images * image["cpu"] / 3600
    if sintel is not None:
        frames = sum(SINTEL_SEQUENCE_LENGTHS)
        passes = sum(end - start for n in SINTEL_SEQUENCE_LENGTHS for start, end in plan_windows(n, 14, 4))
        # The UNet's share of the slice's time, per frame-pass; the rest per frame (CPU time split the same way).
        unet_share = sintel["unet"] / sintel["wall"]
        report["sintel_436x1024"] = sintel
        report["sintel_frames"], report["sintel_unet_frame_passes"] = frames, passes
        for key, total in (("sintel_hours", sintel["wall"]), ("sintel_cpu_hours", sintel["cpu"])):
            unet_per_pass = total * unet_share / sintel["unet_frames"]
            per_frame_rest = total * (1.0 - unet_share) / sintel["frames"]
            report[key] = (frames * per_frame_rest + passes * unet_per_pass) / 3600
        report["total_hours"] = report["single_image_sets_hours"] + report["sintel_hours"]
        report["total_cpu_hours"] = report["single_image_sets_cpu_hours"] + report["sintel_cpu_hours"]
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
