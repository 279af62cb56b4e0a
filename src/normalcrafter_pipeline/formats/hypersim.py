"""Hypersim (apple/ml-hypersim) as published, read without a conversion pass.

Layout (per scene `ai_VVV_NNN`, per camera trajectory `cam_XX`; every file an HDF5 array under the key `dataset`)::

    ai_VVV_NNN/images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5          linear HDR colour (H, W, 3)
    ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.normal_cam.hdf5   normals in the camera frame (H, W, 3)
                                                 frame.IIII.normal_world.hdf5 the same normals in world space
                                                 frame.IIII.position.hdf5     world position of each pixel
                                                 frame.IIII.render_entity_id.hdf5  -1 where nothing was hit
                                                 frame.IIII.depth_meters.hdf5 distance to the optical centre (m)
    ai_VVV_NNN/_detail/cam_XX/camera_keyframe_positions.hdf5                  camera position per frame (N, 3)

Our reading of the release, as its own code and issues state it:

- Colour is tone-mapped exactly as the release's `code/python/tools/scene_generate_images_tonemap.py` does (one
  scale per frame so that the 90th percentile of brightness 0.3 R + 0.59 G + 0.11 B over pixels whose
  `render_entity_id` is not -1 becomes 0.8 after gamma 1/2.2; scale 0 below 1e-4; clipped to [0, 1]), then rounded
  to 8 bits. The scale is per frame, as in the release, so exposure may step between frames of a trajectory.
- `normal_cam` is in Hypersim's camera frame, which is OpenGL's (+x right, +y up, +z backwards, away from the
  viewing direction): our axes, used as is.
- Some normals face away from the camera (artist-defined meshes; ml-hypersim issue #26). As Marigold's
  `preprocess_hypersim_normals.py` does, a pixel whose `normal_world` points away from the camera
  (`n_world . normalize(camera_position - position) < -1e-3`) has its `normal_cam` negated.
- Valid pixels: `render_entity_id != -1` (the tone mapper's mask) with a finite, non-zero normal (the release
  warns of zero and non-unit normals; the others are scaled to unit length).
- `depth_meters` is the distance to the optical centre, not z. With `with_depth` it is converted to z-depth for a
  pinhole camera of 60 degrees horizontal field of view centred on the image (Hypersim's default camera,
  focal 886.81 px at 1024 px wide; Marigold's conversion); scenes with other (tilt-shift) cameras, listed in the
  release's `metadata_camera_parameters.csv`, get an approximate z.
- The frames of one camera trajectory (`scene_cam_XX`), in frame-number order, form one sequence.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .layout_io import LayoutError, read_hdf5, require_h5py, unit_normals
from .sequences import FrameRecord, FrameSequence

_FRAME = re.compile(r"^frame\.(\d+)\.color\.hdf5$")
_CAMERA = re.compile(r"^scene_(cam_\d+)_final_hdf5$")
GEOMETRY_KINDS = ("normal_cam", "normal_world", "position", "render_entity_id")
HORIZONTAL_FOV_DEG = 60.0


def tone_map(rgb: np.ndarray, render_entity_id: np.ndarray) -> np.ndarray:
    """Hypersim's tone mapping of linear HDR `rgb` `(H, W, 3)` to [0, 1] float (the release's script, see above)."""
    # Adapted from apple/ml-hypersim code/python/tools/scene_generate_images_tonemap.py
    rgb = np.asarray(rgb, dtype=np.float32)
    gamma = 1.0 / 2.2
    inv_gamma = 1.0 / gamma
    percentile = 90
    brightness_nth_percentile_desired = 0.8
    valid_mask = render_entity_id != -1
    if np.count_nonzero(valid_mask) == 0:
        scale = 1.0
    else:
        brightness = 0.3 * rgb[:, :, 0] + 0.59 * rgb[:, :, 1] + 0.11 * rgb[:, :, 2]
        brightness_nth_percentile_current = np.percentile(brightness[valid_mask], percentile)
        if brightness_nth_percentile_current < 0.0001:
            scale = 0.0
        else:
            scale = np.power(brightness_nth_percentile_desired, inv_gamma) / brightness_nth_percentile_current
    return np.clip(np.power(np.maximum(scale * rgb, 0), gamma), 0, 1)


def distance_to_z(distance: np.ndarray, fov_x_deg: float = HORIZONTAL_FOV_DEG) -> np.ndarray:
    """Distance to the optical centre `(H, W)` -> z-depth along the optical axis for a centred pinhole camera."""
    height, width = distance.shape
    focal = 0.5 * width / np.tan(np.radians(fov_x_deg) / 2)
    x = np.arange(width, dtype=np.float64) - (width - 1) / 2
    y = np.arange(height, dtype=np.float64) - (height - 1) / 2
    ray = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + focal**2)
    return (distance * focal / ray).astype(np.float32)


class HypersimSequence(FrameSequence):
    """One camera trajectory of one Hypersim scene (see the module docstring for the decoding)."""

    def __init__(self, scene_dir: str, camera: str, frame_ids: list[str], with_depth: bool = False):
        self.scene_dir, self.camera, self.frame_ids, self.with_depth = scene_dir, camera, frame_ids, with_depth
        self.name = f"{os.path.basename(os.path.normpath(scene_dir))}_{camera}"
        self.final_dir = os.path.join(scene_dir, "images", f"scene_{camera}_final_hdf5")
        self.geometry_dir = os.path.join(scene_dir, "images", f"scene_{camera}_geometry_hdf5")
        self.camera_positions_path = os.path.join(scene_dir, "_detail", camera, "camera_keyframe_positions.hdf5")
        self._camera_positions = None

    def __len__(self) -> int:
        return len(self.frame_ids)

    def geometry_path(self, frame_id: str, kind: str) -> str:
        return os.path.join(self.geometry_dir, f"frame.{frame_id}.{kind}.hdf5")

    def color_path(self, frame_id: str) -> str:
        return os.path.join(self.final_dir, f"frame.{frame_id}.color.hdf5")

    def check_files(self) -> None:
        """`FileNotFoundError` naming the first file a frame needs that is missing."""
        paths = [self.camera_positions_path]
        for frame_id in self.frame_ids:
            paths += [self.geometry_path(frame_id, kind) for kind in GEOMETRY_KINDS]
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"Hypersim file {path!r} is missing; every frame of {self.final_dir!r} needs its "
                    f"{', '.join(GEOMETRY_KINDS)} maps and the scene its _detail/{self.camera}/"
                    "camera_keyframe_positions.hdf5 (download the release's geometry archives too)."
                )

    def load(self, index: int) -> FrameRecord:
        self._check_index(index)
        frame_id = self.frame_ids[index]
        color = read_hdf5(self.color_path(frame_id)).astype(np.float32)
        height, width = color.shape[:2]
        maps = {}
        for kind in GEOMETRY_KINDS + (("depth_meters",) if self.with_depth else ()):
            path = self.geometry_path(frame_id, kind)
            maps[kind] = read_hdf5(path)
            if maps[kind].shape[:2] != (height, width):
                raise LayoutError(
                    f"Hypersim map {path!r} is {maps[kind].shape[0]}x{maps[kind].shape[1]} but its colour image "
                    f"{self.color_path(frame_id)!r} is {height}x{width}."
                )
        entity = maps["render_entity_id"].astype(np.int64)
        rgb = np.round(tone_map(color, entity) * 255.0).astype(np.uint8)

        normal, valid = unit_normals(maps["normal_cam"])
        valid &= entity != -1
        if self._camera_positions is None:
            self._camera_positions = read_hdf5(self.camera_positions_path).astype(np.float64)
        frame_number = int(frame_id)
        if frame_number >= len(self._camera_positions):
            raise LayoutError(
                f"{self.camera_positions_path!r} holds {len(self._camera_positions)} camera positions; frame "
                f"{frame_id} of {self.final_dir!r} has none."
            )
        position = maps["position"].astype(np.float64)
        to_camera = self._camera_positions[frame_number] - position
        to_camera /= np.maximum(np.linalg.norm(to_camera, axis=-1, keepdims=True), 1e-12)
        n_dot_v = np.sum(maps["normal_world"].astype(np.float64) * to_camera, axis=-1)
        back_facing = np.nan_to_num(n_dot_v, nan=0.0) < -1e-3
        normal[back_facing] *= -1.0

        depth = None
        if self.with_depth:
            distance = maps["depth_meters"].astype(np.float32)
            depth = distance_to_z(np.where(np.isfinite(distance), distance, np.nan))
        return FrameRecord(rgb=rgb, normal=normal, valid=valid, depth=depth)


def _scene_dirs(root: str) -> list[str]:
    if os.path.isdir(os.path.join(root, "images")):
        return [root]
    return [
        os.path.join(root, name)
        for name in sorted(os.listdir(root))
        if os.path.isdir(os.path.join(root, name, "images"))
    ]


def open_hypersim(root: str | os.PathLike, with_depth: bool = False) -> list[HypersimSequence]:
    """The camera trajectories under `root` (one scene folder `ai_VVV_NNN`, or a folder of them), in name order.

    Raises `LayoutError` when `root` holds no `*/images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5` files, and
    `FileNotFoundError` naming a geometry file a frame lacks. h5py is needed (the `train` extra)."""
    require_h5py()
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Hypersim root {root!r} does not exist.")
    sequences = []
    for scene_dir in _scene_dirs(root):
        images = os.path.join(scene_dir, "images")
        for folder in sorted(os.listdir(images)):
            match = _CAMERA.match(folder)
            if not match:
                continue
            frame_ids = sorted(
                (m.group(1) for m in map(_FRAME.match, os.listdir(os.path.join(images, folder))) if m), key=int
            )
            if frame_ids:
                sequence = HypersimSequence(scene_dir, match.group(1), frame_ids, with_depth=with_depth)
                sequence.check_files()
                sequences.append(sequence)
    if not sequences:
        raise LayoutError(
            f"{root!r} is not a Hypersim root: no ai_VVV_NNN/images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5 "
            "files under it (pass a scene folder or the folder holding the scenes)."
        )
    return sequences
