"""`paced_frames`: the per-frame check and report around the pipeline's frames, and the out-of-memory advice."""

import numpy as np
import pytest
import torch

from normalcrafter_pipeline.paced_frames import PacedFrames, is_out_of_memory, out_of_memory_advice
from normalcrafter_pipeline.testing_utils import tiny_pipeline


class Stop(Exception):
    pass


def test_check_before_each_frame_and_report_after_it():
    events = []
    frames = PacedFrames(["a", "b", "c"], lambda: events.append("check"), lambda n: events.append(n))
    assert len(frames) == 3
    assert list(frames) == ["a", "b", "c"]
    assert events == ["check", 1, "check", 2, "check", 3]


def test_a_check_that_raises_stops_the_pipeline_between_frames():
    """The pipeline reads frame by frame: a check raising before frame 5 stops it with 5 frames consumed, and the
    same frames unpaced give the same normals as paced ones."""
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    frames = [np.random.default_rng(i).uniform(0, 1, (32, 40, 3)).astype(np.float32) for i in range(8)]
    consumed = []

    def before():
        if len(consumed) == 5:
            raise Stop

    with pytest.raises(Stop):
        for _ in pipe.stream(PacedFrames(frames, before, consumed.append), window_size=3, overlap=1):
            pass
    assert consumed == [1, 2, 3, 4, 5]

    reported = []
    paced = np.concatenate(list(pipe.stream(PacedFrames(frames, None, reported.append), window_size=3, overlap=1)))
    plain = np.concatenate(list(pipe.stream(frames, window_size=3, overlap=1)))
    np.testing.assert_array_equal(paced, plain)
    assert reported == list(range(1, 9))


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.parametrize(
    ("offload", "next_mode"),
    [("none", "`offload` to `model`"), ("model", "`offload` to `sequential`"), ("sequential", None), (None, None)],
)
def test_advice_names_the_settings_to_lower(offload, next_mode):
    advice = out_of_memory_advice(14, 1024, offload, (720, 1280))
    assert "`window_size` (now 14" in advice
    assert "`processing_resolution` (now 1024" in advice
    assert (next_mode in advice) if next_mode else ("`offload`" not in advice)
    assert "the frames' own size" in out_of_memory_advice(8, 0, "none", (720, 1280))
