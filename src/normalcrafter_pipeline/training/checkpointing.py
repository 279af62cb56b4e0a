"""Checkpoints of a training run: `checkpoint-<step>` folders in `--output_dir` written by `accelerator.save_state`
(models as `save_pretrained` folders, through the hooks registered here), pruned to `--checkpoints_total_limit`,
and the one `--resume_from_checkpoint` names."""

from __future__ import annotations

import argparse
import os
import shutil

from accelerate import Accelerator
from accelerate.logging import get_logger

from ..normals_writers import atomic_output
from .unwrap import unwrap_model

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


def register_checkpoint_hooks(accelerator: Accelerator, named_models: dict, ema=None, ema_name: str | None = None):
    """Make `accelerator.save_state` write each prepared model as a `save_pretrained` folder named by its key in
    `named_models` (and the EMA as `<ema_name>`), and `load_state` read them back."""
    by_id = {id(unwrap_model(model)): name for name, model in named_models.items()}

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                unwrap_model(model).save_pretrained(os.path.join(output_dir, by_id[id(unwrap_model(model))]))
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
            model = unwrap_model(models.pop())
            loaded = type(model).from_pretrained(input_dir, subfolder=by_id[id(model)])
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def list_checkpoints(output_dir: str) -> list[str]:
    """`checkpoint-<step>` folder names in `output_dir`, oldest first (hidden partial ones are not checkpoints)."""
    if not os.path.isdir(output_dir):
        return []
    names = [d for d in os.listdir(output_dir) if d.startswith(CHECKPOINT_PREFIX)]
    return sorted(names, key=lambda d: int(d[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(accelerator: Accelerator, args: argparse.Namespace, global_step: int) -> None:
    """Save `checkpoint-<global_step>`, first pruning the oldest so at most `checkpoints_total_limit` remain.

    The state is written under a hidden temporary name and renamed when complete, so a run killed while saving
    leaves no half checkpoint for `--resume_from_checkpoint latest` to pick."""
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
    with atomic_output(path, is_dir=True) as partial:
        accelerator.save_state(os.fspath(partial))
    logger.info(f"Saved state to {path}")


def checkpoint_to_resume(args: argparse.Namespace) -> str | None:
    """The folder `--resume_from_checkpoint` names (`latest`: the newest checkpoint in `--output_dir`), or None
    when there is none to resume from. Raises `FileNotFoundError` for a path that is not a folder."""
    resume = args.resume_from_checkpoint
    if not resume:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(args.output_dir)
        return os.path.join(args.output_dir, checkpoints[-1]) if checkpoints else None
    if not os.path.isdir(resume):
        raise FileNotFoundError(
            f"`--resume_from_checkpoint` is {resume!r}, which is not a folder; pass a checkpoint-<step> folder or "
            "`latest`."
        )
    return resume


def resume_from_checkpoint(accelerator: Accelerator, args: argparse.Namespace) -> int:
    """Load the state `--resume_from_checkpoint` names and return the global step to continue from (0 without)."""
    path = checkpoint_to_resume(args)
    if path is None:
        if args.resume_from_checkpoint:
            logger.info("No checkpoint to resume from in the output folder; starting a new training run.")
        return 0
    logger.info(f"Resuming from checkpoint {path}")
    accelerator.load_state(path)
    return int(os.path.basename(os.path.normpath(path))[len(CHECKPOINT_PREFIX) :])
