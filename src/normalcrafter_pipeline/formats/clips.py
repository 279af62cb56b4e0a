"""The on-disk clip format: its layout, reader, writer and dataset listing.

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
folder of clip folders; a single image is a clip of one frame. Inference, training and evaluation all read this
format, so it lives here rather than with the training dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image

from ..normalcrafter_normals_processor import NormalsProcessor
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


@dataclass(frozen=True)
class ClipFiles:
    """The frame files of one clip folder, listed once: sorted file names per sub-folder (`mask` and `depth` empty
    when the clip has none). `list_clip_files` checks that every frame has its normal map."""

    folder: str
    rgb: list[str]
    normal: list[str]
    mask: list[str]
    depth: list[str]

    def __len__(self) -> int:
        return len(self.rgb)


def list_clip_files(folder: str | os.PathLike) -> ClipFiles:
    """List a clip folder's frames (see the module docstring); raises when it has none or lacks normal maps."""
    folder = os.fspath(folder)
    rgb_names = _frame_files(os.path.join(folder, "rgb"), (".png", ".jpg", ".jpeg"))
    normal_names = _frame_files(os.path.join(folder, "normal"), (".png", ".npy"))
    if not rgb_names:
        raise FileNotFoundError(f"Clip folder {folder!r} has no frames in rgb/ (expected rgb/00000.png, ...).")
    if len(normal_names) != len(rgb_names):
        raise ValueError(
            f"Clip folder {folder!r} has {len(rgb_names)} rgb frames but {len(normal_names)} normal maps; every "
            "frame needs normal/<index>.png or normal/<index>.npy."
        )
    return ClipFiles(
        folder,
        rgb_names,
        normal_names,
        _frame_files(os.path.join(folder, "mask"), (".png",)),
        _frame_files(os.path.join(folder, "depth"), (".npy",)),
    )


def read_clip_frame(files: ClipFiles, index: int) -> dict:
    """Frame `index` of a listed clip: `rgb` uint8 `(H, W, 3)`, `normal` float32 `(H, W, 3)`, `mask` bool `(H, W)`
    or None, `depth` float32 `(H, W)` or None."""
    if not 0 <= index < len(files):
        raise ValueError(f"`frame_indices` contains {index}; clip {files.folder!r} has frames 0..{len(files) - 1}.")
    folder = files.folder
    rgb = np.asarray(PIL.Image.open(os.path.join(folder, "rgb", files.rgb[index])).convert("RGB"))
    normal = _read_normal(os.path.join(folder, "normal", files.normal[index]))
    if normal.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"Clip {folder!r}: normal maps are {normal.shape[:2]} but frames are {rgb.shape[:2]}.")
    mask = None
    if files.mask:
        mask = np.asarray(PIL.Image.open(os.path.join(folder, "mask", files.mask[index])).convert("L")) > 0
    depth = None
    if files.depth:
        depth = np.load(os.path.join(folder, "depth", files.depth[index])).astype(np.float32)
    return {"rgb": rgb, "normal": normal, "mask": mask, "depth": depth}


def load_clip(folder: str | os.PathLike, frame_indices: Sequence[int] | None = None) -> dict:
    """Read a clip folder (all frames, or `frame_indices`).

    Returns a dict with `rgb` uint8 `(F, H, W, 3)`, `normal` float32 `(F, H, W, 3)`, `mask` bool `(F, H, W)` or
    None, `depth` float32 `(F, H, W)` or None, and `meta` (the parsed meta.json).
    """
    meta = read_meta(folder)
    files = list_clip_files(folder)
    if frame_indices is None:
        frame_indices = range(len(files))
    frames = [read_clip_frame(files, index) for index in frame_indices]
    clip = {key: np.stack([frame[key] for frame in frames]) for key in ("rgb", "normal")}
    for key in ("mask", "depth"):
        clip[key] = np.stack([frame[key] for frame in frames]) if frames[0][key] is not None else None
    clip["meta"] = meta
    return clip


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
