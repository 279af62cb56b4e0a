import os

import numpy as np
import PIL.Image
import pytest
from published_layouts import write_dsine_frame, write_marigold_frame, write_oracle_dsine_set

from normalcrafter_pipeline.formats.benchmarks import BenchmarkDataError, open_benchmark
from normalcrafter_pipeline.formats.sequences import FrameSequence
from normalcrafter_pipeline.metrics import angle_between_deg

# A 6x8 scene in DSINE's stored axes: the top rows a wall facing the camera, the bottom rows a floor, the right
# columns a wall on the right that faces left (toward the image centre).
H, W = 6, 8
WALL, FLOOR, RIGHT_WALL = (0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)
# The same surfaces in our axes (+x right, +y up, +z toward the camera).
OURS = {"wall": (0.0, 0.0, 1.0), "floor": (0.0, 1.0, 0.0), "right wall": (-1.0, 0.0, 0.0)}


def _scene_stored() -> np.ndarray:
    stored = np.zeros((H, W, 3), np.float32)
    stored[: H // 2] = WALL
    stored[H // 2 :] = FLOOR
    stored[:, W - 2 :] = RIGHT_WALL
    return stored


def _rgb(height=H, width=W, value=90):
    return np.full((height, width, 3), value, np.uint8)


def _assert_surfaces_in_our_axes(normal: np.ndarray, tolerance_deg: float):
    regions = {"wall": normal[0, 0], "floor": normal[H - 1, 0], "right wall": normal[0, W - 1]}
    for name, vector in regions.items():
        assert angle_between_deg(vector, OURS[name]) < tolerance_deg, (name, vector)


@pytest.mark.parametrize("set_name, encoding, tolerance", [("nyuv2", "png8", 0.5), ("scannet", "png8", 0.5),
                                                           ("ibims", "exr", 1e-4), ("sintel", "exr", 1e-4),
                                                           ("vkitti", "png16", 0.01)])  # fmt: skip
def test_dsine_wall_and_floor_come_out_in_our_axes(tmp_path, set_name, encoding, tolerance):
    scene = "test" if set_name == "nyuv2" else "scene_a"
    write_dsine_frame(tmp_path / scene, "000000", _rgb(), _scene_stored(), encoding)
    (sequence,) = open_benchmark(f"dsine:{set_name}", tmp_path)
    assert isinstance(sequence, FrameSequence) and len(sequence) == 1
    record = sequence.load(0)
    assert record.rgb.dtype == np.uint8 and record.rgb.shape == (H, W, 3)
    assert record.normal.dtype == np.float32 and record.valid.all()
    _assert_surfaces_in_our_axes(record.normal, tolerance)


def test_marigold_wall_and_floor_are_read_unchanged(tmp_path):
    ours = np.zeros((H, W, 3), np.float32)
    ours[: H // 2], ours[H // 2 :], ours[:, W - 2 :] = OURS["wall"], OURS["floor"], OURS["right wall"]
    write_marigold_frame(tmp_path, "000000", _rgb(), ours)
    (sequence,) = open_benchmark("marigold:nyuv2", tmp_path)
    _assert_surfaces_in_our_axes(sequence.load(0).normal, 1e-6)


def test_dsine_png_mask_drops_black_pixels_only(tmp_path):
    # DSINE: valid where the 8-bit channel sum is non-zero, so a black pixel is dropped and (0, 0, 1) is kept.
    stored = _scene_stored()
    valid = np.ones((H, W), bool)
    valid[1, 2] = valid[4, 5] = False
    write_dsine_frame(tmp_path / "test", "000000", _rgb(), stored, "png8", valid=valid)
    raw = np.asarray(PIL.Image.open(tmp_path / "test" / "000000_normal.png")).copy()
    raw[2, 2] = (0, 0, 1)
    PIL.Image.fromarray(raw).save(tmp_path / "test" / "000000_normal.png")
    record = open_benchmark("dsine:nyuv2", tmp_path)[0].load(0)
    expected = valid.copy()
    np.testing.assert_array_equal(record.valid, expected)
    assert not record.normal[1, 2].any()  # invalid pixels come back as zero vectors


def test_dsine_exr_mask_keeps_vectors_longer_than_half(tmp_path):
    stored = _scene_stored()
    stored[0, 0] *= 0.49  # dropped (|n| <= 0.5)
    stored[0, 1] *= 0.51  # kept, as stored (the metrics normalise)
    stored[0, 2] = np.nan  # dropped
    write_dsine_frame(tmp_path / "alley_1", "frame_0001", _rgb(), stored, "exr")
    record = open_benchmark("dsine:sintel", tmp_path)[0].load(0)
    expected = np.ones((H, W), bool)
    expected[0, 0] = expected[0, 2] = False
    np.testing.assert_array_equal(record.valid, expected)
    np.testing.assert_allclose(record.normal[0, 1], np.array(WALL) * 0.51, rtol=1e-6)


def test_marigold_mask_drops_zero_vectors(tmp_path):
    ours = np.zeros((H, W, 3), np.float32)
    ours[..., 2] = 1.0
    ours[3, 3] = 0.0
    ours[4, 4] = (0.0, 0.0, 1e-3)  # short but non-zero: kept, as Marigold's `norm > 0`
    write_marigold_frame(tmp_path / "scene0001_01", "001170", _rgb(), ours)
    record = open_benchmark("marigold:scannet", tmp_path)[0].load(0)
    assert record.valid.sum() == H * W - 1 and not record.valid[3, 3] and record.valid[4, 4]


def test_sintel_scenes_are_sequences_in_frame_order_and_images_are_one_frame_sequences(tmp_path):
    write_oracle_dsine_set(tmp_path / "sintel", "sintel", {"market_6": ["frame_0003", "frame_0001", "frame_0002"],
                                                           "alley_1": ["frame_0001", "frame_0002"]})  # fmt: skip
    sequences = open_benchmark("dsine:sintel", tmp_path / "sintel")
    assert [(s.name, len(s)) for s in sequences] == [("alley_1", 2), ("market_6", 3)]
    assert [f.frame_id for f in sequences[1].frames] == ["frame_0001", "frame_0002", "frame_0003"]
    first = sequences[1].load(0)
    np.testing.assert_array_equal(first.rgb, np.asarray(PIL.Image.open(
        tmp_path / "sintel" / "market_6" / "frame_0001_img.png")))  # fmt: skip

    write_oracle_dsine_set(tmp_path / "nyuv2", "nyuv2", {"test": ["000001", "000000"], "train": ["000005"]})
    sequences = open_benchmark("dsine:nyuv2", tmp_path / "nyuv2")
    assert [(s.name, len(s)) for s in sequences] == [("test_000000", 1), ("test_000001", 1)]  # train/ not read


def test_split_files_select_the_listed_frames(tmp_path):
    write_oracle_dsine_set(tmp_path / "scannet", "scannet", {"scene0532_00": ["000000"], "scene0220_02": ["000450"]})
    split = tmp_path / "test.txt"
    split.write_text("scene0220_02/000450_img.png\n")
    (sequence,) = open_benchmark("dsine:scannet", tmp_path / "scannet", split=split)
    assert sequence.name == "scene0220_02_000450"

    ours = np.zeros((H, W, 3), np.float32)
    ours[..., 2] = 1.0
    # DIODE names images `<id>.png` beside `<id>_normal.npy`; Marigold's split lists both paths.
    write_marigold_frame(tmp_path / "diode" / "outdoor" / "scan_1", "00024_070", _rgb(), ours, img_suffix="")
    write_marigold_frame(tmp_path / "diode" / "indoor" / "scan_2", "00019_010", _rgb(), ours, img_suffix="")
    split = tmp_path / "diode_test.txt"
    split.write_text("outdoor/scan_1/00024_070.png outdoor/scan_1/00024_070_normal.npy\n")
    (sequence,) = open_benchmark("marigold:diode", tmp_path / "diode", split=split)
    assert sequence.frames[0].image.endswith(os.path.join("outdoor", "scan_1", "00024_070.png"))
    assert len(open_benchmark("marigold:diode", tmp_path / "diode")) == 2  # without a split: every *_normal.npy


# Bad data: one line naming the file, raised when the benchmark is opened (before any model loads).


def _single_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_root_that_is_not_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        open_benchmark("dsine:sintel", tmp_path / "missing")
    assert "missing" in _single_line(error)

    write_oracle_dsine_set(tmp_path / "dsine_eval" / "ibims", "ibims", {"ibims": ["corridor_01"]})
    with pytest.raises(BenchmarkDataError) as error:  # the dsine_eval folder instead of dsine_eval/ibims
        open_benchmark("dsine:ibims", tmp_path / "dsine_eval")
    message = _single_line(error)
    assert "not a DSINE ibims folder" in message and os.path.join("dsine_eval", "ibims") in message

    with pytest.raises(BenchmarkDataError, match="not a DSINE nyuv2 folder, no test/<id>_img.png"):
        open_benchmark("dsine:nyuv2", tmp_path / "dsine_eval" / "ibims")
    write_oracle_dsine_set(tmp_path / "nyu", "nyuv2", {"test": ["000000"]})
    with pytest.raises(FileNotFoundError) as error:  # NYUv2's 8-bit PNG ground truth read as Sintel's EXR
        open_benchmark("dsine:sintel", tmp_path / "nyu")
    assert _single_line(error).startswith(str(tmp_path / "nyu" / "test" / "000000_normal.exr"))

    with pytest.raises(BenchmarkDataError, match="not a Marigold nyuv2 folder"):
        open_benchmark("marigold:nyuv2", tmp_path / "nyu")
    with pytest.raises(ValueError, match="pickles"):
        open_benchmark("dsine:oasis", tmp_path)


def test_missing_ground_truth_file(tmp_path):
    write_oracle_dsine_set(tmp_path, "sintel", {"alley_1": ["frame_0001", "frame_0002"]})
    os.remove(tmp_path / "alley_1" / "frame_0002_normal.exr")
    with pytest.raises(FileNotFoundError) as error:
        open_benchmark("dsine:sintel", tmp_path)
    assert _single_line(error).startswith(str(tmp_path / "alley_1" / "frame_0002_normal.exr"))


def test_image_and_ground_truth_of_different_sizes(tmp_path):
    write_dsine_frame(tmp_path / "ibims", "corridor_01", _rgb(H, W + 1), _scene_stored(), "exr")
    with pytest.raises(BenchmarkDataError) as error:
        open_benchmark("dsine:ibims", tmp_path)
    message = _single_line(error)
    assert message.startswith(str(tmp_path / "ibims" / "corridor_01_normal.exr")) and "8x6" in message
    assert "9x6" in message

    ours = np.zeros((H + 2, W, 3), np.float32)
    ours[..., 2] = 1
    write_marigold_frame(tmp_path / "m", "000000", _rgb(), ours)
    with pytest.raises(BenchmarkDataError, match="000000_normal.npy: ground truth is 8x8"):
        open_benchmark("marigold:nyuv2", tmp_path / "m")


@pytest.mark.parametrize("name, layout, scene", [("frame_0001_normal.exr", "dsine:sintel", "alley_1"),
                                                 ("000000_normal.png", "dsine:nyuv2", "test"),
                                                 ("000000_normal.npy", "marigold:nyuv2", "")])  # fmt: skip
def test_ground_truth_that_does_not_decode(tmp_path, name, layout, scene):
    frame_id = name.split("_normal")[0]
    if layout.startswith("dsine"):
        write_dsine_frame(tmp_path / scene, frame_id, _rgb(), _scene_stored(), "exr" if "exr" in name else "png8")
    else:
        write_marigold_frame(tmp_path, frame_id, _rgb(), _scene_stored())
    (tmp_path / scene / name).write_bytes(b"not an image")
    with pytest.raises(BenchmarkDataError) as error:
        open_benchmark(layout, tmp_path)
    assert _single_line(error).startswith(str(tmp_path / scene / name)) and "does not decode" in str(error.value)


def test_png_ground_truth_of_the_wrong_bit_depth_fails_when_read(tmp_path):
    # NYUv2's ground truth is 8-bit; a 16-bit file has the right size but would decode to nonsense with / 255.
    write_dsine_frame(tmp_path / "test", "000000", _rgb(), _scene_stored(), "png16")
    os.rename(tmp_path / "test" / "000000_img.jpg", tmp_path / "test" / "000000_img.png")
    (sequence,) = open_benchmark("dsine:nyuv2", tmp_path)
    with pytest.raises(BenchmarkDataError, match=r"000000_normal.png: normal map is uint16 .* 8-bit RGB PNGs"):
        sequence.load(0)
