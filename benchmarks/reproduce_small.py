#!/usr/bin/env python
"""A small-scale reproduction of NormalCrafter that can show the paper's claims, or show them failing, on a CPU.

One command, in this order:

1. Renders clips whose single frames are ambiguous and whose clips are not (`training.Nuisances`: per-frame
   sensor noise and exposure flicker, moving occluders, motion blur, flat-lit low-texture scenes): a normal
   training set, an RGB set for the video prior, and a held-out set, all with exact normals.
2. Trains a semantic teacher for SFR once (`training.semantic_teacher`: a small DINOv2-architecture encoder that
   learned object kinds and materials from the renderer's labels; DINOv2 itself cannot be downloaded here).
3. Per seed (seeds run side by side with `--jobs`): a video prior made the way SVD was made
   (`training/pretrain_vae.py`: the VAE as an RGB autoencoder; `training/pretrain_video_unet.py`: the UNet as an
   image-to-video model), then the normal recipe (`train_vae_decoder.py`, `train_stage1.py`, `train_stage2.py`)
   three times: from the prior with SFR, from random weights with SFR, and from the prior without SFR.
4. Evaluates every stage-1 and stage-2 model on the same held-out set with windows (`--window-size`,
   `--overlap`), and the stage-2 models also per frame (window 1) and with windows that do not overlap.
5. Writes a table of every figure as the mean over seeds +- half their range, and a table of the differences
   that test the paper's claims, each against the spread over seeds.

    python benchmarks/reproduce_small.py                       # the full run, writes benchmarks/RESULTS.md
    python benchmarks/reproduce_small.py --smoke --results /tmp/r.md --work-dir /tmp/repro   # a few steps

Scale: tiny components (`normalcrafter_pipeline.testing_utils`: a two-level spatio-temporal UNet, a 4-level VAE
of 32 channels, a 2-layer CLIP tower that stays at its random weights), 64x64 frames, and a few hundred steps per
stage. It can tell whether the recipe's pieces move the numbers the way the paper says at this scale; it cannot
show the paper's absolute accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from normalcrafter_pipeline.evaluation import evaluate_model, pool_clips, score_clip
from normalcrafter_pipeline.formats.clips import list_clips, load_clip
from normalcrafter_pipeline.normals_writers import atomic_output
from normalcrafter_pipeline.testing_utils import tiny_pipeline
from normalcrafter_pipeline.training import Nuisances, render_dataset
from normalcrafter_pipeline.training.semantic_teacher import train_semantic_teacher

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The three trainings of the normal recipe per seed: (name, label, starts from the video prior, SFR).
RUNS = (
    ("prior_sfr", "video prior + SFR", True, True),
    ("random_sfr", "random init + SFR", False, True),
    ("prior_nosfr", "video prior, no SFR", True, False),
)
# Metrics of the table: (key, heading); lower is better except for the share under 11.25 degrees.
METRICS = (
    ("mean", "mean (deg)"),
    ("median", "median (deg)"),
    ("under_11.25", "% < 11.25 deg"),
    ("temporal_change", "temporal change (deg)"),
    ("reprojection", "reprojection (deg)"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=os.path.join(REPO, "runs", "reproduce_small"))
    parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="Training seeds (model init, batches); default 0 1 (0 with --smoke).",
    )
    parser.add_argument("--jobs", type=int, default=2, help="Seeds trained side by side, each on its share of cores.")
    data = parser.add_argument_group("data")
    data.add_argument("--size", type=int, default=64, help="Square frame size of the rendered clips.")
    data.add_argument("--train-clips", type=int, default=48)
    data.add_argument("--train-frames", type=int, default=14)
    data.add_argument("--prior-clips", type=int, default=96, help="RGB clips of the video prior (14 frames each).")
    data.add_argument("--eval-clips", type=int, default=6)
    data.add_argument(
        "--eval-frames", type=int, default=28, help="Held-out clip length; 2 windows exactly, so overlap 0 tiles it."
    )
    data.add_argument("--noise-std", type=float, default=0.08)
    data.add_argument("--flicker", type=float, default=0.25)
    data.add_argument("--occluders", type=int, default=2)
    data.add_argument("--motion-blur", type=float, default=1.0)
    data.add_argument("--flat-light", type=float, default=0.25)
    steps = parser.add_argument_group("steps and learning rates")
    steps.add_argument("--teacher-steps", type=int, default=1000)
    steps.add_argument("--prior-vae-steps", type=int, default=400)
    steps.add_argument("--prior-unet-steps", type=int, default=1000)
    steps.add_argument("--vae-steps", type=int, default=800)
    steps.add_argument("--stage1-steps", type=int, default=800)
    steps.add_argument("--stage2-steps", type=int, default=500)
    steps.add_argument("--prior-lr", type=float, default=5e-4)
    steps.add_argument("--vae-lr", type=float, default=5e-4)
    steps.add_argument("--stage1-lr", type=float, default=5e-4)
    steps.add_argument("--stage2-lr", type=float, default=2e-4)
    steps.add_argument(
        "--p-mean",
        type=float,
        default=4.0,
        help="ln(sigma) mean of the prior and of stage 1 (the scripts' --p_mean; see RESULTS.md for why not 0.7).",
    )
    steps.add_argument("--p-std", type=float, default=1.6, help="ln(sigma) std of the prior and stage 1 (--p_std).")
    steps.add_argument("--sfr-hidden-dim", type=int, default=256, help="SFR projector width (2048 at SVD-xt size).")
    parser.add_argument("--window-size", type=int, default=14)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="A few steps per stage and tiny sets: checks plumbing.")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.smoke else [0, 1]
    if args.smoke:
        args.train_clips, args.train_frames, args.prior_clips, args.eval_clips, args.eval_frames = 2, 4, 2, 2, 8
        args.teacher_steps, args.prior_vae_steps, args.prior_unet_steps = 2, 2, 2
        args.vae_steps, args.stage1_steps, args.stage2_steps = 2, 2, 2
        args.window_size, args.overlap = 4, 1
    if args.jobs < 1:
        parser.error(f"--jobs is {args.jobs}; use at least 1.")
    return args


def nuisances_of(args) -> Nuisances:
    return Nuisances(
        noise_std=args.noise_std,
        flicker=args.flicker,
        occluders=args.occluders,
        motion_blur=args.motion_blur,
        flat_light=args.flat_light,
    )


def run_script(name: str, arguments: list[str], log_path: str, threads: int) -> float:
    """Run `training/<name>.py` in a fresh process on `threads` threads; return its wall time (output to
    `log_path`)."""
    command = [sys.executable, os.path.join(REPO, "training", f"{name}.py"), *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(shlex.join(command) + "\n\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {result.returncode}); see {log_path}")
    return time.perf_counter() - start


class SeedTrainer:
    """Every training of one seed, in order: the video prior, then the three runs of the normal recipe."""

    def __init__(self, args, seed: int, data: dict, teacher: str, threads: int):
        self.args, self.seed, self.data, self.teacher, self.threads = args, seed, data, teacher, threads
        self.root = os.path.join(os.path.abspath(args.work_dir), f"seed{seed}")
        self.timings: dict[str, float] = {}

    def _train(self, script: str, name: str, start_from: str, steps: int, lr: float, data: str, extra=()) -> str:
        args = self.args
        output = os.path.join(self.root, "models", name)
        arguments = [
            "--pretrained_model_name_or_path", start_from,
            "--train_data_dir", data,
            "--output_dir", output,
            "--height", str(args.size), "--width", str(args.size),
            "--max_train_steps", str(steps),
            "--learning_rate", str(lr),
            "--lr_warmup_steps", str(min(100, max(1, steps // 10))),
            "--seed", str(self.seed),
            "--report_to", "none",
            "--checkpointing_steps", "100000",
            *extra,
        ]  # fmt: skip
        seconds = run_script(script, arguments, os.path.join(self.root, f"{name}.log"), self.threads)
        self.timings[name] = seconds
        print(f"seed {self.seed}: {name} ({steps} steps) in {seconds:.0f} s", flush=True)
        return output

    def run(self) -> dict:
        """Train everything; return `{"models": {name: folder}, "timings": {...}}`."""
        args = self.args
        os.makedirs(self.root, exist_ok=True)
        untrained = os.path.join(self.root, "models", "untrained")
        tiny_pipeline(seed=self.seed).save_pretrained(untrained)
        noise = ["--p_mean", str(args.p_mean), "--p_std", str(args.p_std)]

        # The video prior, on RGB clips.
        prior_vae = self._train(
            "pretrain_vae", "prior_vae", untrained, args.prior_vae_steps, args.prior_lr, self.data["prior"]
        )
        prior = self._train(
            "pretrain_video_unet", "prior", prior_vae, args.prior_unet_steps, args.prior_lr, self.data["prior"], noise
        )

        # The normal recipe from each start: the VAE decoder (shared by both runs that start from the prior),
        # stage 1, stage 2.
        models = {}
        decoders = {}
        for name, _, from_prior, sfr in RUNS:
            start = "prior" if from_prior else "random"
            if start not in decoders:
                decoders[start] = self._train(
                    "train_vae_decoder",
                    f"vae_{start}",
                    prior if from_prior else untrained,
                    args.vae_steps,
                    args.vae_lr,
                    self.data["train"],
                )
            regularisation = ["--lambda_reg", "0"]
            if sfr:
                regularisation = ["--dino_model", self.teacher, "--lambda_reg", "0.5"]
                regularisation += ["--sfr_hidden_dim", str(args.sfr_hidden_dim)]
            train = self.data["train"]
            stage1 = self._train(
                "train_stage1", f"{name}_stage1", decoders[start], args.stage1_steps, args.stage1_lr, train,
                noise + regularisation,
            )  # fmt: skip
            stage2 = self._train(
                "train_stage2", f"{name}_stage2", stage1, args.stage2_steps, args.stage2_lr, train,
                regularisation,
            )  # fmt: skip
            models[f"{name}_stage1"], models[f"{name}_stage2"] = stage1, stage2
        return {"models": models, "timings": self.timings}


# The evaluations of each seed: (row key, model, window size, overlap).
def evaluation_plan(args) -> list[tuple[str, str, int, int]]:
    plan = []
    for name, _, _, _ in RUNS:
        plan.append((f"{name}_stage2", f"{name}_stage2", args.window_size, args.overlap))
        plan.append((f"{name}_stage2_per_frame", f"{name}_stage2", 1, 0))
        plan.append((f"{name}_stage2_no_overlap", f"{name}_stage2", args.window_size, 0))
        plan.append((f"{name}_stage1", f"{name}_stage1", args.window_size, args.overlap))
    return plan


def row_label(key: str, args) -> str:
    labels = {name: label for name, label, _, _ in RUNS}
    for name in labels:
        if key.startswith(name):
            rest = key[len(name) + 1 :]
            stage = "stage 1" if rest.startswith("stage1") else "stage 2"
            if rest.endswith("per_frame"):
                mode = "per frame (window 1)"
            elif rest.endswith("no_overlap"):
                mode = f"windows {args.window_size}, overlap 0"
            else:
                mode = f"windows {args.window_size}, overlap {args.overlap}"
            return f"{labels[name]}, {stage}, {mode}"
    raise ValueError(f"unknown row {key!r}")


def constant_baseline(eval_root: str) -> dict:
    """Scores of predicting (0, 0, 1) (facing the camera) everywhere: the floor any trained model must beat."""
    records = {}
    for folder in list_clips(eval_root):
        clip = load_clip(folder)
        prediction = np.zeros(clip["normal"].shape, np.float32)
        prediction[..., 2] = 1.0
        records[os.path.basename(folder)] = score_clip(prediction, clip)
    return pool_clips(records)


def metric_values(total: dict) -> dict:
    normals = total["normals"]
    return {
        "mean": normals["mean"],
        "median": normals["median"],
        "under_11.25": normals["under_11.25"],
        "temporal_change": total["temporal_change"],
        "reprojection": total["reprojection"],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    timings = {}
    nuisances = nuisances_of(args)
    # Every job, this process's own work included (the teacher, evaluation), gets its share of the cores: OpenMP
    # threads that outnumber free cores (a neighbour's process holds one) slow to a crawl.
    jobs = min(args.jobs, len(args.seeds))
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    torch.set_num_threads(threads)

    # 1. Data: three sets from different seeds, all with the same nuisances.
    t = time.perf_counter()
    data = {name: os.path.join(work, "data", name) for name in ("train", "prior", "heldout")}
    render_dataset(data["train"], args.train_clips, args.train_frames, args.size, args.size, 0, nuisances)
    render_dataset(data["prior"], args.prior_clips, 14, args.size, args.size, 2000, nuisances)
    render_dataset(data["heldout"], args.eval_clips, args.eval_frames, args.size, args.size, 1000, nuisances)
    timings["render"] = time.perf_counter() - t

    # 2. The semantic teacher of SFR, trained once, frozen for every run.
    t = time.perf_counter()
    teacher = os.path.join(work, "models", "semantic_teacher")
    teacher_metrics = train_semantic_teacher(
        teacher,
        size=args.size,
        num_clips=2 if args.smoke else 320,
        heldout_clips=2 if args.smoke else 16,
        steps=args.teacher_steps,
        seed=0,
        nuisances=nuisances,
    )
    timings["semantic teacher"] = time.perf_counter() - t
    print(f"semantic teacher: {json.dumps(teacher_metrics)}", flush=True)

    # 3. Training, seeds side by side.
    t = time.perf_counter()
    trainers = [SeedTrainer(args, seed, data, teacher, threads) for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        trained = dict(zip(args.seeds, pool.map(SeedTrainer.run, trainers)))
    timings["training"] = time.perf_counter() - t

    # 4. Evaluation on the held-out set.
    t = time.perf_counter()
    scores = {seed: {} for seed in args.seeds}
    for seed in args.seeds:
        for key, model, window_size, overlap in evaluation_plan(args):
            report = evaluate_model(
                trained[seed]["models"][model],
                data["heldout"],
                os.path.join(work, f"seed{seed}", "eval", key),
                window_size=window_size,
                overlap=overlap,
                resume=False,
                show_progress=False,
            )
            scores[seed][key] = metric_values(report["total"])
    baseline = metric_values(constant_baseline(data["heldout"]))
    timings["evaluation"] = time.perf_counter() - t
    total_seconds = time.perf_counter() - started
    # CPU time of this process and of the training processes: what the run costs whatever else shares the cores.
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu_seconds = sum(u.ru_utime + u.ru_stime for u in usage)

    outcome = {
        "scores": scores,
        "baseline": baseline,
        "teacher": teacher_metrics,
        "timings": timings,
        "training_timings": {seed: trained[seed]["timings"] for seed in args.seeds},
        "seconds": total_seconds,
        "cpu_seconds": cpu_seconds,
    }
    with atomic_output(os.path.join(work, "results.json")) as temporary, open(temporary, "w") as handle:
        json.dump(outcome, handle, indent=1)
    write_results(args, outcome, argv, threads)
    return outcome


# --------------------------------------------------------------------------------------------------------------
# Spread over seeds, comparisons, the Markdown report
# --------------------------------------------------------------------------------------------------------------


def spread(values: list[float | None]) -> tuple[float, float, float, float] | None:
    """(mean, half range, min, max) over seeds, or None when a value is undefined."""
    if any(v is None for v in values):
        return None
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float((array.max() - array.min()) / 2), float(array.min()), float(array.max())


def compare(scores: dict, key_a: str, key_b: str, metric: str) -> dict | None:
    """How row `key_a` differs from row `key_b` on `metric` over the seeds.

    `delta` is the mean over seeds of the paired difference a - b; `per_seed` lists them. `beyond_spread`: the
    ranges of a and b over seeds do not overlap. `consistent`: every seed's difference has the same sign (and is
    not zero)."""
    a = [scores[seed][key_a][metric] for seed in scores]
    b = [scores[seed][key_b][metric] for seed in scores]
    if any(v is None for v in a + b):
        return None
    differences = [x - y for x, y in zip(a, b)]
    delta = float(np.mean(differences))
    beyond = max(a) < min(b) or max(b) < min(a)
    consistent = all(d > 0 for d in differences) or all(d < 0 for d in differences)
    return {"delta": delta, "per_seed": differences, "beyond_spread": beyond, "consistent": consistent}


# The comparisons that test the paper's claims: (claim, row a, row b).
COMPARISONS = (
    ("video prior vs random init (stage 2, windows)", "prior_sfr_stage2", "random_sfr_stage2"),
    ("video prior vs random init (stage 1, windows)", "prior_sfr_stage1", "random_sfr_stage1"),
    ("windows vs per frame (prior + SFR, stage 2)", "prior_sfr_stage2", "prior_sfr_stage2_per_frame"),
    ("windows vs per frame (random init + SFR, stage 2)", "random_sfr_stage2", "random_sfr_stage2_per_frame"),
    ("overlap vs no overlap (prior + SFR, stage 2)", "prior_sfr_stage2", "prior_sfr_stage2_no_overlap"),
    ("SFR on vs off (prior, stage 2)", "prior_sfr_stage2", "prior_nosfr_stage2"),
    ("SFR on vs off (prior, stage 1)", "prior_sfr_stage1", "prior_nosfr_stage1"),
    ("stage 2 vs stage 1 (prior + SFR)", "prior_sfr_stage2", "prior_sfr_stage1"),
    ("stage 2 vs stage 1 (random init + SFR)", "random_sfr_stage2", "random_sfr_stage1"),
    ("stage 2 vs stage 1 (prior, no SFR)", "prior_nosfr_stage2", "prior_nosfr_stage1"),
)


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _spread_cell(summary) -> str:
    if summary is None:
        return "n/a"
    mean, half, _, _ = summary
    return f"{mean:.2f} ± {half:.2f}"


def _difference_cell(comparison) -> str:
    """`-1.23 (-1.40, -1.06)`: mean paired difference (per seed); bold when the seed ranges do not overlap, a
    trailing `~` when the seeds disagree on the sign."""
    if comparison is None:
        return "n/a"
    per_seed = ", ".join(f"{d:+.2f}" for d in comparison["per_seed"])
    text = f"{comparison['delta']:+.2f} ({per_seed})"
    if comparison["beyond_spread"]:
        return f"**{text}**"
    return text if comparison["consistent"] else f"{text} ~"


def write_results(args, outcome: dict, argv, threads: int) -> None:
    scores, seeds = outcome["scores"], list(outcome["scores"])
    command = shlex.join(["python", "benchmarks/reproduce_small.py", *(argv if argv is not None else sys.argv[1:])])
    teacher = outcome["teacher"]
    per_seed = list(outcome["training_timings"].values())[0]
    lines = [
        "# Small-scale reproduction",
        "",
        f"Command: `{command}`. Total time {outcome['seconds'] / 60:.1f} min (CPU time "
        f"{outcome['cpu_seconds'] / 60:.1f} min) on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}); seeds {seeds}, "
        f"{min(args.jobs, len(seeds))} at a time on {threads} thread(s) each.",
        "",
        f"Data (64x64 synthetic clips with exact normals, depth and poses; every set rendered with per-frame sensor "
        f"noise up to {args.noise_std}, exposure flicker ±{args.flicker}, {args.occluders} moving occluders, motion "
        f"blur up to {args.motion_blur} of the frame interval, and {args.flat_light:.0%} of the clips flat-lit and "
        f"untextured): {args.train_clips} training clips of {args.train_frames} frames, {args.prior_clips} RGB "
        f"clips of 14 frames for the video prior, {args.eval_clips} held-out clips of {args.eval_frames} frames. "
        f"Models: the tiny components, random CLIP. Steps: video prior VAE {args.prior_vae_steps} + UNet "
        f"{args.prior_unet_steps} (lr {args.prior_lr}); VAE decoder {args.vae_steps} (lr {args.vae_lr}); stage 1 "
        f"{args.stage1_steps} (lr {args.stage1_lr}); stage 2 {args.stage2_steps} (lr {args.stage2_lr}); "
        f"ln sigma ~ N({args.p_mean}, {args.p_std}^2) for the prior and stage 1. SFR: lambda 0.5, projector width "
        f"{args.sfr_hidden_dim}, target the semantic teacher ({args.teacher_steps} steps; held-out patch accuracy "
        f"{teacher['kind']:.0%} on object kind against {teacher['kind_constant_guess']:.0%} for a constant guess, "
        f"{teacher['material']:.0%} on material against {teacher['material_constant_guess']:.0%}). Evaluation: one "
        "step, pixels pooled over the held-out set.",
        "",
        f"Every figure: mean over the {len(seeds)} seeds ± half their range.",
        "",
        "| model | " + " | ".join(heading for _, heading in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    baseline = outcome["baseline"]
    lines.append("| constant (0, 0, 1) | " + " | ".join(_cell(baseline[key]) for key, _ in METRICS) + " |")
    for key, _, _, _ in evaluation_plan(args):
        cells = [_spread_cell(spread([scores[seed][key][metric] for seed in seeds])) for metric, _ in METRICS]
        lines.append(f"| {row_label(key, args)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Differences (a - b; negative is better except for % < 11.25): the mean of the per-seed differences, then "
        "each seed's in brackets. **Bold**: larger than the spread (the seed ranges of a and b do not overlap). "
        "`~`: the seeds disagree on the sign.",
        "",
        "| a vs b | " + " | ".join(heading for _, heading in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for claim, key_a, key_b in COMPARISONS:
        cells = [_difference_cell(compare(scores, key_a, key_b, metric)) for metric, _ in METRICS]
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    phases = ", ".join(f"{name} {seconds:.0f}" for name, seconds in outcome["timings"].items())
    trainings = ", ".join(f"{name} {seconds:.0f}" for name, seconds in per_seed.items())
    lines += ["", f"Time (s): {phases}. One seed's trainings (s): {trainings}.", ""]
    if os.path.exists(args.results):
        with open(args.results) as handle:
            previous = handle.read()
        if COMMENTARY_MARKER in previous:
            lines += [COMMENTARY_MARKER + previous.split(COMMENTARY_MARKER, 1)[1].rstrip("\n"), ""]
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with atomic_output(args.results) as temporary, open(temporary, "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


# Text below this line in an existing results file (the reading of the figures) is kept when the table is rewritten.
COMMENTARY_MARKER = "<!-- commentary: kept when the table above is rewritten -->"


if __name__ == "__main__":
    main()
