"""Writing normals incrementally, each output under a temporary name renamed when complete.

Every writer takes chunks of unit normals `(k, H, W, 3)` (or single frames `(H, W, 3)`) as
[`NormalCrafterPipeline.stream`] yields them and writes them at once. Each output is written under a hidden
temporary name beside its final one and renamed only when the writer is closed without error, so an interrupted
run never leaves a file that looks finished. Writers are context managers: an exception inside the `with` block
removes the temporary output. The temporary name carries the writer's process id
(`.NAME.partial-<pid>.EXT`): a process killed outright (SIGKILL, the OOM killer) cannot clean up, so every writer
first removes the partial outputs of its final name left by processes that no longer run
([`remove_stale_partials`]), and [`remove_own_partials`] drops this process's on a signal. [`atomic_output`] gives
any other file or folder the same mechanism.

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
import os
import re
import shutil
import threading
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .formats.exr import openexr_missing_reason, write_exr
from .formats.png16 import write_png16
from .normalcrafter_normals_processor import NormalsProcessor

# The stdlib logger (not diffusers'): the command line imports this module before torch, diffusers or transformers.
logger = logging.getLogger(__name__)


def _array_shape(num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """`(F, H, W, 3)` of a video's array of normals, every size checked."""
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"`num_frames`, `height`, `width` must be >= 1, got {num_frames}, {height}, {width}.")
    return int(num_frames), int(height), int(width), 3


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
        self.shape = _array_shape(num_frames, height, width)
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
            self.shape = _array_shape(num_frames, height, width)
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
        for normal in self._normals(normals):
            target = self.temp_path / self.name_format.format(self.num_written)
            write_exr(target, normal, half=self.dtype == np.float16)
            self.num_written += 1

    def _finish(self) -> None:
        if self.num_written == 0:
            raise ValueError(f"No frame was written to {self.path}.")
