"""Normal maps to pictures and files, and back.

Axis convention: normals are camera-space unit vectors with +x pointing right, +y up and +z toward the camera
(the OpenGL camera frame), the frame the released model's outputs are shown in: a wall facing the camera is
(0, 0, 1), light blue-violet as RGB; a floor seen from above is (0, 1, 0), green.

Other conventions are sign flips of these axes: `"opencv"` (the OpenCV / COLMAP camera: +x right, +y down, +z
forward, away from the camera) flips y and z; `flip_x`, `flip_y` and `flip_z` flip one axis more (on top of the
convention), as the `flip_*` arguments of diffusers' Marigold `visualize_normals` do.
"""

from __future__ import annotations

import numpy as np

# Sign of each axis of a convention relative to ours (OpenGL): opencv's y points down and its z away from the camera.
CONVENTIONS = {"opengl": (1.0, 1.0, 1.0), "opencv": (1.0, -1.0, -1.0)}


class NormalsProcessor:
    """Static helpers for `(..., 3)` normal arrays (channel-last numpy)."""

    @staticmethod
    def normalize(normals: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        """Scale every vector to unit length (zero vectors stay zero)."""
        normals = np.asarray(normals, dtype=np.float32)
        norm = np.linalg.norm(normals, axis=-1, keepdims=True)
        return normals / np.maximum(norm, eps)

    @staticmethod
    def axis_signs(
        convention: str = "opengl", flip_x: bool = False, flip_y: bool = False, flip_z: bool = False
    ) -> np.ndarray:
        """Per-axis signs `(3,)` float32 turning our OpenGL-frame normals into `convention` with the extra flips."""
        if convention not in CONVENTIONS:
            raise ValueError(
                f"`convention` must be one of {sorted(CONVENTIONS)}, got {convention!r}; use flip_x / flip_y / "
                "flip_z for any other sign convention."
            )
        signs = np.asarray(CONVENTIONS[convention], dtype=np.float32)
        return signs * np.asarray([-1.0 if flip else 1.0 for flip in (flip_x, flip_y, flip_z)], dtype=np.float32)

    @staticmethod
    def to_convention(
        normals: np.ndarray,
        convention: str = "opengl",
        flip_x: bool = False,
        flip_y: bool = False,
        flip_z: bool = False,
    ) -> np.ndarray:
        """Normals `(..., 3)` in our frame (+x right, +y up, +z toward the camera) -> the same vectors in
        `convention` (`"opengl"`: unchanged; `"opencv"`: +x right, +y down, +z away from the camera), then with the
        axes named by `flip_*` negated. Applying it twice gives the input back."""
        signs = NormalsProcessor.axis_signs(convention, flip_x, flip_y, flip_z)
        normals = np.asarray(normals)
        if normals.shape[-1:] != (3,):
            raise ValueError(f"`normals` must have 3 channels last, got shape {normals.shape}.")
        if not np.issubdtype(normals.dtype, np.floating):
            normals = normals.astype(np.float32)
        if (signs == 1.0).all():
            return normals
        return normals * signs.astype(normals.dtype)

    @staticmethod
    def visualize_normals(
        normals: np.ndarray, flip_x: bool = False, flip_y: bool = False, flip_z: bool = False
    ) -> np.ndarray:
        """Normals `(..., 3)` -> uint8 RGB `(n * flips + 1) / 2 * 255`, truncated: the colours of diffusers'
        `MarigoldImageProcessor.visualize_normals` for the same flips (same float32 arithmetic), as a numpy array
        (`PIL.Image.fromarray` of one frame gives its picture). `to_rgb` rounds instead (at most 1 level apart)."""
        normals = NormalsProcessor.to_convention(normals, "opengl", flip_x, flip_y, flip_z)
        # In the input's precision (float32 or float64; anything else in float32), step by step as diffusers does:
        # `(img + 1.0) * 0.5`, then `* 255` and a truncating cast. Clipping keeps out-of-range values from wrapping
        # around in the cast and leaves unit vectors untouched.
        dtype = normals.dtype if normals.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        one, half, full = dtype.type(1.0), dtype.type(0.5), dtype.type(255.0)
        scaled = (np.clip(normals.astype(dtype, copy=False), -one, one) + one) * half
        return (scaled * full).astype(np.uint8)

    @staticmethod
    def to_rgb(normals: np.ndarray) -> np.ndarray:
        """Unit normals in [-1, 1] -> uint8 RGB with `round((n + 1) / 2 * 255)`."""
        return NormalsProcessor._encode(normals, np.uint8, np.float32)

    @staticmethod
    def from_rgb(rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB -> unit normals (`rgb / 255 * 2 - 1`, renormalised; quantisation costs up to ~0.5 degrees)."""
        return NormalsProcessor.normalize(NormalsProcessor._decode(rgb, np.uint8, "rgb"))

    @staticmethod
    def to_uint16(normals: np.ndarray) -> np.ndarray:
        """Unit normals -> uint16 with `round((n + 1) / 2 * 65535)` (the 16-bit PNG mapping)."""
        # float64: in float32 the scaled value is off by up to ~0.004 of a level, which rounds some to the wrong one.
        return NormalsProcessor._encode(normals, np.uint16, np.float64)

    @staticmethod
    def from_uint16(encoded: np.ndarray) -> np.ndarray:
        """uint16 -> normals with `v / 65535 * 2 - 1` (not renormalised: exact to 1/65535 per channel)."""
        return NormalsProcessor._decode(encoded, np.uint16, "encoded")

    @staticmethod
    def _encode(normals: np.ndarray, dtype, float_dtype) -> np.ndarray:
        """`round((n + 1) / 2 * max)` with `max` the largest value of the unsigned integer `dtype`."""
        scaled = (np.clip(np.asarray(normals, dtype=float_dtype), -1.0, 1.0) + 1.0) * 0.5
        return np.round(scaled * float(np.iinfo(dtype).max)).astype(dtype)

    @staticmethod
    def _decode(encoded: np.ndarray, dtype, name: str) -> np.ndarray:
        """`v / max * 2 - 1` in float32 for an array of the unsigned integer `dtype` (argument `name`)."""
        encoded = np.asarray(encoded)
        if encoded.dtype != dtype:
            raise ValueError(f"`{name}` must be {np.dtype(dtype).name}, got {encoded.dtype}.")
        return (encoded.astype(np.float32) / float(np.iinfo(dtype).max) * 2.0 - 1.0).astype(np.float32)
