"""Video reading and the normals writers, on small real videos and images made in the tests."""

import os
import subprocess

import imageio_ffmpeg
import numpy as np
import PIL.Image
import pytest

from normalcrafter_pipeline.formats.png16 import read_png16
from normalcrafter_pipeline.normalcrafter_normals_processor import NormalsProcessor
from normalcrafter_pipeline.normals_writers import (
    ExrSequenceWriter,
    NormalsVideoWriter,
    NpyWriter,
    NpzWriter,
    Png16SequenceWriter,
    SideBySideVideoWriter,
    VideoWriter,
)
from normalcrafter_pipeline.video_io import VideoReadError, fit_max_res, frame_stride, natural_sort_key, read_video


def make_frames(num_frames, height, width, seed=0):
    """Frames whose brightness encodes their index (recoverable after lossy H.264 coding)."""
    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i] = (i * 10) % 250
        frames[i, : height // 2, : width // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
    return frames


def write_video(path, frames, fps):
    writer = imageio_ffmpeg.write_frames(
        str(path),
        size=(frames.shape[2], frames.shape[1]),
        fps=fps,
        codec="libx264",
        macro_block_size=1,
        output_params=["-crf", "10"],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def decode_all(path):
    generator = imageio_ffmpeg.read_frames(str(path))
    meta = next(generator)
    width, height = meta["size"]
    frames = [np.frombuffer(buffer, np.uint8).reshape(height, width, 3) for buffer in generator]
    return np.stack(frames), meta


def frame_index(frame):
    """Inverse of `make_frames`' brightness code, read in the bottom-right quarter."""
    return int(round(float(frame[frame.shape[0] // 2 :, frame.shape[1] // 2 :].mean()) / 10))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", make_frames(20, 48, 64), fps=10)


def unit_normals(shape, seed=0):
    return NormalsProcessor.normalize(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# ------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------


def test_reader_reports_count_fps_size_before_decoding_and_yields_frames(video):
    reader = read_video(video)
    assert (len(reader), reader.fps, reader.size, reader.kind, reader.stride) == (20, 10.0, (48, 64), "video", 1)
    frames = list(reader)
    assert len(frames) == 20
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert [frame_index(f) for f in frames] == list(range(20))
    assert len(list(reader)) == 20  # re-iterable


@pytest.mark.parametrize(
    "target_fps, stride, count, fps", [(5, 2, 10, 5.0), (3, 3, 7, 10 / 3), (100, 1, 20, 10.0), (None, 1, 20, 10.0)]
)
def test_reader_stride_subsampling(video, target_fps, stride, count, fps):
    reader = read_video(video, target_fps=target_fps)
    assert (reader.stride, len(reader)) == (stride, count)
    assert reader.fps == pytest.approx(fps)
    assert [frame_index(f) for f in reader] == list(range(0, 20, stride))


def test_reader_process_length_counts_after_subsampling(video):
    reader = read_video(video, target_fps=5, process_length=4)
    assert len(reader) == 4
    assert [frame_index(f) for f in reader] == [0, 2, 4, 6]
    assert len(read_video(video, process_length=100)) == 20


def test_reader_max_res_keeps_aspect_in_multiples_of_8(video):
    reader = read_video(video, max_res=32)
    assert reader.size == (24, 32)
    frames = list(reader)
    assert frames[0].shape == (24, 32, 3)
    assert read_video(video, max_res=1024).size == (48, 64)  # never upscaled
    assert read_video(video, max_res=0).size == (48, 64)


def test_fit_max_res_and_frame_stride():
    assert fit_max_res(1080, 1920, 1024) == (576, 1024)
    assert fit_max_res(1000, 333, 512) == (512, 168)
    assert fit_max_res(500, 20, 100) == (96, 8)  # multiples of 8, at least 8
    assert fit_max_res(510, 1030, 1020) == (504, 1016)  # never above max_res
    assert fit_max_res(481, 641, None) == (481, 641)
    assert frame_stride(30, 7) == 4 and frame_stride(24, 30) == 1 and frame_stride(30, None) == 1


def test_reader_folder_of_images_in_natural_order(tmp_path):
    frames = make_frames(12, 24, 40)
    for i, frame in enumerate(frames):
        PIL.Image.fromarray(frame).save(tmp_path / f"frame_{i + 1}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    reader = read_video(tmp_path, target_fps=15)
    assert (reader.kind, len(reader), reader.size, reader.stride, reader.fps) == ("images", 6, (24, 40), 2, 15.0)
    np.testing.assert_array_equal(np.stack(list(reader)), frames[::2])
    assert sorted(["frame_10", "frame_2", "Frame_1"], key=natural_sort_key) == ["Frame_1", "frame_2", "frame_10"]


def test_reader_single_image_and_resize(tmp_path):
    path = tmp_path / "still.jpg"
    PIL.Image.fromarray(make_frames(1, 100, 60)[0]).save(path)
    reader = read_video(path, max_res=50)
    assert (reader.kind, len(reader), reader.size) == ("image", 1, (48, 32))
    (frame,) = list(reader)
    assert frame.shape == (48, 32, 3)


def test_reader_errors_name_the_file_and_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"empty\.mp4: the file is empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(VideoReadError, match=r"corrupt\.mp4: not a readable video"):
        read_video(tmp_path / "corrupt.mp4")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    with pytest.raises(VideoReadError, match=r"corrupt\.png: not a readable image"):
        read_video(tmp_path / "corrupt.png")
    (tmp_path / "no_frames").mkdir()
    with pytest.raises(VideoReadError, match="no image files"):
        read_video(tmp_path / "no_frames")
    audio = tmp_path / "audio_only.mp4"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc", "-t", "0.2", str(audio)])
    with pytest.raises(VideoReadError, match="audio_only.mp4: .*no video stream"):
        read_video(audio)
    with pytest.raises(VideoReadError):  # a ValueError too, for callers that catch that
        read_video(audio)


def test_reader_truncated_video_says_so(video, tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # the mp4 index (moov) is written last
    with pytest.raises(
        VideoReadError, match=r"truncated\.mp4: not a readable video \(moov atom not found: .*truncated"
    ):
        read_video(truncated)


def test_reader_applies_rotation_metadata_without_warnings(video, tmp_path, caplog):
    rotated = tmp_path / "rotated.mp4"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    command = [ffmpeg, "-y", "-loglevel", "error", "-display_rotation", "90", "-i", str(video), "-c", "copy"]
    subprocess.run([*command, str(rotated)], check=True)
    with caplog.at_level("WARNING"):
        reader = read_video(rotated)
        frames = np.stack(list(reader))
    assert reader.size == (64, 48) and len(reader) == 20  # a phone video shot upright: upright frames
    assert frames.shape == (20, 64, 48, 3)
    assert [frame_index(f) for f in frames] == list(range(20))
    upright = np.stack(list(read_video(video)))
    # `-display_rotation 90` means "show turned 90 degrees counter-clockwise", as `np.rot90` turns.
    assert np.abs(frames.astype(int) - np.rot90(upright, 1, axes=(1, 2))).mean() < 1
    assert not [r for r in caplog.records if "frame size for reading" in r.getMessage()]


@pytest.mark.parametrize(
    "kwargs, name",
    [({"process_length": 0}, "process_length"), ({"target_fps": 0}, "target_fps"), ({"max_res": -1}, "max_res")],
)
def test_reader_rejects_bad_arguments(video, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        read_video(video, **kwargs)


# ------------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------------


def test_normals_mp4_reads_back_with_frame_count_size_and_colours(tmp_path):
    normals = unit_normals((9, 40, 56, 3))
    normals[:, :20] = (0.0, 0.0, 1.0)  # flat wall facing the camera: (128, 128, 255)
    path = tmp_path / "out.mp4"
    with NormalsVideoWriter(path, fps=12) as writer:
        writer.write(normals[:4])
        for frame in normals[4:]:
            writer.write(frame)  # single frames too
    frames, meta = decode_all(path)
    assert frames.shape == (9, 40, 56, 3)
    assert meta["fps"] == 12
    assert np.abs(frames[:, 4:16, 4:52].astype(int) - (128, 128, 255)).max() <= 6
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_odd_sized_video_and_side_by_side(tmp_path):
    normals = unit_normals((3, 33, 45, 3))
    inputs = make_frames(3, 33, 45)
    with SideBySideVideoWriter(tmp_path / "sbs.mp4", fps=5) as writer:
        writer.write(normals, inputs)
    frames, _ = decode_all(tmp_path / "sbs.mp4")
    assert frames.shape == (3, 34, 90, 3)  # yuv420p needs even sizes: one replicated row and column
    assert np.abs(frames[:, :33, :45].astype(int) - inputs).mean() < 8
    with pytest.raises(ValueError, match="`frames` is required"):
        with SideBySideVideoWriter(tmp_path / "no_inputs.mp4", fps=5) as writer:
            writer.write(normals)
    assert not (tmp_path / "no_inputs.mp4").exists()


def test_png16_round_trip_within_one_step(tmp_path):
    normals = unit_normals((5, 17, 23, 3), seed=3)
    path = tmp_path / "normals_png16"
    with Png16SequenceWriter(path) as writer:
        writer.write(normals[:2])
        writer.write(normals[2:])
    names = sorted(os.listdir(path))
    assert names == [f"frame_{i:06d}.png" for i in range(5)]
    for i, name in enumerate(names):
        encoded = read_png16(path / name)
        np.testing.assert_array_equal(encoded, NormalsProcessor.to_uint16(normals[i]))
        decoded = NormalsProcessor.from_uint16(encoded)
        assert np.abs(decoded - normals[i]).max() <= 1 / 65535 + 1e-6
    assert sorted(os.listdir(tmp_path)) == ["normals_png16"]


def test_npy_memmap_shape_values_and_short_video(tmp_path):
    normals = unit_normals((6, 8, 10, 3), seed=4)
    with NpyWriter(tmp_path / "n.npy", 6, 8, 10) as writer:
        for i in range(0, 6, 4):
            writer.write(normals[i : i + 4])
    array = np.load(tmp_path / "n.npy", mmap_mode="r")
    assert array.shape == (6, 8, 10, 3) and array.dtype == np.float16
    np.testing.assert_array_equal(array, normals.astype(np.float16))

    with NpyWriter(tmp_path / "short.npy", 10, 8, 10) as writer:  # fewer frames than announced
        writer.write(normals[:3])
    np.testing.assert_array_equal(np.load(tmp_path / "short.npy"), normals[:3].astype(np.float16))
    with pytest.raises(ValueError, match="more frames"):
        with NpyWriter(tmp_path / "long.npy", 2, 8, 10) as writer:
            writer.write(normals[:3])
    assert sorted(os.listdir(tmp_path)) == ["n.npy", "short.npy"]


@pytest.mark.parametrize(
    "make_writer",
    [
        lambda path: NormalsVideoWriter(path / "out.mp4", fps=10),
        lambda path: SideBySideVideoWriter(path / "out.mp4", fps=10),
        lambda path: Png16SequenceWriter(path / "out_png16"),
        lambda path: NpyWriter(path / "out.npy", 4, 16, 16),
        lambda path: NpzWriter(path / "out.npz", 4, 16, 16),
        lambda path: ExrSequenceWriter(path / "out_exr"),
    ],
    ids=["mp4", "side_by_side", "png16", "npy", "npz", "exr"],
)
def test_interrupted_write_leaves_no_final_file(tmp_path, make_writer):
    normals = unit_normals((2, 16, 16, 3))
    with pytest.raises(KeyboardInterrupt):
        with make_writer(tmp_path) as writer:
            writer.write(normals, make_frames(2, 16, 16))
            assert all(name.startswith(".") for name in os.listdir(tmp_path))  # only a hidden temporary
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_interrupted_rewrite_keeps_the_previous_output(tmp_path):
    normals = unit_normals((2, 16, 16, 3))
    with NpyWriter(tmp_path / "out.npy", 2, 16, 16) as writer:
        writer.write(normals)
    with pytest.raises(RuntimeError):
        with NpyWriter(tmp_path / "out.npy", 2, 16, 16) as writer:
            writer.write(-normals[:1])
            raise RuntimeError("stopped")
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), normals.astype(np.float16))
    assert os.listdir(tmp_path) == ["out.npy"]


def test_writer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NormalsVideoWriter(tmp_path / "missing" / "out.mp4", fps=10)
    with pytest.raises(ValueError, match="at least one frame"):
        with VideoWriter(tmp_path / "empty.mp4", fps=10):
            pass
    with pytest.raises(ValueError, match="`fps`"):
        VideoWriter(tmp_path / "x.mp4", fps=0)
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(tmp_path / "float.mp4", fps=10) as writer:
            writer.write_frames(np.zeros((2, 8, 8, 3), np.float32))
    assert os.listdir(tmp_path) == []
