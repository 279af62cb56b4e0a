"""The command line of the training scripts: the arguments they share (defaults are the paper's settings, which
each script overrides for its stage), their checks, and the checks of the folders a run needs, all done before any
model is loaded."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

from ..formats.layouts import open_layout
from ..normalcrafter_checks import DEFAULT_BASE_MODEL_ID
from .checkpointing import checkpoint_to_resume
from .data import NormalClipDataset
from .memory_plan import add_dry_run_options, print_dry_run
from .sfr import DEFAULT_DINO_MODEL


def build_parser(
    docstring: str,
    *,
    stage: str,
    sfr: bool,
    learning_rate: float,
    max_train_steps: int,
    max_num_frames: int,
    min_num_frames: int = 1,
    validation: bool = True,
) -> argparse.ArgumentParser:
    """The argument parser of a training script, described by the first line of its `docstring`; the keyword
    arguments are the paper's settings for that stage, `sfr` adds the Semantic Feature Regularization flags, and
    `validation` the flags of validation on normal clips (the video-prior stages predict no normals); `stage` names
    the stage for the memory plan (`--dry_run`, `memory_plan.plan_memory`)."""
    parser = argparse.ArgumentParser(description=docstring.strip().splitlines()[0])
    parser.set_defaults(stage=stage)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        required=True,
        help="Pipeline folder (`NormalCrafterPipeline.save_pretrained`) or Hub id: the starting weights.",
    )
    model.add_argument(
        "--base_model",
        type=str,
        default=DEFAULT_BASE_MODEL_ID,
        help="Completes a repo holding only unet/ and vae/ (CLIP encoder, scheduler).",
    )
    model.add_argument("--revision", type=str, default=None)
    model.add_argument("--variant", type=str, default=None, help="Weight variant to load, e.g. fp16.")

    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_data_dir",
        type=str,
        nargs="+",
        required=True,
        help=(
            "One or more dataset roots: a folder of clip folders, or LAYOUT:PATH for a set as published "
            "(hypersim:, matrixcity:, kenburns:, rendered:; see training/README.md, 'Data')."
        ),
    )
    data.add_argument(
        "--train_data_weights", type=float, nargs="+", default=None, help="Sampling weight per root (default: equal)."
    )
    data.add_argument("--height", type=int, default=512, help="Crop height (a multiple of 64).")
    data.add_argument("--width", type=int, default=512, help="Crop width (a multiple of 64).")
    data.add_argument("--min_num_frames", type=int, default=min_num_frames)
    data.add_argument("--max_num_frames", type=int, default=max_num_frames)
    data.add_argument("--max_scale", type=float, default=1.25, help="Random zoom up to this factor before cropping.")
    data.add_argument("--no_random_flip", action="store_true", help="Disable left-right flips.")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train_batch_size", type=int, default=1, help="Clips per device per step.")
    optim.add_argument("--max_train_steps", type=int, default=max_train_steps)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--gradient_checkpointing", action="store_true")
    optim.add_argument("--learning_rate", type=float, default=learning_rate)
    optim.add_argument("--lr_warmup_steps", type=int, default=100)
    optim.add_argument(
        "--lr_final_ratio",
        type=float,
        default=0.1,
        help="Exponential decay after warm-up reaches learning_rate * this at max_train_steps.",
    )
    optim.add_argument("--adam_beta1", type=float, default=0.9)
    optim.add_argument("--adam_beta2", type=float, default=0.999)
    optim.add_argument("--adam_weight_decay", type=float, default=1e-2)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables clipping.")
    optim.add_argument("--use_8bit_adam", action="store_true", help="bitsandbytes' AdamW8bit.")
    optim.add_argument("--use_ema", action="store_true", help="Keep an EMA of the trained model; save it at the end.")
    optim.add_argument("--ema_decay", type=float, default=0.9999)
    optim.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Overrides the accelerate config; frozen models run in this precision.",
    )
    optim.add_argument("--allow_tf32", action="store_true")
    optim.add_argument("--seed", type=int, default=0)

    if sfr:
        reg = parser.add_argument_group("semantic feature regularization")
        reg.add_argument(
            "--dino_model",
            type=str,
            default=DEFAULT_DINO_MODEL,
            help="DINOv2 checkpoint (transformers Dinov2Model) giving the target features.",
        )
        reg.add_argument("--lambda_reg", type=float, default=0.5, help="Weight of L_reg; 0 disables SFR.")
        reg.add_argument("--sfr_hidden_dim", type=int, default=2048)
        reg.add_argument("--sfr_block_index", type=int, default=1, help="Tap the output of unet.up_blocks[i].")

    run = parser.add_argument_group("checkpoints, logging, validation")
    run.add_argument("--output_dir", type=str, required=True)
    run.add_argument("--logging_dir", type=str, default="logs", help="Tensorboard folder, inside output_dir.")
    run.add_argument("--report_to", type=str, default="tensorboard", help="tensorboard, wandb, all or none.")
    run.add_argument("--tracker_project_name", type=str, default="normalcrafter")
    run.add_argument("--checkpointing_steps", type=int, default=500)
    run.add_argument("--checkpoints_total_limit", type=int, default=None)
    run.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="A checkpoint folder, or `latest` (the newest checkpoint-* in output_dir).",
    )
    if validation:
        run.add_argument(
            "--validation_data_dir",
            type=str,
            default=None,
            help="Dataset root of validation clips (a folder of clip folders or LAYOUT:PATH).",
        )
        run.add_argument("--validation_steps", type=int, default=500)
        run.add_argument("--num_validation_clips", type=int, default=2)
        run.add_argument("--validation_num_frames", type=int, default=8)
    else:
        parser.set_defaults(validation_data_dir=None)
    add_dry_run_options(parser)
    return parser


def add_noise_level_options(parser: argparse.ArgumentParser, title: str) -> None:
    """EDM's training noise levels, ln(sigma) ~ N(--p_mean, --p_std^2), as the stages that denoise latents take
    them (`check_args` rejects a non-positive --p_std)."""
    group = parser.add_argument_group(title)
    group.add_argument("--p_mean", type=float, default=0.7, help="Mean of ln(sigma).")
    group.add_argument("--p_std", type=float, default=1.6, help="Standard deviation of ln(sigma).")


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Validate parsed arguments; raise `ValueError` naming the flag, its value and the fix."""
    positive = (
        "train_batch_size",
        "max_train_steps",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "validation_steps",
        "num_validation_clips",
        "validation_num_frames",
        "min_num_frames",
    )
    for name in positive:
        if hasattr(args, name) and getattr(args, name) < 1:
            raise ValueError(f"`--{name}` is {getattr(args, name)}; it must be at least 1.")
    if args.max_num_frames < args.min_num_frames:
        raise ValueError(
            f"`--max_num_frames` ({args.max_num_frames}) is below `--min_num_frames` "
            f"({args.min_num_frames}); raise it."
        )
    for name in ("height", "width"):
        if getattr(args, name) < 64 or getattr(args, name) % 64:
            raise ValueError(f"`--{name}` is {getattr(args, name)}; use a positive multiple of 64.")
    if args.learning_rate <= 0:
        raise ValueError(f"`--learning_rate` is {args.learning_rate}; it must be positive.")
    if args.train_data_weights is not None and len(args.train_data_weights) != len(args.train_data_dir):
        raise ValueError(
            f"`--train_data_weights` has {len(args.train_data_weights)} values for "
            f"{len(args.train_data_dir)} `--train_data_dir` roots; give one weight per root."
        )
    if args.train_data_weights is not None and (
        any(w < 0 for w in args.train_data_weights) or sum(args.train_data_weights) <= 0
    ):
        raise ValueError(
            f"`--train_data_weights` is {args.train_data_weights}; weights must be >= 0 with a positive sum."
        )
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"`--checkpoints_total_limit` is {args.checkpoints_total_limit}; use at least 1 or omit it.")
    if getattr(args, "p_std", 1.0) <= 0:
        raise ValueError(f"`--p_std` is {args.p_std}; it must be positive.")
    if args.dry_run_num_gpus < 1:
        raise ValueError(f"`--dry_run_num_gpus` is {args.dry_run_num_gpus}; it must be at least 1.")
    if getattr(args, "lambda_reg", 0.0) < 0:
        raise ValueError(f"`--lambda_reg` is {args.lambda_reg}; it must be >= 0 (0 disables SFR).")
    return args


def check_paths(args: argparse.Namespace) -> None:
    """Check the data and folders a run needs before any model is loaded (a missing dataset must not hide behind a
    model download): every `--train_data_dir` root opens as its layout with every frame's files present, frame 0 of
    up to 8 sequences per root decodes with maps of the frame's size, sequences shorter than `--min_num_frames` are
    skipped (counted in a warning) while others remain; `--validation_data_dir` holds clips, `--output_dir` can be
    created and written, and a `--resume_from_checkpoint` path exists. Raises `FileNotFoundError` or `ValueError`
    naming the flag, the value or file and the fix (an ImportError for a missing optional reader package)."""
    try:
        dataset = NormalClipDataset(
            args.train_data_dir, args.height, args.width, args.train_data_weights, min_num_frames=args.min_num_frames
        )
        dataset.check_frames(per_root=8)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"`--train_data_dir`: {error}") from None
    except ValueError as error:
        raise ValueError(f"`--train_data_dir`: {error}") from None
    if args.validation_data_dir:
        try:
            open_layout(args.validation_data_dir, with_depth=False)[0].load(0)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"`--validation_data_dir`: {error}") from None
        except ValueError as error:
            raise ValueError(f"`--validation_data_dir`: {error}") from None
    checkpoint_to_resume(args)
    try:
        os.makedirs(args.output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=args.output_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ValueError(
            f"`--output_dir` {args.output_dir!r} cannot be written ({error.strerror or error}); pick a writable "
            "folder."
        ) from None


def run_script(parse_args: Callable, main: Callable, argv: Sequence[str] | None = None) -> int:
    """Entry point of a training script: parse and check the arguments and folders (`check_args`, `check_paths`),
    reporting a problem as one line (exit status 2) before any model is loaded, then run `main(args)`. With
    `--dry_run`, print the memory plan instead and return before any weight or data is read."""
    try:
        args = parse_args(argv)
        if args.dry_run:
            print_dry_run(args)
            return 0
        check_paths(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    main(args)
    return 0
