"""Tiny random DINOv2 for tests and benchmarks (no network)."""

from __future__ import annotations

import os

import torch


def tiny_dino(seed: int = 0, hidden_size: int = 32, patch_size: int = 14):
    """A 2-layer random `Dinov2Model` (transformers) at toy width."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=56,
        patch_size=patch_size,
    )
    return Dinov2Model(config).eval()


def save_tiny_dino(folder: str | os.PathLike, seed: int = 0) -> str:
    """Save `tiny_dino(seed)` to `folder` (loadable as `--dino_model folder`) and return the path."""
    tiny_dino(seed).save_pretrained(folder)
    return os.fspath(folder)
