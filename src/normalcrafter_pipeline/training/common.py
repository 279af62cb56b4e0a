"""Pieces shared by the three training scripts: arguments, accelerator, data, optimiser, checkpoints, the loop,
validation and the final pipeline folder."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed

from ..formats.clips import clip_num_frames, list_clips, load_clip
from ..pipeline_normalcrafter import DEFAULT_BASE_MODEL_ID, NormalCrafterPipeline
from .data import ClipBatchSampler, NormalClipDataset
from .losses import mean_angular_error_deg
from .schedule import get_warmup_exponential_scheduler
from .sfr import DEFAULT_DINO_MODEL

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


def build_parser(
    description: str,
    learning_rate: float,
    max_train_steps: int,
    min_num_frames: int,
    max_num_frames: int,
    sfr: bool,
) -> argparse.ArgumentParser:
    """The argument parser of a training script; defaults are the paper's settings for that stage."""
    parser = argparse.ArgumentParser(description=description)
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
        help="One or more dataset roots (folders of clip folders, see training/README.md).",
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
    run.add_argument("--validation_data_dir", type=str, default=None, help="Dataset root of validation clips.")
    run.add_argument("--validation_steps", type=int, default=500)
    run.add_argument("--num_validation_clips", type=int, default=2)
    run.add_argument("--validation_num_frames", type=int, default=8)
    return parser


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
        if getattr(args, name) < 1:
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
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"`--checkpoints_total_limit` is {args.checkpoints_total_limit}; use at least 1 or omit it.")
    if getattr(args, "lambda_reg", 0.0) < 0:
        raise ValueError(f"`--lambda_reg` is {args.lambda_reg}; it must be >= 0 (0 disables SFR).")
    return args


def check_paths(args: argparse.Namespace) -> None:
    """Check the folders a run needs before any model is loaded (a missing dataset must not hide behind a model
    download): every `--train_data_dir` root and `--validation_data_dir` holds clips, `--output_dir` can be
    created and written, and a `--resume_from_checkpoint` path exists. Raises `FileNotFoundError` or `ValueError`
    naming the flag, the value and the fix."""
    for root in args.train_data_dir:
        try:
            list_clips(root)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"`--train_data_dir`: {error}") from None
    if args.validation_data_dir:
        try:
            list_clips(args.validation_data_dir)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"`--validation_data_dir`: {error}") from None
    resume = args.resume_from_checkpoint
    if resume and resume != "latest" and not os.path.isdir(resume):
        raise FileNotFoundError(
            f"`--resume_from_checkpoint` is {resume!r}, which is not a folder; pass a checkpoint-<step> folder or "
            "`latest`."
        )
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
    reporting a problem as one line (exit status 2) before any model is loaded, then run `main(args)`."""
    try:
        args = parse_args(argv)
        check_paths(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    main(args)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Accelerator, models, data, optimiser
# ----------------------------------------------------------------------------------------------------------------


def create_accelerator(args: argparse.Namespace) -> Accelerator:
    """An `Accelerator` writing logs under `output_dir/logging_dir`, seeded, with logging configured."""
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=project_config,
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    logger.info(accelerator.state, main_process_only=False)
    import diffusers
    import transformers

    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_info()
    else:
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()
    set_seed(args.seed, device_specific=True)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    return accelerator


def weight_dtype_of(accelerator: Accelerator) -> torch.dtype:
    """The dtype frozen models run in under the accelerator's mixed precision."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def load_pipeline(args: argparse.Namespace) -> NormalCrafterPipeline:
    """The starting pipeline (fp32 weights; trainable parts stay fp32, frozen ones are cast by the scripts)."""
    return NormalCrafterPipeline.from_pretrained(
        args.pretrained_model_name_or_path, base_model=args.base_model, revision=args.revision, variant=args.variant
    )


def create_dataloader(args: argparse.Namespace, accelerator: Accelerator):
    """`(dataset, batch_sampler, dataloader)`; every batch holds clips of one length in
    `[min_num_frames, max_num_frames]`."""
    dataset = NormalClipDataset(
        args.train_data_dir,
        height=args.height,
        width=args.width,
        weights=args.train_data_weights,
        max_scale=args.max_scale,
        random_flip=not args.no_random_flip,
    )
    # An epoch draws about as many clips as the dataset holds, split over the processes.
    num_batches = max(math.ceil(len(dataset) / args.train_batch_size), accelerator.num_processes)
    sampler = ClipBatchSampler(
        dataset, args.train_batch_size, num_batches, args.min_num_frames, args.max_num_frames, seed=args.seed
    )
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=args.dataloader_num_workers, pin_memory=torch.cuda.is_available()
    )
    return dataset, sampler, dataloader


def create_optimizer(args: argparse.Namespace, parameters) -> torch.optim.Optimizer:
    """AdamW (or bitsandbytes' AdamW8bit with `--use_8bit_adam`)."""
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise ImportError(
                "`--use_8bit_adam` needs bitsandbytes, which is not installed: run `pip install bitsandbytes` "
                "(CUDA only), or drop the flag to use torch's AdamW."
            ) from error
        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    return optimizer_class(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )


def create_lr_scheduler(args: argparse.Namespace, optimizer, accelerator: Accelerator):
    """Warm-up then exponential decay; accelerate steps a prepared scheduler once per process, hence the scaling."""
    return get_warmup_exponential_scheduler(
        optimizer,
        warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        total_steps=args.max_train_steps * accelerator.num_processes,
        final_ratio=args.lr_final_ratio,
    )


def create_ema(args: argparse.Namespace, model: torch.nn.Module):
    """An `EMAModel` of `model` when `--use_ema`, else None."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=args.ema_decay, model_cls=type(model), model_config=model.config)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def _unwrap(model):
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def register_checkpoint_hooks(accelerator: Accelerator, named_models: dict, ema=None, ema_name: str | None = None):
    """Make `accelerator.save_state` write each prepared model as a `save_pretrained` folder named by its key in
    `named_models` (and the EMA as `<ema_name>`), and `load_state` read them back."""
    by_id = {id(_unwrap(model)): name for name, model in named_models.items()}

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                _unwrap(model).save_pretrained(os.path.join(output_dir, by_id[id(_unwrap(model))]))
                if weights:
                    weights.pop()
            if ema is not None:
                ema.save_pretrained(os.path.join(output_dir, ema_name))

    def load_hook(models, input_dir):
        if ema is not None:
            loaded = type(ema).from_pretrained(os.path.join(input_dir, ema_name), ema.model_cls)
            ema.load_state_dict(loaded.state_dict())
            ema.to(accelerator.device)
        while models:
            model = _unwrap(models.pop())
            loaded = type(model).from_pretrained(input_dir, subfolder=by_id[id(model)])
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def list_checkpoints(output_dir: str) -> list[str]:
    """`checkpoint-<step>` folder names in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [d for d in os.listdir(output_dir) if d.startswith(CHECKPOINT_PREFIX)]
    return sorted(names, key=lambda d: int(d[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(accelerator: Accelerator, args: argparse.Namespace, global_step: int) -> None:
    """Save `checkpoint-<global_step>`, first pruning the oldest so at most `checkpoints_total_limit` remain."""
    if not accelerator.is_main_process:
        return
    if args.checkpoints_total_limit is not None:
        checkpoints = list_checkpoints(args.output_dir)
        excess = len(checkpoints) - args.checkpoints_total_limit + 1
        if excess > 0:
            logger.info(f"Removing {excess} old checkpoint(s): {', '.join(checkpoints[:excess])}")
            for name in checkpoints[:excess]:
                shutil.rmtree(os.path.join(args.output_dir, name))
    path = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}{global_step}")
    accelerator.save_state(path)
    logger.info(f"Saved state to {path}")


def maybe_resume(accelerator: Accelerator, args: argparse.Namespace) -> int:
    """Load `--resume_from_checkpoint` (a path or `latest`) and return the global step to continue from."""
    if not args.resume_from_checkpoint:
        return 0
    if args.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(args.output_dir)
        if not checkpoints:
            logger.info("No checkpoint to resume from in the output folder; starting a new training run.")
            return 0
        path = os.path.join(args.output_dir, checkpoints[-1])
    else:
        path = args.resume_from_checkpoint
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"`--resume_from_checkpoint` is {path!r}, which is not a folder; pass a checkpoint-<step> folder or "
                "`latest`."
            )
    logger.info(f"Resuming from checkpoint {path}")
    accelerator.load_state(path)
    return int(os.path.basename(os.path.normpath(path))[len(CHECKPOINT_PREFIX) :])


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------


def batch_to(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def train_loop(
    accelerator: Accelerator,
    args: argparse.Namespace,
    *,
    models: Sequence[torch.nn.Module],
    parameters: Sequence[torch.nn.Parameter],
    optimizer,
    lr_scheduler,
    dataloader,
    sampler: ClipBatchSampler,
    compute_loss: Callable[[dict], dict],
    validate: Callable[[int, bool], None] | None = None,
    ema=None,
    ema_parameters: Sequence[torch.nn.Parameter] | None = None,
    initial_global_step: int = 0,
) -> int:
    """Run optimiser steps until `max_train_steps`, with accumulation, clipping, EMA, logging, checkpoints and
    validation. `compute_loss(batch)` returns a dict of losses with the total under `"loss"`; `ema` follows
    `ema_parameters` (all parameters of the model it was made from, frozen ones included)."""
    from tqdm.auto import tqdm

    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Clips per device = {args.train_batch_size}, total batch = {total_batch}")
    logger.info(f"  Gradient accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Optimisation steps = {args.max_train_steps} (starting at {initial_global_step})")
    global_step = initial_global_step
    sampler.epoch = initial_global_step  # a resumed run draws fresh batches
    progress = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    for model in models:
        model.train()
    while global_step < args.max_train_steps:
        for batch in dataloader:
            batch = batch_to(batch, accelerator.device)
            with accelerator.accumulate(*models):
                losses = compute_loss(batch)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(ema_parameters)
            global_step += 1
            progress.update(1)
            logs = {f"train/{name}": value.detach().item() for name, value in losses.items()}
            logs["train/lr"] = lr_scheduler.get_last_lr()[0]
            progress.set_postfix(loss=logs["train/loss"])
            accelerator.log(logs, step=global_step)
            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args, global_step)
            if validate is not None and global_step % args.validation_steps == 0 and accelerator.is_main_process:
                validate(global_step, False)
            if global_step >= args.max_train_steps:
                break
    progress.close()
    return global_step


# ----------------------------------------------------------------------------------------------------------------
# Validation and the final folder
# ----------------------------------------------------------------------------------------------------------------


def load_validation_clips(args: argparse.Namespace) -> list[dict]:
    """The first `validation_num_frames` frames of the first `num_validation_clips` clips (empty without a root)."""
    if not args.validation_data_dir:
        return []
    clips = []
    for folder in list_clips(args.validation_data_dir)[: args.num_validation_clips]:
        count = min(args.validation_num_frames, clip_num_frames(folder))
        clips.append(load_clip(folder, range(count)))
    return clips


def _normals_to_image(normals: np.ndarray) -> np.ndarray:
    return np.round((np.clip(normals, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def log_validation(
    accelerator: Accelerator,
    clips: list[dict],
    predict: Callable[[dict], np.ndarray],
    global_step: int,
    is_final_validation: bool = False,
) -> float | None:
    """Run `predict(clip) -> (F, H, W, 3)` normals on each validation clip; log the mean angular error (degrees)
    and an image grid per clip (frames, ground truth, prediction; first frame) to the trackers."""
    if not clips:
        return None
    tag = "test" if is_final_validation else "validation"
    errors, grids = [], []
    for clip in clips:
        with torch.no_grad(), accelerator.autocast():
            prediction = predict(clip)
        target = torch.from_numpy(clip["normal"]).permute(0, 3, 1, 2)
        mask = None if clip["mask"] is None else torch.from_numpy(clip["mask"])[:, None]
        errors.append(mean_angular_error_deg(torch.from_numpy(prediction).permute(0, 3, 1, 2), target, mask))
        grids.append(
            np.concatenate(
                [clip["rgb"][0], _normals_to_image(clip["normal"][0]), _normals_to_image(prediction[0])], axis=1
            )
        )
    mean_error = float(np.mean(errors))
    logger.info(f"{tag} step {global_step}: mean angular error {mean_error:.3f} degrees")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_scalar(f"{tag}/mean_angular_error_deg", mean_error, global_step)
            tracker.writer.add_images(f"{tag}/rgb_gt_pred", np.stack(grids), global_step, dataformats="NHWC")
        else:
            tracker.log({f"{tag}/mean_angular_error_deg": mean_error}, step=global_step)
    return mean_error


def pipeline_predictor(pipe: NormalCrafterPipeline) -> Callable[[dict], np.ndarray]:
    """Validation predictor running the full inference pipeline on a clip's frames."""

    def predict(clip: dict) -> np.ndarray:
        num_frames = clip["rgb"].shape[0]
        return pipe(clip["rgb"], window_size=min(14, num_frames), overlap=min(4, num_frames - 1)).normals

    return predict


def save_final_pipeline(accelerator: Accelerator, args: argparse.Namespace, pipe: NormalCrafterPipeline, **trained):
    """Write `output_dir` as a `NormalCrafterPipeline` folder: `pipe`'s components, with the `trained` ones (fp32,
    unwrapped) in place of its own."""
    components = {
        name: getattr(pipe, name) for name in ("vae", "image_encoder", "unet", "scheduler", "feature_extractor")
    }
    for name, model in trained.items():
        components[name] = _unwrap(model)
    for name, component in components.items():
        if isinstance(component, torch.nn.Module) and component.dtype != torch.float32:
            components[name] = component.to(torch.float32)
    final = NormalCrafterPipeline(**components)
    final.save_pretrained(args.output_dir)
    logger.info(f"Saved the trained pipeline to {args.output_dir}")
    return final


def create_sfr(args: argparse.Namespace, unet, accelerator: Accelerator, weight_dtype: torch.dtype):
    """`(projector, dino)` for SFR, or `(None, None)` with `--lambda_reg 0`. DINO is frozen, in `weight_dtype`."""
    if args.lambda_reg <= 0:
        return None, None
    from .sfr import DinoFeatures, SFRProjector, sfr_feature_channels

    dino = DinoFeatures.from_pretrained(args.dino_model).to(accelerator.device, dtype=weight_dtype)
    projector = SFRProjector(
        in_channels=sfr_feature_channels(unet, args.sfr_block_index),
        out_channels=dino.hidden_size,
        hidden_dim=args.sfr_hidden_dim,
    )
    return projector, dino


def freeze_encoders(pipe: NormalCrafterPipeline, accelerator: Accelerator, weight_dtype: torch.dtype) -> None:
    """Freeze the VAE and CLIP encoder and move them to the device in the mixed-precision dtype."""
    for module in (pipe.vae, pipe.image_encoder):
        module.requires_grad_(False)
        module.eval()
        module.to(accelerator.device, dtype=weight_dtype)


def init_trackers(accelerator: Accelerator, args: argparse.Namespace) -> None:
    """Start the trackers with the run's arguments (lists as strings, which tensorboard's hparams need)."""
    if accelerator.is_main_process:
        config = {k: (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in vars(args).items()}
        config = {k: v for k, v in config.items() if v is not None}
        accelerator.init_trackers(args.tracker_project_name, config=config)
