"""Reading videos frame by frame.

[`read_video`] opens a video file (any format ffmpeg decodes, through imageio-ffmpeg), a folder of images (sorted
naturally, so `frame_2` comes before `frame_10`) or a single image, and returns a lazy [`VideoReader`] whose length,
fps and frame size are known before any frame is decoded. Frames are decoded one at a time, so a two-hour video
never sits in memory. The writers of normals are in `normals_writers`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image

# The stdlib logger (not diffusers'): the command line imports this module to check its inputs before it imports
# torch, diffusers or transformers.
logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif", ".ts")
# Frame rate given to image sequences and single images, which carry none.
DEFAULT_IMAGE_FPS = 30.0
# Sizes produced by `max_res` are multiples of this (the pipeline pads them further to multiples of 64).
SIZE_MULTIPLE = 8


class _DropRotationSizeNotice(logging.Filter):
    """imageio-ffmpeg warns whenever a video carries rotation metadata ("The frame size for reading (w, h) is
    different from the source frame size (h, w)"). The frames it yields are already upright and our reader takes
    their size from that same header, so the notice is noise, repeated on every pass over the video."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The frame size for reading")


@contextlib.contextmanager
def _rotation_notice_dropped() -> Iterator[None]:
    """[`_DropRotationSizeNotice`] on imageio-ffmpeg's logger while our reader parses a video's header, and only
    then: the user's own use of imageio-ffmpeg keeps its warnings."""
    emitter = logging.getLogger("imageio_ffmpeg")
    notice_filter = _DropRotationSizeNotice()
    emitter.addFilter(notice_filter)
    try:
        yield
    finally:
        emitter.removeFilter(notice_filter)


class VideoReadError(ValueError):
    """A file that exists but cannot be read as a video or image (corrupt, empty, unsupported, no frames)."""


def natural_sort_key(name: str | os.PathLike) -> list:
    """Sort key putting `frame_2` before `frame_10` (digit runs compare as numbers, the rest case-insensitively)."""
    parts = re.split(r"(\d+)", os.fspath(name))
    return [int(part) if part.isdigit() else part.lower() for part in parts]


def is_image_file(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def is_video_file(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder`, in natural order (hidden files skipped)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p)]
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def fit_max_res(height: int, width: int, max_res: int | None) -> tuple[int, int]:
    """Output size for a `height` x `width` source: unchanged when its longest side is at most `max_res` (or
    `max_res` is None/0), else scaled so the longest side is `max_res`, aspect kept, each side rounded to a
    multiple of 8 (at least 8)."""
    if not max_res or max(height, width) <= max_res:
        return height, width
    scale = max_res / max(height, width)

    # Rounding may not push a side past `max_res` (e.g. max_res 1020 would round up to 1024).
    largest = max(SIZE_MULTIPLE, max_res // SIZE_MULTIPLE * SIZE_MULTIPLE)

    def fit(size: int) -> int:
        return min(largest, max(SIZE_MULTIPLE, int(round(size * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE))

    return fit(height), fit(width)


def frame_stride(source_fps: float, target_fps: float | None) -> int:
    """Subsampling stride `round(source_fps / target_fps)`, at least 1 (1 when `target_fps` is None)."""
    if target_fps is None or target_fps <= 0 or not source_fps or not math.isfinite(source_fps):
        return 1
    return max(1, int(round(source_fps / target_fps)))


class VideoReader:
    """A lazy, re-iterable video: `len()`, `fps`, `height` and `width` are known up front, iteration decodes one
    `(height, width, 3)` uint8 frame at a time.

    Build it with [`read_video`]. Attributes:
        path: the file or folder read.
        kind: `"video"`, `"images"` (a folder of frames) or `"image"`.
        source_fps, source_size, source_num_frames: as stored in the source (before subsampling and resizing).
        stride: every `stride`-th source frame is kept.
        fps: frame rate after subsampling (`source_fps / stride`).
        num_frames: frames yielded (`len(reader)`), after subsampling and `process_length`.
        height, width: size of the frames yielded (after `max_res`).
    """

    def __init__(
        self,
        path: Path,
        kind: str,
        source_fps: float,
        source_size: tuple[int, int],
        source_num_frames: int,
        max_res: int | None,
        target_fps: float | None,
        process_length: int,
        image_files: list[Path] | None = None,
    ):
        self.path = path
        self.kind = kind
        self.source_fps = float(source_fps)
        self.source_size = source_size
        self.source_num_frames = source_num_frames
        self.stride = frame_stride(source_fps, target_fps)
        self.fps = self.source_fps / self.stride
        num_frames = -(-source_num_frames // self.stride)  # ceil: frames 0, stride, 2 * stride, ...
        if process_length is not None and process_length > 0:
            num_frames = min(num_frames, process_length)
        self.num_frames = num_frames
        self.height, self.width = fit_max_res(*source_size, max_res)
        self._image_files = image_files

    def __len__(self) -> int:
        return self.num_frames

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def __repr__(self) -> str:
        return (
            f"VideoReader(path={str(self.path)!r}, kind={self.kind!r}, num_frames={self.num_frames}, "
            f"fps={self.fps:g}, size={self.width}x{self.height} (width x height), stride={self.stride})"
        )

    def _resize(self, frame: np.ndarray, name: str) -> np.ndarray:
        if frame.shape[:2] == (self.height, self.width):
            return frame
        source = self.source_size
        if frame.shape[:2] != source:
            raise VideoReadError(
                f"{name}: frame size {frame.shape[1]}x{frame.shape[0]} (width x height) differs from the first "
                f"frame's {source[1]}x{source[0]}; every frame of a video must have the same size."
            )
        image = PIL.Image.fromarray(frame).resize((self.width, self.height), PIL.Image.Resampling.LANCZOS)
        return np.asarray(image)

    def frame_files(self) -> list[Path]:
        """The image files this reader yields, in order (empty for a video file)."""
        if self._image_files is None:
            return []
        return self._image_files[:: self.stride][: self.num_frames]

    def check_frame_sizes(self) -> None:
        """Read the header of every image this reader will yield (not the pixels) and raise `VideoReadError` for
        one that cannot be read or whose size differs from the first frame's: found before any model runs,
        rather than minutes into a long folder of frames."""
        height, width = self.source_size
        for image_path in self.frame_files()[1:]:
            other_height, other_width = _image_size(image_path, verify=False)
            if (other_height, other_width) != (height, width):
                raise VideoReadError(
                    f"{self.path}: frame {image_path.name} is {other_width}x{other_height} (width x height) but the "
                    f"first frame is {width}x{height}; every frame of a folder must have the same size: resize "
                    "them, or split the folder into one folder per size."
                )

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.kind == "video":
            yield from self._iter_video()
        else:
            for index in range(self.num_frames):
                image_path = self._image_files[index * self.stride]
                frame = _load_image(image_path)
                yield self._resize(frame, str(image_path))

    def _iter_video(self) -> Iterator[np.ndarray]:
        import imageio_ffmpeg

        height, width = self.source_size
        generator = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        yielded = 0
        try:
            with _rotation_notice_dropped():
                meta = next(generator)
            width, height = meta["size"]  # ffmpeg's size after rotation metadata is applied
            for index, buffer in enumerate(generator):
                if yielded >= self.num_frames:
                    break
                if index % self.stride:
                    continue
                frame = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
                yield self._resize(frame, str(self.path))
                yielded += 1
        except RuntimeError as error:
            raise VideoReadError(f"{self.path}: ffmpeg failed while decoding frame {yielded}: {error}") from error
        finally:
            generator.close()
        if yielded < self.num_frames:
            logger.warning(
                f"{self.path}: the container announced {self.num_frames} frames (after subsampling) but only "
                f"{yielded} could be decoded."
            )


def _load_image(path: Path) -> np.ndarray:
    try:
        with PIL.Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: keep the top 8 bits
                array = np.asarray(image, dtype=np.uint32) >> 8
                array = np.clip(array, 0, 255).astype(np.uint8)
                return np.repeat(array[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise VideoReadError(f"{path}: not a readable image ({error}).") from error


def _image_size(path: Path, verify: bool = True) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels (`verify` also checks the file's
    integrity, which reads it through)."""
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: the file is empty (0 bytes).")
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            if verify:
                image.verify()  # catches truncated/corrupt files cheaply
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise VideoReadError(f"{path}: not a readable image ({error}).") from error
    return height, width


def _ffmpeg_reason(error: BaseException) -> str:
    """The informative part of an ffmpeg error log."""
    text = str(error)
    if "does not contain any stream" in text or "matches no streams" in text:
        return "the file has no video stream"
    if "moov atom not found" in text:  # the index an mp4/mov writes last: a truncated file, or not an mp4 at all
        return "moov atom not found: the file is truncated (an unfinished download or recording) or not a video"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if any(key in lowered for key in ("invalid data", "moov atom not found", "no such file", "permission denied")):
            return re.sub(r"^\[[^\]]*\]\s*", "", line)  # drop ffmpeg's "[in#0 @ 0x...]" prefix
    return lines[-1] if lines else type(error).__name__


def _count_video_frames(path: Path) -> int:
    """Frames of the first video stream, from the container's packets (demuxed, not decoded: fast)."""
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy"]
    command += ["-f", "null", "-"]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    counts = re.findall(r"frame=\s*(\d+)", result.stderr)
    if not counts:
        raise RuntimeError(f"no frame count in the ffmpeg log: {result.stderr[-300:]}")
    return int(counts[-1])


def _probe_video(path: Path) -> tuple[float, tuple[int, int], int]:
    """fps, (height, width) and frame count of a video file, reading the container without decoding."""
    import imageio_ffmpeg

    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: the file is empty (0 bytes).")
    try:
        generator = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        try:
            with _rotation_notice_dropped():
                meta = next(generator)
        finally:
            generator.close()
        num_frames = _count_video_frames(path)
    except (RuntimeError, OSError, StopIteration) as error:
        raise VideoReadError(f"{path}: not a readable video ({_ffmpeg_reason(error)}).") from error
    fps = meta.get("fps") or 0.0
    if not fps or not math.isfinite(fps):
        logger.warning(f"{path}: no frame rate in the container; assuming {DEFAULT_IMAGE_FPS:g} fps.")
        fps = DEFAULT_IMAGE_FPS
    width, height = meta["size"]
    return float(fps), (int(height), int(width)), int(num_frames)


def read_video(
    path: str | os.PathLike,
    max_res: int | None = 1024,
    target_fps: float | None = None,
    process_length: int = -1,
    image_fps: float = DEFAULT_IMAGE_FPS,
) -> VideoReader:
    """Open a video file, a folder of images or a single image as a lazy [`VideoReader`].

    Args:
        path: a video file (anything ffmpeg decodes), a folder of image files (natural order; other files are
            ignored) or one image file.
        max_res (`int`, *optional*, defaults to 1024): longest side of the frames yielded; larger sources are
            resized (aspect kept, each side rounded to a multiple of 8). `None` or 0 keeps the source size.
        target_fps (`float`, *optional*): subsample to about this rate by keeping every
            `round(source_fps / target_fps)`-th frame (at least every frame). `None` keeps every frame.
        process_length (`int`, defaults to -1): keep only the first `process_length` frames after subsampling;
            -1 keeps all.
        image_fps (`float`, defaults to 30): frame rate assumed for a folder of images or a single image.

    Raises:
        FileNotFoundError: `path` does not exist.
        VideoReadError (a `ValueError`): the file is empty, corrupt or not a video/image, or has no frames.
        ValueError: an argument is out of range.
    """
    if max_res is not None and max_res < 0:
        raise ValueError(f"`max_res` must be >= 0 (0 or None keeps the source size), got {max_res}.")
    if target_fps is not None and not target_fps > 0:
        raise ValueError(f"`target_fps` must be > 0 (or None to keep every frame), got {target_fps}.")
    if process_length is None or process_length == 0 or process_length < -1:
        raise ValueError(f"`process_length` must be -1 (all frames) or >= 1, got {process_length}.")
    if not image_fps > 0:
        raise ValueError(f"`image_fps` must be > 0, got {image_fps}.")

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input not found: {path}; pass an existing video file, image or folder of images.")
    if path.is_dir():
        files = list_image_files(path)
        if not files:
            raise VideoReadError(
                f"{path}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)}); pass a folder of "
                "frames, or the video files themselves."
            )
        size = _image_size(files[0])
        kind, fps, num_frames, image_files = "images", image_fps, len(files), files
    elif is_image_file(path):
        size = _image_size(path)
        kind, fps, num_frames, image_files = "image", image_fps, 1, [path]
    else:
        fps, size, num_frames = _probe_video(path)
        kind, image_files = "video", None
    if num_frames < 1:
        raise VideoReadError(f"{path}: the video has no frames (zero frames decoded from its video stream).")
    reader = VideoReader(path, kind, fps, size, num_frames, max_res, target_fps, process_length, image_files)
    if kind == "images":
        reader.check_frame_sizes()
    return reader
