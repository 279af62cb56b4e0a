"""normalcrafter-pipeline: temporally consistent surface normals from videos of any length."""

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
    NormalCrafterPipeline,
    NormalCrafterPipelineOutput,
    NormalCrafterUNet,
    WindowPlanner,
    blend_weights,
    compute_padding,
    normalize_normals,
    plan_windows,
    predict_window_latents,
    resize_with_antialiasing,
)
from .video_io import (
    NormalsVideoWriter,
    NpyWriter,
    Png16SequenceWriter,
    SideBySideVideoWriter,
    VideoReader,
    VideoReadError,
    read_video,
)

__version__ = "0.1.0"

__all__ = [
    # pipeline
    "DEFAULT_BASE_MODEL_ID",
    "DEFAULT_MODEL_ID",
    "BaseModelUnavailableError",
    "NormalCrafterPipeline",
    "NormalCrafterPipelineOutput",
    "NormalCrafterUNet",
    "NormalsProcessor",
    "WindowPlanner",
    "blend_weights",
    "compute_padding",
    "normalize_normals",
    "plan_windows",
    "predict_window_latents",
    "resize_with_antialiasing",
    # video input and output
    "NormalsVideoWriter",
    "NpyWriter",
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
