"""Training losses, computed in float32; a non-finite loss raises instead of being skipped."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class NonFiniteLossError(FloatingPointError):
    """A loss came out NaN or infinite (diverged training, bad data or an overflowing mixed-precision pass)."""


def check_finite(loss: torch.Tensor, name: str) -> torch.Tensor:
    """Return `loss`, or raise `NonFiniteLossError` naming it when it is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"The {name} loss is {loss.detach().float().cpu().tolist()}; check the data (NaN normals or frames), "
            "lower the learning rate, or train in fp32/bf16 instead of fp16."
        )
    return loss


def dsm_weight(sigmas: torch.Tensor) -> torch.Tensor:
    """EDM's loss weight lambda(s) = (1 + s^2) / s^2, which gives every noise level unit effective weight."""
    sigmas = sigmas.float()
    return (1.0 + sigmas**2) / sigmas**2


def dsm_loss(denoised: torch.Tensor, clean: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """L_DSM = mean over the batch of lambda(s) * mean((D(z_t; s) - z_0)^2) for `[B, ...]` latents and `[B]` sigmas."""
    if denoised.shape != clean.shape:
        raise ValueError(f"`denoised` has shape {tuple(denoised.shape)} but `clean` has {tuple(clean.shape)}.")
    per_video = (denoised.float() - clean.float()).pow(2).flatten(1).mean(dim=1)
    return check_finite((dsm_weight(sigmas) * per_video).mean(), "DSM")


def angular_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    dim: int = 1,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Mean angle (radians) between predicted and target normals along `dim`: mean of arccos(cos(n*, n_hat)).

    The cosine is clamped to `[-1 + eps, 1 - eps]`, so the gradient stays finite where the vectors agree (where
    arccos' derivative is infinite). `mask` (bool, broadcastable to the per-pixel angle map, e.g. `[..., 1, H, W]`
    for `dim=1`) selects valid pixels; with no valid pixel the loss is 0 (and still differentiable).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"`prediction` has shape {tuple(prediction.shape)} but `target` has {tuple(target.shape)}.")
    cosine = F.cosine_similarity(prediction.float(), target.float(), dim=dim, eps=1e-8)
    angle = torch.acos(cosine.clamp(-1.0 + eps, 1.0 - eps))
    if mask is None:
        loss = angle.mean()
    else:
        mask = mask.squeeze(dim) if mask.ndim == prediction.ndim and mask.shape[dim] == 1 else mask
        weights = torch.broadcast_to(mask, angle.shape).float()
        loss = (angle * weights).sum() / weights.sum().clamp_min(1.0)
    return check_finite(loss, "angular")


def masked_l1_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference over valid pixels; `mask` `[..., 1, H, W]` broadcasts over channels."""
    diff = (prediction.float() - target.float()).abs()
    if mask is None:
        return check_finite(diff.mean(), "L1")
    weights = torch.broadcast_to(mask, diff.shape).float()
    return check_finite((diff * weights).sum() / weights.sum().clamp_min(1.0), "L1")


def sfr_alignment_loss(projected: torch.Tensor, reference: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """L_reg = -mean over tokens of cos(reference, projected), both normalised along `dim`: -1 when aligned."""
    if projected.shape != reference.shape:
        raise ValueError(
            f"`projected` has shape {tuple(projected.shape)} but `reference` has {tuple(reference.shape)}."
        )
    projected = F.normalize(projected.float(), dim=dim)
    reference = F.normalize(reference.float(), dim=dim)
    return check_finite(-(projected * reference).sum(dim=dim).mean(), "SFR")


def mean_angular_error_deg(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean angular error in degrees of `[N, 3, H, W]` normals, one float (for logging; no gradient).

    `normalcrafter_pipeline.metrics.angular_error_map_deg` gives the per-pixel map (numpy) for evaluation.
    """
    with torch.no_grad():
        return float(angular_loss(prediction, target, mask, eps=0.0)) * 180.0 / math.pi
