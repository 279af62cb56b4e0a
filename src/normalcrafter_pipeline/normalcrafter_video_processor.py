# Copyright 2026 The normalcrafter-pipeline authors. Licensed under the MIT licence.
"""Frames in, normals out: the NormalCrafter video processor (validation, white padding to multiples of 64, resizing,
unit length, visualisation) and the pure helpers it stands on, including the anti-aliased CLIP resize of SVD."""

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .normalcrafter_normals_processor import NormalsProcessor

PAD_MULTIPLE = 64


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


def normalize_normals(normals: torch.Tensor, dim: int = 1, eps: float = 1e-6, clamp: bool = True) -> torch.Tensor:
    """Scale every vector along `dim` to unit length, after clamping to [-1, 1] as the reference does (`clamp`)."""
    if clamp:
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


# ----------------------------------------------------------------------------------------------------------------
# The video processor
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
            # Unit length again, without the clamp: a bicubic overshoot past 1 in one component would turn the vector
            # if it were clamped first.
            normals = normalize_normals(normals, dim=1, clamp=False)
        if output_type == "pt":
            return normals.cpu()
        normals = normals.permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "pil":
            return [PIL.Image.fromarray(frame) for frame in NormalsProcessor.visualize_normals(normals)]
        return normals
