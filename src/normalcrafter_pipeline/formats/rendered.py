"""Rendered sequences: the layout to render Replica, Objaverse or any mesh set into (see training/README.md, "Render
recipe"), read as written, without a conversion pass.

A root is a folder of sequence folders; a sequence folder holds::

    rgb/<name>.png|.jpg              8-bit sRGB frames; their sorted names give the frame order
    normal/<name>.exr|.png|.npy      per frame (same name stem): float EXR or npy (H, W, 3) vectors, or a 16-bit
                                     PNG v = round((n + 1) / 2 * 65535) (`NormalsProcessor.to_uint16`)
    mask/<name>.png                  optional, 8-bit, nonzero = valid
    depth/<name>.exr|.npy            optional z-depth in metres
    cameras.json                     optional: {"normal_frame": "camera" | "world",
                                                "camera_to_world": [F 4x4, OpenGL camera axes], "fps": ...}

Normals are in our camera frame (+x right, +y up, +z toward the camera) unless `cameras.json` says
`"normal_frame": "world"`; then they are rotated into each frame's camera by the transpose of its camera-to-world
rotation (OpenGL camera axes: the camera looks down its -z, +y up, as Blender's and NeRF's cameras). Vectors that
are zero, shorter than 0.5 or not finite are invalid (renderers write zeros or NaN where no surface was hit).
"""

from __future__ import annotations

import os

import numpy as np

from ..normalcrafter_normals_processor import NormalsProcessor
from .exr import read_exr
from .layout_io import LayoutError, check_same_size, read_json, read_mask, read_rgb, unit_normals
from .png16 import read_png16
from .sequences import FrameRecord, FrameSequence

RGB_EXTENSIONS = (".png", ".jpg", ".jpeg")
NORMAL_EXTENSIONS = (".exr", ".png", ".npy")
DEPTH_EXTENSIONS = (".exr", ".npy")


def _stems(folder: str, extensions) -> dict[str, str]:
    if not os.path.isdir(folder):
        return {}
    return {
        os.path.splitext(name)[0]: os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if os.path.splitext(name)[1].lower() in extensions
    }


def _read_normal(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        try:
            normal = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise LayoutError(f"Normal map {path!r} does not load as npy: {error}") from error
    elif path.lower().endswith(".exr"):
        normal = read_exr(path, ("R", "G", "B"))
    else:
        try:
            encoded = read_png16(path)[..., :3]
        except (OSError, ValueError, IndexError) as error:
            raise LayoutError(f"Normal map {path!r} does not decode: {error}") from error
        normal = (
            NormalsProcessor.from_uint16(encoded) if encoded.dtype == np.uint16 else NormalsProcessor.from_rgb(encoded)
        )
    normal = np.asarray(normal, dtype=np.float32)
    if normal.ndim != 3 or normal.shape[2] != 3:
        raise LayoutError(f"Normal map {path!r} has shape {normal.shape}; expected (H, W, 3).")
    return normal


class RenderedSequence(FrameSequence):
    """One rendered sequence folder (see the module docstring)."""

    def __init__(self, folder: str, name: str, with_depth: bool = False):
        self.folder, self.name = folder, name
        rgb = _stems(os.path.join(folder, "rgb"), RGB_EXTENSIONS)
        normals = _stems(os.path.join(folder, "normal"), NORMAL_EXTENSIONS)
        self.stems = sorted(rgb)
        missing = [stem for stem in self.stems if stem not in normals]
        if missing:
            raise FileNotFoundError(
                f"Frame {rgb[missing[0]]!r} has no normal map normal/{missing[0]}.exr|.png|.npy"
                f"{f' ({len(missing)} frames lack one)' if len(missing) > 1 else ''}."
            )
        self.rgb_paths = [rgb[stem] for stem in self.stems]
        self.normal_paths = [normals[stem] for stem in self.stems]
        masks = _stems(os.path.join(folder, "mask"), (".png",))
        self.mask_paths = [masks.get(stem) for stem in self.stems] if masks else None
        depths = _stems(os.path.join(folder, "depth"), DEPTH_EXTENSIONS) if with_depth else {}
        self.depth_paths = [depths.get(stem) for stem in self.stems] if depths else None
        self.rotations = None
        cameras_path = os.path.join(folder, "cameras.json")
        cameras = read_json(cameras_path) if os.path.isfile(cameras_path) else {}
        frame = cameras.get("normal_frame", "camera")
        if frame not in ("camera", "world"):
            raise LayoutError(f"{cameras_path!r} has `normal_frame` {frame!r}; use 'camera' or 'world'.")
        if frame == "world":
            poses = np.asarray(cameras.get("camera_to_world", []), dtype=np.float64)
            if poses.shape != (len(self.stems), 4, 4):
                raise LayoutError(
                    f"{cameras_path!r} says the normals are in world space but `camera_to_world` has shape "
                    f"{poses.shape}; give one 4x4 camera-to-world matrix per frame ({len(self.stems)})."
                )
            rotations = poses[:, :3, :3]
            self.rotations = rotations / np.linalg.norm(rotations, axis=1, keepdims=True)

    def __len__(self) -> int:
        return len(self.stems)

    def load(self, index: int) -> FrameRecord:
        self._check_index(index)
        rgb = read_rgb(self.rgb_paths[index])
        height, width = rgb.shape[:2]
        path = self.normal_paths[index]
        normal = _read_normal(path)
        check_same_size(path, normal, height, width, "Normal map")
        normal, valid = unit_normals(normal)
        if self.rotations is not None:
            normal = (normal @ self.rotations[index]).astype(np.float32)  # row vectors: R^T n
        if self.mask_paths is not None and self.mask_paths[index] is not None:
            mask = read_mask(self.mask_paths[index])
            check_same_size(self.mask_paths[index], mask, height, width, "Mask")
            valid &= mask
        depth = None
        if self.depth_paths is not None and self.depth_paths[index] is not None:
            path = self.depth_paths[index]
            depth = np.load(path, allow_pickle=False) if path.endswith(".npy") else read_exr(path, None)
            depth = np.asarray(depth[..., 0] if depth.ndim == 3 else depth, dtype=np.float32)
            check_same_size(path, depth, height, width, "Depth map")
        return FrameRecord(rgb=rgb, normal=normal, valid=valid, depth=depth)


def open_rendered(root: str | os.PathLike, with_depth: bool = False) -> list[RenderedSequence]:
    """The sequence folders directly under `root` (or `root` itself when it holds `rgb/`), in name order.

    Raises `LayoutError` when no folder with frames in `rgb/` is found, and `FileNotFoundError` naming a frame
    without its normal map."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Rendered root {root!r} does not exist.")
    if os.path.isdir(os.path.join(root, "rgb")):
        folders = [root]
    else:
        folders = [
            os.path.join(root, n) for n in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, n, "rgb"))
        ]
    sequences = [
        RenderedSequence(folder, os.path.basename(os.path.normpath(folder)), with_depth=with_depth)
        for folder in folders
    ]
    sequences = [sequence for sequence in sequences if len(sequence)]
    if not sequences:
        raise LayoutError(
            f"{root!r} is not a rendered root: no sequence folder with frames in rgb/ and normals in normal/ (see "
            "training/README.md, 'Render recipe')."
        )
    return sequences
