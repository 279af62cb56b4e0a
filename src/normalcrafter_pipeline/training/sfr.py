"""Semantic Feature Regularization (SFR): align UNet decoder features with DINOv2 patch tokens.

The features h_l are the output of `unet.up_blocks[1]` (1/16 of the image in SVD-xt), taken with a forward hook
that exists only while a `FeatureTap` is open, so inference pays nothing. A 3-layer MLP (`SFRProjector`) maps each
spatial token to the DINO width, and L_reg = -mean cos(h_dino, h_phi(h_l)). As in REPA, the frames fed to DINO are
resized so its patch grid equals the feature grid; DINO tokens are interpolated when the grids still differ.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .losses import sfr_alignment_loss
from .unwrap import unwrap_model

DEFAULT_DINO_MODEL = "facebook/dinov2-base"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SFRProjector(ModelMixin, ConfigMixin):
    """h_phi: Linear-SiLU-Linear-SiLU-Linear applied to every spatial token (REPA's projector, width 2048)."""

    @register_to_config
    def __init__(self, in_channels: int, out_channels: int, hidden_dim: int = 2048):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, out_channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`[N, C, h, w]` feature maps -> `[N, h, w, out_channels]` projected tokens."""
        return self.mlp(features.permute(0, 2, 3, 1))


class FeatureTap:
    """Context manager that records the output of `unet.up_blocks[index]` during forward passes.

    The hook is registered on entry and removed on exit; outside the `with` block the UNet runs untouched. Accepts
    a model wrapped by DDP or `torch.compile` (it looks through `.module` / `._orig_mod`).
    """

    def __init__(self, unet: nn.Module, block_index: int = 1):
        unet = unwrap_model(unet)
        if len(unet.up_blocks) <= block_index:
            raise ValueError(
                f"`block_index` is {block_index} but the UNet has {len(unet.up_blocks)} up blocks; pick an index "
                f"below {len(unet.up_blocks)}."
            )
        self.block = unet.up_blocks[block_index]
        self.features: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module, inputs, output):
        self.features = output[0] if isinstance(output, tuple) else output  # [B*F, C, h, w]

    def __enter__(self) -> FeatureTap:
        self.features = None
        self._handle = self.block.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None


def dino_patch_tokens(model, pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """`[N, 3, H, W]` frames in [0, 1] -> `[N, grid_h, grid_w, D]` patch tokens of a `Dinov2Model` (CLS and
    registers dropped). The frames are resized so the patch grid is `grid` and normalised with ImageNet's mean and
    std. Gradients flow (`DinoFeatures` is the frozen use; a teacher trained for SFR uses this same path)."""
    patch_size = model.config.patch_size
    size = (grid[0] * patch_size, grid[1] * patch_size)
    images = F.interpolate(pixels.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    images = ((images.clamp(0.0, 1.0) - mean) / std).to(model.dtype)
    tokens = model(pixel_values=images).last_hidden_state
    num_prefix = 1 + getattr(model.config, "num_register_tokens", 0)
    tokens = tokens[:, num_prefix:].reshape(tokens.shape[0], grid[0], grid[1], -1)
    return match_grid(tokens, grid)


class DinoFeatures(nn.Module):
    """A frozen DINOv2 (transformers `Dinov2Model`) giving patch tokens on a requested grid.

    Any `Dinov2Model` folder works, such as the semantic teacher of `training.semantic_teacher`, trained on the
    synthetic renderer's labels for runs without DINOv2 weights."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str = DEFAULT_DINO_MODEL, **kwargs) -> DinoFeatures:
        from transformers import Dinov2Model

        try:
            model = Dinov2Model.from_pretrained(model_name_or_path, **kwargs)
        except OSError as error:
            raise OSError(
                f"Could not load the DINOv2 model {model_name_or_path!r} for SFR ({error}). Pass `--dino_model` a "
                f"local folder or a reachable Hub id (default {DEFAULT_DINO_MODEL!r}), or disable SFR with "
                "`--lambda_reg 0`."
            ) from error
        return cls(model)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def patch_size(self) -> int:
        return self.model.config.patch_size

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """`[N, 3, H, W]` frames in [0, 1] -> `[N, grid_h, grid_w, D]` patch tokens (`dino_patch_tokens`)."""
        return dino_patch_tokens(self.model, pixels, grid)


def match_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize `[N, h, w, D]` tokens to `[N, grid_h, grid_w, D]` (identity when they already match)."""
    if tuple(tokens.shape[1:3]) == tuple(grid):
        return tokens
    resized = F.interpolate(tokens.permute(0, 3, 1, 2).float(), size=tuple(grid), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).to(tokens.dtype)


def sfr_loss(projector: nn.Module, unet_features: torch.Tensor, dino_tokens: torch.Tensor) -> torch.Tensor:
    """L_reg for `[N, C, h, w]` UNet features and `[N, h', w', D]` DINO tokens (resized to `(h, w)` if needed)."""
    projected = projector(unet_features)  # [N, h, w, D]
    reference = match_grid(dino_tokens, projected.shape[1:3])
    return sfr_alignment_loss(projected, reference)


def sfr_feature_channels(unet: nn.Module, block_index: int = 1) -> int:
    """Channel width of the output of `unet.up_blocks[block_index]` (the projector's input width)."""
    return unwrap_model(unet).config.block_out_channels[::-1][block_index]
