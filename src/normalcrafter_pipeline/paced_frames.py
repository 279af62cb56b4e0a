"""Frames handed to the pipeline one at a time, with a check before each and a report after each, and the advice
given when a run does not fit in memory.

Front ends that must stop a run between frames, or move a progress bar as frames are consumed (a node of a graph
editor, a server), wrap their frames in [`PacedFrames`] and pass them to `NormalCrafterPipeline.stream`: the
pipeline reads one frame, runs the windows that frame completes, then reads the next, so a check before each frame
is a check between windows too. Only the standard library is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any


class PacedFrames:
    """An iterable over `frames` that calls `before_frame()` before handing out each frame (raise there to stop the
    run) and `after_frame(n)` once frame n - 1 has been consumed (the pipeline asks for the next frame, or the
    frames are exhausted), with n the number of frames consumed so far.

    `len()` is that of `frames` when it has one, so the pipeline's own progress bar knows the total.
    """

    def __init__(
        self,
        frames: Iterable[Any],
        before_frame: Callable[[], None] | None = None,
        after_frame: Callable[[int], None] | None = None,
    ):
        self.frames = frames
        self.before_frame = before_frame
        self.after_frame = after_frame

    def __len__(self) -> int:
        if not isinstance(self.frames, Sequence) and not hasattr(self.frames, "__len__"):
            raise TypeError("the frames given to `PacedFrames` have no length")
        return len(self.frames)

    def __iter__(self) -> Iterator[Any]:
        consumed = 0
        for frame in self.frames:
            if self.before_frame is not None:
                self.before_frame()
            yield frame
            consumed += 1
            if self.after_frame is not None:
                self.after_frame(consumed)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation failure: torch's `OutOfMemoryError` (any accelerator) or the CPU
    allocator's `RuntimeError` ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def out_of_memory_advice(
    window_size: int, processing_resolution: int, offload: str | None, frame_size: tuple[int, int]
) -> str:
    """What to lower when a run with these settings ran out of memory, most effective first: `window_size` (the
    frames denoised together; memory grows with it), `processing_resolution` (memory grows with the pixels the
    model sees; 0 means the frames' own `frame_size` (H, W)), then the `offload` mode (None: offloading is not
    available, as on the CPU, and is not suggested)."""
    height, width = frame_size
    longest = processing_resolution or max(height, width)
    now = processing_resolution or "0, the frames' own size"
    steps = [
        f"lower `window_size` (now {window_size}; overlap must stay below it)",
        f"lower `processing_resolution` (now {now}: a longest side of {longest} px)",
    ]
    if offload == "none":
        steps.append("set `offload` to `model` (components moved to the device one at a time)")
    elif offload == "model":
        steps.append("set `offload` to `sequential` (layer by layer: least memory, slowest)")
    return "Not enough memory for this run: " + "; or ".join(steps) + "."
