"""3D Ken Burns (sniklaus/3d-ken-burns) as published, read without a conversion pass.

A scene archive (`asdf-flying.zip`, ...) unpacks to a folder of samples: for each capture `NNNNN`, four views
`NNNNN-{bl,br,tl,tr}-image.png` (sRGB) and one `NNNNN-meta.json` with `fltFov`; its depth archive
(`asdf-flying-depth.zip`) to `asdf-flying-depth/NNNNN-{bl,br,tl,tr}-depth.exr`, which may also lie beside the images.

Our reading of the release (its README and issues #37, #39, #72):

- Every view is a single frame, not part of a sequence (the field of view is drawn at random per capture, issue
  #72), so each enters training as a sequence of one frame, the way the clip format treats single images.
- `fltFov` is the field of view in degrees (horizontal; the views are square, issue #39), the principal point is
  the image centre and the pinhole has no distortion (issue #39); the depth is z-depth along the optical axis
  (issue #37 turns it into disparity as baseline * focal / depth).
- The release also has normal archives whose encoding its code does not document, so normals are derived from the
  depth, as for any set with depth and intrinsics (`normals_from_depth`): each pixel is back-projected, the
  tangents are the differences to its neighbours (per axis, the side whose depth differs less, so no tangent
  crosses a depth edge), the normal is their cross product turned toward the camera. Pixels on the image border,
  with invalid depth, or whose both neighbours along an axis differ by more than `max_relative_step` of their
  depth (depth edges) are invalid.
- Depth is not returned: its unit is not documented.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .exr import read_exr
from .layout_io import LayoutError, check_same_size, read_json, read_rgb
from .sequences import FrameRecord, FrameSequence

_IMAGE = re.compile(r"^(\d+)-(bl|br|tl|tr)-image\.png$")


def normals_from_depth(depth: np.ndarray, focal: float, max_relative_step: float = 0.25):
    """Camera-frame normals (our axes) of a z-depth map `(H, W)` of a centred pinhole camera with `focal` pixels.

    Returns `(normal (H, W, 3) float32, valid (H, W) bool)`; see the module docstring for the method."""
    depth = np.asarray(depth, dtype=np.float64)
    height, width = depth.shape
    ok = np.isfinite(depth) & (depth > 0)
    z = np.where(ok, depth, np.nan)
    u = np.arange(width, dtype=np.float64) - (width - 1) / 2
    v = np.arange(height, dtype=np.float64) - (height - 1) / 2
    # Points in our camera frame: +x right, +y up, the camera looking down -z.
    points = np.stack([u[None, :] * z / focal, -v[:, None] * z / focal, -z], axis=-1)  # [H, W, 3]

    def tangent(axis: int):
        forward = np.roll(points, -1, axis=axis) - points
        backward = points - np.roll(points, 1, axis=axis)
        step_f = np.abs(np.roll(z, -1, axis=axis) - z) / z
        step_b = np.abs(z - np.roll(z, 1, axis=axis)) / z
        use_forward = np.nan_to_num(step_f, nan=np.inf) <= np.nan_to_num(step_b, nan=np.inf)
        chosen = np.where(use_forward[..., None], forward, backward)
        smooth = np.minimum(np.nan_to_num(step_f, nan=np.inf), np.nan_to_num(step_b, nan=np.inf)) <= max_relative_step
        return chosen, smooth

    du, smooth_u = tangent(1)
    dv, smooth_v = tangent(0)
    normal = np.cross(du, dv)
    toward_camera = np.sum(normal * -points, axis=-1) < 0
    normal[toward_camera] *= -1.0
    norm = np.linalg.norm(normal, axis=-1)
    valid = ok & smooth_u & smooth_v & np.isfinite(norm) & (norm > 0)
    valid[0, :] = valid[-1, :] = False
    valid[:, 0] = valid[:, -1] = False
    normal = np.where(valid[..., None], normal / np.where(valid, norm, 1.0)[..., None], 0.0)
    return normal.astype(np.float32), valid


class KenBurnsView(FrameSequence):
    """One view of one 3D Ken Burns capture: a sequence of one frame (see the module docstring)."""

    def __init__(self, image_path: str, depth_path: str, meta_path: str, name: str):
        self.image_path, self.depth_path, self.meta_path, self.name = image_path, depth_path, meta_path, name

    def __len__(self) -> int:
        return 1

    def load(self, index: int) -> FrameRecord:
        self._check_index(index)
        rgb = read_rgb(self.image_path)
        height, width = rgb.shape[:2]
        meta = read_json(self.meta_path)
        fov = meta.get("fltFov")
        if not isinstance(fov, (int, float)) or not 0 < fov < 180:
            raise LayoutError(f"{self.meta_path!r} has `fltFov` {fov!r}; expected the field of view in degrees.")
        planes = read_exr(self.depth_path, None)
        depth = planes[..., 0] if planes.ndim == 3 else planes
        check_same_size(self.depth_path, depth, height, width, "Depth map")
        focal = 0.5 * width / np.tan(np.radians(fov) / 2)
        normal, valid = normals_from_depth(depth, focal)
        return FrameRecord(rgb=rgb, normal=normal, valid=valid, depth=None)


def _sample_folders(root: str) -> list[str]:
    def has_images(folder):
        return any(_IMAGE.match(name) for name in os.listdir(folder))

    if has_images(root):
        return [root]
    return [
        os.path.join(root, name)
        for name in sorted(os.listdir(root))
        if os.path.isdir(os.path.join(root, name)) and has_images(os.path.join(root, name))
    ]


def open_kenburns(root: str | os.PathLike, with_depth: bool = False) -> list[KenBurnsView]:
    """The views under `root` (one unpacked scene folder, or the folder holding them), in name order.

    Raises `LayoutError` when no `NNNNN-{bl,br,tl,tr}-image.png` is found, and `FileNotFoundError` naming a view's
    missing depth map or capture's missing meta file. `with_depth` is accepted for a uniform interface (no depth is
    returned)."""
    del with_depth
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"3D Ken Burns root {root!r} does not exist.")
    views = []
    for folder in _sample_folders(root):
        depth_folder = os.path.normpath(folder) + "-depth"
        scene = os.path.basename(os.path.normpath(folder))
        for name in sorted(os.listdir(folder)):
            match = _IMAGE.match(name)
            if not match:
                continue
            capture, view = match.groups()
            depth_name = f"{capture}-{view}-depth.exr"
            depth_path = next(
                (
                    p
                    for p in (os.path.join(folder, depth_name), os.path.join(depth_folder, depth_name))
                    if os.path.isfile(p)
                ),
                None,
            )
            if depth_path is None:
                raise FileNotFoundError(
                    f"3D Ken Burns view {os.path.join(folder, name)!r} has no depth map {depth_name} beside it or in "
                    f"{depth_folder!r} (unpack the scene's -depth archive next to it)."
                )
            meta_path = os.path.join(folder, f"{capture}-meta.json")
            if not os.path.isfile(meta_path):
                raise FileNotFoundError(f"3D Ken Burns capture {capture} in {folder!r} has no {capture}-meta.json.")
            views.append(KenBurnsView(os.path.join(folder, name), depth_path, meta_path, f"{scene}_{capture}-{view}"))
    if not views:
        raise LayoutError(
            f"{root!r} is not a 3D Ken Burns root: no NNNNN-{{bl,br,tl,tr}}-image.png files in it or in its "
            "sub-folders (pass an unpacked scene folder such as asdf-flying, or the folder holding them)."
        )
    return views
