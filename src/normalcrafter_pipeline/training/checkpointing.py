"""Checkpoints of a training run: `checkpoint-<step>` folders in `--output_dir` written by `accelerator.save_state`
on every process (under DDP or one process, models as `save_pretrained` folders through the hooks registered here;
under FSDP and DeepSpeed, accelerate's sharded states), with the data loader's position, pruned to
`--checkpoints_total_limit`, and the one `--resume_from_checkpoint` names."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType

from .unwrap import unwrap_model

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
DATA_STATE_FILE = "data_state.json"


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether the engine shards model state over processes (FSDP, DeepSpeed): then every process takes part in
    saving, and the weights are gathered to write a `save_pretrained` folder."""
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def untouched_random_streams(device: torch.device):
    """A context that leaves torch's random streams (the CPU's, and `device`'s if it is a GPU) as it found them: the
    checkpoint hooks and validation build and run models, and must not change the noise training draws next (a run
    with checkpoints or validation trains as one without)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _is_dtensor(tensor: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # PyTorch before 2.4 has no FSDP2
        return False
    return isinstance(tensor, DTensor)


def gather_shards(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor whole: those FSDP2 shards (DTensors) are gathered from every process, which must all call this;
    others are returned as they are."""
    return [tensor.full_tensor() if _is_dtensor(tensor) else tensor for tensor in tensors]


def shard_like(tensors: list[torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Whole `tensors` split into this process's shards as the tensors of `like` are (FSDP2's DTensors), in their
    dtype; tensors whose counterpart is not sharded are returned as they are."""
    if len(tensors) != len(like):
        raise ValueError(f"The EMA holds {len(tensors)} tensors, but the model it follows has {len(like)}.")
    from torch.distributed.tensor import distribute_tensor

    return [
        distribute_tensor(tensor.to(old.device, old.dtype), old.device_mesh, old.placements)
        if _is_dtensor(old)
        else tensor
        for tensor, old in zip(tensors, like)
    ]


def register_checkpoint_hooks(accelerator: Accelerator, named_models: dict, ema=None, ema_name: str | None = None):
    """Make `accelerator.save_state` write each prepared model as a `save_pretrained` folder named by its key in
    `named_models` (and the EMA as `<ema_name>`), and `load_state` read them back. Under FSDP and DeepSpeed the
    models are left to accelerate's own sharded checkpoint format (only the EMA goes through the hooks)."""
    by_id = {id(unwrap_model(model)): name for name, model in named_models.items()}
    save_models = not is_sharded(accelerator)

    @untouched_random_streams(accelerator.device)
    def save_hook(models, weights, output_dir):
        if ema is not None:
            shards = ema.shadow_params
            ema.shadow_params = gather_shards(shards)  # every process takes part in the gather
        try:
            if accelerator.is_main_process:
                for model in models if save_models else ():
                    unwrap_model(model).save_pretrained(os.path.join(output_dir, by_id[id(unwrap_model(model))]))
                    if weights:
                        weights.pop()
                if ema is not None:
                    ema.save_pretrained(os.path.join(output_dir, ema_name))
        finally:
            if ema is not None:
                ema.shadow_params = shards

    @untouched_random_streams(accelerator.device)
    def load_hook(models, input_dir):
        if ema is not None:
            shards = ema.shadow_params
            loaded = type(ema).from_pretrained(os.path.join(input_dir, ema_name), ema.model_cls)
            ema.load_state_dict(loaded.state_dict())
            ema.shadow_params = shard_like(ema.shadow_params, shards)
            ema.to(accelerator.device)
        while models and save_models:
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


def save_checkpoint(accelerator: Accelerator, args: argparse.Namespace, global_step: int, data_state: dict) -> None:
    """Save `checkpoint-<global_step>` (every process takes part: random states are per process, and sharded
    engines save their shards), first pruning the oldest so at most `checkpoints_total_limit` remain.

    `data_state` (the sampler's epoch and the batches this process has taken from it) is stored beside the state,
    so a resumed run draws the very batches an uninterrupted one would. The state is written under a hidden
    temporary name and renamed when complete, so a run killed while saving leaves no half checkpoint for
    `--resume_from_checkpoint latest` to pick."""
    path = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}{global_step}")
    partial = os.path.join(args.output_dir, f".{CHECKPOINT_PREFIX}{global_step}.partial")
    if accelerator.is_main_process:
        if args.checkpoints_total_limit is not None:
            checkpoints = list_checkpoints(args.output_dir)
            excess = len(checkpoints) - args.checkpoints_total_limit + 1
            if excess > 0:
                logger.info(f"Removing {excess} old checkpoint(s): {', '.join(checkpoints[:excess])}")
                for name in checkpoints[:excess]:
                    shutil.rmtree(os.path.join(args.output_dir, name))
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(partial, DATA_STATE_FILE), "w") as handle:
            json.dump(data_state, handle)
        if os.path.isdir(path):  # a resumed run saving a step again
            shutil.rmtree(path)
        os.replace(partial, path)
        logger.info(f"Saved state to {path}")
    accelerator.wait_for_everyone()


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


def resume_from_checkpoint(accelerator: Accelerator, args: argparse.Namespace) -> tuple[int, dict | None]:
    """Load the state `--resume_from_checkpoint` names; return the global step to continue from (0 without) and the
    saved data state (None without, or for a checkpoint written before data states were saved)."""
    path = checkpoint_to_resume(args)
    if path is None:
        if args.resume_from_checkpoint:
            logger.info("No checkpoint to resume from in the output folder; starting a new training run.")
        return 0, None
    logger.info(f"Resuming from checkpoint {path}")
    accelerator.load_state(path)
    data_state = None
    if os.path.isfile(os.path.join(path, DATA_STATE_FILE)):
        with open(os.path.join(path, DATA_STATE_FILE)) as handle:
            data_state = json.load(handle)
    return int(os.path.basename(os.path.normpath(path))[len(CHECKPOINT_PREFIX) :]), data_state
