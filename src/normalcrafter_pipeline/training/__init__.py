"""Training recipe of NormalCrafter: EDM preconditioning, losses, SFR, data, the synthetic renderer, and the pieces
the scripts in `training/` share: their arguments (`arguments`), a training run's mechanics (`session`),
checkpoints (`checkpointing`) and validation (`validation`). See training/README.md. The clip format and the 16-bit
PNG codec the data is stored in are in `normalcrafter_pipeline.formats`."""

from .data import ClipBatchSampler, NormalClipDataset
from .edm import add_noise, edm_coefficients, edm_denoise, sample_sigmas
from .freeze import TEMPORAL_PARAMETER_KEYS, freeze_temporal_layers, is_temporal_parameter
from .losses import (
    NonFiniteLossError,
    angular_loss,
    check_finite,
    dsm_loss,
    dsm_weight,
    masked_l1_loss,
    mean_angular_error_deg,
    sfr_alignment_loss,
)
from .renderer import Nuisances, render_clip, render_dataset
from .schedule import get_warmup_exponential_scheduler, warmup_exponential_factor
from .sfr import DEFAULT_DINO_MODEL, DinoFeatures, FeatureTap, SFRProjector, match_grid, sfr_loss
from .stage_losses import (
    decode_normal_latents,
    encode_conditioning,
    encode_normal_latents,
    image_to_video_loss,
    latent_scaling_factor,
    rgb_autoencoder_loss,
    stage1_loss,
    stage2_loss,
    vae_decoder_loss,
)

__all__ = [
    "DEFAULT_DINO_MODEL",
    "TEMPORAL_PARAMETER_KEYS",
    "ClipBatchSampler",
    "DinoFeatures",
    "FeatureTap",
    "NonFiniteLossError",
    "NormalClipDataset",
    "Nuisances",
    "SFRProjector",
    "add_noise",
    "angular_loss",
    "check_finite",
    "decode_normal_latents",
    "dsm_loss",
    "dsm_weight",
    "edm_coefficients",
    "edm_denoise",
    "encode_conditioning",
    "encode_normal_latents",
    "freeze_temporal_layers",
    "get_warmup_exponential_scheduler",
    "image_to_video_loss",
    "is_temporal_parameter",
    "latent_scaling_factor",
    "masked_l1_loss",
    "match_grid",
    "mean_angular_error_deg",
    "render_clip",
    "render_dataset",
    "rgb_autoencoder_loss",
    "sample_sigmas",
    "sfr_alignment_loss",
    "sfr_loss",
    "stage1_loss",
    "stage2_loss",
    "vae_decoder_loss",
    "warmup_exponential_factor",
]
