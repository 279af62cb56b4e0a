"""Where and in which precision the model runs, and the one `load_pipeline` of every front end (the command line,
the web demo, evaluation).

Only the standard library at import (torch loads inside the functions): the command line imports `UsageError`
from here before torch loads.
"""

from __future__ import annotations

import os

from .dtypes import DTYPE_NAMES, torch_dtype

OFFLOAD_MODES = ("none", "model", "sequential")


class UsageError(ValueError):
    """An error in the options of the whole run, reported as one line (exit status 2)."""


def resolve_device(name: str, state=None):
    """The torch device for `--device name`; `state` (accelerate's `PartialState`) gives each process of a
    multi-process run its own GPU. Raises `UsageError` for a device that is not there."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            if state is not None and state.num_processes > 1:  # one GPU per process on each machine
                return torch.device("cuda", state.local_process_index % torch.cuda.device_count())
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device auto or cpu.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: MPS is not available here; use --device auto or cpu.")
    if device.type == "cuda" and device.index is None and state is not None and state.num_processes > 1:
        device = torch.device("cuda", state.local_process_index % torch.cuda.device_count())
    return device


def check_offload(cpu_offload: str, device_name: str, device) -> None:
    """Offloading moves weights between the CPU and an accelerator: refuse it when the device is the CPU, whether
    named (`--device cpu`) or found (`--device auto` on a machine without a GPU). Raises `UsageError`."""
    if cpu_offload == "none" or device.type != "cpu":
        return
    if device_name == "auto":
        raise UsageError(
            f"--cpu-offload {cpu_offload} needs a GPU, but --device auto found none here (no CUDA, no MPS): "
            "offloading moves weights between the CPU and an accelerator; drop --cpu-offload."
        )
    raise UsageError(
        f"--cpu-offload {cpu_offload} conflicts with --device {device_name}: offloading moves weights between the "
        "CPU and an accelerator; drop --cpu-offload or pick a GPU --device."
    )


def cpu_has_native_bf16() -> bool:
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype, device=None):
    """The torch dtype of a precision: `"auto"` (fp16 on CUDA, bf16 on a CPU with native bf16, else fp32, for
    `device`, default the CPU), a name of `DTYPE_NAMES` (`fp32`, `fp16`, `bf16`) or a `torch.dtype` itself; None
    stays None (the precision the model loads in)."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = torch.device(device if device is not None else "cpu")
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"`dtype` is {dtype!r}; use auto, one of {', '.join(DTYPE_NAMES)}, or a torch.dtype.")
    return torch_dtype(dtype)


def load_pipeline(
    model,
    device=None,
    dtype=None,
    *,
    base_model: str | os.PathLike | None = None,
    cpu_offload: str = "none",
    compile_unet: bool = False,
    **load_kwargs,
):
    """A ready pipeline, with its own progress bar off (front ends show theirs).

    Args:
        model: a model folder or Hub repo id, loaded with `NormalCrafterPipeline.from_pretrained` (completed from
            `base_model`, default its own, when it holds only `unet/` and `vae/`), or a pipeline object, used as it
            is.
        device: where it runs (a `torch.device` or its name); None leaves it where it is.
        dtype: a precision for [`resolve_dtype`]; None keeps the loaded one (float32 from `from_pretrained`).
        cpu_offload: `"none"`, or `"model"` / `"sequential"` to keep the weights on the CPU and move each model
            (or each layer) to `device` only while it runs.
        compile_unet: `pipe.compile()` once the pipeline is in place (torch.compile of the UNet).
        load_kwargs: more keyword arguments of `from_pretrained`.
    """
    from .pretrained import NormalCrafterPipeline

    if cpu_offload not in OFFLOAD_MODES:
        raise ValueError(f"`cpu_offload` is {cpu_offload!r}; use one of {', '.join(OFFLOAD_MODES)}.")
    dtype = resolve_dtype(dtype, device)
    if isinstance(model, (str, os.PathLike)):
        if dtype is not None:
            load_kwargs["torch_dtype"] = dtype
        if base_model is not None:
            load_kwargs["base_model"] = base_model
        pipe = NormalCrafterPipeline.from_pretrained(os.fspath(model), **load_kwargs)
    elif callable(model):
        pipe = model
        if dtype is not None:
            pipe = pipe.to(dtype=dtype)
    else:
        raise ValueError(f"`model` must be a model folder, a Hub repo id or a NormalCrafterPipeline, got {model!r}.")
    if cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif device is not None:
        pipe = pipe.to(device)
    if compile_unet:
        pipe.compile()
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe
