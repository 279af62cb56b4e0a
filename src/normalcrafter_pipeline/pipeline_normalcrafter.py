# Copyright 2026 The normalcrafter-pipeline authors. Licensed under the MIT licence.
"""NormalCrafter: temporally consistent surface normals from videos of any length.

This module is self-contained (torch, numpy, PIL, diffusers, transformers, huggingface_hub) so that it can also be
used as a Hub `pipeline.py`. It holds, top to bottom: the pure helpers (window plan, blend weights, padding, the
anti-aliased resize), the per-frame-embedding UNet, the shared one-step prediction, and the pipeline itself.
"""

import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

import diffusers
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKLTemporalDecoder,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    UNetSpatioTemporalConditionModel,
)
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput
from diffusers.utils import BaseOutput, logging, replace_example_docstring
from packaging import version
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

logger = logging.get_logger(__name__)  # pylint: disable=invalid-name

DEFAULT_MODEL_ID = "Yanrui95/NormalCrafter"
DEFAULT_BASE_MODEL_ID = "stabilityai/stable-video-diffusion-img2vid-xt"
# The conditioning of the released model: fps 7, motion bucket 127, no noise augmentation (not SVD's fps - 1).
ADDED_TIME_IDS = (7.0, 127.0, 0.0)
PAD_MULTIPLE = 64
_DIFFUSERS_DTYPE_KWARG = "dtype" if version.parse(diffusers.__version__) >= version.parse("0.42") else "torch_dtype"
CLIP_INPUT_SIZE = (224, 224)
OUTPUT_TYPES = ("np", "pt", "pil", "latent")
# `mode`s of `torch.nn.functional.interpolate` accepted by `resample_method_input` / `resample_method_output`.
RESAMPLE_METHODS = ("bilinear", "bicubic", "nearest", "area")
PIPELINE_COMPONENTS = ("vae", "image_encoder", "unet", "scheduler", "feature_extractor")
# The name under which `save_pretrained` writes this module into a pipeline folder (diffusers' custom-pipeline file).
REMOTE_CODE_FILE = "pipeline.py"

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from normalcrafter_pipeline import NormalCrafterPipeline, read_video

        >>> pipe = NormalCrafterPipeline.from_pretrained("Yanrui95/NormalCrafter", torch_dtype=torch.float16)
        >>> pipe.to("cuda")

        >>> frames = read_video("clip.mp4", max_res=1024)  # lazy, one frame at a time
        >>> for normals in pipe.stream(frames, window_size=14, overlap=4):
        ...     print(normals.shape)  # (k, H, W, 3) float32 unit vectors, in order

        >>> # or everything at once, for a short clip held in memory:
        >>> normals = pipe(list(read_video("clip.mp4"))).normals  # (F, H, W, 3)
        ```
"""


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers: no model state, testable with plain numbers.
# ----------------------------------------------------------------------------------------------------------------


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


def compute_padding(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int, int, int]:
    """`(top, bottom, left, right)` padding that brings a frame to multiples of `multiple`.

    Per axis the total `p = ceil(x / multiple) * multiple - x` is split `p // 2` before and `p - p // 2` after.
    """
    pad_h = math.ceil(height / multiple) * multiple - height
    pad_w = math.ceil(width / multiple) * multiple - width
    return pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2


# Copied from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion._resize_with_antialiasing
# with _resize_with_antialiasing->resize_with_antialiasing (the CLIP resize of SVD; public here, tested against theirs)
def resize_with_antialiasing(input, size, interpolation="bicubic", align_corners=True):
    h, w = input.shape[-2:]
    factors = (h / size[0], w / size[1])

    # First, we have to determine sigma
    # Taken from skimage: https://github.com/scikit-image/scikit-image/blob/v0.19.2/skimage/transform/_warps.py#L171
    sigmas = (
        max((factors[0] - 1.0) / 2.0, 0.001),
        max((factors[1] - 1.0) / 2.0, 0.001),
    )

    # Now kernel size. Good results are for 3 sigma, but that is kind of slow. Pillow uses 1 sigma
    # https://github.com/python-pillow/Pillow/blob/master/src/libImaging/Resample.c#L206
    # But they do it in the 2 passes, which gives better results. Let's try 2 sigmas for now
    ks = int(max(2.0 * 2 * sigmas[0], 3)), int(max(2.0 * 2 * sigmas[1], 3))

    # Make sure it is odd
    if (ks[0] % 2) == 0:
        ks = ks[0] + 1, ks[1]

    if (ks[1] % 2) == 0:
        ks = ks[0], ks[1] + 1

    input = _gaussian_blur2d(input, ks, sigmas)

    output = torch.nn.functional.interpolate(input, size=size, mode=interpolation, align_corners=align_corners)
    return output


# Copied from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion._compute_padding
def _compute_padding(kernel_size):
    """Compute padding tuple."""
    # 4 or 6 ints:  (padding_left, padding_right,padding_top,padding_bottom)
    # https://pytorch.org/docs/stable/nn.html#torch.nn.functional.pad
    if len(kernel_size) < 2:
        raise AssertionError(kernel_size)
    computed = [k - 1 for k in kernel_size]

    # for even kernels we need to do asymmetric padding :(
    out_padding = 2 * len(kernel_size) * [0]

    for i in range(len(kernel_size)):
        computed_tmp = computed[-(i + 1)]

        pad_front = computed_tmp // 2
        pad_rear = computed_tmp - pad_front

        out_padding[2 * i + 0] = pad_front
        out_padding[2 * i + 1] = pad_rear

    return out_padding


# Copied from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion._filter2d
def _filter2d(input, kernel):
    # prepare kernel
    b, c, h, w = input.shape
    tmp_kernel = kernel[:, None, ...].to(device=input.device, dtype=input.dtype)

    tmp_kernel = tmp_kernel.expand(-1, c, -1, -1)

    height, width = tmp_kernel.shape[-2:]

    padding_shape: list[int] = _compute_padding([height, width])
    input = torch.nn.functional.pad(input, padding_shape, mode="reflect")

    # kernel and input tensor reshape to align element-wise or batch-wise params
    tmp_kernel = tmp_kernel.reshape(-1, 1, height, width)
    input = input.view(-1, tmp_kernel.size(0), input.size(-2), input.size(-1))

    # convolve the tensor with the kernel.
    output = torch.nn.functional.conv2d(input, tmp_kernel, groups=tmp_kernel.size(0), padding=0, stride=1)

    out = output.view(b, c, h, w)
    return out


# Copied from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion._gaussian
def _gaussian(window_size: int, sigma):
    if isinstance(sigma, float):
        sigma = torch.tensor([[sigma]])

    batch_size = sigma.shape[0]

    x = (torch.arange(window_size, device=sigma.device, dtype=sigma.dtype) - window_size // 2).expand(batch_size, -1)

    if window_size % 2 == 0:
        x = x + 0.5

    gauss = torch.exp(-x.pow(2.0) / (2 * sigma.pow(2.0)))

    return gauss / gauss.sum(-1, keepdim=True)


# Copied from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion._gaussian_blur2d
def _gaussian_blur2d(input, kernel_size, sigma):
    if isinstance(sigma, tuple):
        sigma = torch.tensor([sigma], dtype=input.dtype)
    else:
        sigma = sigma.to(dtype=input.dtype)

    ky, kx = int(kernel_size[0]), int(kernel_size[1])
    bs = sigma.shape[0]
    kernel_x = _gaussian(kx, sigma[:, 1].view(bs, 1))
    kernel_y = _gaussian(ky, sigma[:, 0].view(bs, 1))
    out_x = _filter2d(input, kernel_x[..., None, :])
    out = _filter2d(out_x, kernel_y[..., None])

    return out


def normalize_normals(normals: torch.Tensor, dim: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """Clamp to [-1, 1] (as the reference does) and scale every vector along `dim` to unit length."""
    normals = normals.clamp(-1.0, 1.0)
    return normals / normals.norm(dim=dim, keepdim=True).clamp_min(eps)


def processing_size(size: tuple[int, int], processing_resolution: int | None) -> tuple[int, int]:
    """(H, W) the model sees for a frame of `size` (H, W): the longest side scaled to `processing_resolution`
    (aspect kept, sides rounded down, as diffusers' Marigold pipelines do; smaller frames are scaled up), or
    `size` itself when `processing_resolution` is None or 0."""
    if not processing_resolution:
        return size
    height, width = size
    longest = max(height, width)
    new_height, new_width = height * processing_resolution // longest, width * processing_resolution // longest
    if new_height < 1 or new_width < 1:
        raise ValueError(
            f"`processing_resolution`={processing_resolution} turns a {width}x{height} (width x height) frame into "
            f"{new_width}x{new_height}; raise `processing_resolution` or pass None to keep the input size."
        )
    return new_height, new_width


def resize_frames(frames: torch.Tensor, size: tuple[int, int], method: str, antialias: bool) -> torch.Tensor:
    """`[N, C, H, W]` float frames resized to `size` (H, W) with `torch.nn.functional.interpolate` mode `method`;
    `antialias` applies to bilinear and bicubic only (as diffusers' `MarigoldImageProcessor.resize_antialias`)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    antialias = antialias and method in ("bilinear", "bicubic")
    return F.interpolate(frames, size=size, mode=method, antialias=antialias)


def normals_to_pil(normals: np.ndarray) -> list[PIL.Image.Image]:
    """`(N, H, W, 3)` float32 unit normals -> N RGB images `(n + 1) / 2 * 255`, truncated to uint8: the colours of
    diffusers' `MarigoldImageProcessor.visualize_normals` (the same float32 steps)."""
    scaled = (np.clip(normals, -1.0, 1.0).astype(np.float32) + np.float32(1.0)) * np.float32(0.5)
    return [PIL.Image.fromarray(frame) for frame in (scaled * np.float32(255)).astype(np.uint8)]


def check_window_args(window_size: Any, overlap: Any) -> None:
    if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1:
        raise ValueError(f"`window_size` must be an integer >= 1, got {window_size!r}. The released model uses 14.")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0 or overlap >= window_size:
        raise ValueError(
            f"`overlap` must be an integer with 0 <= overlap < window_size ({window_size}), got {overlap!r}. "
            "The released model uses 4 with a window of 14."
        )


# ----------------------------------------------------------------------------------------------------------------
# Frames in, normals out: the pipeline's video processor.
# ----------------------------------------------------------------------------------------------------------------


class NormalCrafterVideoProcessor:
    """Validates and pads the frames going in, crops and normalises the normals coming out.

    The pipeline holds one as `video_processor`, as diffusers' video pipelines hold theirs. It keeps no state of a
    video: the caller passes the size of the video's first frame to check every later frame against it.
    """

    def __init__(self, pad_multiple: int = PAD_MULTIPLE):
        self.pad_multiple = pad_multiple

    @staticmethod
    def as_frames(video: Any) -> Iterable:
        """Frames of `video`: one PIL image, a sequence of frames, an (F, H, W, C) array, an (F, C, H, W) tensor,
        or any iterable of frames."""
        if video is None:
            raise ValueError("`video` is None; pass a list of frames, an array (F, H, W, C) or an iterable of frames.")
        if isinstance(video, PIL.Image.Image):
            return [video]
        if isinstance(video, (np.ndarray, torch.Tensor)):
            if video.ndim != 4:
                layout = "(F, H, W, C)" if isinstance(video, np.ndarray) else "(F, C, H, W)"
                raise ValueError(
                    f"`video` is a {video.ndim}-D {type(video).__name__} of shape {tuple(video.shape)}; expected "
                    f"{layout}. Use `video[None]` for a single frame."
                )
            return video
        if isinstance(video, (str, os.PathLike)):
            raise ValueError(
                f"`video` is a path ({str(video)!r}); read it first, e.g. "
                "`normalcrafter_pipeline.read_video(path)`, and pass the frames."
            )
        if not isinstance(video, Iterable):
            raise ValueError(f"`video` of type {type(video).__name__} is not a sequence or iterable of frames.")
        return video

    @staticmethod
    def frame_to_array(frame: Any, index: int) -> np.ndarray:
        """One frame as an `(H, W, 3)` array (uint8, or float32 in [0, 1]); grayscale and RGBA are converted."""
        if isinstance(frame, PIL.Image.Image):
            return np.asarray(frame if frame.mode == "RGB" else frame.convert("RGB"))
        given_shape = tuple(frame.shape) if isinstance(frame, (np.ndarray, torch.Tensor)) else None
        if isinstance(frame, torch.Tensor):
            if frame.ndim == 3 and frame.shape[0] not in (1, 3, 4):
                raise ValueError(
                    f"`video` frame {index} is a tensor of shape {given_shape}; tensors are channel-first (C, H, W) "
                    "as everywhere in diffusers. Permute a channel-last video with `video.permute(0, 3, 1, 2)`."
                )
            frame = frame.detach().cpu()
            if frame.ndim == 3:
                frame = frame.permute(1, 2, 0)
            frame = frame.float().numpy() if frame.is_floating_point() else frame.numpy()
        if not isinstance(frame, np.ndarray):
            raise ValueError(
                f"`video` frame {index} is a {type(frame).__name__}; expected a PIL image, a numpy array (H, W, C) "
                "or a torch tensor (C, H, W)."
            )
        if frame.ndim == 2:
            frame = frame[..., None]
        if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"`video` frame {index} has shape {given_shape}; expected (H, W, 3) RGB, (H, W, 1) or (H, W) "
                "grayscale, or (H, W, 4) RGBA (torch tensors channel-first). Convert the frame to RGB."
            )
        if frame.shape[-1] == 1:
            frame = np.repeat(frame, 3, axis=-1)
        elif frame.shape[-1] == 4:
            frame = frame[..., :3]
        if frame.dtype == np.uint8:
            return frame
        if not np.issubdtype(frame.dtype, np.floating):
            raise ValueError(
                f"`video` frame {index} has dtype {frame.dtype}; expected uint8 in [0, 255] or float in [0, 1]. "
                "Convert it, e.g. `frame.astype(np.float32) / 65535` for 16-bit images."
            )
        low, high = float(frame.min()), float(frame.max())
        if not (0.0 <= low and high <= 1.0):  # also rejects NaN
            raise ValueError(
                f"`video` frame {index} has float values in [{low}, {high}]; expected [0, 1]. "
                "Divide uint8-range floats by 255, or pass uint8 arrays."
            )
        return frame.astype(np.float32, copy=False)

    @staticmethod
    def check_size(index: int, size: tuple[int, int], first_size: tuple[int, int] | None) -> tuple[int, int]:
        """`size` (H, W) of frame `index`, checked against the first frame's; returns the video's size."""
        if first_size is not None and size != first_size:
            raise ValueError(
                f"`video` frame {index} is {size[1]}x{size[0]} (width x height) but frame 0 is "
                f"{first_size[1]}x{first_size[0]}; all frames must have the same size. Resize them first."
            )
        return size

    def padding(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """`(top, bottom, left, right)` white padding of a frame of `size` (H, W)."""
        return compute_padding(*size, multiple=self.pad_multiple)

    def preprocess(
        self,
        frame: Any,
        index: int,
        first_size: tuple[int, int] | None = None,
        processing_resolution: int | None = None,
        resample_method: str = "bilinear",
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """One frame -> (`[3, Hp, Wp]` float32 pixels in [0, 1], padded with white, and the frame's (H, W)).

        uint8 frames are divided by 255, as the reference does; the frame must have `first_size` when it is given.
        With a `processing_resolution`, the frame is first resized to [`processing_size`] with `resample_method`
        (anti-aliased for bilinear and bicubic); None or 0 leaves it untouched.
        """
        array = self.frame_to_array(frame, index)
        size = self.check_size(index, array.shape[:2], first_size)
        pixels = torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(2, 0, 1)
        pixels = pixels.float() / 255.0 if array.dtype == np.uint8 else pixels.float()
        model_size = processing_size(size, processing_resolution)
        if model_size != size:
            # Clamped: bicubic overshoots, and the encoders take pixels in [0, 1].
            pixels = resize_frames(pixels[None], model_size, resample_method, antialias=True)[0].clamp(0.0, 1.0)
        top, bottom, left, right = self.padding(model_size)
        return F.pad(pixels, (left, right, top, bottom), value=1.0), size  # [3, Hp, Wp]

    def postprocess(
        self,
        decoded: torch.Tensor,
        size: tuple[int, int],
        output_type: str,
        output_size: tuple[int, int] | None = None,
        resample_method: str = "bilinear",
    ) -> np.ndarray | torch.Tensor | list[PIL.Image.Image]:
        """Decoded frames `[N, 3, Hp, Wp]` in about [-1, 1] of frames of `size` (H, W, as the model saw them) ->
        unit normals: `(N, H, W, 3)` float32 for `"np"`, `[N, 3, H, W]` for `"pt"`, N RGB PIL images
        `(n + 1) / 2` for `"pil"`. With an `output_size` other than `size`, the normals are resized to it with
        `resample_method` (not anti-aliased, as diffusers' Marigold pipelines do) and scaled to unit length again."""
        top, _, left, _ = self.padding(size)
        normals = normalize_normals(decoded[:, :, top : top + size[0], left : left + size[1]], dim=1)
        if output_size is not None and tuple(output_size) != tuple(size):
            normals = resize_frames(normals, output_size, resample_method, antialias=False)
            # Unit length again, without `normalize_normals`' clamp: a bicubic overshoot past 1 in one component
            # would turn the vector if it were clamped first.
            normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-6)
        if output_type == "pt":
            return normals.cpu()
        normals = normals.permute(0, 2, 3, 1).cpu().numpy()
        return normals_to_pil(normals) if output_type == "pil" else normals


# ----------------------------------------------------------------------------------------------------------------
# The UNet: one CLIP embedding per frame.
# ----------------------------------------------------------------------------------------------------------------


class NormalCrafterUNet(UNetSpatioTemporalConditionModel):
    r"""The SVD spatio-temporal UNet, taking one CLIP image embedding per frame.

    The stock [`UNetSpatioTemporalConditionModel`] repeats a single embedding per video over its frames. NormalCrafter
    conditions every frame on its own embedding: `encoder_hidden_states` may be `[batch * frames, 1, dim]` (one per
    frame, frames of a video contiguous) as well as `[batch, 1, dim]` (one per video, the stock behaviour). The
    spatial cross-attention of each frame sees that frame's embedding; the temporal blocks use the first frame's,
    as in SVD. Parameters and state dict are those of the stock class, so released weights load unchanged.
    """

    @classmethod
    def from_unet(cls, unet: UNetSpatioTemporalConditionModel) -> "NormalCrafterUNet":
        """A `NormalCrafterUNet` sharing `unet`'s parameters (no copy): how a stock UNet, as diffusers loads the
        released weights, becomes one that takes an embedding per frame. `unet` itself is left as it is."""
        with torch.device("meta"):
            converted = cls.from_config(unet.config)
        # keep_vars + assign: the very Parameter objects move over, requires_grad included.
        converted.load_state_dict(unet.state_dict(keep_vars=True), strict=True, assign=True)
        return converted.train(unet.training)

    # Adapted from diffusers.models.unets.unet_spatio_temporal_condition.UNetSpatioTemporalConditionModel.forward
    # (diffusers 0.42). Changed lines are marked "# changed:"; everything else follows the stock forward.
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple:
        r"""
        Args:
            sample (`torch.Tensor`): `[batch, frames, channels, height, width]`.
            timestep (`torch.Tensor`, `float` or `int`): the (continuous) timestep.
            encoder_hidden_states (`torch.Tensor`): `[batch * frames, 1, dim]` (one per frame, frames of a video
                contiguous) or `[batch, 1, dim]` (one per video, the stock behaviour).
            added_time_ids (`torch.Tensor`): `[batch, 3]` (fps, motion bucket id, noise augmentation strength).
            return_dict (`bool`): return a `UNetSpatioTemporalConditionOutput` instead of a tuple.
        """
        # By default samples have to be AT least a multiple of the overall upsampling factor.
        # The overall upsampling factor is equal to 2 ** (# num of upsampling layears).
        # However, the upsampling interpolation output size can be forced to fit any upsampling size
        # on the fly if necessary.
        default_overall_up_factor = 2**self.num_upsamplers

        # upsample size should be forwarded when sample is not a multiple of `default_overall_up_factor`
        forward_upsample_size = False
        upsample_size = None

        if any(s % default_overall_up_factor != 0 for s in sample.shape[-2:]):
            forward_upsample_size = True  # changed: no log line per call (every window would log it)

        # 1. time
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            # changed: the dtype choice inlined (diffusers' helper for it is newer than the releases we support)
            is_float = isinstance(timestep, float)
            if sample.device.type == "mps":
                dtype = torch.float32 if is_float else torch.int32
            else:
                dtype = torch.float64 if is_float else torch.int64
            timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)

        # broadcast to batch dimension in a way that's compatible with ONNX/Core ML
        batch_size, num_frames = sample.shape[:2]
        timesteps = timesteps.expand(batch_size)

        t_emb = self.time_proj(timesteps)

        # `Timesteps` does not contain any weights and will always return f32 tensors
        # but time_embedding might actually be running in fp16. so we need to cast here.
        # there might be better ways to encapsulate this.
        t_emb = t_emb.to(dtype=sample.dtype)

        emb = self.time_embedding(t_emb)

        time_embeds = self.add_time_proj(added_time_ids.flatten())
        time_embeds = time_embeds.reshape((batch_size, -1))
        time_embeds = time_embeds.to(emb.dtype)
        aug_emb = self.add_embedding(time_embeds)
        emb = emb + aug_emb

        # Flatten the batch and frames dimensions
        # sample: [batch, frames, channels, height, width] -> [batch * frames, channels, height, width]
        sample = sample.flatten(0, 1)
        # Repeat the embeddings num_video_frames times
        # emb: [batch, channels] -> [batch * frames, channels]
        emb = emb.repeat_interleave(num_frames, dim=0, output_size=emb.shape[0] * num_frames)
        # changed: encoder_hidden_states is repeated only when there is one per video; one per frame is kept as is
        if encoder_hidden_states.shape[0] == batch_size:
            # encoder_hidden_states: [batch, 1, channels] -> [batch * frames, 1, channels]
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(
                num_frames, dim=0, output_size=encoder_hidden_states.shape[0] * num_frames
            )
        elif encoder_hidden_states.shape[0] != batch_size * num_frames:
            raise ValueError(
                f"`encoder_hidden_states` has {encoder_hidden_states.shape[0]} embeddings for a batch of "
                f"{batch_size} videos of {num_frames} frames; pass {batch_size} (one per video) or "
                f"{batch_size * num_frames} (one per frame)."
            )

        # 2. pre-process
        sample = self.conv_in(sample)

        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        down_block_res_samples = (sample,)
        for downsample_block in self.down_blocks:
            if hasattr(downsample_block, "has_cross_attention") and downsample_block.has_cross_attention:
                sample, res_samples = downsample_block(
                    hidden_states=sample,
                    temb=emb,
                    encoder_hidden_states=encoder_hidden_states,
                    image_only_indicator=image_only_indicator,
                )
            else:
                sample, res_samples = downsample_block(
                    hidden_states=sample,
                    temb=emb,
                    image_only_indicator=image_only_indicator,
                )

            down_block_res_samples += res_samples

        # 4. mid
        sample = self.mid_block(
            hidden_states=sample,
            temb=emb,
            encoder_hidden_states=encoder_hidden_states,
            image_only_indicator=image_only_indicator,
        )

        # 5. up
        for i, upsample_block in enumerate(self.up_blocks):
            is_final_block = i == len(self.up_blocks) - 1

            res_samples = down_block_res_samples[-len(upsample_block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(upsample_block.resnets)]

            # if we have not reached the final block and need to forward the
            # upsample size, we do it here
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]

            if hasattr(upsample_block, "has_cross_attention") and upsample_block.has_cross_attention:
                sample = upsample_block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=res_samples,
                    encoder_hidden_states=encoder_hidden_states,
                    upsample_size=upsample_size,
                    image_only_indicator=image_only_indicator,
                )
            else:
                sample = upsample_block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=res_samples,
                    upsample_size=upsample_size,
                    image_only_indicator=image_only_indicator,
                )

        # 6. post-process
        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        sample = self.conv_out(sample)

        # 7. Reshape back to original shape
        sample = sample.reshape(batch_size, num_frames, *sample.shape[1:])

        if not return_dict:
            return (sample,)

        return UNetSpatioTemporalConditionOutput(sample=sample)


# ----------------------------------------------------------------------------------------------------------------
# CPU memory: each model pass reuses the blocks it frees (glibc only).
# ----------------------------------------------------------------------------------------------------------------

# glibc's `mallopt` parameters (malloc.h). Its mmap threshold starts at 128 KiB and rises with each freed mapping up
# to 32 MiB on 64-bit systems, the trim threshold following at twice that: the state a warmed-up process reaches.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_WARM_MMAP_THRESHOLD = 32 * 1024 * 1024
_GLIBC_WARM_TRIM_THRESHOLD = 2 * _GLIBC_WARM_MMAP_THRESHOLD
_GLIBC_MAX_THRESHOLD = 2**31 - 1  # `mallopt` takes an int


class HeapRetention:
    """Process-wide, reference-counted: while any holder is inside, glibc serves large blocks from its heap and keeps
    freed memory for reuse instead of returning it to the kernel; when the last one leaves, `malloc_trim` returns the
    retained memory and glibc's thresholds are left where its own adjustment takes a warmed-up process (blocks above
    32 MiB mapped, free heap above 64 MiB trimmed).

    Why: with glibc's defaults every block above its mmap threshold (128 KiB, rising to at most 32 MiB: most
    activations of the VAE and many of the UNet) is a fresh `mmap`, so an element-wise operation first takes a page
    fault, and the kernel zero-fills a page, for every 4 KiB of its output. On a 2-core CPU a new SiLU, add or group
    norm output of 60 MB then costs 2-4x the same operation into reused memory (`benchmarks/BENCHMARKS.md`).
    Exactness is untouched: only where the memory comes from changes. The price: a freed block is reused only by a
    request that fits in it, so the heap grows past the live tensors within a holder (for large activations by
    more than half); hence the pipeline holds it per model pass, and only when asked (`retain_cpu_memory`).

    A no-op where the C library is not glibc (macOS, Windows, musl). Thresholds that the process had set itself
    (`mallopt`, `GLIBC_TUNABLES`) are not restored; `retain_cpu_memory = False` leaves them alone.
    """

    _lock = threading.Lock()
    _holders = 0
    _libc: Any = None

    @classmethod
    def _glibc(cls):
        if cls._libc is None:
            cls._libc = False
            if sys.platform.startswith("linux"):
                with contextlib.suppress(OSError, AttributeError):
                    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                    libc.gnu_get_libc_version.restype = ctypes.c_char_p
                    libc.gnu_get_libc_version()  # glibc only: musl lacks it
                    cls._libc = libc
        return cls._libc

    @classmethod
    def available(cls) -> bool:
        return bool(cls._glibc())

    @classmethod
    def active(cls) -> bool:
        return cls._holders > 0

    @classmethod
    @contextlib.contextmanager
    def hold(cls, enabled: bool = True) -> Iterator[None]:
        libc = cls._glibc() if enabled else False
        if not libc:
            yield
            return
        with cls._lock:
            if cls._holders == 0:
                if not libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MAX_THRESHOLD):  # glibc releases that cap it
                    libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_WARM_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_MAX_THRESHOLD)
            cls._holders += 1
        try:
            yield
        finally:
            with cls._lock:
                cls._holders -= 1
                if cls._holders == 0:
                    libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_WARM_MMAP_THRESHOLD)
                    libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_WARM_TRIM_THRESHOLD)
                    libc.malloc_trim(0)


def _check_cpp_compiler() -> None:
    """Inductor compiles CPU kernels with a C++ compiler: say so now rather than after minutes of tracing."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: inductor reports it itself
        return
    try:
        get_cpp_compiler()
    except Exception as error:
        raise RuntimeError(
            f"torch.compile on the CPU needs a C++ compiler, and inductor found none ({error}). Install one (g++ or "
            "clang++; `apt install g++`), or leave the pipeline uncompiled."
        ) from error


# ----------------------------------------------------------------------------------------------------------------
# The deterministic prediction of one window, shared by inference and stage-2 training.
# ----------------------------------------------------------------------------------------------------------------


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
        pipe: supplies the model passes (`encode_image_embeddings`, `encode_video_latents`, `unet`, `scheduler`).
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
        with self.pipe.model_pass():
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


# ----------------------------------------------------------------------------------------------------------------
# The pipeline.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class NormalCrafterPipelineOutput(BaseOutput):
    r"""
    Args:
        normals (`np.ndarray`, `torch.Tensor` or `list[PIL.Image.Image]`):
            Unit surface normals: `(F, H, W, 3)` float32 for `output_type="np"`, `[F, 3, H, W]` for `"pt"`, F RGB
            images `(n + 1) / 2` for `"pil"`, or the merged latents `[F, C, H/8, W/8]` of the padded video for
            `"latent"`.
    """

    normals: np.ndarray | torch.Tensor | list[PIL.Image.Image]


class NormalCrafterPipeline(DiffusionPipeline):
    r"""
    Video-to-normals pipeline of NormalCrafter (a Stable Video Diffusion backbone fine-tuned for surface normals).

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    (downloading, saving, running on a particular device, offloading).

    Args:
        vae ([`AutoencoderKLTemporalDecoder`]):
            Encodes the frames to conditioning latents and decodes normal latents (its decoder is fine-tuned for
            normal maps).
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`]):
            CLIP vision tower giving one embedding per frame.
        unet ([`NormalCrafterUNet`] or [`UNetSpatioTemporalConditionModel`]):
            The spatio-temporal denoiser, conditioned on per-frame embeddings. A stock UNet (as diffusers loads the
            released weights) is wrapped as a [`NormalCrafterUNet`] sharing its parameters.
        scheduler ([`EulerDiscreteScheduler`]):
            The EDM-style Euler scheduler of SVD-xt (v-prediction, continuous timesteps, Karras sigmas).
        feature_extractor ([`~transformers.CLIPImageProcessor`]):
            Supplies the CLIP normalisation constants.

    Attributes:
        retain_cpu_memory (`bool`, defaults to `False`): on the CPU, reuse the memory freed during a model pass (a
            CLIP or VAE chunk, a UNet window) within that pass instead of letting glibc return it to the kernel to
            be faulted in again, and hand it back when the pass ends (glibc only). The same numbers, faster (1.09-1.25x
            per pass in fp32 on a 2-core CPU at 128x256), but the heap fragments within a pass: for the SVD-xt decoder
            at 1024x576 in bf16 one pass peaked at 8.5 GB without it and passed 13.6 GB with it. Memory stays flat
            with the video's length either way (`benchmarks/BENCHMARKS.md`).
    """

    model_cpu_offload_seq = "image_encoder->vae->unet"
    _optional_components = []
    # Opt-in: model passes on the CPU reuse the memory they free ([`HeapRetention`], `model_pass`). Off by default:
    # faster, but glibc's heap fragments within a pass, so the peak grows (see the `Attributes` above).
    retain_cpu_memory = False

    # What `model_index.json` records for classes that not every supported diffusers/transformers release can load:
    # a NormalCrafterUNet's weights are the stock UNet's (any loader reads them; this pipeline wraps them again), and
    # transformers 5 names its CLIP processors `CLIPImageProcessorPil` / `...Fast`, classes transformers 4 lacks.
    _portable_component_classes = {
        "NormalCrafterUNet": ("diffusers", "UNetSpatioTemporalConditionModel"),
        "CLIPImageProcessorPil": ("transformers", "CLIPImageProcessor"),
        "CLIPImageProcessorFast": ("transformers", "CLIPImageProcessor"),
    }

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        # typing.Union, not `X | Y`: diffusers 0.32 reads only the former from the signature
        unet: Union[NormalCrafterUNet, UNetSpatioTemporalConditionModel],
        scheduler: EulerDiscreteScheduler,
        feature_extractor: CLIPImageProcessor,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=scheduler,
            feature_extractor=feature_extractor,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        self.video_processor = NormalCrafterVideoProcessor(pad_multiple=PAD_MULTIPLE)

    def __setattr__(self, name: str, value: Any):
        # Every component assignment passes here (`register_modules` and `pipe.unet = ...` alike).
        if name == "unet" and type(value) is UNetSpatioTemporalConditionModel:
            value = NormalCrafterUNet.from_unet(value)
        super().__setattr__(name, value)

    def register_to_config(self, **kwargs):
        for name, value in kwargs.items():
            if isinstance(value, (tuple, list)) and len(value) == 2 and value[1] in self._portable_component_classes:
                kwargs[name] = self._portable_component_classes[value[1]]
        super().register_to_config(**kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Loading and saving
    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike = DEFAULT_MODEL_ID,
        base_model: str | os.PathLike = DEFAULT_BASE_MODEL_ID,
        base_revision: str | None = None,
        **kwargs,
    ) -> "NormalCrafterPipeline":
        r"""Load a NormalCrafter pipeline from a folder or a Hub repo, running no code from it.

        Three layouts are understood:

        1. a full pipeline folder or repo (what `save_pretrained` writes, or a folder laid out like
           stable-video-diffusion-img2vid-xt); its UNet is loaded as [`NormalCrafterUNet`];
        2. a repo with only `unet/` and `vae/` (the released `Yanrui95/NormalCrafter`); the CLIP image encoder,
           feature extractor and scheduler then come from `base_model` (default
           `stabilityai/stable-video-diffusion-img2vid-xt`, a gated repo: accept its licence and log in);
        3. any component passed as a keyword argument (`unet=`, `vae=`, `image_encoder=`, `feature_extractor=`,
           `scheduler=`) is used as given and not loaded.

        Hub access is checked once before anything is downloaded: when the Hub cannot be reached, files come from
        the local cache, and a file missing there is a [`ModelUnavailableError`] saying so at once (not after
        huggingface_hub's retries). Gated, private and misspelled repos get errors that say what to do.

        Args:
            pretrained_model_name_or_path: a Hub repo id or a local folder (default `Yanrui95/NormalCrafter`).
            base_model: repo id or folder completing a `unet/` + `vae/` repo.
            base_revision: revision of `base_model` (default its main branch).
            kwargs: `torch_dtype` (or `dtype`; default `torch.float32`), `variant`, `revision`, `cache_dir`,
                `local_files_only`, `token`, `force_download`, `use_safetensors` (default `True`: no pickled
                weights are read), `low_cpu_mem_usage`, and components. `variant` applies where such files exist
                (the base model ships `fp16`; the released NormalCrafter weights have a single variant).
        """
        path = os.fspath(pretrained_model_name_or_path)
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        variant = kwargs.pop("variant", None)
        components = {name: kwargs.pop(name) for name in PIPELINE_COMPONENTS if name in kwargs}
        components = {name: component for name, component in components.items() if component is not None}
        hub_kwargs = {
            name: kwargs.pop(name)
            for name in ("cache_dir", "revision", "local_files_only", "token", "force_download")
            if name in kwargs
        }
        model_kwargs = {name: kwargs.pop(name) for name in ("use_safetensors", "low_cpu_mem_usage") if name in kwargs}
        model_kwargs.setdefault("use_safetensors", True)
        # Float32 unless asked (a saved config's dtype does not decide); diffusers >= 0.42 says `dtype`, older
        # releases `torch_dtype`.
        model_kwargs[_DIFFUSERS_DTYPE_KWARG] = dtype or torch.float32
        if kwargs:
            raise ValueError(
                f"`from_pretrained` got unexpected keyword arguments {sorted(kwargs)}. It takes the components "
                f"{', '.join(PIPELINE_COMPONENTS)}, `base_model`, `base_revision`, `torch_dtype` (or `dtype`), "
                "`variant`, `revision`, `cache_dir`, `local_files_only`, `token`, `force_download`, `use_safetensors` "
                "and `low_cpu_mem_usage`; for other options load the components yourself and pass them."
            )

        hub = _HubAccess(hub_kwargs)
        source = None
        base = None
        for name in PIPELINE_COMPONENTS:
            if name in components:
                continue
            source = source or _ModelSource(path, hub_kwargs.get("revision"), hub, "model")
            if name in ("unet", "vae") or source.has(name):
                components[name] = source.load(name, model_kwargs, variant)
                continue
            base = base or _ModelSource(os.fspath(base_model), base_revision, hub, "base", model_path=path)
            components[name] = base.load(name, model_kwargs, variant)

        pipe = cls(**components)
        pipe.register_to_config(_name_or_path=path)
        if dtype is not None:  # components passed in by the caller follow the requested dtype too
            pipe.to(dtype=dtype)
        return pipe

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        r"""Save the pipeline to a folder that diffusers' own loaders read, with or without this package.

        Besides the components (safetensors by default) and `model_index.json`, the folder gets this module as
        `pipeline.py`, named in `model_index.json` as `["pipeline", "NormalCrafterPipeline"]`: diffusers' convention
        for custom pipelines, so that `DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)`
        loads it where this package is not installed. The UNet is recorded as the stock
        `UNetSpatioTemporalConditionModel` (its weights are the stock state dict).

        Args:
            save_directory: the folder to write (created if needed).
            safe_serialization, variant: as in [`DiffusionPipeline.save_pretrained`].
            push_to_hub (`bool`, defaults to `False`): upload the folder to `repo_id` (default: the folder's name)
                afterwards; `private`, `token`, `commit_message` and `create_pr` are passed to huggingface_hub.
        """
        upload = {
            name: kwargs.pop(name)
            for name in ("repo_id", "private", "token", "commit_message", "create_pr")
            if name in kwargs
        }
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant, **kwargs)
        write_pipeline_code(save_directory)
        if push_to_hub:
            return upload_folder_to_hub(save_directory, **upload)

    # ------------------------------------------------------------------------------------------------------------
    # Checks
    # ------------------------------------------------------------------------------------------------------------

    def check_inputs(
        self,
        video: Any,
        window_size: int,
        overlap: int,
        num_inference_steps: int,
        decode_chunk_size: int,
        output_type: str,
        encode_chunk_size: int = 7,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        resample_method_input: str = "bilinear",
        resample_method_output: str = "bilinear",
    ) -> None:
        """Validate the arguments and the container of `video`, and every frame of a video held in memory (a list,
        tuple, array or tensor) so that a bad frame raises before any model runs.

        Lazy iterables (generators, [`VideoReader`]s) are not read here, so nothing is decoded twice: their frames
        are checked as the run reads them.
        """
        _check_stream_args(
            window_size,
            overlap,
            num_inference_steps,
            decode_chunk_size,
            encode_chunk_size,
            output_type,
            processing_resolution,
            match_input_resolution,
            resample_method_input,
            resample_method_output,
        )
        frames = self.video_processor.as_frames(video)
        if not isinstance(frames, (list, tuple, np.ndarray, torch.Tensor)):
            return
        if len(frames) == 0:
            raise ValueError("`video` has zero frames; pass at least one frame.")
        first_size = None
        for index, frame in enumerate(frames):
            size = self.video_processor.frame_to_array(frame, index).shape[:2]
            first_size = self.video_processor.check_size(index, size, first_size)
        processing_size(first_size, processing_resolution)  # a side that would shrink to nothing

    # ------------------------------------------------------------------------------------------------------------
    # Model passes
    # ------------------------------------------------------------------------------------------------------------

    def encode_image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` pixels in [0, 1] -> `[N, 1, D]` CLIP image embeddings, one per frame."""
        device = self._execution_device
        images = resize_with_antialiasing(pixels.to(device) * 2.0 - 1.0, CLIP_INPUT_SIZE)
        images = (images + 1.0) / 2.0
        mean = torch.tensor(self.feature_extractor.image_mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std, device=device).view(1, 3, 1, 1)
        images = ((images - mean) / std).to(dtype=self.image_encoder.dtype)
        with self.model_pass():
            return self.image_encoder(images).image_embeds.unsqueeze(1)  # [N, 1, D]

    def encode_video_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` pixels in [0, 1] -> `[N, C, H/8, W/8]` unscaled latents (the distribution's mode)."""
        device = self._execution_device
        # As in SVD, an fp16 VAE that asks for it encodes in fp32.
        upcast = (
            self.vae.dtype == torch.float16
            and self.vae.config.force_upcast
            and next(self.vae.parameters()).device.type != "meta"
        )
        if upcast:
            self.vae.to(dtype=torch.float32)
        pixels = pixels.to(device).contiguous(memory_format=self._vae_encoder_memory_format(self.vae.dtype))
        with self.model_pass():
            latents = self.vae.encode((pixels * 2.0 - 1.0).to(self.vae.dtype)).latent_dist.mode()
        if upcast:
            self.vae.to(dtype=torch.float16)
        return latents

    @staticmethod
    def _vae_encoder_memory_format(dtype: torch.dtype) -> torch.memory_format:
        """The layout of the VAE encoder's input, which its convolutions and group norms keep: channels_last (NHWC)
        in bf16 and fp16, where NHWC convolutions are faster on CPUs; the plain layout (NCHW) in fp32 and fp64. On
        the CPU, GroupNorm on a channels_last tensor takes E[x^2] - E[x]^2 from float32 sums run one position after
        another, which drift on white-padded frames (many equal terms) far beyond fp32 rounding, and the model
        amplifies that; the NCHW kernel's statistics stay at rounding level (benchmarks/BENCHMARKS.md)."""
        return torch.channels_last if dtype in (torch.bfloat16, torch.float16) else torch.contiguous_format

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """`[N, C, h, w]` merged latents (one decode chunk) -> `[N, 3, H, W]` float32 in about [-1, 1]."""
        latents = latents / self.vae.config.scaling_factor
        with self.model_pass():
            frames = self.vae.decode(latents.to(self.vae.dtype), num_frames=latents.shape[0]).sample
        return frames.float()

    def model_pass(self) -> contextlib.AbstractContextManager:
        """The context of one model pass (a CLIP or VAE chunk, a UNet window): on the CPU with `retain_cpu_memory`,
        memory freed inside it is reused inside it ([`HeapRetention`]) and handed back to the kernel when it ends,
        so the process's footprint between passes stays that of its live tensors."""
        return HeapRetention.hold(self.retain_cpu_memory and self._execution_device.type == "cpu")

    def compile(self, components: Iterable[str] = ("unet",), *, freezing: bool = True, **compile_kwargs) -> None:
        """`torch.compile` model components in place (opt-in; the default eager path is the exact one).

        What it pays, measured on the SVD-xt architecture on a 2-core CPU with AMX (`benchmarks/BENCHMARKS.md`): in
        bf16 a UNet window runs 1.06x faster on a quiet host and up to 1.7x on a loaded one (128x256 and 1024x576),
        a whole 14-frame run at 128x256 1.12x; in fp32 nothing. Compiling takes 4-6 minutes on a cold inductor cache
        and 1-3 on a warm one (a later process, inductor's on-disk cache; about 3x less with `freezing=False`, at
        about the same speed), so it pays for long videos only. The CLIP encoder (0.85x), the VAE encoder (0.8x) and
        decoder (0.55x) lose, so only the UNet is compiled by default. Windows keep one shape per resolution: a video
        compiles once (a clip shorter than the window, or another resolution, compiles again).

        Compile after loading, casting and moving the pipeline; the first call then compiles. With `freezing`, the
        weights become constants of the compiled code (on CPUs, packed for oneDNN once): weights changed afterwards
        are not seen until `compile` is called again, and CPU offloading cannot move them.

        Args:
            components: any of `"unet"`, `"image_encoder"`, `"vae"` (its encoder and decoder).
            freezing: inductor's weight freezing (`options={"freezing": True}`); the model runs under `no_grad`.
            compile_kwargs: passed to `torch.compile` (`backend`, `dynamic`, `fullgraph`, `options`, ...).
        """
        modules = {"unet": [self.unet], "image_encoder": [self.image_encoder]}
        modules["vae"] = [self.vae.encoder, self.vae.decoder]  # the pipeline calls `vae.encode`/`decode`, not `vae()`
        components = [components] if isinstance(components, str) else list(components)
        unknown = sorted(set(components) - set(modules))
        if unknown or not components:
            raise ValueError(f"`components` must name some of {sorted(modules)}, got {components}.")
        options = dict(compile_kwargs.pop("options", None) or {})
        if freezing:
            if "mode" in compile_kwargs:
                raise ValueError(
                    "`torch.compile` takes `mode` or `options`, not both, and weight freezing is an option: pass "
                    "`freezing=False` with `mode`, or put the mode's settings in `options`."
                )
            offloaded = [name for name in components for module in modules[name] if hasattr(module, "_hf_hook")]
            if offloaded:
                raise ValueError(
                    f"{offloaded[0]} is offloaded (`enable_*_cpu_offload`); frozen weights would stay on the device. "
                    "Compile with `freezing=False`, or without offloading."
                )
            options["freezing"] = True
        targets = [module for name in components for module in modules[name]]
        on_cpu = any(next(module.parameters()).device.type == "cpu" for module in targets)
        if compile_kwargs.get("backend", "inductor") == "inductor" and on_cpu:
            _check_cpp_compiler()
        for module in targets:
            module.compile(options=options or None, **compile_kwargs)

    def get_added_time_ids(self, dtype: torch.dtype) -> torch.Tensor:
        """`[[7, 127, 0]]` (fps, motion bucket, noise augmentation) as the released model is conditioned."""
        expected = self.unet.add_embedding.linear_1.in_features
        passed = self.unet.config.addition_time_embed_dim * len(ADDED_TIME_IDS)
        if expected != passed:
            raise ValueError(
                f"The UNet expects {expected} added-time embedding features but {len(ADDED_TIME_IDS)} ids give "
                f"{passed}; check `unet.config.addition_time_embed_dim`."
            )
        return torch.tensor([ADDED_TIME_IDS], dtype=dtype, device=self._execution_device)

    @torch.no_grad()
    def stream(
        self,
        video: Iterable,
        window_size: int = 14,
        overlap: int = 4,
        num_inference_steps: int = 1,
        decode_chunk_size: int = 7,
        output_type: str = "np",
        encode_chunk_size: int = 7,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        resample_method_input: str = "bilinear",
        resample_method_output: str = "bilinear",
    ) -> Iterator[np.ndarray | torch.Tensor | list[PIL.Image.Image]]:
        r"""Estimate normals for a video of any length, yielding them in order as soon as they are final.

        Frames are read from `video` one at a time (a generator over a two-hour video is fine); at any moment only
        O(`window_size` + `decode_chunk_size`) frames, latents and outputs are held. The numbers are identical to
        [`~NormalCrafterPipeline.__call__`], which runs this very path.

        Args:
            video: an iterable of frames: PIL images, `(H, W, 3)` arrays (uint8, or float in [0, 1]) or `(3, H, W)`
                tensors. Grayscale and RGBA frames are converted to RGB. All frames must share one size; a frame
                that does not raises when it is read.
            window_size (`int`, defaults to 14): frames denoised together.
            overlap (`int`, defaults to 4): frames shared by consecutive windows, blended linearly.
            num_inference_steps (`int`, defaults to 1): Euler steps per window (the released model uses 1).
            decode_chunk_size (`int`, defaults to 7): frames decoded together by the temporal VAE decoder; chunks
                are counted from frame 0, so the result does not depend on how the video is read.
            output_type (`str`, defaults to `"np"`): `"np"` yields `(k, H, W, 3)` float32 arrays, `"pt"` yields
                `[k, 3, H, W]` tensors, `"pil"` yields lists of k RGB PIL images `(n + 1) / 2` (the colours of
                diffusers' `MarigoldImageProcessor.visualize_normals`), `"latent"` yields the merged latents
                `[k, C, h, w]`.
            encode_chunk_size (`int`, defaults to 7): frames CLIP and the VAE encoder see at once (memory against
                speed; both encode each frame on its own).
            processing_resolution (`int`, *optional*): longest side of the frames the model sees; frames are
                resized to it (aspect kept, sides rounded down; smaller frames are scaled up) before the white
                padding to multiples of 64. `None` or 0 (the default) keeps the input size.
            match_input_resolution (`bool`, defaults to `True`): resize the normals back to the input size (and
                scale them to unit length again); `False` returns them at the processing size.
            resample_method_input (`str`, defaults to `"bilinear"`): how frames are resized to
                `processing_resolution`: `"bilinear"` or `"bicubic"` (anti-aliased), `"nearest"` or `"area"`.
            resample_method_output (`str`, defaults to `"bilinear"`): how normals are resized back to the input size
                (the same choices, not anti-aliased).

        Yields:
            Consecutive chunks of unit normals (or latents), covering every frame exactly once, in order.
        """
        _check_stream_args(
            window_size,
            overlap,
            num_inference_steps,
            decode_chunk_size,
            encode_chunk_size,
            output_type,
            processing_resolution,
            match_input_resolution,
            resample_method_input,
            resample_method_output,
        )
        frames = self.video_processor.as_frames(video)
        denoiser = WindowedDenoiser(self, window_size, overlap, num_inference_steps, encode_chunk_size)
        size = None  # (H, W) of frame 0; every later frame must match it
        undecoded: list[torch.Tensor] = []  # final latents waiting for a full decode chunk
        # A bar over the frames read (outputs follow within a window); `set_progress_bar_config` applies as usual.
        with self.progress_bar(frames) as progress:
            progress.unit = "frame"
            # 1. Read, pad and hand each frame to the windowed denoiser; 2. decode the latents that became final
            for index, frame in enumerate(progress):
                pixels, size = self.video_processor.preprocess(
                    frame, index, size, processing_resolution, resample_method_input
                )  # [3, Hp, Wp]
                if index == 0:  # (H, W) the model sees, and that of the outputs
                    model_size = processing_size(size, processing_resolution)
                    out = (model_size, size if match_input_resolution else model_size, resample_method_output)
                for latents in denoiser.add(pixels):
                    undecoded.append(latents)
                    yield from self._stream_outputs(undecoded, decode_chunk_size, out, output_type, last=False)
        undecoded.extend(denoiser.finish())
        yield from self._stream_outputs(undecoded, decode_chunk_size, out, output_type, last=True)
        self.maybe_free_model_hooks()

    def _stream_outputs(
        self,
        undecoded: list[torch.Tensor],
        decode_chunk_size: int,
        sizes: tuple[tuple[int, int], tuple[int, int], str],
        output_type: str,
        last: bool,
    ) -> Iterator[np.ndarray | torch.Tensor | list[PIL.Image.Image]]:
        """Yield what `stream` gives for the final latents held in `undecoded`, leaving there what must wait: the
        latents themselves for `"latent"`, else the normals of each full decode chunk (and of the shorter rest when
        `last`). Chunks are counted from frame 0, as the reference decodes them, so the result does not depend on how
        the video arrives. `sizes`: the (H, W) the model saw, the (H, W) of the outputs and the resampling method
        between them."""
        if output_type == "latent":
            yield from undecoded
            undecoded.clear()
            return
        queue = torch.cat(undecoded)  # [n, C, h, w]
        num_decoded = queue.shape[0] if last else (queue.shape[0] // decode_chunk_size) * decode_chunk_size
        undecoded[:] = [queue[num_decoded:]] if num_decoded < queue.shape[0] else []
        for i in range(0, num_decoded, decode_chunk_size):
            decoded = self.decode_latents(queue[i : min(i + decode_chunk_size, num_decoded)])  # [k, 3, Hp, Wp]
            model_size, output_size, resample_method = sizes
            yield self.video_processor.postprocess(decoded, model_size, output_type, output_size, resample_method)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        video: list[PIL.Image.Image] | np.ndarray | torch.Tensor | Iterable,
        window_size: int = 14,
        overlap: int = 4,
        num_inference_steps: int = 1,
        decode_chunk_size: int = 7,
        output_type: str = "np",
        return_dict: bool = True,
        encode_chunk_size: int = 7,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        resample_method_input: str = "bilinear",
        resample_method_output: str = "bilinear",
    ) -> NormalCrafterPipelineOutput | tuple:
        r"""Estimate temporally consistent surface normals for every frame of `video`.

        Args:
            video: a list of PIL images, an `(F, H, W, C)` array (uint8, or float in [0, 1]), an `(F, C, H, W)`
                tensor in [0, 1], or any iterable of frames (a generator, a [`VideoReader`]), read once. Grayscale
                and RGBA are converted to RGB. The output has one frame per frame read, whatever `len(video)` says.
                For long videos use [`~NormalCrafterPipeline.stream`], which also yields as it goes.
            window_size, overlap, num_inference_steps, decode_chunk_size, output_type, encode_chunk_size,
            processing_resolution, match_input_resolution, resample_method_input, resample_method_output: see
                [`~NormalCrafterPipeline.stream`].
            return_dict (`bool`, defaults to `True`): return a [`NormalCrafterPipelineOutput`] or a tuple.

        Examples:

        Returns:
            [`NormalCrafterPipelineOutput`] or `tuple`: `normals`, float32 unit vectors `(F, H, W, 3)` (`"np"`),
            `[F, 3, H, W]` (`"pt"`), a list of F RGB PIL images (`"pil"`), or merged latents (`"latent"`).
        """
        # 1. Check the arguments, and every frame of a video held in memory, before any model runs
        self.check_inputs(
            video,
            window_size,
            overlap,
            num_inference_steps,
            decode_chunk_size,
            output_type,
            encode_chunk_size,
            processing_resolution,
            match_input_resolution,
            resample_method_input,
            resample_method_output,
        )
        frames = self.video_processor.as_frames(video)
        announced = len(frames) if hasattr(frames, "__len__") else None

        # 2. Run the streaming path and gather its chunks; the frames it read are counted, not the announced length
        chunks = self.stream(
            frames,
            window_size=window_size,
            overlap=overlap,
            num_inference_steps=num_inference_steps,
            decode_chunk_size=decode_chunk_size,
            output_type=output_type,
            encode_chunk_size=encode_chunk_size,
            processing_resolution=processing_resolution,
            match_input_resolution=match_input_resolution,
            resample_method_input=resample_method_input,
            resample_method_output=resample_method_output,
        )
        if output_type == "np":
            normals = _gather_chunks(chunks, expected=announced)
        elif output_type == "pil":
            normals = [image for chunk in chunks for image in chunk]
        else:
            normals = torch.cat(list(chunks))
        if announced is not None and len(normals) != announced:
            logger.warning(
                f"`video` announced {announced} frames (its `len`) but yielded {len(normals)}; the output has "
                f"{len(normals)}, one per frame read."
            )

        if not return_dict:
            return (normals,)
        return NormalCrafterPipelineOutput(normals=normals)


def _gather_chunks(chunks: Iterable[np.ndarray], expected: int | None) -> np.ndarray:
    """Stack streamed `(k, H, W, 3)` chunks into one array: allocated once when `expected` is right (no copy of the
    whole video at the end), grown when more frames come, and cut to the frames that came, never uninitialised."""
    gathered = None
    filled = 0
    for chunk in chunks:
        if gathered is None or filled + chunk.shape[0] > gathered.shape[0]:
            capacity = max(expected or 0, filled + chunk.shape[0], 2 * filled)
            grown = np.empty((capacity, *chunk.shape[1:]), dtype=np.float32)
            if gathered is not None:
                grown[:filled] = gathered[:filled]
            gathered = grown
        gathered[filled : filled + chunk.shape[0]] = chunk
        filled += chunk.shape[0]
    return gathered[:filled]


def _check_stream_args(
    window_size,
    overlap,
    num_inference_steps,
    decode_chunk_size,
    encode_chunk_size,
    output_type,
    processing_resolution=None,
    match_input_resolution=True,
    resample_method_input="bilinear",
    resample_method_output="bilinear",
) -> None:
    check_window_args(window_size, overlap)
    for name, value in (
        ("num_inference_steps", num_inference_steps),
        ("decode_chunk_size", decode_chunk_size),
        ("encode_chunk_size", encode_chunk_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    if processing_resolution is not None and (
        not isinstance(processing_resolution, int)
        or isinstance(processing_resolution, bool)
        or processing_resolution < 0
    ):
        raise ValueError(
            "`processing_resolution` must be None or an integer >= 0 (None or 0 keeps the input size), got "
            f"{processing_resolution!r}."
        )
    if not isinstance(match_input_resolution, bool):
        raise ValueError(f"`match_input_resolution` must be True or False, got {match_input_resolution!r}.")
    for name, value in (
        ("resample_method_input", resample_method_input),
        ("resample_method_output", resample_method_output),
    ):
        if value not in RESAMPLE_METHODS:
            raise ValueError(f"`{name}` must be one of {RESAMPLE_METHODS}, got {value!r}.")


# ----------------------------------------------------------------------------------------------------------------
# Loading helpers: where each component lives, and errors that say why a folder or Hub repo could not be read.
# ----------------------------------------------------------------------------------------------------------------


class ModelUnavailableError(OSError):
    """A model folder or Hub repo could not be read; the message names the cause and what to do."""


class BaseModelUnavailableError(ModelUnavailableError):
    """A component of the base model (stable-video-diffusion-img2vid-xt by default) could not be loaded."""


# The file whose presence tells that a folder or repo holds a component (read before any weights are).
_COMPONENT_CONFIG_FILES = {
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "image_encoder": "image_encoder/config.json",
    "feature_extractor": "feature_extractor/preprocessor_config.json",
    "scheduler": "scheduler/scheduler_config.json",
}
_GATED_BASE_HELP = (
    f"The default base {DEFAULT_BASE_MODEL_ID!r} is gated: accept its licence at "
    f"https://huggingface.co/{DEFAULT_BASE_MODEL_ID} and log in (`hf auth login`, or pass `token=`)."
)


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the Hub endpoint (`HF_ENDPOINT`) cannot be reached, or None when it answers.

    One request without retries, through huggingface_hub's own HTTP session (so proxies apply): any HTTP answer
    counts as reachable, only a failure to connect does not. Asked once per `from_pretrained`, it spares an offline
    user huggingface_hub's retries (about half a minute per file) before the same conclusion.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - requests and httpx raise different classes; all mean "no answer"
        return f"{constants.ENDPOINT}: {type(error).__name__}: {error}".replace("\n", " ")
    return None


class _HubAccess:
    """The Hub settings shared by the folders and repos of one `from_pretrained`.

    Whether the Hub answers is asked once, when a repo (not a folder) is first needed; when it does not, every
    repo is read from the local cache.
    """

    def __init__(self, hub_kwargs: dict):
        self.kwargs = {k: v for k, v in hub_kwargs.items() if k != "revision"}
        self.offline_reason: str | None = None
        self._asked = False

    def is_offline(self) -> bool:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE or self.kwargs.get("local_files_only"):
            return True
        if not self._asked:
            self._asked = True
            self.offline_reason = hub_unreachable_reason()
            if self.offline_reason is not None:  # info only: a file missing from the cache raises with this reason
                logger.info(f"The Hub cannot be reached ({self.offline_reason}); using the local cache only.")
        return self.offline_reason is not None


class _ModelSource:
    """One local folder or Hub repo that components are loaded from, with errors classified before any retry.

    Offline (HF_HUB_OFFLINE=1, `local_files_only=True`, or the Hub unreachable), a repo is its cached snapshot
    folder: a repo that is not in the cache fails at once, saying so, and a file absent from the snapshot is absent.
    `role` is `"model"` (the NormalCrafter weights) or `"base"` (the model completing a `unet/` + `vae/` repo);
    errors about a base are `BaseModelUnavailableError`s that also say how to pass the components directly.
    """

    def __init__(self, name: str, revision: str | None, hub: _HubAccess, role: str, model_path: str = ""):
        self.name = self.path = name
        self.hub_kwargs = {**hub.kwargs, **({} if revision is None else {"revision": revision})}
        self.role = role
        self.model_path = model_path
        self.is_local = os.path.isdir(name)
        self._has: dict[str, bool] = {}  # component -> whether its config file exists
        if self.is_local:
            return
        if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.exists(name):
            raise self._error(
                f"{name!r} is not a folder, nor a Hub repo id ('owner/name'). Pass an existing folder or a repo id "
                f"such as {DEFAULT_MODEL_ID if role == 'model' else DEFAULT_BASE_MODEL_ID!r}.",
                not_found=True,
            )
        if hub.is_offline():
            self.path = self._cached_snapshot(hub.offline_reason)
            self.is_local = True

    def _error(self, message: str, not_found: bool = False) -> OSError:
        if self.role == "base":
            return BaseModelUnavailableError(
                f"{self.model_path!r} has no image encoder, feature extractor or scheduler of its own, so they come "
                f"from the base model {self.name!r}: {message} {_GATED_BASE_HELP} Or pass `base_model=` a local "
                "folder laid out like it, or pass `image_encoder=`, `feature_extractor=` and `scheduler=` yourself."
            )
        return FileNotFoundError(message) if not_found else ModelUnavailableError(message)

    def _cached_snapshot(self, offline_reason: str | None) -> str:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import LocalEntryNotFoundError

        kwargs = {k: v for k, v in self.hub_kwargs.items() if k in ("cache_dir", "revision")}
        try:
            return snapshot_download(self.name, local_files_only=True, **kwargs)
        except LocalEntryNotFoundError as error:
            cache = os.fspath(kwargs.get("cache_dir") or constants.HF_HUB_CACHE)
            where = f"{self.name!r} is not in the local Hub cache {cache!r}"
            if offline_reason is not None:
                message = (
                    f"The Hub cannot be reached ({offline_reason}) and {where}. Connect to the internet and run "
                    "again, or pass a local model folder (`--model <folder>` on the command line)."
                )
            else:
                message = (
                    f"Downloads are off (HF_HUB_OFFLINE=1 or `local_files_only=True`) and {where}. Run once with a "
                    "network connection (HF_HUB_OFFLINE unset) to download it, or pass a local model folder "
                    "(`--model <folder>` on the command line)."
                )
            raise self._error(message) from error

    def has(self, component: str) -> bool:
        """Whether this folder or repo holds `component` (its configuration file exists); asked once per component,
        since `load` asks again and, online, each ask is a request."""
        if component not in self._has:
            self._has[component] = self._look_up(component)
        return self._has[component]

    def _look_up(self, component: str) -> bool:
        filename = _COMPONENT_CONFIG_FILES[component]
        if self.is_local:
            return os.path.isfile(os.path.join(self.path, filename))
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            hf_hub_download(self.name, filename, **self.hub_kwargs)
        except LocalEntryNotFoundError as error:  # before EntryNotFoundError, its base class
            raise self._error(
                f"{self.name}/{filename} could not be downloaded and is not in the local cache ({error})."
            ) from error
        except EntryNotFoundError:
            return False
        except GatedRepoError as error:  # before RepositoryNotFoundError, its base class
            raise self._error(
                f"{self.name!r} is a gated repo: accept its licence at https://huggingface.co/{self.name} and log in "
                "(`hf auth login`, or pass `token=`)."
            ) from error
        except RepositoryNotFoundError as error:
            raise self._error(
                f"{self.name!r} is neither a local folder nor a Hub repo you can access. Check the name, or log in "
                "(`hf auth login`) if it is private.",
                not_found=True,
            ) from error
        except RevisionNotFoundError as error:
            revision = self.hub_kwargs.get("revision")
            message = f"{self.name!r} has no revision {revision!r}. Check the branch, tag or commit."
            raise self._error(message) from error
        return True

    def load(self, component: str, model_kwargs: dict, variant: str | None):
        """Load `component` as the class the pipeline needs; a base's loading errors say what to do."""
        if not self.has(component):
            raise self._error(
                f"{self.name!r} has no `{os.path.dirname(_COMPONENT_CONFIG_FILES[component])}/` "
                f"({_COMPONENT_CONFIG_FILES[component]} is missing).",
                not_found=True,
            )
        try:
            return self._load(component, model_kwargs, variant)
        except (OSError, ValueError) as error:
            if self.role != "base":
                raise
            raise self._error(f"its `{component}` could not be loaded ({type(error).__name__}: {error}).") from error

    def _load(self, component: str, model_kwargs: dict, variant: str | None):
        kwargs = {"subfolder": component} if self.is_local else {**self.hub_kwargs, "subfolder": component}
        if component == "scheduler":
            return _scheduler_class(self.path, kwargs).from_pretrained(self.path, **kwargs)
        if component == "feature_extractor":
            return CLIPImageProcessor.from_pretrained(self.path, **kwargs)
        model_class = {
            "unet": NormalCrafterUNet,
            "vae": AutoencoderKLTemporalDecoder,
            "image_encoder": CLIPVisionModelWithProjection,
        }[component]
        if model_class is CLIPVisionModelWithProjection:
            model_kwargs = _transformers_dtype_kwargs(model_kwargs)
        kwargs.update(model_kwargs)
        if variant is not None:
            try:
                return model_class.from_pretrained(self.path, variant=variant, **kwargs)
            except (OSError, ValueError):
                logger.info(f"No {variant!r} variant of {self.path}/{component}; loading its default weights.")
        return model_class.from_pretrained(self.path, **kwargs)


def _scheduler_class(path: str, kwargs: dict) -> type:
    """The diffusers scheduler class named in a scheduler's configuration (the pipeline's default: Euler)."""
    config = EulerDiscreteScheduler.load_config(path, **kwargs)
    scheduler_class = getattr(diffusers, config.get("_class_name", ""), None)
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, diffusers.SchedulerMixin)):
        raise ValueError(
            f"{path}/scheduler names {config.get('_class_name')!r}, which is not a diffusers scheduler; pass "
            "`scheduler=` yourself."
        )
    return scheduler_class


def _transformers_dtype_kwargs(model_kwargs: dict) -> dict:
    """`model_kwargs` for a transformers model: its dtype keyword is `dtype` from 4.56 on, `torch_dtype` before."""
    import transformers

    kwargs = {k: v for k, v in model_kwargs.items() if k != _DIFFUSERS_DTYPE_KWARG}
    if model_kwargs.get(_DIFFUSERS_DTYPE_KWARG) is not None:
        new_api = version.parse(transformers.__version__) >= version.parse("4.56")
        kwargs["dtype" if new_api else "torch_dtype"] = model_kwargs[_DIFFUSERS_DTYPE_KWARG]
    return kwargs


def write_pipeline_code(folder: str | os.PathLike) -> None:
    """Make a saved pipeline folder loadable by diffusers alone: write this module as `pipeline.py` and name it in
    `model_index.json` (`"_class_name": ["pipeline", "NormalCrafterPipeline"]`), diffusers' custom-pipeline layout."""
    folder = os.fspath(folder)
    target = os.path.join(folder, REMOTE_CODE_FILE)
    shutil.copyfile(__file__, target + ".partial")
    os.replace(target + ".partial", target)
    index_file = os.path.join(folder, "model_index.json")
    with open(index_file, encoding="utf-8") as handle:
        index = json.load(handle)
    index["_class_name"] = [os.path.splitext(REMOTE_CODE_FILE)[0], NormalCrafterPipeline.__name__]
    with open(index_file + ".partial", "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(index_file + ".partial", index_file)


def upload_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
):
    """Create `repo_id` (default: the folder's name) if needed and upload `folder` to it; returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    create_kwargs = {} if private is None else {"private": private}
    repo_id = api.create_repo(repo_id or os.path.basename(os.path.abspath(folder)), exist_ok=True, **create_kwargs)
    return api.upload_folder(
        repo_id=repo_id.repo_id,
        folder_path=os.fspath(folder),
        commit_message=commit_message or "Upload NormalCrafter pipeline",
        create_pr=create_pr,
    )
