"""The on-disk clip format, its reader and writer, and the training dataset.

A clip is one folder::

    clip/
      rgb/00000.png, 00001.png, ...      8-bit RGB frames
      normal/00000.png, ...              16-bit RGB PNG, round((n + 1) / 2 * 65535) (`NormalsProcessor.to_uint16`)
        or normal/00000.npy, ...         float32 (H, W, 3)
      mask/00000.png, ...                optional, 8-bit, nonzero = valid pixel
      depth/00000.npy, ...               optional, float32 (H, W) z-depth in camera units (synthetic clips)
      meta.json                          {"fps": float, "axis_convention": "opengl_camera", ...}; synthetic clips add
                                         "intrinsics": [fx, fy, cx, cy] (pixels) and "poses": F camera-to-world 4x4

Normals are unit vectors in the camera frame: +x right, +y up, +z toward the camera (OpenGL). A dataset root is a
folder of clip folders; a single image is a clip of one frame.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from ..normals_processor import NormalsProcessor
from .png16 import read_png16, write_png16

AXIS_CONVENTION = "opengl_camera"
FRAME_NAME = "{:05d}"


def _frame_files(folder: str, extensions: Sequence[str]) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if os.path.splitext(name)[1].lower() in extensions)


def read_meta(folder: str | os.PathLike) -> dict:
    """Read and check `meta.json` of a clip folder."""
    path = os.path.join(folder, "meta.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'Clip folder {os.fspath(folder)!r} has no meta.json; write {{"fps": ..., "axis_convention": '
            f'"{AXIS_CONVENTION}"}} there (see training/README.md).'
        )
    with open(path) as handle:
        meta = json.load(handle)
    convention = meta.get("axis_convention")
    if convention != AXIS_CONVENTION:
        raise ValueError(
            f"`axis_convention` in {path!r} is {convention!r}; normals must be stored in the {AXIS_CONVENTION!r} "
            "frame (+x right, +y up, +z toward the camera). Convert OpenCV-frame normals with n * (1, -1, -1)."
        )
    if "fps" not in meta:
        raise ValueError(f"`fps` is missing from {path!r}; add the clip's frame rate (any positive number).")
    return meta


def clip_num_frames(folder: str | os.PathLike) -> int:
    """Number of frames of a clip (its `rgb/` images)."""
    return len(_frame_files(os.path.join(folder, "rgb"), (".png", ".jpg", ".jpeg")))


def _read_normal(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        normal = np.load(path).astype(np.float32)
    else:
        encoded = read_png16(path)[..., :3]
        normal = (
            NormalsProcessor.from_uint16(encoded) if encoded.dtype == np.uint16 else NormalsProcessor.from_rgb(encoded)
        )
    if normal.ndim != 3 or normal.shape[2] != 3:
        raise ValueError(f"Normal map {path!r} has shape {normal.shape}; expected (H, W, 3).")
    return normal


def load_clip(folder: str | os.PathLike, frame_indices: Sequence[int] | None = None) -> dict:
    """Read a clip folder (all frames, or `frame_indices`).

    Returns a dict with `rgb` uint8 `(F, H, W, 3)`, `normal` float32 `(F, H, W, 3)`, `mask` bool `(F, H, W)` or
    None, `depth` float32 `(F, H, W)` or None, and `meta` (the parsed meta.json).
    """
    folder = os.fspath(folder)
    meta = read_meta(folder)
    rgb_names = _frame_files(os.path.join(folder, "rgb"), (".png", ".jpg", ".jpeg"))
    normal_names = _frame_files(os.path.join(folder, "normal"), (".png", ".npy"))
    if not rgb_names:
        raise FileNotFoundError(f"Clip folder {folder!r} has no frames in rgb/ (expected rgb/00000.png, ...).")
    if len(normal_names) != len(rgb_names):
        raise ValueError(
            f"Clip folder {folder!r} has {len(rgb_names)} rgb frames but {len(normal_names)} normal maps; every "
            "frame needs normal/<index>.png or normal/<index>.npy."
        )
    if frame_indices is None:
        frame_indices = range(len(rgb_names))
    frame_indices = list(frame_indices)
    for index in frame_indices:
        if not 0 <= index < len(rgb_names):
            raise ValueError(f"`frame_indices` contains {index}; clip {folder!r} has frames 0..{len(rgb_names) - 1}.")

    rgb = np.stack(
        [np.asarray(PIL.Image.open(os.path.join(folder, "rgb", rgb_names[i])).convert("RGB")) for i in frame_indices]
    )
    normal = np.stack([_read_normal(os.path.join(folder, "normal", normal_names[i])) for i in frame_indices])
    if normal.shape[:3] != rgb.shape[:3]:
        raise ValueError(f"Clip {folder!r}: normal maps are {normal.shape[1:3]} but frames are {rgb.shape[1:3]}.")

    mask = None
    mask_names = _frame_files(os.path.join(folder, "mask"), (".png",))
    if mask_names:
        mask = np.stack(
            [
                np.asarray(PIL.Image.open(os.path.join(folder, "mask", mask_names[i])).convert("L")) > 0
                for i in frame_indices
            ]
        )
    depth = None
    depth_names = _frame_files(os.path.join(folder, "depth"), (".npy",))
    if depth_names:
        depth = np.stack([np.load(os.path.join(folder, "depth", depth_names[i])) for i in frame_indices])
        depth = depth.astype(np.float32)
    return {"rgb": rgb, "normal": normal, "mask": mask, "depth": depth, "meta": meta}


def write_clip(
    folder: str | os.PathLike,
    rgb: np.ndarray,
    normal: np.ndarray,
    mask: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    fps: float = 7.0,
    normal_format: str = "png",
    **meta,
) -> None:
    """Write one clip in the format above (the converter for your own data, and the renderer's writer).

    Args:
        rgb: uint8 `(F, H, W, 3)`; normal: float `(F, H, W, 3)` unit camera-space normals (OpenGL axes);
        mask: bool `(F, H, W)`; depth: float `(F, H, W)`; normal_format: `"png"` (16-bit) or `"npy"`;
        meta: extra meta.json entries (e.g. `intrinsics`, `poses`).
    """
    rgb, normal = np.asarray(rgb), np.asarray(normal)
    if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"`rgb` must be uint8 (F, H, W, 3), got {rgb.dtype} {rgb.shape}.")
    if normal.shape != rgb.shape:
        raise ValueError(f"`normal` has shape {normal.shape} but `rgb` has {rgb.shape}; they must match.")
    if normal_format not in ("png", "npy"):
        raise ValueError(f"`normal_format` must be 'png' or 'npy', got {normal_format!r}.")
    folder = os.fspath(folder)
    for sub in ("rgb", "normal") + (("mask",) if mask is not None else ()) + (("depth",) if depth is not None else ()):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for i in range(rgb.shape[0]):
        name = FRAME_NAME.format(i)
        PIL.Image.fromarray(rgb[i]).save(os.path.join(folder, "rgb", name + ".png"), compress_level=1)
        if normal_format == "png":
            write_png16(os.path.join(folder, "normal", name + ".png"), NormalsProcessor.to_uint16(normal[i]), 1)
        else:
            np.save(os.path.join(folder, "normal", name + ".npy"), normal[i].astype(np.float32))
        if mask is not None:
            mask_image = (np.asarray(mask[i]) > 0).astype(np.uint8) * 255
            PIL.Image.fromarray(mask_image).save(os.path.join(folder, "mask", name + ".png"), compress_level=1)
        if depth is not None:
            np.save(os.path.join(folder, "depth", name + ".npy"), np.asarray(depth[i], dtype=np.float32))
    with open(os.path.join(folder, "meta.json"), "w") as handle:
        json.dump({"fps": float(fps), "axis_convention": AXIS_CONVENTION, **meta}, handle)


def list_clips(root: str | os.PathLike) -> list[str]:
    """The clip folders (those with a meta.json) directly under `root`, sorted."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Dataset root {root!r} does not exist; pass a folder of clip folders.")
    clips = [
        os.path.join(root, name)
        for name in sorted(os.listdir(root))
        if os.path.isfile(os.path.join(root, name, "meta.json"))
    ]
    if not clips:
        raise FileNotFoundError(
            f"Dataset root {root!r} holds no clip folders (sub-folders with meta.json); see training/README.md for "
            "the clip format, or write synthetic clips with `normalcrafter_pipeline.training.render_dataset`."
        )
    return clips


class NormalClipDataset(torch.utils.data.Dataset):
    """Random crops of clips from one or more dataset roots, mixed with weights.

    Items are addressed by `(clip_index, num_frames, seed)` keys, which `ClipBatchSampler` draws so that every clip
    of a batch has the same length. Each item is a dict:

    - `pixel_values`: float32 `[F, 3, height, width]` in [0, 1];
    - `normals`: float32 `[F, 3, height, width]`, unit vectors (zeros where invalid);
    - `valid_mask`: bool `[F, 1, height, width]` (the clip's mask, and pixels with a non-unit normal are invalid).

    Frames are scaled so the crop fits (by a random extra factor up to `max_scale`), cropped at random and, with
    `random_flip`, mirrored left-right (negating the normals' x). Normals and masks are resized with nearest
    neighbours, so no normal is blended across an edge.
    """

    def __init__(
        self,
        roots: str | os.PathLike | Sequence[str | os.PathLike],
        height: int,
        width: int,
        weights: Sequence[float] | None = None,
        max_scale: float = 1.25,
        random_flip: bool = True,
    ):
        roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
        if not roots:
            raise ValueError("`roots` is empty; pass at least one dataset root (a folder of clip folders).")
        if weights is None:
            weights = [1.0] * len(roots)
        if len(weights) != len(roots) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"`weights` {list(weights)} must give one non-negative weight per root ({len(roots)} roots) with a "
                "positive sum."
            )
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % 64:
                raise ValueError(f"`{name}` is {value!r}; training crops must be positive multiples of 64.")
        if max_scale < 1.0:
            raise ValueError(f"`max_scale` is {max_scale}; it must be >= 1 (1 disables random zoom).")
        self.roots = [os.fspath(r) for r in roots]
        self.height, self.width = height, width
        self.max_scale, self.random_flip = max_scale, random_flip
        self.clips: list[str] = []
        self.clip_lengths: list[int] = []
        self.root_offsets = [0]
        for root in self.roots:
            for clip in list_clips(root):
                self.clips.append(clip)
                self.clip_lengths.append(clip_num_frames(clip))
            self.root_offsets.append(len(self.clips))
        total = float(sum(weights))
        self.root_weights = [w / total for w in weights]

    def __len__(self) -> int:
        return len(self.clips)

    def root_of(self, clip_index: int) -> int:
        return bisect.bisect_right(self.root_offsets, clip_index) - 1

    def __getitem__(self, key) -> dict:
        if isinstance(key, int):
            key = (key, self.clip_lengths[key], key)
        clip_index, num_frames, seed = key
        rng = np.random.default_rng(seed)
        length = self.clip_lengths[clip_index]
        num_frames = min(num_frames, length)
        start = int(rng.integers(0, length - num_frames + 1))
        clip = load_clip(self.clips[clip_index], range(start, start + num_frames))
        return self.transform(clip, rng)

    def transform(self, clip: dict, rng: np.random.Generator) -> dict:
        """Scale, crop and flip one loaded clip (see the class docstring)."""
        pixels = torch.from_numpy(clip["rgb"]).permute(0, 3, 1, 2).float() / 255.0  # [F, 3, H, W]
        normals = torch.from_numpy(np.nan_to_num(clip["normal"])).permute(0, 3, 1, 2).float()  # [F, 3, H, W]
        valid = (normals.norm(dim=1, keepdim=True) - 1.0).abs() < 0.1  # [F, 1, H, W]
        if clip["mask"] is not None:
            valid &= torch.from_numpy(clip["mask"])[:, None]

        in_h, in_w = pixels.shape[-2:]
        scale = max(self.height / in_h, self.width / in_w) * float(rng.uniform(1.0, self.max_scale))
        size = (max(self.height, math.ceil(in_h * scale)), max(self.width, math.ceil(in_w * scale)))
        if size != (in_h, in_w):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)
            normals = F.interpolate(normals, size=size, mode="nearest-exact")
            valid = F.interpolate(valid.float(), size=size, mode="nearest-exact") > 0.5
        top = int(rng.integers(0, size[0] - self.height + 1))
        left = int(rng.integers(0, size[1] - self.width + 1))
        crop = (slice(None), slice(None), slice(top, top + self.height), slice(left, left + self.width))
        pixels, normals, valid = pixels[crop], normals[crop], valid[crop]
        if self.random_flip and rng.random() < 0.5:
            pixels, normals, valid = pixels.flip(-1), normals.flip(-1), valid.flip(-1)
            normals = normals * torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
        normals = torch.where(valid, normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-6), 0.0)
        return {
            "pixel_values": pixels.clamp(0.0, 1.0).contiguous(),
            "normals": normals.contiguous(),
            "valid_mask": valid.contiguous(),
        }


class ClipBatchSampler(torch.utils.data.Sampler):
    """Batches of `(clip_index, num_frames, seed)` keys with one clip length per batch.

    The length is drawn uniformly from `[min_num_frames, max_num_frames]` for every batch (and cut to the shortest
    chosen clip, so single images mix with videos); clips are drawn with replacement, a root with probability
    proportional to its weight and then a clip of it uniformly. The sequence depends only on `seed` and the epoch
    counter, so every process of a distributed run draws the same batches (accelerate then hands each its share).
    """

    def __init__(
        self,
        dataset: NormalClipDataset,
        batch_size: int,
        num_batches: int,
        min_num_frames: int = 1,
        max_num_frames: int = 14,
        seed: int = 0,
    ):
        if not 1 <= min_num_frames <= max_num_frames:
            raise ValueError(
                f"`min_num_frames`={min_num_frames} and `max_num_frames`={max_num_frames} must satisfy "
                "1 <= min_num_frames <= max_num_frames."
            )
        if batch_size < 1 or num_batches < 1:
            raise ValueError(f"`batch_size` ({batch_size}) and `num_batches` ({num_batches}) must be positive.")
        self.dataset, self.batch_size, self.num_batches = dataset, batch_size, num_batches
        self.min_num_frames, self.max_num_frames = min_num_frames, max_num_frames
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        dataset = self.dataset
        for _ in range(self.num_batches):
            num_frames = int(rng.integers(self.min_num_frames, self.max_num_frames + 1))
            roots = rng.choice(len(dataset.roots), size=self.batch_size, p=dataset.root_weights)
            clips = []
            for root in roots:
                begin, end = dataset.root_offsets[root], dataset.root_offsets[root + 1]
                if end == begin:
                    raise ValueError(f"Dataset root {dataset.roots[root]!r} has a positive weight but no clips.")
                clips.append(int(rng.integers(begin, end)))
            num_frames = min([num_frames] + [dataset.clip_lengths[c] for c in clips])
            yield [(c, num_frames, int(rng.integers(0, 2**31))) for c in clips]
