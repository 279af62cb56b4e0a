#!/usr/bin/env python
"""The per-GPU memory of the three normal stages for SVD-xt at a resolution, under DDP, ZeRO-2 and ZeRO-3 / FSDP, with
AdamW or AdamW8bit and gradient checkpointing off or on (`normalcrafter_pipeline.training.memory_plan`, the models
built on the meta device: nothing is downloaded or allocated). Prints a Markdown table (GiB per GPU) and which of
24, 48 and 80 GB GPUs each configuration fits.

    python benchmarks/memory_plan.py --height 576 --width 1024 --num_gpus 8
"""

from __future__ import annotations

import argparse
import dataclasses

from normalcrafter_pipeline.training.memory_plan import GIB, plan_memory

ENGINE_NAMES = {"ddp": "DDP", "zero2": "ZeRO-2", "zero3": "ZeRO-3 / FSDP"}
STAGES = (("vae_decoder", 7, None), ("stage1", 14, "facebook/dinov2-base"), ("stage2", 4, "facebook/dinov2-base"))
GPUS_GB = (24, 48, 80)
MARGIN_GIB = 1.0  # CUDA context and allocator slack, which the plan does not count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--num_gpus", type=int, default=8)
    parser.add_argument("--mixed_precision", default="bf16", choices=["no", "fp16", "bf16"])
    parser.add_argument(
        "--num_frames", type=int, default=None, help="Clip length for every stage (default: each stage's longest)."
    )
    args = parser.parse_args(argv)
    print(
        f"SVD-xt, {args.height}x{args.width}, 1 clip per GPU, {args.mixed_precision}, {args.num_gpus} GPUs, SFR "
        f"(DINOv2-B) on stages 1 and 2; GiB per GPU; fits: the GPUs (GB) with room for it plus {MARGIN_GIB} GiB\n"
    )
    print(
        "| stage (frames) | checkpointing | engine | optimiser | weights | grads | optim | activations | total "
        "| fits |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|")
    for stage, frames, dino in STAGES:
        frames = args.num_frames or frames
        for checkpointing in (False, True):
            measured = plan_memory(
                stage,
                pretrained="stabilityai/stable-video-diffusion-img2vid-xt",
                height=args.height,
                width=args.width,
                num_frames=frames,
                mixed_precision=args.mixed_precision,
                num_gpus=args.num_gpus,
                gradient_checkpointing=checkpointing,
                dino_model=dino,
            )
            for engine in ("ddp", "zero2", "zero3"):
                for adam8 in (False, True):
                    plan = dataclasses.replace(measured, engine=engine, use_8bit_adam=adam8)
                    fits = [f"{gb}" for gb in GPUS_GB if plan.total / GIB + MARGIN_GIB <= gb * 1e9 / GIB]
                    cells = [plan.weights, plan.gradients, plan.optimizer, plan.activations, plan.total]
                    print(
                        f"| {stage} ({frames}) | {'on' if checkpointing else 'off'} | "
                        f"{ENGINE_NAMES[engine]} | "
                        f"{'AdamW8bit' if adam8 else 'AdamW'} | "
                        + " | ".join(f"{value / GIB:.1f}" for value in cells)
                        + f" | {', '.join(fits) or 'none'} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
