"""normalcrafter-pipeline: temporally consistent surface normals from videos of any length.

The public names are imported on first use (PEP 562, as diffusers' lazy module does): `import normalcrafter_pipeline`
and the command line's module stay cheap, and torch, diffusers and transformers load only with the first name that
needs them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Each public name and the submodule that defines it.
_NAME_TO_MODULE = {
    "NormalsProcessor": "normalcrafter_normals_processor",
    "NormalCrafterPipeline": "pretrained",
    "NormalCrafterPipelineOutput": "pipeline_normalcrafter",
    "NormalCrafterUNet": "normalcrafter_unet",
    "NormalCrafterVideoProcessor": "normalcrafter_video_processor",
    **dict.fromkeys(("DEFAULT_BASE_MODEL_ID", "DEFAULT_MODEL_ID", "check_window_args"), "normalcrafter_checks"),
    **dict.fromkeys(("BaseModelUnavailableError", "ModelUnavailableError"), "hub_loading"),
    **dict.fromkeys(
        (
            "METRIC_NAMES",
            "THRESHOLDS_DEG",
            "ErrorAccumulator",
            "MeanAccumulator",
            "angular_error_map_deg",
            "normal_metrics",
            "per_frame_metrics",
            "reprojection_error",
            "summarize_errors",
            "temporal_change_error",
        ),
        "metrics",
    ),
    **dict.fromkeys(("read_png16", "write_png16"), "formats.png16"),
    **dict.fromkeys(
        (
            "ExrSequenceWriter",
            "NormalsVideoWriter",
            "NpyWriter",
            "NpzWriter",
            "Png16SequenceWriter",
            "SideBySideVideoWriter",
        ),
        "normals_writers",
    ),
    **dict.fromkeys(("VideoReader", "VideoReadError", "read_video"), "video_io"),
}


class _DropTorchvisionFallbackNotice(logging.Filter):
    """transformers >= 5 warns, when `CLIPImageProcessor` is first imported without torchvision, that it falls back
    to its PIL implementation. The PIL processor is the one this pipeline was built and tested with (the feature
    extractor is saved as `CLIPImageProcessor`), so the notice tells a user nothing to act on; every other warning of
    that logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in str(record.msg)


@contextlib.contextmanager
def _torchvision_notice_dropped():
    """[`_DropTorchvisionFallbackNotice`] while this package imports its modules, and only then."""
    emitter = logging.getLogger("transformers.utils.import_utils")  # by name: transformers is not imported here
    notice_filter = _DropTorchvisionFallbackNotice()
    emitter.addFilter(notice_filter)
    try:
        yield
    finally:
        emitter.removeFilter(notice_filter)


def __getattr__(name: str):
    module_name = _NAME_TO_MODULE.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _torchvision_notice_dropped():
        module = importlib.import_module(f".{module_name}", __name__)
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAME_TO_MODULE))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .formats.png16 import read_png16, write_png16
    from .hub_loading import BaseModelUnavailableError, ModelUnavailableError
    from .metrics import (
        METRIC_NAMES,
        THRESHOLDS_DEG,
        ErrorAccumulator,
        MeanAccumulator,
        angular_error_map_deg,
        normal_metrics,
        per_frame_metrics,
        reprojection_error,
        summarize_errors,
        temporal_change_error,
    )
    from .normalcrafter_checks import DEFAULT_BASE_MODEL_ID, DEFAULT_MODEL_ID, check_window_args
    from .normalcrafter_normals_processor import NormalsProcessor
    from .normalcrafter_unet import NormalCrafterUNet
    from .normalcrafter_video_processor import NormalCrafterVideoProcessor
    from .normals_writers import (
        ExrSequenceWriter,
        NormalsVideoWriter,
        NpyWriter,
        NpzWriter,
        Png16SequenceWriter,
        SideBySideVideoWriter,
    )
    from .pipeline_normalcrafter import NormalCrafterPipelineOutput
    from .pretrained import NormalCrafterPipeline
    from .video_io import VideoReader, VideoReadError, read_video


__all__ = [
    # pipeline
    "DEFAULT_BASE_MODEL_ID",
    "DEFAULT_MODEL_ID",
    "BaseModelUnavailableError",
    "ModelUnavailableError",
    "NormalCrafterPipeline",
    "NormalCrafterPipelineOutput",
    "NormalCrafterUNet",
    "NormalCrafterVideoProcessor",
    "NormalsProcessor",
    "check_window_args",
    # video input and output
    "ExrSequenceWriter",
    "NormalsVideoWriter",
    "NpyWriter",
    "NpzWriter",
    "Png16SequenceWriter",
    "SideBySideVideoWriter",
    "VideoReadError",
    "VideoReader",
    "read_png16",
    "read_video",
    "write_png16",
    # metrics
    "METRIC_NAMES",
    "THRESHOLDS_DEG",
    "ErrorAccumulator",
    "MeanAccumulator",
    "angular_error_map_deg",
    "normal_metrics",
    "per_frame_metrics",
    "reprojection_error",
    "summarize_errors",
    "temporal_change_error",
]
