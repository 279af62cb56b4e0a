"""Validation during training: a few held-out clips, a predictor of their normals, and the mean angular error and
image grids logged to the trackers."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from ..formats.layouts import open_layout
from ..normalcrafter_video_processor import normalize_normals
from ..pretrained import NormalCrafterPipeline
from .losses import mean_angular_error_deg

logger = get_logger(__name__)

Predictor = Callable[[dict], np.ndarray]


def load_validation_clips(args: argparse.Namespace) -> list[dict]:
    """The first `validation_num_frames` frames of the first `num_validation_clips` sequences of
    `--validation_data_dir` (a clip-format root or `LAYOUT:PATH`), each a dict of `rgb` uint8 `(F, H, W, 3)`,
    `normal` float32 `(F, H, W, 3)` and `mask` bool `(F, H, W)` (the layout's validity); empty without a root."""
    if not args.validation_data_dir:
        return []
    clips = []
    for sequence in open_layout(args.validation_data_dir, with_depth=False)[: args.num_validation_clips]:
        records = [sequence.load(i) for i in range(min(args.validation_num_frames, len(sequence)))]
        clips.append(
            {
                "rgb": np.stack([record.rgb for record in records]),
                "normal": np.stack([record.normal for record in records]),
                "mask": np.stack([record.valid for record in records]),
            }
        )
    return clips


def log_validation(
    accelerator: Accelerator,
    clips: list[dict],
    predict: Predictor,
    global_step: int,
    is_final_validation: bool = False,
) -> float | None:
    """Run `predict(clip) -> (F, H, W, 3)` normals on each validation clip; log the mean angular error (degrees)
    and an image grid per clip (frames, ground truth, prediction; first frame) to the trackers."""
    # The package's public name: the module holding it is being renamed.
    from normalcrafter_pipeline import NormalsProcessor

    if not clips:
        return None
    tag = "test" if is_final_validation else "validation"
    errors, grids = [], []
    for clip in clips:
        with torch.no_grad(), accelerator.autocast():
            prediction = predict(clip)
        target = torch.from_numpy(clip["normal"]).permute(0, 3, 1, 2)
        mask = None if clip["mask"] is None else torch.from_numpy(clip["mask"])[:, None]
        errors.append(mean_angular_error_deg(torch.from_numpy(prediction).permute(0, 3, 1, 2), target, mask))
        pictures = [NormalsProcessor.to_rgb(normals[0]) for normals in (clip["normal"], prediction)]
        grids.append(np.concatenate([clip["rgb"][0], *pictures], axis=1))
    mean_error = float(np.mean(errors))
    logger.info(f"{tag} step {global_step}: mean angular error {mean_error:.3f} degrees")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_scalar(f"{tag}/mean_angular_error_deg", mean_error, global_step)
            tracker.writer.add_images(f"{tag}/rgb_gt_pred", np.stack(grids), global_step, dataformats="NHWC")
        else:
            tracker.log({f"{tag}/mean_angular_error_deg": mean_error}, step=global_step)
    return mean_error


def pipeline_predictor(pipe: NormalCrafterPipeline) -> Predictor:
    """Validation of the UNet stages: the full inference pipeline on a clip's frames."""

    def predict(clip: dict) -> np.ndarray:
        num_frames = clip["rgb"].shape[0]
        return pipe(clip["rgb"], window_size=min(14, num_frames), overlap=min(4, num_frames - 1)).normals

    return predict


def reconstruction_predictor(pipe: NormalCrafterPipeline) -> Predictor:
    """Validation of the VAE decoder: encode each clip's normal maps to their latent mode and decode them with the
    pipeline's (current) decoder, normalised as inference normalises its output."""
    vae = pipe.vae

    def predict(clip: dict) -> np.ndarray:
        normals = torch.from_numpy(clip["normal"]).permute(0, 3, 1, 2).to(vae.device, vae.dtype)  # [F, 3, H, W]
        latents = vae.encode(normals).latent_dist.mode()
        decoded = normalize_normals(vae.decode(latents, num_frames=latents.shape[0]).sample.float(), dim=1)
        return np.ascontiguousarray(decoded.permute(0, 2, 3, 1).cpu().numpy())

    return predict
