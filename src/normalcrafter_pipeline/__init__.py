"""normalcrafter-pipeline: temporally consistent surface normals from videos of any length."""

from .image_processor import NormalsProcessor
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

__version__ = "0.1.0"

__all__ = [
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
]
