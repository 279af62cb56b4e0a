"""MatrixCity (city-super/MatrixCity) as published, read without a conversion pass.

A block folder (`small_city/street/train/block_1`, ...) holds `transforms.json` and the frames `NNNN.png` (sRGB,
directly in the folder or in `rgb/`). Its normal and depth maps (linear EXR, same file stem) are looked for in
`normal/` and `depth/` inside the block folder, or in the release's parallel trees: for a block at
`<top>/small_city/<rest>`, `<top>/small_city_normal/<rest>` and `<top>/small_city_depth_float32/<rest>` or
`<top>/small_city_depth/<rest>` (each also as `<rest>_normal` / `<rest>_depth`, the names of the release's tar
files).

Our reading of the release (its README and `scripts/load_data.py`, `scripts/load_street.py`):

- `transforms.json` lists `frames`, each with a camera-to-world matrix in NeRF / OpenGL camera axes (+x right,
  +y up, +z backwards), as `rot_mat` with `frame_index` (the block files, whose rotation is scaled by 0.01) or as
  `transform_matrix` with `file_path` (the split files). The rotation's columns are normalised, so either works.
  Frames in `frame_index` order (or file order) form one sequence per block: a camera trajectory.
- Normals are in **world** space: `value * 2 - 1` per channel, taken in the channel order `load_data.py` gets from
  OpenCV (`NORMAL_CHANNELS`, B, G, R), then normalised and their y negated, as `load_data.py` does; the sky is
  stored as all -1 and is invalid. They are rotated into the camera by the transpose of the frame's
  camera-to-world rotation, which gives our axes (+x right, +y up, +z toward the camera).
- Depth is z-depth in centimetres (float16 files store 65504, the float16 maximum, where the range ends: invalid);
  returned in metres.
"""

from __future__ import annotations

import os

import numpy as np

from .exr import read_exr
from .layout_io import LayoutError, check_same_size, read_json, read_rgb, unit_normals
from .sequences import FrameRecord, FrameSequence

# The channel order `scripts/load_data.py` reads normals in (OpenCV returns EXR channels as B, G, R).
NORMAL_CHANNELS = ("B", "G", "R")
FLOAT16_MAX = 65504.0
CITIES = ("small_city", "big_city")


def _rotation(matrix, path: str, index: int) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape not in ((4, 4), (3, 4)):
        raise LayoutError(f"{path!r}: frame {index} has a pose of shape {matrix.shape}; expected 4x4.")
    rotation = matrix[:3, :3]
    norms = np.linalg.norm(rotation, axis=0)
    if np.any(norms < 1e-12):
        raise LayoutError(f"{path!r}: frame {index} has a degenerate rotation.")
    return rotation / norms


def _map_folders(block_dir: str, kind: str) -> list[str]:
    """Folders that may hold the block's `kind` maps (`normal` or `depth`), in order of preference."""
    candidates = [os.path.join(block_dir, kind)]
    parts = os.path.normpath(os.path.abspath(block_dir)).split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in CITIES:
            top, rest = os.sep.join(parts[:i]) or os.sep, parts[i + 1 :]
            suffixes = ("_depth_float32", "_depth") if kind == "depth" else ("_normal",)
            for suffix in suffixes:
                tree = os.path.join(top, parts[i] + suffix, *rest[:-1])
                candidates += [os.path.join(tree, rest[-1]), os.path.join(tree, rest[-1] + f"_{kind}")] if rest else []
            break
    return candidates


class MatrixCitySequence(FrameSequence):
    """The frames of one MatrixCity block (see the module docstring for the decoding)."""

    def __init__(self, block_dir: str, name: str, with_depth: bool = False):
        self.block_dir, self.name, self.with_depth = block_dir, name, with_depth
        self.transforms_path = os.path.join(block_dir, "transforms.json")
        meta = read_json(self.transforms_path)
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise LayoutError(
                f"{self.transforms_path!r} has no `frames` list; it is not a MatrixCity transforms.json."
            )
        entries = []
        for index, frame in enumerate(frames):
            if "frame_index" in frame and "rot_mat" in frame:
                stem, pose, order = f"{int(frame['frame_index']):04d}", frame["rot_mat"], int(frame["frame_index"])
            elif "file_path" in frame and "transform_matrix" in frame:
                stem = os.path.splitext(os.path.basename(frame["file_path"]))[0]
                pose, order = frame["transform_matrix"], index
            else:
                raise LayoutError(
                    f"{self.transforms_path!r}: frame {index} has neither `frame_index` + `rot_mat` nor `file_path` "
                    "+ `transform_matrix`."
                )
            entries.append((order, stem, _rotation(pose, self.transforms_path, index)))
        entries.sort(key=lambda entry: entry[0])
        self.stems = [stem for _, stem, _ in entries]
        self.rotations = np.stack([rotation for _, _, rotation in entries])  # [F, 3, 3] camera-to-world
        self.rgb_paths = [
            self._find(stem, [block_dir, os.path.join(block_dir, "rgb")], ".png", "frame") for stem in self.stems
        ]
        self.normal_paths = [
            self._find(stem, _map_folders(block_dir, "normal"), ".exr", "normal map") for stem in self.stems
        ]
        self.depth_paths = None
        if with_depth:
            self.depth_paths = [
                self._find(stem, _map_folders(block_dir, "depth"), ".exr", "depth map") for stem in self.stems
            ]

    def _find(self, stem: str, folders: list[str], extension: str, what: str) -> str:
        for folder in folders:
            path = os.path.join(folder, stem + extension)
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(
            f"MatrixCity {what} {stem}{extension} of block {self.block_dir!r} (listed in transforms.json) is not in "
            f"any of {folders}."
        )

    def __len__(self) -> int:
        return len(self.stems)

    def load(self, index: int) -> FrameRecord:
        self._check_index(index)
        rgb = read_rgb(self.rgb_paths[index])
        height, width = rgb.shape[:2]
        path = self.normal_paths[index]
        encoded = read_exr(path, NORMAL_CHANNELS)
        check_same_size(path, encoded, height, width, "Normal map")
        world = encoded * 2.0 - 1.0
        sky = np.all(world == -1.0, axis=-1)
        world, valid = unit_normals(world)
        world[..., 1] *= -1.0
        valid &= ~sky
        normal = (world @ self.rotations[index]).astype(np.float32)  # row vectors: R^T n
        normal[~valid] = 0.0

        depth = None
        if self.depth_paths is not None:
            path = self.depth_paths[index]
            planes = read_exr(path, None)
            depth_cm = planes[..., 0] if planes.ndim == 3 else planes
            check_same_size(path, depth_cm, height, width, "Depth map")
            depth = np.where((depth_cm >= FLOAT16_MAX) | ~(depth_cm > 0), np.nan, depth_cm / 100.0).astype(np.float32)
        return FrameRecord(rgb=rgb, normal=normal, valid=valid, depth=depth)


def open_matrixcity(root: str | os.PathLike, with_depth: bool = False) -> list[MatrixCitySequence]:
    """The blocks under `root` (a block folder with `transforms.json`, or any folder above blocks), in path order.

    Raises `LayoutError` when no `transforms.json` is found, and `FileNotFoundError` naming the first frame, normal
    or depth map a listed frame lacks."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"MatrixCity root {root!r} does not exist.")
    sequences = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if "transforms.json" in files:
            name = os.path.relpath(folder, root)
            name = os.path.basename(os.path.normpath(root)) if name == "." else name.replace(os.sep, "_")
            sequences.append(MatrixCitySequence(folder, name, with_depth=with_depth))
            dirs[:] = [d for d in dirs if d not in ("rgb", "normal", "depth")]
    if not sequences:
        raise LayoutError(
            f"{root!r} is not a MatrixCity root: no block folder with transforms.json under it (pass a block such "
            "as small_city/street/train/block_1, or a folder above the blocks)."
        )
    return sequences
