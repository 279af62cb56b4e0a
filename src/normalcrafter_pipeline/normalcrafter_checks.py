# Copyright 2026 The normalcrafter-pipeline authors. Licensed under the MIT licence.
"""Argument checks and defaults of the NormalCrafter pipeline, without torch.

The standard library only: the command line imports this module to answer a usage error at once, before torch
loads, and the pipeline imports it for the same checks (it is one of the Hub code's files).
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_MODEL_ID = "Yanrui95/NormalCrafter"
DEFAULT_BASE_MODEL_ID = "stabilityai/stable-video-diffusion-img2vid-xt"
OUTPUT_TYPES = ("np", "pt", "pil", "latent")
# `mode`s of `torch.nn.functional.interpolate` accepted by `resample_method_input` / `resample_method_output`.
RESAMPLE_METHODS = ("bilinear", "bicubic", "nearest", "area")


def check_window_args(window_size: Any, overlap: Any) -> None:
    """Raise `ValueError` unless `window_size` >= 1 and 0 <= `overlap` < `window_size` are integers."""
    if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1:
        raise ValueError(f"`window_size` must be an integer >= 1, got {window_size!r}. The released model uses 14.")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0 or overlap >= window_size:
        raise ValueError(
            f"`overlap` must be an integer with 0 <= overlap < window_size ({window_size}), got {overlap!r}. "
            "The released model uses 4 with a window of 14."
        )


@dataclass(frozen=True)
class StreamSettings:
    """The arguments of `NormalCrafterPipeline.stream` (and `__call__`) but the video, checked when made.

    See `NormalCrafterPipeline.stream` for their meaning; the defaults are the released model's.
    """

    window_size: int = 14
    overlap: int = 4
    num_inference_steps: int = 1
    decode_chunk_size: int = 7
    output_type: str = "np"
    encode_chunk_size: int = 7
    processing_resolution: int | None = None
    match_input_resolution: bool = True
    resample_method_input: str = "bilinear"
    resample_method_output: str = "bilinear"

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> "StreamSettings":
        """The settings among `arguments` by name (a call's `locals()`: `stream` and `__call__` take them all)."""
        return cls(**{field.name: arguments[field.name] for field in fields(cls)})

    def __post_init__(self):
        check_window_args(self.window_size, self.overlap)
        for name in ("num_inference_steps", "decode_chunk_size", "encode_chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {self.output_type!r}.")
        resolution = self.processing_resolution
        if resolution is not None and (
            not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 0
        ):
            raise ValueError(
                "`processing_resolution` must be None or an integer >= 0 (None or 0 keeps the input size), got "
                f"{resolution!r}."
            )
        if not isinstance(self.match_input_resolution, bool):
            raise ValueError(f"`match_input_resolution` must be True or False, got {self.match_input_resolution!r}.")
        for name in ("resample_method_input", "resample_method_output"):
            value = getattr(self, name)
            if value not in RESAMPLE_METHODS:
                raise ValueError(f"`{name}` must be one of {RESAMPLE_METHODS}, got {value!r}.")
