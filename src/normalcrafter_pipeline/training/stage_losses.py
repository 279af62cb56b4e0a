"""The loss of one training batch for each stage, shared by the scripts, the tests and the benchmarks.

Batches come from `NormalClipDataset` (collated): `pixel_values` and `normals` `[B, F, 3, H, W]`, `valid_mask`
`[B, F, 1, H, W]`. `pipe` is a `NormalCrafterPipeline` holding the frozen encoders (its CLIP and VAE encoding
methods are the inference ones, so training sees exactly the conditioning inference computes).

The normal stages (VAE decoder, stage 1, stage 2) start from a video prior. The paper's is SVD-xt; models trained
from scratch make their own with the two prior stages here, the way SVD was made: the VAE as an RGB autoencoder
(`rgb_autoencoder_loss`), then the UNet as an image-to-video model (`image_to_video_loss`).
"""

from __future__ import annotations

import torch

from ..normalcrafter_windows import predict_window_latents
from .edm import add_noise, edm_denoise, sample_sigmas
from .losses import angular_loss, check_finite, dsm_loss, masked_l1_loss
from .sfr import FeatureTap, sfr_loss


@torch.no_grad()
def encode_conditioning(pipe, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, F, 3, H, W]` frames in [0, 1] -> (`[B, F, C, h, w]` unscaled video latents, `[B * F, 1, D]` CLIP
    embeddings), as the pipeline computes them at inference."""
    batch, frames = pixel_values.shape[:2]
    flat = pixel_values.flatten(0, 1)
    latents = pipe.encode_video_latents(flat)
    embeddings = pipe.encode_image_embeddings(flat)
    return latents.unflatten(0, (batch, frames)), embeddings


@torch.no_grad()
def encode_normal_latents(pipe, normals: torch.Tensor) -> torch.Tensor:
    """`[B, F, 3, H, W]` unit normals -> `[B, F, C, h, w]` targets z_0 in the UNet's (scaled) latent space.

    A normal map is encoded as the image (n + 1) / 2 (the VAE sees n itself in [-1, 1]); its latent mode is
    multiplied by the scaling factor, the inverse of what inference does before decoding.
    """
    batch, frames = normals.shape[:2]
    latents = pipe.encode_video_latents((normals.flatten(0, 1) + 1.0) / 2.0)
    return (latents * pipe.vae.config.scaling_factor).unflatten(0, (batch, frames))


def decode_normal_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """`[B, F, C, h, w]` scaled latents -> `[B, F, 3, H, W]` (differentiable; each video is one decode chunk)."""
    batch, frames = latents.shape[:2]
    flat = (latents / vae.config.scaling_factor).flatten(0, 1).to(vae.dtype)
    return vae.decode(flat, num_frames=frames).sample.unflatten(0, (batch, frames))


def _added_time_ids(pipe, batch: int, dtype: torch.dtype) -> torch.Tensor:
    return pipe.get_added_time_ids(dtype).repeat(batch, 1)  # [B, 3]


def _sfr_term(projector, dino, tap: FeatureTap, pixel_values: torch.Tensor) -> torch.Tensor:
    features = tap.features  # [B*F, C, h, w]
    if features is None:
        raise RuntimeError("The SFR feature tap saw no forward pass of the UNet's up block.")
    tokens = dino(pixel_values.flatten(0, 1), grid=tuple(features.shape[-2:]))  # [B*F, h, w, D]
    return sfr_loss(projector, features, tokens)


def stage1_loss(
    pipe,
    unet,
    batch: dict,
    projector=None,
    dino=None,
    lambda_reg: float = 0.5,
    p_mean: float = 0.7,
    p_std: float = 1.6,
) -> dict:
    """Stage 1: L_DSM + lambda_reg * L_reg in latent space. `unet` may be the DDP-wrapped training copy."""
    pixel_values, normals = batch["pixel_values"], batch["normals"]
    batch_size = pixel_values.shape[0]
    conditioning, embeddings = encode_conditioning(pipe, pixel_values)
    clean = encode_normal_latents(pipe, normals)  # [B, F, C, h, w]
    sigmas = sample_sigmas(batch_size, p_mean, p_std, device=clean.device)
    noisy = add_noise(clean, sigmas, torch.randn_like(clean))
    time_ids = _added_time_ids(pipe, batch_size, embeddings.dtype)
    use_sfr = lambda_reg > 0 and projector is not None
    with FeatureTap(unet) if use_sfr else _null_tap() as tap:
        denoised = edm_denoise(unet, noisy, sigmas, conditioning, embeddings, time_ids)
    losses = {"dsm": dsm_loss(denoised, clean, sigmas)}
    losses["loss"] = losses["dsm"]
    if use_sfr:
        losses["sfr"] = _sfr_term(projector, dino, tap, pixel_values)
        losses["loss"] = losses["loss"] + lambda_reg * losses["sfr"]
    return losses


def stage2_loss(pipe, unet, scheduler, batch: dict, projector=None, dino=None, lambda_reg: float = 0.5) -> dict:
    """Stage 2: the inference one-step prediction (`predict_window_latents`) decoded to pixels, angular loss +
    lambda_reg * L_reg. `scheduler` is a training copy (the prediction sets its timesteps)."""
    pixel_values, normals = batch["pixel_values"], batch["normals"]
    batch_size = pixel_values.shape[0]
    conditioning, embeddings = encode_conditioning(pipe, pixel_values)
    time_ids = _added_time_ids(pipe, batch_size, embeddings.dtype)
    use_sfr = lambda_reg > 0 and projector is not None
    with FeatureTap(unet) if use_sfr else _null_tap() as tap:
        latents = predict_window_latents(unet, scheduler, conditioning, embeddings, time_ids, num_inference_steps=1)
    prediction = decode_normal_latents(pipe.vae, latents)  # [B, F, 3, H, W]
    losses = {"angular": angular_loss(prediction, normals, batch.get("valid_mask"), dim=2)}
    losses["loss"] = losses["angular"]
    if use_sfr:
        losses["sfr"] = _sfr_term(projector, dino, tap, pixel_values)
        losses["loss"] = losses["loss"] + lambda_reg * losses["sfr"]
    return losses


def vae_decoder_loss(vae, batch: dict, l1_weight: float = 0.0) -> dict:
    """VAE decoder fine-tune (`vae` may be DDP-wrapped): encode the normal maps (frozen encoder, latent mode),
    decode them (trainable decoder) and compare: angular loss + l1_weight * L1, over valid pixels."""
    normals, mask = batch["normals"], batch.get("valid_mask")
    batch_size, frames = normals.shape[:2]
    # The forward pass (encode, latent mode, decode) works through a DDP wrapper; the frozen encoder builds no graph.
    flat = normals.flatten(0, 1).to(next(vae.parameters()).dtype)
    reconstruction = vae(flat, sample_posterior=False, num_frames=frames).sample.unflatten(0, (batch_size, frames))
    losses = {"angular": angular_loss(reconstruction, normals, mask, dim=2)}
    losses["loss"] = losses["angular"]
    if l1_weight > 0:
        losses["l1"] = masked_l1_loss(reconstruction, normals, mask)
        losses["loss"] = losses["loss"] + l1_weight * losses["l1"]
    return losses


def rgb_autoencoder_loss(vae, batch: dict) -> dict:
    """Video prior, part 1: the VAE (encoder and decoder; `vae` may be DDP-wrapped) as an RGB autoencoder. The
    frames, in [-1, 1], are encoded to their latent mode (as inference encodes them) and decoded by the temporal
    decoder; the loss is the mean absolute error."""
    pixels = batch["pixel_values"] * 2.0 - 1.0  # [B, F, 3, H, W]
    batch_size, frames = pixels.shape[:2]
    flat = pixels.flatten(0, 1).to(next(vae.parameters()).dtype)
    reconstruction = vae(flat, sample_posterior=False, num_frames=frames).sample.unflatten(0, (batch_size, frames))
    losses = {"l1": masked_l1_loss(reconstruction, pixels)}
    losses["loss"] = losses["l1"]
    return losses


@torch.no_grad()
def latent_scaling_factor(vae, pixels: torch.Tensor) -> float:
    """1 / standard deviation of the latent modes of `[N, 3, H, W]` frames in [0, 1]: the scaling factor that
    gives the UNet unit-variance latents (how Stable Diffusion chose its 0.18215) for a freshly trained VAE."""
    latents = vae.encode((pixels * 2.0 - 1.0).to(vae.device, vae.dtype)).latent_dist.mode()
    return 1.0 / check_finite(latents.float().std(), "latent standard deviation").item()


def image_to_video_loss(pipe, unet, batch: dict, p_mean: float = 0.7, p_std: float = 1.6) -> dict:
    """Video prior, part 2: the UNet (`unet` may be the DDP-wrapped training copy) as an image-to-video model, as
    SVD was trained. EDM denoising score matching of the clip's own (scaled) latents, conditioned on its first frame
    through the inputs the pipeline uses: the first frame's unscaled VAE latent concatenated on channels to every
    frame, its CLIP embedding as every frame's `encoder_hidden_states`, and the pipeline's added time ids."""
    pixel_values = batch["pixel_values"]  # [B, F, 3, H, W]
    batch_size, frames = pixel_values.shape[:2]
    with torch.no_grad():
        latents = pipe.encode_video_latents(pixel_values.flatten(0, 1)).unflatten(0, (batch_size, frames))
        first_frame = pipe.encode_image_embeddings(pixel_values[:, 0])  # [B, 1, D]
    clean = latents * pipe.vae.config.scaling_factor  # [B, F, C, h, w]
    conditioning = latents[:, :1].expand(-1, frames, -1, -1, -1)
    embeddings = first_frame.repeat_interleave(frames, dim=0)  # [B * F, 1, D]
    sigmas = sample_sigmas(batch_size, p_mean, p_std, device=clean.device)
    noisy = add_noise(clean, sigmas, torch.randn_like(clean))
    time_ids = _added_time_ids(pipe, batch_size, embeddings.dtype)
    denoised = edm_denoise(unet, noisy, sigmas, conditioning, embeddings, time_ids)
    losses = {"dsm": dsm_loss(denoised, clean, sigmas)}
    losses["loss"] = losses["dsm"]
    return losses


class _null_tap:
    features = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None
