#!/usr/bin/env python
"""A small-scale reproduction of the NormalCrafter recipe that runs on a CPU in under half an hour.

One command renders a synthetic training set and a held-out set with the package's renderer, trains tiny
components through the three stages of the recipe with the real training scripts (VAE-decoder fine-tune, stage 1:
latent DSM, stage 2: pixel-space angular loss on the spatial layers), evaluates the model before training, after
stage 1 and after stage 2 (with windows, and per frame: window 1), and writes a Markdown table.

    python benchmarks/reproduce_small.py                       # the full run, writes benchmarks/RESULTS.md
    python benchmarks/reproduce_small.py --smoke --results /tmp/r.md --work-dir /tmp/repro   # a few steps

Scale: the models are the tiny random-initialised components of `normalcrafter_pipeline.testing_utils` (a
two-level spatio-temporal UNet, a 4-level VAE of 32 channels, a 2-layer CLIP tower), not SVD-xt, and they start
from random weights rather than from a video-diffusion prior. What this can show is that the recipe's pieces train
and move the numbers in the expected direction on data with exact ground truth; it cannot show the paper's
absolute accuracy. Semantic feature regularisation needs DINOv2 weights, which cannot be downloaded here; with
`--sfr` a tiny random DINOv2 stands in (a random target, so it exercises the code path, not the method).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time

import torch

from normalcrafter_pipeline.evaluation import evaluate_model
from normalcrafter_pipeline.testing_utils import save_tiny_dino, tiny_pipeline
from normalcrafter_pipeline.training import render_dataset
from normalcrafter_pipeline.video_io import atomic_output

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def run_script(name: str, arguments: list[str], log_path: str) -> float:
    """Run `training/<name>.py` in a fresh process; return its wall time. Its output goes to `log_path`."""
    command = [sys.executable, os.path.join(REPO, "training", f"{name}.py"), *arguments]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(shlex.join(command) + "\n\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {result.returncode}); see {log_path}")
    return time.perf_counter() - start


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=os.path.join(REPO, "runs", "reproduce_small"))
    parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-clips", type=int, default=48)
    parser.add_argument("--train-frames", type=int, default=14)
    parser.add_argument("--eval-clips", type=int, default=6)
    parser.add_argument("--eval-frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=64, help="Square frame size of the rendered clips.")
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--stage1-steps", type=int, default=1200)
    parser.add_argument("--stage2-steps", type=int, default=2000)
    parser.add_argument(
        "--stage1-p-mean",
        type=float,
        default=4.0,
        help="Stage 1's ln(sigma) mean (the script's --p_mean; default 4.0, see RESULTS.md for why not 0.7).",
    )
    parser.add_argument("--stage1-p-std", type=float, default=1.6, help="Stage 1's ln(sigma) std (--p_std).")
    parser.add_argument("--vae-lr", type=float, default=5e-4)
    parser.add_argument("--stage1-lr", type=float, default=5e-4)
    parser.add_argument("--stage2-lr", type=float, default=2e-4)
    parser.add_argument("--window-size", type=int, default=14)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--sfr", action="store_true", help="Use SFR with a tiny random DINOv2 (see above).")
    parser.add_argument("--smoke", action="store_true", help="A few steps per stage and tiny sets: checks plumbing.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_clips, args.train_frames, args.eval_clips, args.eval_frames = 2, 4, 2, 6
        args.vae_steps, args.stage1_steps, args.stage2_steps = 2, 2, 2
        args.window_size, args.overlap = 4, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    timings = {}

    # 1. Data: a training set and a held-out set from different seeds.
    t = time.perf_counter()
    train_root, eval_root = os.path.join(work, "data", "train"), os.path.join(work, "data", "heldout")
    render_dataset(train_root, args.train_clips, args.train_frames, args.size, args.size, seed=args.seed)
    render_dataset(eval_root, args.eval_clips, args.eval_frames, args.size, args.size, seed=args.seed + 1000)
    timings["render"] = time.perf_counter() - t

    # 2. The untrained model: tiny components at random initialisation.
    untrained = os.path.join(work, "models", "untrained")
    tiny_pipeline(seed=args.seed).save_pretrained(untrained)

    common = [
        "--train_data_dir", train_root,
        "--height", str(args.size), "--width", str(args.size),
        "--seed", str(args.seed),
        "--report_to", "none",
        "--checkpointing_steps", "100000",
        "--validation_steps", "100000",
        "--lr_warmup_steps", str(min(100, max(1, args.stage1_steps // 10))),
    ]  # fmt: skip
    sfr = ["--lambda_reg", "0"]
    if args.sfr:
        sfr = ["--dino_model", save_tiny_dino(os.path.join(work, "models", "tiny_dino")), "--lambda_reg", "0.5"]
    noise = ["--p_mean", str(args.stage1_p_mean), "--p_std", str(args.stage1_p_std)]
    stages = [
        ("vae", "train_vae_decoder", untrained, args.vae_steps, args.vae_lr, []),
        ("stage1", "train_stage1", "vae", args.stage1_steps, args.stage1_lr, sfr + noise),
        ("stage2", "train_stage2", "stage1", args.stage2_steps, args.stage2_lr, sfr),
    ]
    models = {"untrained": untrained}
    for name, script, start_from, steps, lr, extra in stages:
        output = os.path.join(work, "models", name)
        arguments = [
            "--pretrained_model_name_or_path", models.get(start_from, start_from),
            "--output_dir", output,
            "--max_train_steps", str(steps),
            "--learning_rate", str(lr),
            *common, *extra,
        ]  # fmt: skip
        timings[name] = run_script(script, arguments, os.path.join(work, f"{name}.log"))
        models[name] = output
        print(f"{name}: {steps} steps in {timings[name]:.0f} s", flush=True)

    # 3. Evaluation on the held-out set.
    rows = [
        ("untrained (random init)", "untrained", False),
        ("after VAE-decoder fine-tune", "vae", False),
        ("after stage 1", "stage1", False),
        ("after stage 2", "stage2", False),
        ("after stage 2, per frame (window 1)", "stage2", True),
    ]
    results = []
    for label, model, per_frame in rows:
        t = time.perf_counter()
        out_dir = os.path.join(work, "eval", model + ("_per_frame" if per_frame else ""))
        report = evaluate_model(
            models[model],
            eval_root,
            out_dir,
            window_size=args.window_size,
            overlap=args.overlap,
            per_frame=per_frame,
            resume=False,
        )
        timings[f"eval {label}"] = time.perf_counter() - t
        results.append((label, report["total"]))
    total_seconds = time.perf_counter() - started

    write_results(args, results, timings, total_seconds, argv)
    return {"results": results, "timings": timings, "seconds": total_seconds}


# Text below this line in an existing results file (the reading of the figures) is kept when the table is rewritten.
COMMENTARY_MARKER = "<!-- commentary: kept when the table above is rewritten -->"


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_results(args, results, timings, total_seconds, argv) -> None:
    command = shlex.join(["python", "benchmarks/reproduce_small.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Small-scale reproduction",
        "",
        f"Command: `{command}` (seed {args.seed}). Total time {total_seconds / 60:.1f} min on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads).",
        "",
        f"Data: {args.train_clips} training clips of {args.train_frames} frames and {args.eval_clips} held-out clips "
        f"of {args.eval_frames} frames, {args.size}x{args.size}, from the synthetic renderer (exact normals, depth "
        f"and poses). Models: tiny random-initialised components (not SVD-xt). Steps: VAE decoder {args.vae_steps}, "
        f"stage 1 {args.stage1_steps} (ln sigma ~ N({args.stage1_p_mean}, {args.stage1_p_std}^2)), stage 2 "
        f"{args.stage2_steps}; learning rates {args.vae_lr} / {args.stage1_lr} / "
        f"{args.stage2_lr}; SFR {'on (tiny random DINOv2)' if args.sfr else 'off'}. Evaluation: window "
        f"{args.window_size}, overlap {args.overlap}, one step; pixels pooled over the held-out set.",
        "",
        "| model | mean (deg) | median (deg) | % < 11.25 deg | temporal change error (deg) | reprojection (deg) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, total in results:
        normals = total["normals"]
        lines.append(
            f"| {label} | {_cell(normals['mean'])} | {_cell(normals['median'])} | {_cell(normals['under_11.25'])} | "
            f"{_cell(total['temporal_change'])} | {_cell(total['reprojection'])} |"
        )
    lines += ["", "Time per phase (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
    if os.path.exists(args.results):
        with open(args.results) as handle:
            previous = handle.read()
        if COMMENTARY_MARKER in previous:
            lines += [COMMENTARY_MARKER + previous.split(COMMENTARY_MARKER, 1)[1].rstrip("\n"), ""]
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with atomic_output(args.results) as temporary, open(temporary, "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
