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
        rgb = (np.clip(np.asarray(normals, dtype=np.float32), -1.0, 1.0) + 1.0) * 0.5
        return np.round(rgb * 255.0).astype(np.uint8)

    @staticmethod
    def from_rgb(rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB -> unit normals (`rgb / 255 * 2 - 1`, renormalised; quantisation costs up to ~0.5 degrees)."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            raise ValueError(f"`rgb` must be uint8, got {rgb.dtype}.")
        return NormalsProcessor.normalize(rgb.astype(np.float32) / 255.0 * 2.0 - 1.0)

    @staticmethod
    def to_uint16(normals: np.ndarray) -> np.ndarray:
        """Unit normals -> uint16 with `round((n + 1) / 2 * 65535)` (the 16-bit PNG mapping)."""
        scaled = (np.clip(np.asarray(normals, dtype=np.float64), -1.0, 1.0) + 1.0) * 0.5
        return np.round(scaled * 65535.0).astype(np.uint16)

    @staticmethod
    def from_uint16(encoded: np.ndarray) -> np.ndarray:
        """uint16 -> normals with `v / 65535 * 2 - 1` (not renormalised: exact to 1/65535 per channel)."""
        encoded = np.asarray(encoded)
        if encoded.dtype != np.uint16:
            raise ValueError(f"`encoded` must be uint16, got {encoded.dtype}.")
        return (encoded.astype(np.float32) / 65535.0 * 2.0 - 1.0).astype(np.float32)
