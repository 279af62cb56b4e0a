"""Which UNet parameters are temporal, and the stage-2 freeze rule.

In diffusers' spatio-temporal blocks the temporal parts are `TransformerSpatioTemporalModel`'s
`temporal_transformer_blocks`, `time_pos_embed` and `time_mixer`, and `SpatioTemporalResBlock`'s
`temporal_res_block` and `time_mixer` (the learned mix between the spatial and temporal paths). Stage 2 trains
everything else (the spatial layers, the time/added-time embeddings, conv_in/conv_out).
"""

from __future__ import annotations

import torch.nn as nn

TEMPORAL_PARAMETER_KEYS = ("temporal_transformer_blocks", "time_pos_embed", "time_mixer", "temporal_res_block")


def is_temporal_parameter(name: str) -> bool:
    """Whether the parameter called `name` (a `named_parameters` name) belongs to a temporal layer or mixer."""
    return any(part in TEMPORAL_PARAMETER_KEYS for part in name.split("."))


def freeze_temporal_layers(unet: nn.Module) -> tuple[list[str], list[str]]:
    """Freeze the temporal parameters of `unet` and make the rest trainable; return (trainable, frozen) names."""
    trainable, frozen = [], []
    for name, parameter in unet.named_parameters():
        temporal = is_temporal_parameter(name)
        parameter.requires_grad_(not temporal)
        (frozen if temporal else trainable).append(name)
    if not frozen:
        raise ValueError(
            f"No temporal parameters found in {type(unet).__name__}; expected names containing one of "
            f"{TEMPORAL_PARAMETER_KEYS} (a spatio-temporal UNet)."
        )
    return trainable, frozen
