"""One interface over every dataset layout: a sequence of frames with their ground-truth normals, read on demand.

Readers of published layouts (benchmarks, training sets) and of our own clip format all give `FrameSequence`s:
frames in order, each loaded when asked for as a `FrameRecord` whose normals are already decoded, masked and turned
into our axes (the camera frame: +x right, +y up, +z toward the camera, so a surface facing the camera is (0, 0, 1)).
Evaluation streams a sequence from frame 0; training draws clips of consecutive frames from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .clips import list_clip_files, read_clip_frame


@dataclass
class FrameRecord:
    """One frame and its ground truth.

    Attributes:
        rgb: `(H, W, 3)` uint8 sRGB frame.
        normal: `(H, W, 3)` float32 normals in our axes, unit length where `valid` (anything elsewhere).
        valid: `(H, W)` bool, the pixels the layout's protocol scores or trains on.
        depth: optional `(H, W)` float32 z-depth along the optical axis, in metres.
    """

    rgb: np.ndarray
    normal: np.ndarray
    valid: np.ndarray
    depth: np.ndarray | None = None


class FrameSequence:
    """Frames of one sequence (a video, a camera trajectory, or one image as a sequence of one) in order.

    Subclasses set `name` (unique within their dataset, used in file names of results) and implement `__len__` and
    `load`. `load(i)` reads from the files as published each time it is called; nothing is cached or written.
    """

    name: str

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> FrameRecord:
        raise NotImplementedError

    def __iter__(self):
        for index in range(len(self)):
            yield self.load(index)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"Frame {index} of sequence {self.name!r}, which has frames 0..{len(self) - 1}.")


class ClipFolderSequence(FrameSequence):
    """A clip folder of our own format (`formats.clips`) as a `FrameSequence`: pixels outside its mask, and normals
    that are not unit length (zeros), are invalid."""

    def __init__(self, folder: str | os.PathLike, name: str | None = None):
        self.folder = os.fspath(folder)
        self.name = name or os.path.basename(os.path.normpath(self.folder))
        self.files = list_clip_files(self.folder)  # listed once; `load` reads one frame's files

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> FrameRecord:
        self._check_index(index)
        frame = read_clip_frame(self.files, index)
        normal = frame["normal"]
        valid = np.abs(np.linalg.norm(normal, axis=-1) - 1.0) < 1e-2
        if frame["mask"] is not None:
            valid &= frame["mask"]
        return FrameRecord(rgb=frame["rgb"], normal=normal.astype(np.float32), valid=valid, depth=frame["depth"])
