"""Normal maps to pictures and files, and back.

Axis convention: normals are camera-space unit vectors with +x pointing right, +y up and +z toward the camera
(the OpenGL camera frame), the frame the released model's outputs are shown in: a wall facing the camera is
(0, 0, 1), light blue-violet as RGB; a floor seen from above is (0, 1, 0), green.
"""

from __future__ import annotations

import numpy as np


class NormalsProcessor:
    """Static helpers for `(..., 3)` normal arrays (channel-last numpy)."""

    @staticmethod
    def normalize(normals: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        """Scale every vector to unit length (zero vectors stay zero)."""
        normals = np.asarray(normals, dtype=np.float32)
        norm = np.linalg.norm(normals, axis=-1, keepdims=True)
        return normals / np.maximum(norm, eps)

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
