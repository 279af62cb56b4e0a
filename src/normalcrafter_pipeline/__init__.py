"""normalcrafter-pipeline: temporally consistent surface normals from videos of any length.

The public names are imported on first use (PEP 562, as diffusers' lazy module does): `import normalcrafter_pipeline`
and the command line's module stay cheap, and torch, diffusers and transformers load only with the first name that
needs them.
"""

from __future__ import annotations

import importlib
import logging
import re
import warnings
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Each public name and the submodule that defines it.
_NAME_TO_MODULE = {
    "NormalsProcessor": "normals_processor",
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
    **dict.fromkeys(
        (
            "DEFAULT_BASE_MODEL_ID",
            "DEFAULT_MODEL_ID",
            "BaseModelUnavailableError",
            "ModelUnavailableError",
            "NormalCrafterPipeline",
            "NormalCrafterPipelineOutput",
            "NormalCrafterUNet",
            "NormalCrafterVideoProcessor",
        ),
        "pipeline_normalcrafter",
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
            "VideoReader",
            "VideoReadError",
            "read_video",
        ),
        "video_io",
    ),
}


def __getattr__(name: str):
    module_name = _NAME_TO_MODULE.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAME_TO_MODULE))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .formats.png16 import read_png16, write_png16
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
    from .normals_processor import NormalsProcessor
    from .pipeline_normalcrafter import (
        DEFAULT_BASE_MODEL_ID,
        DEFAULT_MODEL_ID,
        BaseModelUnavailableError,
        ModelUnavailableError,
        NormalCrafterPipeline,
        NormalCrafterPipelineOutput,
        NormalCrafterUNet,
        NormalCrafterVideoProcessor,
    )
    from .video_io import (
        ExrSequenceWriter,
        NormalsVideoWriter,
        NpyWriter,
        NpzWriter,
        Png16SequenceWriter,
        SideBySideVideoWriter,
        VideoReader,
        VideoReadError,
        read_video,
    )


class _DropTorchvisionFallbackNotice(logging.Filter):
    """transformers >= 5 warns that `CLIPImageProcessor` falls back to its PIL implementation when torchvision is
    not installed. The PIL processor is the one this pipeline was built and tested with (the feature extractor is
    saved as `CLIPImageProcessor`), so the notice tells a user nothing to act on; every other warning of that
    logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in str(record.msg)


# Set on the emitting loggers by name: neither transformers nor huggingface_hub is imported here.
logging.getLogger("transformers.utils.import_utils").addFilter(_DropTorchvisionFallbackNotice())
# diffusers (<= 0.42) passes `local_dir_use_symlinks="auto"` to huggingface_hub on every Hub download, and
# huggingface_hub >= 0.23 warns that the argument is deprecated: an argument we never set.
warnings.filterwarnings(
    "ignore",
    message=re.escape("The `local_dir_use_symlinks` argument is deprecated"),
    category=UserWarning,
    module=r"huggingface_hub\.",
)

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
