"""Small readers shared by the dataset layouts: HDF5 arrays, 8-bit pictures, JSON files and unit normals, each
failing with the name of the file it could not read."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import PIL.Image

H5PY_HINT = 'pip install "normalcrafter-pipeline[train]" (or pip install h5py)'


class LayoutError(ValueError):
    """A dataset root that is not the layout it is named as, or a file of it that is missing or does not decode."""


def require_h5py():
    """The h5py module, or an ImportError that says how to install it."""
    if importlib.util.find_spec("h5py") is None:
        raise ImportError(f"Reading Hypersim's HDF5 files needs h5py, which is not installed: {H5PY_HINT}")
    import h5py

    return h5py


def read_hdf5(path: str, key: str = "dataset") -> np.ndarray:
    """The array stored under `key` in the HDF5 file `path`; `LayoutError` naming the file when it is missing, does
    not open as HDF5 or lacks the key."""
    h5py = require_h5py()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"HDF5 file {path!r} does not exist.")
    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise LayoutError(f"HDF5 file {path!r} has no {key!r} dataset; it has {sorted(handle.keys())}.")
            return np.asarray(handle[key][()])
    except OSError as error:
        raise LayoutError(f"HDF5 file {path!r} does not decode: {error}") from error


def read_rgb(path: str) -> np.ndarray:
    """An 8-bit picture as `(H, W, 3)` uint8; `LayoutError` naming the file when it does not decode."""
    try:
        with PIL.Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"Image {path!r} does not exist.") from None
    except (OSError, ValueError) as error:
        raise LayoutError(f"Image {path!r} does not decode: {error}") from error


def read_mask(path: str) -> np.ndarray:
    """An 8-bit mask picture as `(H, W)` bool (nonzero = valid)."""
    try:
        with PIL.Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except (OSError, ValueError) as error:
        raise LayoutError(f"Mask {path!r} does not decode: {error}") from error


def read_json(path: str) -> dict:
    """A JSON file as a dict; `LayoutError` naming the file when it does not parse."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"JSON file {path!r} does not exist.") from None
    except (OSError, ValueError) as error:
        raise LayoutError(f"JSON file {path!r} does not parse: {error}") from error


def unit_normals(normal: np.ndarray, min_norm: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """`(normalised float32 normals, valid)`: vectors shorter than `min_norm` or not finite are invalid (and zero);
    the others are scaled to unit length."""
    normal = np.asarray(normal, dtype=np.float32)
    norm = np.linalg.norm(normal, axis=-1)
    valid = np.isfinite(norm) & (norm >= min_norm)
    safe = np.where(valid[..., None], normal, 0.0) / np.where(valid, norm, 1.0)[..., None]
    return safe.astype(np.float32), valid


def check_same_size(path: str, array: np.ndarray, height: int, width: int, what: str) -> None:
    """`LayoutError` naming `path` when `array` is not `height x width`."""
    if array.shape[:2] != (height, width):
        raise LayoutError(
            f"{what} {path!r} is {array.shape[0]}x{array.shape[1]} but its frame is {height}x{width}; every map of "
            "a frame must have the frame's size."
        )
