"""Pieces shared by the readers of published benchmark layouts: one-line data errors, header-only size checks, split
files, and the sequence class the readers fill.

A reader lists a set's frames and checks every one of them before any model runs (`check_frames`): the image and its
ground truth exist, their headers decode and their sizes agree. Anything wrong raises `BenchmarkDataError` (a
`ValueError`) or `FileNotFoundError` with one line naming the file and what is wrong. Frames are decoded when a
sequence loads them, from the files as published; nothing is written beside the data.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image

from ..exr import openexr_missing_reason, read_exr
from ..sequences import FrameRecord, FrameSequence

logger = logging.getLogger(__name__)


class BenchmarkDataError(ValueError):
    """A benchmark file that is not what its layout publishes (wrong size, bit depth or shape; does not decode)."""


@dataclass(frozen=True)
class BenchmarkFrame:
    """One published frame: its RGB file, its ground-truth file, and where it sits (`scene`, `frame_id`)."""

    image: str
    normal: str
    scene: str
    frame_id: str


def image_size(path: str) -> tuple[int, int]:
    """`(height, width)` of an image file (PNG, JPEG) from its header."""
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise BenchmarkDataError(f"{path}: does not decode as an image ({error}).") from error
    return height, width


def exr_size(path: str) -> tuple[int, int]:
    """`(height, width)` of an EXR file from its header (the OpenEXR bindings read nothing else)."""
    reason = openexr_missing_reason()
    if reason is not None:
        raise ImportError(reason)
    import OpenEXR

    try:
        try:
            with OpenEXR.File(path, header_only=True) as exr:
                low, high = exr.header()["dataWindow"]
        except TypeError:  # bindings before `header_only`: read the file
            return read_exr(path).shape[:2]
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        raise BenchmarkDataError(f"{path}: does not decode as EXR ({error}).") from error
    return int(high[1] - low[1] + 1), int(high[0] - low[0] + 1)


def npy_size(path: str) -> tuple[int, int]:
    """`(height, width)` of an `(H, W, 3)` .npy array from its header (memory-mapped, no pixel is read)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise BenchmarkDataError(f"{path}: does not decode as a .npy array ({error}).") from error
    if array.ndim != 3 or array.shape[2] != 3:
        raise BenchmarkDataError(f"{path}: holds an array of shape {array.shape}; expected (H, W, 3) normals.")
    return int(array.shape[0]), int(array.shape[1])


@functools.cache
def warn_frame_count(root: str, benchmark: str, found: int, published: int) -> None:
    """Warn (once per folder and count) that a folder holds another number of frames than the protocol lists."""
    if found != published:
        logger.warning(
            "%s holds %d %s frames; the published set has %d. Scores are for the frames found.",
            root, found, benchmark, published,
        )  # fmt: skip


def read_split_file(path: str | os.PathLike, columns: int) -> list[list[str]]:
    """The non-empty lines of a split file, each split on whitespace into `columns` relative paths."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Split file {path!r} does not exist; pass the set's list of files (`--split`).")
    with open(path) as handle:
        rows = [line.split() for line in handle if line.strip()]
    for number, row in enumerate(rows, start=1):
        if len(row) < columns:
            raise BenchmarkDataError(
                f"{path}, line {number}: {' '.join(row)!r} has {len(row)} path(s); this layout's split files list "
                f"{columns} per line."
            )
    if not rows:
        raise BenchmarkDataError(f"{path}: the split file lists no frames.")
    return rows


def check_frames(frames: list[BenchmarkFrame], gt_size: Callable[[str], tuple[int, int]], layout: str) -> None:
    """Fail on the first frame whose image or ground truth is missing, does not decode, or differs in size."""
    for frame in frames:
        if not os.path.isfile(frame.image):
            raise FileNotFoundError(f"{frame.image}: image is missing (listed by the {layout} split).")
        if not os.path.isfile(frame.normal):
            raise FileNotFoundError(
                f"{frame.normal}: ground-truth file is missing; {layout} expects one beside each image "
                f"({os.path.basename(frame.image)})."
            )
        size, truth = image_size(frame.image), gt_size(frame.normal)
        if size != truth:
            raise BenchmarkDataError(
                f"{frame.normal}: ground truth is {truth[1]}x{truth[0]} but its image {frame.image} is "
                f"{size[1]}x{size[0]}; {layout} scores at the image's own resolution, so both must match."
            )


def read_rgb(path: str) -> np.ndarray:
    """`(H, W, 3)` uint8 RGB of an 8-bit image file."""
    try:
        with PIL.Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise BenchmarkDataError(f"{path}: does not decode as an image ({error}).") from error


class BenchmarkSequence(FrameSequence):
    """Frames of one published sequence (or one image), decoded by the layout's `decode(frame) -> (normal, valid)`.

    `normal` comes back in our axes (+x right, +y up, +z toward the camera) and zero where `valid` is false.
    """

    def __init__(self, name: str, frames: list[BenchmarkFrame], decode: Callable[[BenchmarkFrame], tuple]):
        self.name = name
        self.frames = frames
        self._decode = decode

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> FrameRecord:
        self._check_index(index)
        frame = self.frames[index]
        rgb = read_rgb(frame.image)
        normal, valid = self._decode(frame)
        if normal.shape[:2] != rgb.shape[:2]:
            raise BenchmarkDataError(
                f"{frame.normal}: ground truth is {normal.shape[1]}x{normal.shape[0]} but its image is "
                f"{rgb.shape[1]}x{rgb.shape[0]}."
            )
        normal = np.where(valid[..., None], normal, 0.0).astype(np.float32)
        return FrameRecord(rgb=rgb, normal=normal, valid=valid)
