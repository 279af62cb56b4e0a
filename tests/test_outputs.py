"""The npz and EXR outputs read back from disk, the axis conventions, and the visualisation against diffusers'."""

import os
import subprocess
import sys

import numpy as np
import pytest
from test_video_io import unit_normals

from normalcrafter_pipeline.normalcrafter_normals_processor import NormalsProcessor
from normalcrafter_pipeline.normals_writers import ExrSequenceWriter, NpzWriter, partial_path

OpenEXR = pytest.importorskip("OpenEXR")  # the `exr` extra; part of the `test` extra, so CI runs these


# ------------------------------------------------------------------------------------------------------------
# Axis conventions and the visualisation
# ------------------------------------------------------------------------------------------------------------

WALL = np.array([0.0, 0.0, 1.0], np.float32)  # a wall facing the camera, in our (OpenGL) frame
FLOOR = np.array([0.0, 1.0, 0.0], np.float32)  # a floor seen from above: its normal points up
RIGHT_WALL = np.array([-1.0, 0.0, 0.0], np.float32)  # the wall on the camera's right faces left


def test_conventions_on_hand_made_scenes():
    # OpenCV camera: +x right, +y down, +z forward (away from the camera).
    np.testing.assert_array_equal(NormalsProcessor.to_convention(WALL, "opencv"), [0, 0, -1])
    np.testing.assert_array_equal(NormalsProcessor.to_convention(FLOOR, "opencv"), [0, -1, 0])
    np.testing.assert_array_equal(NormalsProcessor.to_convention(RIGHT_WALL, "opencv"), [-1, 0, 0])
    np.testing.assert_array_equal(NormalsProcessor.to_convention(WALL, "opengl"), WALL)
    np.testing.assert_array_equal(NormalsProcessor.to_convention(FLOOR, flip_y=True), [0, -1, 0])
    np.testing.assert_array_equal(NormalsProcessor.to_convention(RIGHT_WALL, flip_x=True), [1, 0, 0])
    # opencv plus flip_y and flip_z is OpenGL again; every conversion is its own inverse.
    normals = unit_normals((4, 5, 3))
    np.testing.assert_array_equal(NormalsProcessor.to_convention(normals, "opencv", flip_y=True, flip_z=True), normals)
    there = NormalsProcessor.to_convention(normals, "opencv", flip_x=True)
    np.testing.assert_array_equal(NormalsProcessor.to_convention(there, "opencv", flip_x=True), normals)


def test_visualisation_colours_of_hand_made_scenes():
    # A wall facing the camera is light blue-violet (127, 127, 255), a floor green (127, 255, 127); flipping z
    # turns the wall (127, 127, 0), flipping y turns the floor (127, 0, 127).
    assert NormalsProcessor.visualize_normals(WALL).tolist() == [127, 127, 255]
    assert NormalsProcessor.visualize_normals(FLOOR).tolist() == [127, 255, 127]
    assert NormalsProcessor.visualize_normals(WALL, flip_z=True).tolist() == [127, 127, 0]
    assert NormalsProcessor.visualize_normals(FLOOR, flip_y=True).tolist() == [127, 0, 127]
    assert NormalsProcessor.visualize_normals(RIGHT_WALL, flip_x=True).tolist() == [255, 127, 127]


@pytest.mark.parametrize("flips", [(False, False, False), (True, False, False), (False, True, True), (True,) * 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_visualisation_equals_diffusers_marigold(flips, dtype):
    from diffusers.pipelines.marigold.marigold_image_processing import MarigoldImageProcessor

    normals = unit_normals((3, 17, 23, 3), seed=7).astype(dtype)
    flip_x, flip_y, flip_z = flips
    ours = NormalsProcessor.visualize_normals(normals, flip_x=flip_x, flip_y=flip_y, flip_z=flip_z)
    theirs = MarigoldImageProcessor.visualize_normals(normals.copy(), flip_x=flip_x, flip_y=flip_y, flip_z=flip_z)
    assert ours.dtype == np.uint8 and ours.shape == normals.shape
    assert len(theirs) == 3
    for frame, image in zip(ours, theirs):
        assert image.mode == "RGB" and image.size == (23, 17)
        np.testing.assert_array_equal(frame, np.asarray(image))


def test_unknown_convention_names_the_choices():
    with pytest.raises(ValueError, match="`convention`.*opencv.*'opengl'.*got 'blender'"):
        NormalsProcessor.to_convention(WALL, "blender")


# ------------------------------------------------------------------------------------------------------------
# npz
# ------------------------------------------------------------------------------------------------------------


def test_npz_streams_the_release_layout_and_appears_when_complete(tmp_path):
    normals = unit_normals((9, 8, 10, 3), seed=3)
    path = tmp_path / "clip_normals.npz"
    with NpzWriter(path, 9, 8, 10) as writer:
        for start in range(0, 9, 4):
            writer.write(normals[start : start + 4])
            assert os.listdir(tmp_path) == [partial_path(path).name]
    with np.load(path) as archive:
        assert archive.files == ["normal"]
        array = archive["normal"]
    assert array.shape == (9, 8, 10, 3) and array.dtype == np.float16
    np.testing.assert_array_equal(array, normals.astype(np.float16))
    assert os.listdir(tmp_path) == ["clip_normals.npz"]


def test_npz_short_video_axis_signs_and_errors(tmp_path):
    normals = unit_normals((5, 4, 6, 3), seed=5)
    signs = NormalsProcessor.axis_signs("opencv")
    with NpzWriter(tmp_path / "short.npz", 12, 4, 6, axis_signs=signs) as writer:  # fewer frames than announced
        writer.write(normals[:2])
        writer.write(normals[2:])
    with np.load(tmp_path / "short.npz") as archive:
        np.testing.assert_array_equal(archive["normal"], (normals * [1, -1, -1]).astype(np.float16))
    with pytest.raises(ValueError, match="more frames"):
        with NpzWriter(tmp_path / "long.npz", 2, 4, 6) as writer:
            writer.write(normals[:3])
    with pytest.raises(ValueError, match="No frame"):
        with NpzWriter(tmp_path / "empty.npz", 2, 4, 6):
            pass
    with pytest.raises(ValueError, match="`axis_signs`"):
        NpzWriter(tmp_path / "bad.npz", 2, 4, 6, axis_signs=(1, 0, 1))
    assert sorted(os.listdir(tmp_path)) == ["short.npz"]


def test_npz_stale_partial_of_a_dead_process_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = partial_path(tmp_path / "clip_normals.npz", pid=int(dead.stdout))
    stale.write_bytes(b"half a zip")
    with NpzWriter(tmp_path / "clip_normals.npz", 1, 4, 4) as writer:
        writer.write(unit_normals((1, 4, 4, 3)))
    assert os.listdir(tmp_path) == ["clip_normals.npz"]


# ------------------------------------------------------------------------------------------------------------
# EXR
# ------------------------------------------------------------------------------------------------------------


def read_exr(path):
    with OpenEXR.File(str(path), separate_channels=True) as exr:
        channels = exr.channels()
        return {name: channels[name].pixels for name in channels}


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_exr_frames_read_back_with_rgb_channels_holding_xyz(tmp_path, dtype):
    normals = unit_normals((4, 6, 9, 3), seed=11)
    path = tmp_path / "clip_normals_exr"
    with ExrSequenceWriter(path, dtype=dtype) as writer:
        writer.write(normals[:3])
        assert not path.exists()  # under its temporary name until complete
        writer.write(normals[3])
    assert os.listdir(tmp_path) == ["clip_normals_exr"]
    assert sorted(os.listdir(path)) == [f"frame_{i:06d}.exr" for i in range(4)]
    for i in range(4):
        channels = read_exr(path / f"frame_{i:06d}.exr")
        assert sorted(channels) == ["B", "G", "R"]
        for axis, name in enumerate("RGB"):
            assert channels[name].dtype == np.dtype(dtype) and channels[name].shape == (6, 9)
            np.testing.assert_array_equal(channels[name], normals[i, ..., axis].astype(dtype))


def test_exr_axis_signs_and_float64_rejected(tmp_path):
    normals = unit_normals((1, 4, 4, 3), seed=2)
    with ExrSequenceWriter(tmp_path / "cv_exr", axis_signs=NormalsProcessor.axis_signs("opencv")) as writer:
        writer.write(normals)
    channels = read_exr(tmp_path / "cv_exr" / "frame_000000.exr")
    np.testing.assert_array_equal(channels["B"], (-normals[0, ..., 2]).astype(np.float16))
    with pytest.raises(ValueError, match="`dtype`.*float64"):
        ExrSequenceWriter(tmp_path / "x_exr", dtype="float64")
    assert os.listdir(tmp_path) == ["cv_exr"]


def test_exr_without_the_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # as if not installed: no spec, and the import fails
    with pytest.raises(ImportError, match=r"normalcrafter-pipeline\[exr\]"):
        ExrSequenceWriter(tmp_path / "x_exr")
    assert os.listdir(tmp_path) == []
