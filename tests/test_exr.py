import numpy as np
import pytest

pytest.importorskip("OpenEXR")

from normalcrafter_pipeline.formats.exr import ExrReadError, read_exr, write_exr  # noqa: E402


def test_rgb_and_single_channel_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.standard_normal((5, 7, 3)).astype(np.float32)
    write_exr(tmp_path / "n.exr", rgb)
    np.testing.assert_array_equal(read_exr(tmp_path / "n.exr"), rgb)
    np.testing.assert_array_equal(read_exr(tmp_path / "n.exr", channels=("B", "G", "R")), rgb[..., ::-1])

    depth = rng.uniform(0, 100, (5, 7)).astype(np.float32)
    write_exr(tmp_path / "d.exr", depth, half=True)
    back = read_exr(tmp_path / "d.exr")
    assert back.shape == (5, 7) and back.dtype == np.float32
    np.testing.assert_allclose(back, depth, rtol=1e-3)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.exr"):
        read_exr(tmp_path / "missing.exr")
    (tmp_path / "junk.exr").write_bytes(b"not an exr at all")
    with pytest.raises(ExrReadError, match="junk.exr.*does not decode"):
        read_exr(tmp_path / "junk.exr")
    write_exr(tmp_path / "d.exr", np.zeros((2, 2), np.float32))
    with pytest.raises(ExrReadError, match=r"no channel\(s\) \['Z'\]"):
        read_exr(tmp_path / "d.exr", channels=("Z",))
