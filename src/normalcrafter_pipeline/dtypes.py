"""Precision names shared by the CLI (`--dtype`), the training scripts (accelerate's `mixed_precision`) and the
benchmarks.

Only the standard library is imported here: the CLI reads `DTYPE_NAMES` for its `--help` without importing torch.
"""

from __future__ import annotations

DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# accelerate's `mixed_precision="no"` runs every model in full precision.
_ALIASES = {"no": "fp32"}


def torch_dtype(name: str):
    """The torch dtype of a precision name: `fp32`, `fp16`, `bf16` (or accelerate's `no`, meaning fp32)."""
    import torch

    key = _ALIASES.get(name, name)
    if key not in DTYPE_NAMES:
        raise ValueError(f"precision is {name!r}; use one of {', '.join(DTYPE_NAMES)} (or `no` for fp32).")
    return getattr(torch, DTYPE_NAMES[key])
