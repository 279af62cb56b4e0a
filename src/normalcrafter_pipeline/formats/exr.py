"""Float OpenEXR images read and written through the maintained `OpenEXR` Python bindings (>= 3.2, the `exr` extra).

Benchmarks and training sets publish normals and depth as EXR files with either one merged `RGB` layer or loose
`R`/`G`/`B` (or a single `Y`, `Z`, ...) channels; `read_exr` gives them back as one float32 array in a fixed
channel order, and fails with the file's name when the bindings are missing or the file does not decode.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

_EXTRA_HINT = 'pip install "normalcrafter-pipeline[exr]" (or pip install "OpenEXR>=3.2")'


class ExrReadError(ValueError):
    """An EXR file that is missing, does not decode, or lacks the channels asked for."""


def openexr_missing_reason() -> str | None:
    """Why EXR files cannot be read or written here (the OpenEXR bindings are not installed), or None when they can."""
    if importlib.util.find_spec("OpenEXR") is None:
        return f"EXR files need the OpenEXR Python bindings (>= 3.2), which are not installed: {_EXTRA_HINT}"
    return None


def _openexr():
    reason = openexr_missing_reason()
    if reason is not None:
        raise ImportError(reason)
    import OpenEXR

    return OpenEXR


def read_exr(path: str | os.PathLike, channels: tuple[str, ...] | None = None) -> np.ndarray:
    """Read an EXR image as float32.

    Args:
        path: the file.
        channels: the channel names to return, in this order (for example `("R", "G", "B")` or `("Z",)`). `None`
            returns R, G, B when the file has them (A is dropped), else its only channel.

    Returns:
        `(H, W, len(channels))` float32, or `(H, W)` when one channel is returned.

    Raises:
        FileNotFoundError: `path` does not exist.
        ExrReadError: the file does not decode as EXR, or lacks a requested channel (the message names the file
            and the channels it has).
    """
    OpenEXR = _openexr()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EXR file {path!r} does not exist.")
    try:
        with OpenEXR.File(path, separate_channels=True) as exr:
            planes = {name: np.asarray(channel.pixels) for name, channel in exr.channels().items()}
    except (RuntimeError, OSError, ValueError) as error:
        raise ExrReadError(f"EXR file {path!r} does not decode: {error}") from error
    if channels is None:
        if all(name in planes for name in "RGB"):
            channels = ("R", "G", "B")
        elif len(planes) == 1:
            channels = tuple(planes)
        else:
            raise ExrReadError(
                f"EXR file {path!r} has channels {sorted(planes)}; name the ones to read (`channels=`)."
            )
    missing = [name for name in channels if name not in planes]
    if missing:
        raise ExrReadError(f"EXR file {path!r} has no channel(s) {missing}; it has {sorted(planes)}.")
    if len(channels) == 1:
        return planes[channels[0]].astype(np.float32)
    return np.stack([planes[name] for name in channels], axis=-1).astype(np.float32)


def write_exr(path: str | os.PathLike, image: np.ndarray, half: bool = False) -> None:
    """Write `(H, W, 3)` as an `RGB` EXR image, or `(H, W)` as a single `Y` channel, ZIP-compressed.

    Values are stored as 32-bit floats, or 16-bit halfs with `half=True`. The file is written in place: callers that
    need an atomic output write to a temporary name and rename it.
    """
    OpenEXR = _openexr()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        name = "RGB"
    elif image.ndim == 2:
        name = "Y"
    else:
        raise ValueError(f"`image` must be (H, W, 3) or (H, W), got shape {image.shape}.")
    pixels = np.ascontiguousarray(image, dtype=np.float16 if half else np.float32)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {name: pixels}) as exr:
        exr.write(os.fspath(path))
