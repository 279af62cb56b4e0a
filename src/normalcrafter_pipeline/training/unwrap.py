"""The model inside the wrappers training puts around it."""

from __future__ import annotations

import torch


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP (`.module`) and `torch.compile` (`._orig_mod`) wrappers, in any nesting.

    accelerate's `unwrap_model` keeps the compiled wrapper in some releases and not in others; the checkpoint hooks,
    the final save and the SFR feature tap all need the plain module (its `save_pretrained`, config and blocks).
    """
    while True:
        if isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model
