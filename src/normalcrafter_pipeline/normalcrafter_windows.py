# Copyright 2026 The normalcrafter-pipeline authors. Licensed under the MIT licence.
"""Window planning and the streaming core of NormalCrafter: which frames are denoised together, the deterministic
prediction of one window (shared with stage-2 training), and the blend of overlapping windows as frames arrive."""

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

from .normalcrafter_checks import check_window_args


def plan_windows(num_frames: int, window_size: int = 14, overlap: int = 4) -> list[tuple[int, int]]:
    """The `[start, end)` frame ranges the model denoises, in order.

    Windows start at `0, stride, 2 * stride, ...` (`stride = window_size - overlap`) while they end inside the
    video; if the last of them ends before `num_frames`, one more window `[num_frames - window_size, num_frames)`
    is added. A video no longer than `window_size` is one window `[0, num_frames)`.
    """
    if num_frames < 1:
        raise ValueError(f"`num_frames` must be >= 1, got {num_frames}.")
    check_window_args(window_size, overlap)
    if num_frames <= window_size:
        return [(0, num_frames)]
    stride = window_size - overlap
    windows = [(start, start + window_size) for start in range(0, num_frames - window_size + 1, stride)]
    if windows[-1][1] < num_frames:
        windows.append((num_frames - window_size, num_frames))
    return windows


class WindowPlanner:
    """`plan_windows` for a video whose length is known only at its end.

    `ready(num_available)` returns the windows that can run once `num_available` frames have been read;
    `finish(num_frames)` returns the rest once the video has ended. Together they give exactly
    `plan_windows(num_frames, window_size, overlap)`.
    """

    def __init__(self, window_size: int = 14, overlap: int = 4):
        check_window_args(window_size, overlap)
        self.window_size = window_size
        self.stride = window_size - overlap
        self._next_start = 0
        self._last_end = 0

    def ready(self, num_available: int) -> list[tuple[int, int]]:
        windows = []
        while self._next_start + self.window_size <= num_available:
            windows.append((self._next_start, self._next_start + self.window_size))
            self._last_end = self._next_start + self.window_size
            self._next_start += self.stride
        return windows

    def finish(self, num_frames: int) -> list[tuple[int, int]]:
        windows = self.ready(num_frames)
        if self._last_end == 0 and num_frames > 0:
            windows.append((0, num_frames))
        elif self._last_end < num_frames:
            windows.append((num_frames - self.window_size, num_frames))
        if windows:
            self._last_end = num_frames
        return windows


def blend_weights(num_overlap: int) -> np.ndarray:
    """Weights of the *previous* prediction over `num_overlap` shared frames: `linspace(1, 0, n + 2)[1:-1]`.

    They fall linearly from near 1 to near 0, never reaching either, so each shared frame mixes both windows; the
    new window's prediction gets `1 - w`.
    """
    if num_overlap < 0:
        raise ValueError(f"`num_overlap` must be >= 0, got {num_overlap}.")
    return np.linspace(1.0, 0.0, num_overlap + 2)[1:-1]


def predict_window_latents(
    unet: UNetSpatioTemporalConditionModel,
    scheduler: EulerDiscreteScheduler,
    conditioning_latents: torch.Tensor,
    image_embeddings: torch.Tensor,
    added_time_ids: torch.Tensor,
    num_inference_steps: int = 1,
    replace_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise one window of normal latents from zeros, as the released model does.

    Args:
        conditioning_latents: `[B, F, C, h, w]` unscaled VAE latents of the video frames.
        image_embeddings: `[B * F, 1, D]` per-frame CLIP embeddings.
        added_time_ids: `[B, 3]`.
        replace_latents: `[B, n, C, h, w]`; before every step the first `n` latents are replaced by it (the merged
            prediction of the frames this window shares with the previous one).

    Returns the window's latents `[B, F, C, h, w]`. Differentiable (no in-place writes), so stage-2 training runs
    this very function.
    """
    device = conditioning_latents.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    latents = torch.zeros_like(conditioning_latents)
    num_replaced = 0 if replace_latents is None else replace_latents.shape[1]
    for t in scheduler.timesteps:
        if num_replaced:
            latents = torch.cat([replace_latents.to(latents.dtype), latents[:, num_replaced:]], dim=1)
        model_input = scheduler.scale_model_input(latents, t)
        model_input = torch.cat([model_input, conditioning_latents], dim=2)  # [B, F, 2C, h, w]
        model_output = unet(
            model_input, t, encoder_hidden_states=image_embeddings, added_time_ids=added_time_ids, return_dict=False
        )[0]
        latents = scheduler.step(model_output, t, latents).prev_sample
    return latents


class WindowedDenoiser:
    """The streaming core: padded frames go in one at a time, merged latents come out as soon as they are final.

    Windows follow [`WindowPlanner`]; each is predicted by [`predict_window_latents`] with its first frames replaced
    by the merged prediction of the previous window, and the shared frames are blended with [`blend_weights`].
    Frames before a window's start are final once that window has been merged. At any time it holds the encodings
    and latents of O(`window_size`) frames, whatever the video's length.

    Args:
        pipe: supplies the model passes (`encode_image_embeddings`, `encode_video_latents`, `unet`, `scheduler`)
            and `get_added_time_ids`.
        encode_chunk_size: frames that CLIP and the VAE encoder see at once (memory against speed; per-frame
            models, so the result does not depend on it beyond float rounding).
    """

    def __init__(self, pipe, window_size: int, overlap: int, num_inference_steps: int, encode_chunk_size: int):
        self.pipe = pipe
        self.planner = WindowPlanner(window_size, overlap)
        self.num_inference_steps = num_inference_steps
        self.encode_chunk_size = encode_chunk_size
        self.dtype = pipe.unet.dtype
        self.added_time_ids = pipe.get_added_time_ids(self.dtype)  # [1, 3]
        self.num_added = 0
        self.unencoded: list[torch.Tensor] = []  # padded pixels [3, Hp, Wp] of frames not encoded yet
        self.held_start = 0  # the first frame whose encodings (and merged latents) are still held
        self.embeddings: torch.Tensor | None = None  # [n, 1, D] CLIP embeddings of frames held_start...
        self.conditioning: torch.Tensor | None = None  # [n, C, h, w] VAE latents of the same frames
        self.merged: torch.Tensor | None = None  # [m, C, h, w] merged latents of frames [held_start, merged_end)
        self.merged_end = 0

    def add(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Take the next frame's padded pixels `[3, Hp, Wp]`; return the merged latents that became final."""
        self.unencoded.append(pixels)
        self.num_added += 1
        return [final for start, end in self.planner.ready(self.num_added) for final in self._denoise(start, end)]

    def finish(self) -> list[torch.Tensor]:
        """After the last frame: run the remaining windows and return every latent not returned yet."""
        if self.num_added == 0:
            raise ValueError("`video` has zero frames; pass at least one frame.")
        finals = [final for start, end in self.planner.finish(self.num_added) for final in self._denoise(start, end)]
        return [*finals, self.merged]

    def _encode_unencoded(self) -> None:
        embeddings, conditioning = [], []
        for i in range(0, len(self.unencoded), self.encode_chunk_size):
            chunk = torch.stack(self.unencoded[i : i + self.encode_chunk_size])  # [k, 3, Hp, Wp]
            embeddings.append(self.pipe.encode_image_embeddings(chunk).to(self.dtype))
            conditioning.append(self.pipe.encode_video_latents(chunk).to(self.dtype))
        self.unencoded.clear()
        held = [] if self.embeddings is None else [self.embeddings]
        self.embeddings = torch.cat(held + embeddings)
        held = [] if self.conditioning is None else [self.conditioning]
        self.conditioning = torch.cat(held + conditioning)

    def _denoise(self, start: int, end: int) -> list[torch.Tensor]:
        """Run window `[start, end)` and merge it; return the latents of the frames before `start` (now final)."""
        self._encode_unencoded()
        finals = []
        if self.merged is not None and start > self.held_start:
            finals.append(self.merged[: start - self.held_start])
            self.merged = self.merged[start - self.held_start :]
        self.embeddings = self.embeddings[start - self.held_start :]
        self.conditioning = self.conditioning[start - self.held_start :]
        self.held_start = start
        num_shared = self.merged_end - start if self.merged is not None else 0
        latents = predict_window_latents(
            self.pipe.unet,
            self.pipe.scheduler,
            self.conditioning[: end - start].unsqueeze(0),  # [1, F, C, h, w]
            self.embeddings[: end - start],  # [F, 1, D]
            self.added_time_ids,
            num_inference_steps=self.num_inference_steps,
            replace_latents=self.merged[:num_shared].unsqueeze(0) if num_shared else None,
        )[0]  # [F, C, h, w]
        if num_shared:
            weight = torch.as_tensor(blend_weights(num_shared), dtype=latents.dtype, device=latents.device)
            weight = weight.view(-1, 1, 1, 1)
            blended = self.merged[:num_shared] * weight + latents[:num_shared] * (1.0 - weight)
            latents = torch.cat([blended, latents[num_shared:]])
        self.merged = latents
        self.merged_end = end
        return finals
