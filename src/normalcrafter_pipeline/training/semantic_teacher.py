"""A semantic teacher for Semantic Feature Regularization where DINOv2 is out of reach (small reproductions).

SFR aligns UNet features with the patch tokens of a frozen encoder whose features carry semantics; the paper uses
DINOv2. A random DINOv2 carries none. This module trains a small encoder of DINOv2's architecture (a transformers
`Dinov2Model`) on what the synthetic renderer knows about every pixel: the kind of object it shows (floor, wall,
sphere, box, moving occluder, sky) and its material (plain, checker, stripes), as two linear heads on the patch
tokens, each patch's target being the share of each label among its pixels (soft cross-entropy).

The trained backbone is saved with `save_pretrained`, so SFR loads it exactly as it loads DINOv2:
`--dino_model <folder>` -> `DinoFeatures`, with the same preprocessing (`dino_patch_tokens`), the same projector
and the same loss. The heads are training-only and are not saved. Train it on frames like the ones SFR will see:
same size and the same `Nuisances`.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .renderer import MATERIALS, OBJECT_KINDS, Nuisances, render_clip
from .sfr import dino_patch_tokens

logger = logging.getLogger(__name__)

LABELS = {"kind": OBJECT_KINDS, "material": MATERIALS}


def semantic_teacher_config(hidden_size: int = 64, num_layers: int = 4, num_heads: int = 4, image_size: int = 112):
    """A `Dinov2Config` of a small ViT with DINOv2's 14-pixel patches (`image_size` only sets the position-embedding
    grid; other sizes are interpolated, as in DINOv2)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        image_size=image_size,
        patch_size=14,
    )


class SemanticTeacher(nn.Module):
    """A `Dinov2Model` backbone and one linear head per label set of `LABELS`, reading its patch tokens."""

    def __init__(self, config):
        super().__init__()
        from transformers import Dinov2Model

        self.backbone = Dinov2Model(config)
        self.heads = nn.ModuleDict({name: nn.Linear(config.hidden_size, len(names)) for name, names in LABELS.items()})

    def forward(self, pixels: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
        """`[N, 3, H, W]` frames in [0, 1] -> `{label set: [N, grid_h, grid_w, num_labels] logits}`."""
        tokens = dino_patch_tokens(self.backbone, pixels, grid)
        return {name: head(tokens) for name, head in self.heads.items()}


def patch_label_shares(labels: torch.Tensor, num_labels: int, grid: tuple[int, int]) -> torch.Tensor:
    """`[N, H, W]` integer labels -> `[N, grid_h, grid_w, num_labels]`: the share of each label in each cell of a
    `grid` laid over the frame (area-weighted, so cells need not cover whole pixels)."""
    one_hot = F.one_hot(labels.long(), num_labels).permute(0, 3, 1, 2).float()  # [N, L, H, W]
    return F.adaptive_avg_pool2d(one_hot, grid).permute(0, 2, 3, 1)


def semantic_teacher_loss(teacher: SemanticTeacher, pixels: torch.Tensor, labels: dict, grid) -> dict:
    """Soft cross-entropy of each head against the patch label shares, summed over the label sets. `labels` maps
    each name of `LABELS` to `[N, H, W]` integer maps of the frames `pixels` `[N, 3, H, W]`."""
    logits = teacher(pixels, grid)
    losses = {}
    for name, names in LABELS.items():
        target = patch_label_shares(labels[name], len(names), grid)
        losses[name] = -(target * F.log_softmax(logits[name].float(), dim=-1)).sum(-1).mean()
    losses["loss"] = sum(losses[name] for name in LABELS)
    return losses


def _render_frames(num_clips: int, num_frames: int, size: int, seed: int, nuisances: Nuisances | None) -> dict:
    """Rendered frames and their labels as tensors: `pixels` `[N, 3, size, size]` in [0, 1], labels `[N, H, W]`."""
    clips = [
        render_clip(None, num_frames, size, size, seed=seed * 100003 + index, nuisances=nuisances)
        for index in range(num_clips)
    ]
    pixels = torch.from_numpy(np.concatenate([clip["rgb"] for clip in clips])).permute(0, 3, 1, 2).float() / 255.0
    frames = {"pixels": pixels}
    for name in LABELS:
        frames[name] = torch.from_numpy(np.concatenate([clip[name] for clip in clips]).astype(np.int64))
    return frames


@torch.no_grad()
def patch_accuracy(teacher: SemanticTeacher, frames: dict, grid, batch_size: int = 64) -> dict:
    """Share of patches whose predicted label is the patch's majority label, per label set, with the share a
    constant guess of the most frequent label gets (the floor a teacher must beat to carry information)."""
    teacher.eval()
    correct = {name: 0 for name in LABELS}
    majority = {name: [] for name in LABELS}
    for start in range(0, len(frames["pixels"]), batch_size):
        logits = teacher(frames["pixels"][start : start + batch_size], grid)
        for name, names in LABELS.items():
            target = patch_label_shares(frames[name][start : start + batch_size], len(names), grid).argmax(-1)
            correct[name] += (logits[name].argmax(-1) == target).sum().item()
            majority[name].append(target.flatten())
    total = {name: torch.cat(targets) for name, targets in majority.items()}
    result = {}
    for name, names in LABELS.items():
        counts = torch.bincount(total[name], minlength=len(names))
        result[name] = correct[name] / len(total[name])
        result[f"{name}_constant_guess"] = counts.max().item() / len(total[name])
    return result


def train_semantic_teacher(
    output_dir: str | os.PathLike,
    *,
    size: int = 64,
    grid: tuple[int, int] | None = None,
    num_clips: int = 320,
    num_frames: int = 2,
    heldout_clips: int = 16,
    steps: int = 1000,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    nuisances: Nuisances | None = None,
    config=None,
) -> dict:
    """Train a semantic teacher on rendered frames and save its backbone to `output_dir` as a `Dinov2Model` folder.

    Args:
        size: square frame size, as SFR will see the frames (the training crop size).
        grid: the patch grid, as SFR will ask for it: the UNet feature grid, by default `size // 8` (the latent
            grid, where the tiny UNet's `up_blocks[1]` works).
        num_clips, num_frames: the rendered training frames (seeds `seed * 100003 + i`; many short clips: frames
            of one clip teach little that its neighbours do not); `heldout_clips` more clips from seed
            `seed + 7919` measure the patch accuracy.
        steps, batch_size, learning_rate: AdamW steps on random frames, mirrored left-right half of the time.
        nuisances: render the frames with these `Nuisances` (use the ones of the SFR training set).
        config: a `Dinov2Config` (default `semantic_teacher_config()`).

    Returns:
        The held-out patch accuracies (`patch_accuracy`) and the final training loss; also written to
        `output_dir/teacher_metrics.json`.
    """
    for name, value in (("size", size), ("num_clips", num_clips), ("num_frames", num_frames), ("steps", steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` is {value!r}; it must be a positive integer.")
    grid = tuple(grid) if grid is not None else (size // 8, size // 8)
    if min(grid) < 1:
        raise ValueError(f"`grid` is {grid}; pass a grid of at least 1x1 (the UNet's feature grid).")
    train = _render_frames(num_clips, num_frames, size, seed, nuisances)
    heldout = _render_frames(heldout_clips, num_frames, size, seed + 7919, nuisances)

    torch.manual_seed(seed)
    teacher = SemanticTeacher(config if config is not None else semantic_teacher_config())
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    teacher.train()
    for step in range(steps):
        index = torch.randint(len(train["pixels"]), (batch_size,), generator=generator)
        batch = {name: train[name][index] for name in ("pixels", *LABELS)}
        if torch.rand((), generator=generator) < 0.5:
            batch = {name: value.flip(-1) for name, value in batch.items()}
        losses = semantic_teacher_loss(teacher, batch["pixels"], batch, grid)
        losses["loss"].backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            logger.info("semantic teacher step %d: loss %.4f", step + 1, losses["loss"].item())

    metrics = {**patch_accuracy(teacher, heldout, grid), "final_loss": losses["loss"].item(), "grid": list(grid)}
    output_dir = os.fspath(output_dir)
    teacher.backbone.save_pretrained(output_dir)
    with open(os.path.join(output_dir, "teacher_metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=1)
    return metrics
