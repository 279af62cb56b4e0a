"""Running videos through the pipeline into output files: the options of a run (a plain dataclass), the output
names and writers, background reading and writing, and `process_video`. Shared by the command line, the web demo
and the benchmarks.

Only the standard library at import: the command line imports this module before torch loads.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The outputs a run can write for an input `NAME`, and the name of each (a file or a folder of frames).
OUTPUT_SUFFIXES = {
    "mp4": "_normals.mp4",
    "png16": "_normals_png16",
    "npy": "_normals.npy",
    "npz": "_normals.npz",
    "exr": "_normals_exr",
    "side_by_side": "_side_by_side.mp4",
}


@dataclass
class RunOptions:
    """How a video is run and written: the pipeline's window settings and the axis convention of every output."""

    window_size: int = 14
    overlap: int = 4
    steps: int = 1
    decode_chunk_size: int = 7
    convention: str = "opengl"
    flip_x: bool = False
    flip_y: bool = False
    flip_z: bool = False
    exr_dtype: str = "float16"


@dataclass
class Job:
    """One input and where its outputs go."""

    source: Path
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class VideoStats:
    frames: int = 0
    seconds: float = 0.0
    read_wait_s: float = 0.0  # compute waited for decoded frames
    write_s: float = 0.0  # the writer thread was busy (overlaps compute)
    write_wait_s: float = 0.0  # compute waited for the writer thread

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def output_paths(source: Path, output_dir: Path | None, formats: list[str]) -> dict[str, Path]:
    """{format: path} of the outputs of `source` in `output_dir` (default: beside it)."""
    stem = source.name if source.is_dir() else source.stem
    folder = output_dir if output_dir is not None else source.resolve().parent
    return {fmt: folder / f"{stem}{OUTPUT_SUFFIXES[fmt]}" for fmt in formats}


def open_writers(job: Job, reader, stack: contextlib.ExitStack, options: RunOptions) -> list:
    """Open a writer for each output of `job`, entered on `stack` (dropped unless renamed when complete)."""
    from normalcrafter_pipeline.normalcrafter_normals_processor import NormalsProcessor
    from normalcrafter_pipeline.normals_writers import (
        ExrSequenceWriter,
        NormalsVideoWriter,
        NpyWriter,
        NpzWriter,
        Png16SequenceWriter,
        SideBySideVideoWriter,
    )

    # One convention for every output.
    signs = NormalsProcessor.axis_signs(options.convention, options.flip_x, options.flip_y, options.flip_z)
    writers = []
    for fmt, path in job.outputs.items():
        if fmt == "mp4":
            writer = NormalsVideoWriter(path, fps=reader.fps, axis_signs=signs)
        elif fmt == "side_by_side":
            writer = SideBySideVideoWriter(path, fps=reader.fps, axis_signs=signs)
        elif fmt == "png16":
            writer = Png16SequenceWriter(path, axis_signs=signs)
        elif fmt == "npz":
            writer = NpzWriter(path, len(reader), reader.height, reader.width, axis_signs=signs)
        elif fmt == "exr":
            writer = ExrSequenceWriter(path, dtype=options.exr_dtype, axis_signs=signs)
        else:
            writer = NpyWriter(path, len(reader), reader.height, reader.width, axis_signs=signs)
        writers.append(stack.enter_context(writer))
    return writers


# ----------------------------------------------------------------------------------------------------------------
# Background reading and writing, so decoding and encoding overlap the model
# ----------------------------------------------------------------------------------------------------------------


class Prefetcher:
    """Iterate `iterable` in a background thread, `maxsize` items ahead; errors surface in the consumer."""

    def __init__(self, iterable, maxsize: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self.wait_s = 0.0
        self._thread = threading.Thread(target=self._run, args=(iterable,), daemon=True, name="frame-reader")
        self._thread.start()

    def _put(self, message) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterable) -> None:
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as error:  # handed to the consumer thread
            self._put(("error", error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        while True:
            start = time.perf_counter()
            kind, value = self._queue.get()
            self.wait_s += time.perf_counter() - start
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class BackgroundWriter:
    """Run `writer.write(normals, frames)` for every writer in one background thread, a few chunks behind."""

    def __init__(self, writers: list, maxsize: int = 4):
        self._writers = writers
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self.busy_s = 0.0
        self.wait_s = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="normals-writer")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain without writing after a failure
            start = time.perf_counter()
            writer = None
            try:
                for writer in self._writers:
                    writer.write(*item)
            except BaseException as error:
                if isinstance(error, OSError) and error.filename is None and writer is not None:
                    error.filename = str(writer.path)  # which output failed (a full disk says only ENOSPC)
                self._error = error
            self.busy_s += time.perf_counter() - start

    def submit(self, normals, frames) -> None:
        if self._error is not None:
            raise self._error
        start = time.perf_counter()
        self._queue.put((normals, frames))
        self.wait_s += time.perf_counter() - start

    def finish(self) -> None:
        """Wait for every chunk to be written; re-raise a write error."""
        start = time.perf_counter()
        self._queue.put(None)
        self._thread.join()
        self.wait_s += time.perf_counter() - start
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without writing what is queued (the outputs are being dropped) and wait for the thread, so that
        no write reaches a temporary output after it was removed."""
        if self._error is None:
            self._error = RuntimeError("aborted")
        while True:  # make room for the end marker: the thread is not writing any more
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join()


# ----------------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------------


class _FrameFeed:
    """The frames of a video as the pipeline reads them: counted, the end noted, and, when `keep_inputs`, held until
    their normals come out (O(window) frames) for the side-by-side output."""

    def __init__(self, frames, keep_inputs: bool):
        self._frames = frames
        self.keep_inputs = keep_inputs
        self._pending: collections.deque = collections.deque()
        self.num_read = 0
        self.ended = False

    def __iter__(self):
        for frame in self._frames:
            if self.keep_inputs:
                self._pending.append(frame)
            self.num_read += 1
            yield frame
        self.ended = True

    def take_inputs(self, count: int):
        """The next `count` frames held, stacked `(count, H, W, 3)`, or None when inputs are not kept."""
        import numpy as np

        return np.stack([self._pending.popleft() for _ in range(count)]) if self.keep_inputs else None


def process_video(
    pipe,
    reader,
    job: Job,
    options: RunOptions,
    progress=None,
    commit_guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> VideoStats:
    """Stream `reader` through `pipe` into the writers of `job`; outputs are renamed only if everything worked.

    `progress.update(n)` (a tqdm bar, say) is called as normals come out; the renaming of the outputs runs inside
    `commit_guard()` (the command line defers signals there, so an input is done or not, never half-done).
    """
    from normalcrafter_pipeline.normals_writers import close_together
    from normalcrafter_pipeline.video_io import VideoReadError

    stats = VideoStats()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = open_writers(job, reader, stack, options)
        prefetcher = Prefetcher(reader, maxsize=options.window_size + options.decode_chunk_size)
        stack.callback(prefetcher.close)
        background = BackgroundWriter(writers)
        feed = _FrameFeed(prefetcher, keep_inputs="side_by_side" in job.outputs)

        def no_frame_error():
            return VideoReadError(
                f"{job.source}: no frame could be read, although the input announced {len(reader)}; nothing was "
                "written."
            )

        try:
            for normals in pipe.stream(
                feed,
                window_size=options.window_size,
                overlap=options.overlap,
                num_inference_steps=options.steps,
                decode_chunk_size=options.decode_chunk_size,
                output_type="np",
            ):
                background.submit(normals, feed.take_inputs(len(normals)))
                stats.frames += len(normals)
                if progress is not None:
                    progress.update(len(normals))
        except BaseException as error:
            background.abort()
            if isinstance(error, ValueError) and feed.ended and feed.num_read == 0:
                raise no_frame_error() from None  # the pipeline refuses an empty video; say why it was empty
            raise
        background.finish()
        if stats.frames == 0:  # the writers' own error ("no frame was written to ...") would not say why
            raise no_frame_error()
        stats.read_wait_s = prefetcher.wait_s
        stats.write_s = background.busy_s
        stats.write_wait_s = background.wait_s
        with commit_guard():
            close_together(writers)
    stats.seconds = time.perf_counter() - start
    return stats
