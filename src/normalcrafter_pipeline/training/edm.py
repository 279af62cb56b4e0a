"""EDM preconditioning and noise-level sampling (Karras et al. 2022), as Stable Video Diffusion uses them.

With the SVD-xt scheduler (EulerDiscreteScheduler, v-prediction, continuous timesteps) the UNet F is wrapped as

    D(z; s) = c_skip(s) * z + c_out(s) * F(c_in(s) * z; c_noise(s)),
    c_in = 1 / sqrt(s^2 + 1), c_skip = 1 / (s^2 + 1), c_out = -s / sqrt(s^2 + 1), c_noise = 0.25 ln s,

which is exactly what `scheduler.scale_model_input` (c_in), the scheduler's timesteps (c_noise) and its
v-prediction `pred_original_sample` (c_skip, c_out) compute at inference.
"""

from __future__ import annotations

import torch


def edm_coefficients(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(c_skip, c_out, c_in, c_noise)` for noise levels `sigmas` (any shape, same shape out)."""
    sigmas = torch.as_tensor(sigmas)
    if torch.any(sigmas <= 0):
        raise ValueError(f"`sigmas` must be positive, got a minimum of {sigmas.min().item()}.")
    variance = sigmas**2 + 1.0
    c_skip = 1.0 / variance
    c_out = -sigmas / variance.sqrt()
    c_in = 1.0 / variance.sqrt()
    c_noise = 0.25 * sigmas.log()
    return c_skip, c_out, c_in, c_noise


def sample_sigmas(
    batch_size: int,
    p_mean: float = 0.7,
    p_std: float = 1.6,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise levels with ln s ~ N(p_mean, p_std^2), float32 `[batch_size]`."""
    if p_std <= 0:
        raise ValueError(f"`p_std` is {p_std}; it must be positive.")
    log_sigma = torch.randn(batch_size, generator=generator, dtype=torch.float32, device=device)
    return (p_mean + p_std * log_sigma).exp()


def add_noise(clean_latents: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_t = z_0 + s * eps, with `sigmas` `[B]` broadcast over the other dimensions of `[B, ...]` latents."""
    return clean_latents + _expand(sigmas, clean_latents) * noise


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.dtype).reshape(values.shape[0], *([1] * (like.ndim - 1)))


def edm_denoise(
    unet,
    noisy_latents: torch.Tensor,
    sigmas: torch.Tensor,
    conditioning_latents: torch.Tensor,
    image_embeddings: torch.Tensor,
    added_time_ids: torch.Tensor,
) -> torch.Tensor:
    """The preconditioned denoiser D(z_t; s) for `[B, F, C, h, w]` latents and per-video `sigmas` `[B]`.

    `conditioning_latents` (`[B, F, C, h, w]`, unscaled VAE latents of the frames) are concatenated on channels
    after the c_in scaling, as at inference; `image_embeddings` are `[B * F, 1, D]`.
    """
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigmas.float())
    model_input = torch.cat([_expand(c_in, noisy_latents) * noisy_latents, conditioning_latents], dim=2)
    model_output = unet(
        model_input, c_noise, encoder_hidden_states=image_embeddings, added_time_ids=added_time_ids, return_dict=False
    )[0]
    return _expand(c_skip, noisy_latents) * noisy_latents + _expand(c_out, model_output) * model_output
