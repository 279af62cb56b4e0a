"""Miniature copies of the published benchmark layouts, written the way the sets publish their files.

DSINE (`dsine_eval/<set>/<scene>/<id>_img.png`, `<id>_normal.png|exr`, `<id>_intrins.npy`) stores normals with +x
pointing left (the negated OpenCV-frame normal): a wall facing the camera is (0, 0, 1), a floor (0, 1, 0), a wall on
the right facing left (1, 0, 0). Marigold (`[<scene>/]<id>_img.png`, `<id>_normal.npy`) stores our axes. Each
writer takes ground truth in the set's own stored convention, so the tests state conventions, not the reader's code.

`encode_rgb_of_normals` makes an image whose pixels are 8-bit codes of normals in our axes; `oracle` decodes them
back, so a predictor that only sees frames can return the ground truth (or each normal turned by a known angle).
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image

from normalcrafter_pipeline.formats.exr import write_exr
from normalcrafter_pipeline.formats.png16 import write_png16

INTRINSICS = np.array([[20.0, 0.0, 11.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]])


def codes(vectors: np.ndarray) -> np.ndarray:
    """8-bit codes `round((v + 1) / 2 * 255)` of vectors in [-1, 1]."""
    return np.round((np.asarray(vectors) + 1.0) / 2.0 * 255.0).astype(np.uint8)


def decode_codes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) / 255.0 * 2.0 - 1.0


def oracle(frames: np.ndarray, tilt_deg: float = 0.0) -> np.ndarray:
    """The normals an image made by `write_oracle_dsine_set` encodes, each turned by `tilt_deg` degrees (rotated
    about an axis perpendicular to it, so every pixel's angular error is exactly `tilt_deg`)."""
    normals = decode_codes(frames).astype(np.float64)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    if tilt_deg:
        side = np.cross(normals, [0.0, 1.0, 0.0])  # never zero: the oracle's normals point toward the camera
        side /= np.linalg.norm(side, axis=-1, keepdims=True)
        angle = np.radians(tilt_deg)
        normals = np.cos(angle) * normals + np.sin(angle) * side
    return normals.astype(np.float32)


def random_codes(rng, height: int, width: int) -> np.ndarray:
    """8-bit codes of random directions that point toward the camera (z > 0.3), as real normals do."""
    vectors = rng.standard_normal((height, width, 3))
    vectors[..., 2] = np.abs(vectors[..., 2]) + 0.3
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    return codes(vectors)


def write_dsine_frame(folder, frame_id: str, rgb: np.ndarray, stored: np.ndarray, encoding: str, valid=None) -> None:
    """One DSINE frame: `rgb` as `<id>_img.png`, `stored` (DSINE's axes) as `<id>_normal.*`, the intrinsics.

    `encoding`: "png8" (8-bit codes, invalid pixels black), "png16" (16-bit codes), "exr" (float RGB, invalid pixels
    zero). `valid=None` keeps every pixel.
    """
    os.makedirs(folder, exist_ok=True)
    stored = np.asarray(stored, dtype=np.float32)
    valid = np.ones(stored.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    extension = ".jpg" if encoding == "png16" else ".png"  # vkitti publishes JPEG images
    PIL.Image.fromarray(rgb).save(os.path.join(folder, f"{frame_id}_img{extension}"), quality=100)
    path = os.path.join(folder, f"{frame_id}_normal")
    if encoding == "png8":
        PIL.Image.fromarray(codes(stored) * valid[..., None]).save(path + ".png")
    elif encoding == "png16":
        values = np.round((stored + 1.0) / 2.0 * 65535.0).astype(np.uint16) * valid[..., None]
        write_png16(path + ".png", values.astype(np.uint16))
    else:
        write_exr(path + ".exr", np.where(valid[..., None], stored, 0.0))
    np.save(os.path.join(folder, f"{frame_id}_intrins.npy"), INTRINSICS)


def write_marigold_frame(folder, frame_id: str, rgb: np.ndarray, stored: np.ndarray, valid=None, img_suffix="_img"):
    """One Marigold frame: `<id><img_suffix>.png` and `<id>_normal.npy` (float (H, W, 3), zero where invalid)."""
    os.makedirs(folder, exist_ok=True)
    stored = np.asarray(stored, dtype=np.float32)
    valid = np.ones(stored.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    PIL.Image.fromarray(rgb).save(os.path.join(folder, f"{frame_id}{img_suffix}.png"))
    np.save(os.path.join(folder, f"{frame_id}_normal.npy"), np.where(valid[..., None], stored, 0.0))


DSINE_TO_OURS = np.array([-1.0, 1.0, 1.0])  # the stated convention: DSINE's x points left


def write_oracle_dsine_set(root, set_name: str, scenes: dict, height: int = 12, width: int = 16, seed: int = 0):
    """A DSINE set whose images encode their ground truth (`oracle` reads it back exactly).

    `scenes` maps a scene name to its frame ids. (Not vkitti: its images are JPEG, which the oracle cannot read
    back exactly.) Ground truth is stored in DSINE's axes; for EXR sets it holds the
    exact decoded values of 8-bit codes, so the oracle's answer equals it to float precision.
    """
    rng = np.random.default_rng(seed)
    encoding = {"nyuv2": "png8", "scannet": "png8", "ibims": "exr", "sintel": "exr"}[set_name]
    for scene, frame_ids in scenes.items():
        for frame_id in frame_ids:
            rgb = random_codes(rng, height, width)  # codes of our axes
            stored = decode_codes(rgb) * DSINE_TO_OURS
            if encoding == "png8":  # the code 255 - v decodes to exactly minus the value of v
                stored_codes = rgb.copy()
                stored_codes[..., 0] = 255 - rgb[..., 0]
                stored = decode_codes(stored_codes)
            write_dsine_frame(os.path.join(root, scene), frame_id, rgb, stored, encoding)
