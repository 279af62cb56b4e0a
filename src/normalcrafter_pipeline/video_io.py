"""Reading videos frame by frame and writing normals incrementally.

Reading: [`read_video`] opens a video file (any format ffmpeg decodes, through imageio-ffmpeg), a folder of
images (sorted naturally, so `frame_2` comes before `frame_10`) or a single image, and returns a lazy
[`VideoReader`] whose length, fps and frame size are known before any frame is decoded. Frames are decoded one at
a time, so a two-hour video never sits in memory.

Writing: every writer takes chunks of unit normals `(k, H, W, 3)` (or single frames `(H, W, 3)`) as
[`NormalCrafterPipeline.stream`] yields them and writes them at once. Each output is written under a hidden
temporary name beside its final one and renamed only when the writer is closed without error, so an interrupted
run never leaves a file that looks finished. Writers are context managers: an exception inside the `with` block
removes the temporary output. The temporary name carries the writer's process id
(`.NAME.partial-<pid>.EXT`): a process killed outright (SIGKILL, the OOM killer) cannot clean up, so every writer
first removes the partial outputs of its final name left by processes that no longer run
([`remove_stale_partials`]), and [`remove_own_partials`] drops this process's on a signal.

- [`NormalsVideoWriter`]: H.264 mp4 of `(n + 1) / 2` as RGB (`NormalsProcessor.to_rgb`);
- [`SideBySideVideoWriter`]: H.264 mp4 of the input frame and its normals side by side;
- [`Png16SequenceWriter`]: a folder of 16-bit RGB PNGs, `round((n + 1) / 2 * 65535)` per channel
  (`NormalsProcessor.to_uint16`; read back with `read_png16` and `NormalsProcessor.from_uint16`);
- [`NpyWriter`]: one float16 `.npy` array `(F, H, W, 3)` written through a memory map;
- [`NpzWriter`]: one `.npz` with key `normal`, a float16 `(F, H, W, 3)` array (the NormalCrafter release's
  layout), streamed into the zip member chunk by chunk;
- [`ExrSequenceWriter`]: a folder of float EXRs (half or float32) with channels R, G, B holding x, y, z (needs the
  `exr` extra: `pip install "normalcrafter-pipeline[exr]"`).

Every writer takes `axis_signs` (from `NormalsProcessor.axis_signs`): the normals are written in that axis
convention (default: ours, +x right, +y up, +z toward the camera).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import threading
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image

from .formats.png16 import write_png16
from .normalcrafter_normals_processor import NormalsProcessor

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


# ----------------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------------


def _as_chunk(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"`{name}` must be (H, W, 3) or (k, H, W, 3), got shape {array.shape}.")
    return array


# `.NAME.partial-<pid>.EXT` (and `.NAME.partial-<pid>.EXT.shrunk.npy`, see `NpyWriter`): the final name is
# NAME + EXT, the writer is process <pid>.
_PARTIAL_NAME = re.compile(r"^\.(?P<stem>.+)\.partial-(?P<pid>\d+)(?P<ext>\.[^.]+)?(?P<extra>.*)$")

# The temporary outputs this process has open, so that a signal handler can remove them (`remove_own_partials`).
_OWN_PARTIALS: set[Path] = set()
_OWN_PARTIALS_LOCK = threading.Lock()


def partial_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    """The hidden temporary name under which process `pid` (default: this one) writes `path`."""
    path = Path(path)
    pid = os.getpid() if pid is None else pid
    # The extension stays last (ffmpeg picks the container from it); the process id keeps two processes writing
    # the same output apart, and tells a later run whether the writer still runs.
    return path.with_name(f".{path.stem}.partial-{pid}{path.suffix}")


def parse_partial_name(name: str) -> tuple[str, int] | None:
    """(final name, writer's process id) of a temporary output's file name, or None for any other name."""
    match = _PARTIAL_NAME.match(name)
    if match is None:
        return None
    return match["stem"] + (match["ext"] or ""), int(match["pid"])


def process_is_running(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 checks existence and permission without sending anything)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    except (OverflowError, ValueError):  # not a valid process id
        return False
    return True


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def remove_stale_partials(
    folder: str | os.PathLike,
    final_names: Iterable[str] | None = None,
    name_suffixes: Iterable[str] | None = None,
) -> list[Path]:
    """Remove the temporary outputs in `folder` left by writers that no longer run (killed by SIGKILL or the OOM
    killer, which no handler sees), and return them. Only those whose final name is in `final_names` or ends with
    one of `name_suffixes` are considered; partials of running processes (this one included) are never touched."""
    folder = Path(folder)
    final_names = set(final_names or ())
    name_suffixes = tuple(name_suffixes or ())
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no folder, or not readable: nothing of ours can be there
        return []
    removed = []
    for entry in entries:
        parsed = parse_partial_name(entry.name)
        if parsed is None:
            continue
        final_name, pid = parsed
        if final_name not in final_names and not (name_suffixes and final_name.endswith(name_suffixes)):
            continue
        if process_is_running(pid):
            continue
        path = folder / entry.name
        _remove_path(path)
        logger.info(f"removed {path}: a partial output of process {pid}, which no longer runs")
        removed.append(path)
    return removed


def remove_own_partials() -> list[Path]:
    """Remove every temporary output this process still has open and return them (for signal handlers: the
    writers' own clean-up runs when the exception unwinds; this catches what a second signal cut short)."""
    with _OWN_PARTIALS_LOCK:
        paths = sorted(_OWN_PARTIALS)
        _OWN_PARTIALS.clear()
    for path in paths:
        _remove_path(path)
    return paths


class _AtomicOutput:
    """Base of the writers: a hidden temporary path beside `path`, renamed to `path` on a clean close.

    `axis_signs` (three +-1 values, see `NormalsProcessor.axis_signs`) multiplies the normals' x, y and z before
    they are written: the output's axis convention. None keeps ours.
    """

    def __init__(self, path: str | os.PathLike, is_dir: bool = False, axis_signs: Sequence[float] | None = None):
        self.axis_signs = None
        if axis_signs is not None:
            signs = np.asarray(axis_signs, dtype=np.float32)
            if signs.shape != (3,) or not np.isin(signs, (-1.0, 1.0)).all():
                raise ValueError(f"`axis_signs` must be three values of +1 or -1, got {axis_signs!r}.")
            self.axis_signs = None if (signs == 1.0).all() else signs
        self.path = Path(path)
        self.temp_path = partial_path(self.path)
        self.is_dir = is_dir
        self.num_written = 0
        self.closed = False
        self._finished = False
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"Output folder {self.path.parent} does not exist; create it first (the CLI does so for "
                "`--output-dir`)."
            )
        remove_stale_partials(self.path.parent, final_names=[self.path.name])
        self._remove(self.temp_path)
        with _OWN_PARTIALS_LOCK:
            _OWN_PARTIALS.add(self.temp_path)

    def _normals(self, normals: np.ndarray) -> np.ndarray:
        """`normals` as a `(k, H, W, 3)` chunk in this output's axis convention."""
        normals = _as_chunk(normals, "normals")
        return normals if self.axis_signs is None else normals * self.axis_signs

    def _forget(self) -> None:
        with _OWN_PARTIALS_LOCK:
            _OWN_PARTIALS.discard(self.temp_path)

    @staticmethod
    def _remove(path: Path) -> None:
        _remove_path(path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _finish(self) -> None:  # flush and close the temporary output
        pass

    def _release(self) -> None:  # release handles without finishing (on abort)
        pass

    def finish(self) -> None:
        """Complete the temporary output (flush, close files and encoders) without renaming it; an error drops it."""
        if self.closed or self._finished:
            return
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._finished = True

    def close(self) -> None:
        """Finish the output and give it its final name (replacing an older one)."""
        if self.closed:
            return
        self.finish()
        self.closed = True
        if self.is_dir and self.path.exists():
            self._remove(self.path)
        os.replace(self.temp_path, self.path)
        self._forget()

    def abort(self) -> None:
        """Drop the temporary output; the final name is left untouched."""
        if self.closed:
            return
        self.closed = True
        try:
            if not self._finished:
                self._release()
        finally:
            self._remove(self.temp_path)
            self._forget()


def close_together(writers: Iterable[_AtomicOutput]) -> None:
    """Finish every writer, then rename them all: if any one fails to finish, all are dropped, so the outputs of
    one video appear together or not at all."""
    writers = list(writers)
    try:
        for writer in writers:
            writer.finish()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Write a file (or, with `is_dir`, a folder) at `path` through the writers' mechanism: the block writes the
    yielded hidden temporary path, which is renamed to `path` when the block ends cleanly and removed otherwise."""
    with _AtomicOutput(path, is_dir=is_dir) as output:
        yield output.temp_path


class VideoWriter(_AtomicOutput):
    """Incremental H.264 mp4 writer of uint8 RGB frames (imageio-ffmpeg, yuv420p, playable everywhere).

    Odd heights or widths are padded by one replicated row/column, as yuv420p needs even sizes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        crf: int = 18,
        preset: str = "medium",
        axis_signs: Sequence[float] | None = None,
    ):
        super().__init__(path, axis_signs=axis_signs)
        if not fps > 0:
            raise ValueError(f"`fps` must be > 0, got {fps}.")
        self.fps = float(fps)
        self.crf = crf
        self.preset = preset
        self._writer = None
        self._size = None

    def write_frames(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames, `(H, W, 3)` or `(k, H, W, 3)`."""
        import imageio_ffmpeg

        frames = _as_chunk(frames, "frames")
        if frames.dtype != np.uint8:
            raise ValueError(f"`frames` must be uint8 RGB, got {frames.dtype}.")
        height, width = frames.shape[1:3]
        if self._writer is None:
            self._size = (height, width)
            self._writer = imageio_ffmpeg.write_frames(
                str(self.temp_path),
                size=(width + width % 2, height + height % 2),
                fps=self.fps,
                codec="libx264",
                pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p",
                macro_block_size=1,
                output_params=["-crf", str(self.crf), "-preset", self.preset],
                ffmpeg_log_level="error",
            )
            self._writer.send(None)  # start ffmpeg
        elif (height, width) != self._size:
            raise ValueError(
                f"Frame size {width}x{height} (width x height) differs from the first frame's "
                f"{self._size[1]}x{self._size[0]}; every frame of a video must have the same size."
            )
        if height % 2 or width % 2:
            frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        for frame in frames:
            self._writer.send(np.ascontiguousarray(frame))
        self.num_written += frames.shape[0]

    def _finish(self) -> None:
        if self._writer is None:
            raise ValueError(f"No frame was written to {self.path}; an mp4 needs at least one frame.")
        writer, self._writer = self._writer, None
        writer.close()

    def _release(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception:  # ffmpeg may already be gone; the temporary file is removed anyway
                pass


class NormalsVideoWriter(VideoWriter):
    """mp4 visualisation of normals: `round((n + 1) / 2 * 255)` as RGB."""

    def write(self, normals: np.ndarray, frames: np.ndarray | None = None) -> None:
        """Append normals `(H, W, 3)` or `(k, H, W, 3)`; `frames` is ignored (same call as the other writers)."""
        self.write_frames(NormalsProcessor.to_rgb(self._normals(normals)))


class SideBySideVideoWriter(VideoWriter):
    """mp4 of each input frame (left) beside its normals (right)."""

    def write(self, normals: np.ndarray, frames: np.ndarray | None = None) -> None:
        normals = self._normals(normals)
        if frames is None:
            raise ValueError("`frames` is required by the side-by-side writer: pass the input frames of `normals`.")
        frames = _as_chunk(frames, "frames")
        if frames.shape[:3] != normals.shape[:3]:
            raise ValueError(
                f"`frames` {frames.shape} and `normals` {normals.shape} must have the same count and size."
            )
        if frames.dtype != np.uint8:
            frames = np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
        self.write_frames(np.concatenate([frames, NormalsProcessor.to_rgb(normals)], axis=2))


class Png16SequenceWriter(_AtomicOutput):
    """A folder of 16-bit RGB PNGs `frame_000000.png`, ... with `round((n + 1) / 2 * 65535)` per channel.

    Read a frame back with `normalcrafter_pipeline.formats.png16.read_png16` then `NormalsProcessor.from_uint16`
    (exact to 1/65535 per channel). The folder is written under a temporary name and renamed when complete.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        compress_level: int = 6,
        name_format: str = "frame_{:06d}.png",
        axis_signs: Sequence[float] | None = None,
    ):
        super().__init__(path, is_dir=True, axis_signs=axis_signs)
        self.compress_level = compress_level
        self.name_format = name_format
        self.temp_path.mkdir()

    def write(self, normals: np.ndarray, frames: np.ndarray | None = None) -> None:
        for normal in NormalsProcessor.to_uint16(self._normals(normals)):
            target = self.temp_path / self.name_format.format(self.num_written)
            write_png16(target, normal, compress_level=self.compress_level)
            self.num_written += 1

    def _finish(self) -> None:
        if self.num_written == 0:
            raise ValueError(f"No frame was written to {self.path}.")


class NpyWriter(_AtomicOutput):
    """Normals as one `(F, H, W, 3)` `.npy` array (float16 by default), written through a memory map.

    The file is created with `numpy.lib.format.open_memmap`; each chunk is then written through a mapping of its
    own region only, unmapped right after, so the process's memory does not grow with the video's length.
    `num_frames` is the expected count; if fewer frames arrive (a container that announced more frames than it
    held), the array is shrunk to what was written when the writer is closed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_frames: int,
        height: int,
        width: int,
        dtype: np.dtype | str = np.float16,
        axis_signs: Sequence[float] | None = None,
    ):
        super().__init__(path, axis_signs=axis_signs)
        if num_frames < 1 or height < 1 or width < 1:
            raise ValueError(f"`num_frames`, `height`, `width` must be >= 1, got {num_frames}, {height}, {width}.")
        self.shape = (int(num_frames), int(height), int(width), 3)
        self.dtype = np.dtype(dtype)
        array = np.lib.format.open_memmap(self.temp_path, mode="w+", dtype=self.dtype, shape=self.shape)
        self._data_offset = array.offset  # bytes of the .npy header
        del array

    def _region(self, start: int, count: int, mode: str) -> np.memmap:
        frame_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:]))
        offset = self._data_offset + start * frame_bytes
        return np.memmap(self.temp_path, self.dtype, mode, offset=offset, shape=(count,) + self.shape[1:])

    def write(self, normals: np.ndarray, frames: np.ndarray | None = None) -> None:
        normals = self._normals(normals)
        if normals.shape[1:] != self.shape[1:]:
            raise ValueError(f"`normals` of shape {normals.shape} do not match the array's {self.shape[1:]}.")
        end = self.num_written + normals.shape[0]
        if end > self.shape[0]:
            raise ValueError(f"{self.path}: more frames ({end}) than announced ({self.shape[0]}).")
        region = self._region(self.num_written, normals.shape[0], "r+")
        region[:] = normals
        del region  # unmapped: the pages go to the page cache, not this process's memory
        self.num_written = end

    def _finish(self) -> None:
        if self.num_written == 0:
            raise ValueError(f"No frame was written to {self.path}.")
        if self.num_written < self.shape[0]:
            logger.warning(f"{self.path}: {self.num_written} of {self.shape[0]} announced frames were written.")
            shrunk = self.temp_path.with_name(self.temp_path.name + ".shrunk.npy")
            try:
                out = np.lib.format.open_memmap(
                    shrunk, mode="w+", dtype=self.dtype, shape=(self.num_written,) + self.shape[1:]
                )
                for start in range(0, self.num_written, 64):
                    count = min(64, self.num_written - start)
                    out[start : start + count] = self._region(start, count, "r")
                out.flush()
                del out
                os.replace(shrunk, self.temp_path)
            except BaseException:
                shrunk.unlink(missing_ok=True)
                raise


class NpzWriter(_AtomicOutput):
    """Normals as one `.npz` holding the key `normal`: a `(F, H, W, 3)` array, float16 by default (the layout of
    the NormalCrafter release's saved results; `np.load(path)["normal"]`).

    The array is streamed into the zip member as chunks arrive (an `.npy` header for the announced shape, then the
    raw frames), so the process's memory does not grow with the video's length. The zip is stored uncompressed, as
    `numpy.savez` writes it. `num_frames` is the expected count; if fewer frames arrive, the file is rewritten with
    the frames that came when the writer is closed (again chunk by chunk).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_frames: int,
        height: int,
        width: int,
        dtype: np.dtype | str = np.float16,
        key: str = "normal",
        axis_signs: Sequence[float] | None = None,
    ):
        super().__init__(path, axis_signs=axis_signs)
        self._zip: zipfile.ZipFile | None = None
        self._member = None
        try:
            if num_frames < 1 or height < 1 or width < 1:
                raise ValueError(f"`num_frames`, `height`, `width` must be >= 1, got {num_frames}, {height}, {width}.")
            self.shape = (int(num_frames), int(height), int(width), 3)
            self.dtype = np.dtype(dtype)
            self.key = key
            self._zip, self._member = self._open_member(self.temp_path, self.shape)
        except BaseException:
            self.abort()
            raise

    def _open_member(self, path: Path, shape: tuple[int, ...]):
        archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        try:
            # The member's size is not declared up front: zip64 from the start, so that it may pass 4 GiB.
            member = archive.open(f"{self.key}.npy", "w", force_zip64=True)
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(member, header)  # version 1.0, as numpy.save writes small headers
        except BaseException:
            archive.close()
            raise
        return archive, member

    def write(self, normals: np.ndarray, frames: np.ndarray | None = None) -> None:
        normals = self._normals(normals)
        if normals.shape[1:] != self.shape[1:]:
            raise ValueError(f"`normals` of shape {normals.shape} do not match the array's {self.shape[1:]}.")
        end = self.num_written + normals.shape[0]
        if end > self.shape[0]:
            raise ValueError(f"{self.path}: more frames ({end}) than announced ({self.shape[0]}).")
        self._member.write(memoryview(np.ascontiguousarray(normals, dtype=self.dtype)))
        self.num_written = end

    def _close_archive(self) -> None:
        member, archive = self._member, self._zip
        self._member = self._zip = None
        try:
            if member is not None:
                member.close()
        finally:
            if archive is not None:
                archive.close()

    def _finish(self) -> None:
        if self.num_written == 0:
            raise ValueError(f"No frame was written to {self.path}.")
        self._close_archive()
        if self.num_written < self.shape[0]:
            logger.warning(f"{self.path}: {self.num_written} of {self.shape[0]} announced frames were written.")
            self._shrink()

    def _shrink(self) -> None:
        """Rewrite the archive with an array of the frames written (its header announced more)."""
        shape = (self.num_written,) + self.shape[1:]
        frame_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:]))
        shrunk = self.temp_path.with_name(self.temp_path.name + ".shrunk.npz")
        try:
            archive, member = self._open_member(shrunk, shape)
            with archive, member, zipfile.ZipFile(self.temp_path) as source:
                with source.open(f"{self.key}.npy") as data:
                    np.lib.format.read_magic(data)
                    np.lib.format.read_array_header_1_0(data)
                    for start in range(0, self.num_written, 64):
                        member.write(data.read(min(64, self.num_written - start) * frame_bytes))
            os.replace(shrunk, self.temp_path)
        except BaseException:
            shrunk.unlink(missing_ok=True)
            raise

    def _release(self) -> None:
        try:
            self._close_archive()
        except Exception:  # the temporary file is removed anyway
            pass


EXR_DTYPES = ("float16", "float32")


def openexr_missing_reason() -> str | None:
    """Why EXR files cannot be written here (the OpenEXR bindings are not installed), or None when they can."""
    import importlib.util

    if importlib.util.find_spec("OpenEXR") is None:
        return (
            "writing EXR needs the OpenEXR Python bindings (>= 3.2), which are not installed: "
            'pip install "normalcrafter-pipeline[exr]" (or pip install "OpenEXR>=3.2")'
        )
    return None


class ExrSequenceWriter(_AtomicOutput):
    """A folder of EXR images `frame_000000.exr`, ... holding the normals as floats: channels R, G, B are x, y, z,
    half floats by default (`dtype="float32"` for full precision), ZIP-compressed scanlines.

    Uses the maintained `OpenEXR` Python bindings (>= 3.2; the `exr` extra). The folder is written under a
    temporary name and renamed when complete. Read a frame back with `OpenEXR.File(path).channels()["RGB"].pixels`
    (`(H, W, 3)`: the bindings gather R, G, B), or channel by channel with
    `OpenEXR.File(path, separate_channels=True).channels()["R"].pixels`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dtype: np.dtype | str = np.float16,
        name_format: str = "frame_{:06d}.exr",
        axis_signs: Sequence[float] | None = None,
    ):
        # Before anything is created on disk: a missing extra must not leave a temporary folder behind.
        reason = openexr_missing_reason()
        if reason is not None:
            raise ImportError(reason)
        dtype = np.dtype(dtype)
        if dtype.name not in EXR_DTYPES:
            raise ValueError(f"`dtype` of an EXR output must be one of {EXR_DTYPES}, got {dtype.name!r}.")
        super().__init__(path, is_dir=True, axis_signs=axis_signs)
        self.dtype = dtype
        self.name_format = name_format
        self.temp_path.mkdir()

    def write(self, normals: np.ndarray, frames: np.ndarray | None = None) -> None:
        import OpenEXR

        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        for normal in self._normals(normals):
            channels = {name: np.ascontiguousarray(normal[..., i], dtype=self.dtype) for i, name in enumerate("RGB")}
            target = self.temp_path / self.name_format.format(self.num_written)
            with OpenEXR.File(header, channels) as exr:
                exr.write(str(target))
            self.num_written += 1

    def _finish(self) -> None:
        if self.num_written == 0:
            raise ValueError(f"No frame was written to {self.path}.")
