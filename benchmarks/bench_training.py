"""Training-step speed and peak memory of stage 1 and stage 2 on the CPU.

Two tables:

1. tiny components (`normalcrafter_pipeline.testing_utils.tiny_components`, a tiny random DINOv2), 64x64, with and
   without gradient checkpointing: optimiser steps per second and peak RSS;
2. the full SVD-xt architecture at random weights (UNet 1.52B parameters, the SVD temporal VAE, a ViT-H/14-size
   CLIP vision tower, a DINOv2-base-size model for SFR), 64x64, 1 frame: one real training step per stage (conditioning
   encode, forward, backward, AdamW update) with its peak RSS.

Every configuration runs in its own child process, so each peak RSS is that configuration's own. A configuration
whose estimated resident size (weights + gradients + AdamW state of what trains, plus the frozen models) exceeds
the memory available is reported as not fitting instead of being started.

    python benchmarks/bench_training.py                 # both tables
    python benchmarks/bench_training.py --only tiny     # or --only full
    python benchmarks/bench_training.py --only full --optimizer adamw_in_backward
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

import torch


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _available_mb() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024.0
    return float("inf")


def build(arch: str):
    """`(pipe, dino)` for `tiny` or `full`, random weights, fp32."""
    from transformers import Dinov2Config, Dinov2Model

    from normalcrafter_pipeline import NormalCrafterPipeline
    from normalcrafter_pipeline.testing_utils import svd_xt_components, tiny_components, tiny_dino
    from normalcrafter_pipeline.training import DinoFeatures

    if arch == "tiny":
        return NormalCrafterPipeline(**tiny_components(0)), DinoFeatures(tiny_dino())
    pipe = NormalCrafterPipeline(**svd_xt_components(seed=0))
    return pipe, DinoFeatures(Dinov2Model(Dinov2Config()))  # Dinov2Config() is the ViT-B/14 (dinov2-base) size


def _count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def estimate_mb(arch: str, stage: str, precision: str, optimizer: str) -> float:
    """Weights + gradients + AdamW state of the trained parameters, plus the frozen weights, in MiB."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        pipe, dino = build(arch)
    from normalcrafter_pipeline.training import is_temporal_parameter

    unet = dict(pipe.unet.named_parameters())
    trained = [p for k, p in unet.items() if stage == "stage1" or not is_temporal_parameter(k)]
    frozen_unet = _count(unet.values()) - _count(trained)
    frozen = _count(pipe.vae.parameters()) + _count(pipe.image_encoder.parameters()) + _count(dino.parameters())
    per_trained = 12 if optimizer == "adamw_in_backward" else 16  # no full set of gradients with in-backward steps
    frozen_bytes = 2 if precision == "bf16" else 4
    return (_count(trained) * per_trained + frozen_unet * 4 + frozen * frozen_bytes) / 2**20


def run_child(arch, stage, checkpointing, steps, frames, precision, optimizer) -> dict:
    from normalcrafter_pipeline.dtypes import torch_dtype
    from normalcrafter_pipeline.training import SFRProjector, freeze_temporal_layers, stage1_loss, stage2_loss
    from normalcrafter_pipeline.training.sfr import sfr_feature_channels

    pipe, dino = build(arch)
    frozen_dtype = torch_dtype(precision)
    for module in (pipe.vae, pipe.image_encoder, dino):
        module.requires_grad_(False).to(frozen_dtype)
    unet = pipe.unet.train()
    if stage == "stage2":
        freeze_temporal_layers(unet)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    projector = SFRProjector(sfr_feature_channels(unet), dino.hidden_size, hidden_dim=2048)
    parameters = [p for m in (unet, projector) for p in m.parameters() if p.requires_grad]
    if optimizer == "adamw_in_backward":
        # One AdamW per tensor, stepped as soon as its gradient is complete; the gradient is then freed, so the
        # full set of gradients never exists at once. Same update as AdamW (without global gradient clipping).
        optimizers = {p: torch.optim.AdamW([p], lr=1e-5, foreach=False) for p in parameters}

        def step_now(p):
            optimizers[p].step()
            optimizers[p].zero_grad(set_to_none=True)

        for p in parameters:
            p.register_post_accumulate_grad_hook(step_now)
        optimizer_obj = None
    else:
        optimizer_obj = torch.optim.AdamW(parameters, lr=1e-5, foreach=False)
    scheduler = copy.deepcopy(pipe.scheduler)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.rand(1, frames, 3, 64, 64, generator=generator),
        "normals": torch.nn.functional.normalize(torch.randn(1, frames, 3, 64, 64, generator=generator), dim=2),
        "valid_mask": torch.ones(1, frames, 1, 64, 64, dtype=torch.bool),
    }
    load_rss = _peak_rss_mb()

    def one_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if stage == "stage1":
                losses = stage1_loss(pipe, unet, batch, projector, dino, lambda_reg=0.5)
            else:
                losses = stage2_loss(pipe, unet, scheduler, batch, projector, dino, lambda_reg=0.5)
        losses["loss"].backward()
        if optimizer_obj is not None:
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer_obj.step()
            optimizer_obj.zero_grad(set_to_none=True)
        return float(losses["loss"])

    warmup = 1 if arch == "tiny" else 0
    for _ in range(warmup):
        one_step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = one_step()
    elapsed = time.perf_counter() - start
    return {
        "steps_per_s": steps / elapsed,
        "s_per_step": elapsed / steps,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_build_mb": load_rss,
        "trained_params_m": _count(parameters) / 1e6,
        "loss": loss,
    }


def _spawn(config: dict, threads: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(config), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tiny", "full"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run.")
    parser.add_argument("--tiny_steps", type=int, default=10)
    parser.add_argument("--tiny_frames", type=int, default=2)
    parser.add_argument("--full_frames", type=int, default=1)
    parser.add_argument(
        "--full_precision",
        choices=["fp32", "bf16"],
        default="bf16",
        help="bf16: frozen models in bf16 and bf16 autocast (trained weights stay fp32).",
    )
    parser.add_argument("--optimizer", choices=["adamw", "adamw_in_backward"], default="adamw")
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.child:
        print(json.dumps(run_child(**json.loads(args.child))))
        return

    rows = []
    if args.only in (None, "tiny"):
        for stage in ("stage1", "stage2"):
            for checkpointing in (False, True):
                config = dict(
                    arch="tiny",
                    stage=stage,
                    checkpointing=checkpointing,
                    steps=args.tiny_steps,
                    frames=args.tiny_frames,
                    precision="fp32",
                    optimizer="adamw",
                )
                rows.append((config, _spawn(config, args.threads)))
    if args.only in (None, "full"):
        for stage in ("stage1", "stage2"):
            config = dict(
                arch="full",
                stage=stage,
                checkpointing=True,
                steps=1,
                frames=args.full_frames,
                precision=args.full_precision,
                optimizer=args.optimizer,
            )
            need = estimate_mb("full", stage, args.full_precision, args.optimizer)
            available = _available_mb()
            if need > 0.95 * available:
                result = {"error": f"does not fit: needs about {need / 1024:.1f} GiB, {available / 1024:.1f} GiB free"}
            else:
                result = _spawn(config, args.threads)
            result["estimate_gib"] = need / 1024
            rows.append((config, result))

    header = (
        f"{'arch':5} {'stage':6} {'frames':>6} {'ckpt':>5} {'prec':>5} {'optimizer':>17} "
        f"{'steps/s':>8} {'s/step':>8} {'peak RSS MiB':>12} {'trained M':>10}"
    )
    print(f"CPU, 64x64, batch 1, {args.threads} thread(s), SFR on (lambda_reg 0.5)")
    print(header)
    print("-" * len(header))
    for config, result in rows:
        prefix = (
            f"{config['arch']:5} {config['stage']:6} {config['frames']:>6} {str(config['checkpointing']):>5} "
            f"{config['precision']:>5} {config['optimizer']:>17}"
        )
        if "error" in result:
            print(f"{prefix} {result['error']}")
        else:
            print(
                f"{prefix} {result['steps_per_s']:8.3f} {result['s_per_step']:8.2f} {result['peak_rss_mb']:12.0f} "
                f"{result['trained_params_m']:10.1f}"
            )


if __name__ == "__main__":
    main()
