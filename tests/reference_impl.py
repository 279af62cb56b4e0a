"""An independent, all-at-once transcription of the reference NormalCrafter inference (docs/design.md section 4).

It follows the structure of the released reference code: pad every frame with white, CLIP-encode the whole padded
video through diffusers' own anti-aliased resize and the feature extractor, VAE-encode in chunks, plan windows with
the reference rule, denoise each window from zeros with the stock scheduler calls, merge with `torch.cat`, decode
with Stable Video Diffusion's `decode_latents` and post-process as the reference does (clamp), then crop. Only the
final unit-length normalisation is ours. The pipeline under test must agree with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import StableVideoDiffusionPipeline
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing


def reference_windows(num_frames: int, window_size: int, overlap: int) -> list[list[int]]:
    stride = window_size - overlap
    if num_frames <= window_size:
        return [[0, num_frames]]
    windows = [[i, i + window_size] for i in range(0, num_frames, stride)]
    windows = [w for w in windows if w[1] <= num_frames]
    if windows[-1][1] < num_frames:
        windows.append([num_frames - window_size, num_frames])
    return windows


@torch.no_grad()
def reference_normals(
    pipe, video_uint8: np.ndarray, window_size=14, overlap=4, num_inference_steps=1, chunk=7, device="cpu"
):
    """`video_uint8` (F, H, W, 3) -> (F, H, W, 3) float32 unit normals; `device` is where the models are."""
    num_frames, height, width = video_uint8.shape[:3]
    new_h, new_w = math.ceil(height / 64) * 64, math.ceil(width / 64) * 64
    top, left = (new_h - height) // 2, (new_w - width) // 2
    padded = np.full((num_frames, new_h, new_w, 3), 255, dtype=np.uint8)
    padded[:, top : top + height, left : left + width] = video_uint8
    pixels = torch.from_numpy(padded.astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(device)  # [F,3,H,W] in [0,1]

    # CLIP, per frame, as the reference `_encode_image`
    image = _resize_with_antialiasing(pixels * 2.0 - 1.0, (224, 224))
    image = (image + 1.0) / 2.0
    mean = torch.tensor(pipe.feature_extractor.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pipe.feature_extractor.image_std, device=device).view(1, 3, 1, 1)
    image = ((image - mean) / std).to(pipe.image_encoder.dtype)
    embeddings = pipe.image_encoder(image).image_embeds.unsqueeze(1)  # [F,1,D]

    # VAE conditioning latents, unscaled, encoded in chunks
    vae_input = (pixels * 2.0 - 1.0).to(pipe.vae.dtype)
    cond = torch.cat(
        [pipe.vae.encode(vae_input[i : i + chunk]).latent_dist.mode() for i in range(0, num_frames, chunk)]
    )
    cond = cond.unsqueeze(0).to(embeddings.dtype)  # [1,F,4,h,w]
    added_time_ids = torch.tensor([[7.0, 127.0, 0.0]], dtype=embeddings.dtype, device=device)

    pred = None
    windows = reference_windows(num_frames, window_size, overlap)
    for i, (start, end) in enumerate(windows):
        to_replace = None
        if i > 0:
            num_replace = windows[i - 1][1] - start
            to_replace = pred[:, -num_replace:] if num_replace > 0 else None
        pipe.scheduler.set_timesteps(num_inference_steps)
        latents = torch.zeros_like(cond[:, start:end])
        for t in pipe.scheduler.timesteps:
            if to_replace is not None:
                latents[:, : to_replace.shape[1]] = to_replace
            model_input = pipe.scheduler.scale_model_input(latents, t)
            model_input = torch.cat([model_input, cond[:, start:end]], dim=2)
            noise_pred = pipe.unet(
                model_input, t, encoder_hidden_states=embeddings[start:end], added_time_ids=added_time_ids
            ).sample
            latents = pipe.scheduler.step(noise_pred, t, latents).prev_sample
        if pred is None:
            pred = latents
        elif to_replace is None:
            pred = torch.cat([pred, latents], dim=1)
        else:
            n = to_replace.shape[1]
            weight = torch.linspace(1.0, 0.0, n + 2, device=device)[1:-1].view(1, n, 1, 1, 1).to(latents.dtype)
            merged = pred[:, -n:] * weight + latents[:, :n] * (1 - weight)
            pred = torch.cat([pred[:, :-n], merged, latents[:, n:]], dim=1)

    frames = StableVideoDiffusionPipeline.decode_latents(pipe, pred, num_frames, chunk)  # [1,3,F,H,W]
    frames = frames[0].permute(1, 2, 3, 0).float()  # [F,H,W,3]
    frames = ((frames / 2 + 0.5).clamp(0, 1) * 2 - 1)[:, top : top + height, left : left + width]
    frames = frames / frames.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return frames.cpu().numpy()
