import json
import os
import shlex

import numpy as np
import pytest
from published_layouts import oracle, write_marigold_frame, write_oracle_dsine_set

from normalcrafter_pipeline import evaluation
from normalcrafter_pipeline.evaluation_models import CallablePredictor, DiffusersNormalsPredictor
from normalcrafter_pipeline.evaluation_report import COLUMNS
from normalcrafter_pipeline.testing_utils import tiny_marigold_normals_pipeline, tiny_pipeline

QUIET = {"show_progress": False}
PAPER_SETS = {
    "scannet": {"scene0532_00": ["000000"], "scene0220_02": ["000450"]},
    "sintel": {"alley_1": ["frame_0001", "frame_0002", "frame_0003"], "bamboo_1": ["frame_0001", "frame_0002"]},
    "nyuv2": {"test": ["000000", "000001"], "train": ["000002"]},
    "ibims": {"ibims": ["corridor_01"]},
}


@pytest.fixture(scope="module")
def dsine_eval(tmp_path_factory):
    """A miniature `dsine_eval` folder with the paper's four sets, images encoding their ground truth."""
    root = tmp_path_factory.mktemp("dsine_eval")
    for index, (set_name, scenes) in enumerate(PAPER_SETS.items()):
        write_oracle_dsine_set(root / set_name, set_name, scenes, height=12, width=20, seed=index)
    return root


@pytest.mark.parametrize("set_name", ["sintel", "nyuv2", "ibims", "scannet"])
def test_ground_truth_given_back_scores_zero_in_both_aggregations(dsine_eval, tmp_path, set_name):
    result = evaluation.evaluate_model(
        CallablePredictor(oracle, "oracle"), dsine_eval / set_name, tmp_path, benchmark=f"dsine:{set_name}", **QUIET
    )
    for aggregation in ("pooled_pixels", "per_image_mean"):
        values = result["total"]["aggregations"][aggregation]
        assert values["mean"] < 1e-3 and values["median"] < 0.01 and values["a5"] == 100.0, (aggregation, values)
    if set_name == "sintel":
        assert result["total"]["temporal_change"] < 1e-3  # sequences of several frames get temporal metrics
    else:
        assert result["total"]["temporal_change"] is None


def test_a_known_rotation_scores_its_angle_in_both_aggregations(dsine_eval, tmp_path):
    predictor = CallablePredictor(lambda frames: oracle(frames, tilt_deg=10.0), "rotated by 10 degrees")
    result = evaluation.evaluate_model(predictor, dsine_eval / "sintel", tmp_path, benchmark="dsine:sintel", **QUIET)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for aggregation in ("pooled_pixels", "per_image_mean"):
        values = metrics["models"]["rotated by 10 degrees"][aggregation]
        assert set(COLUMNS) <= set(values)
        assert values["mean"] == pytest.approx(10.0, abs=1e-3)
        assert values["median"] == pytest.approx(10.0, abs=0.01)
        assert values["rmse"] == pytest.approx(10.0, abs=1e-3)
        assert (values["a7_5"], values["a11_25"]) == (0.0, 100.0)
    assert metrics["models"]["rotated by 10 degrees"]["per_image_mean"]["num_images"] == 5
    assert result["total"]["temporal_change"] is not None  # Sintel sequences have several frames
    table = (tmp_path / "metrics.md").read_text()
    assert "`pooled_pixels`" in table and "`per_image_mean`" in table


def test_pooled_pixels_and_per_image_mean_differ_as_their_protocols_do(tmp_path):
    # Two Marigold images: one fully valid scored at 5 degrees, one with a quarter of its pixels valid at 10.
    rng = np.random.default_rng(0)
    for frame_id, keep in (("000000", 1.0), ("000001", 0.25)):
        rgb = np.round((np.array([0.0, 0.0, 1.0]) + 1) / 2 * 255).astype(np.uint8) * np.ones((8, 8, 1), np.uint8)
        truth = rgb.astype(np.float32) / 255 * 2 - 1
        valid = np.zeros((8, 8), bool)
        valid.flat[rng.permutation(64)[: int(64 * keep)]] = True
        write_marigold_frame(tmp_path / "data", frame_id, rgb, truth, valid=valid)
    angles = iter([5.0, 10.0])
    predictor = CallablePredictor(lambda frames: oracle(frames, tilt_deg=next(angles)), "rotating")
    result = evaluation.evaluate_model(
        predictor, tmp_path / "data", tmp_path / "out", benchmark="marigold:nyuv2", **QUIET
    )
    totals = result["total"]["aggregations"]
    assert totals["per_image_mean"]["mean"] == pytest.approx(7.5, abs=1e-3)
    assert totals["pooled_pixels"]["mean"] == pytest.approx((5.0 * 64 + 10.0 * 16) / 80, abs=1e-3)
    assert totals["pooled_pixels"]["num_pixels"] == 80


def test_a_predictor_of_the_wrong_size_is_named(dsine_eval, tmp_path):
    predictor = CallablePredictor(lambda frames: oracle(frames)[:, :-1], "cropping")
    with pytest.raises(ValueError, match="Model 'cropping' returned normals of shape"):
        evaluation.evaluate_model(predictor, dsine_eval / "ibims", tmp_path, benchmark="dsine:ibims", **QUIET)


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    normalcrafter = tmp_path_factory.mktemp("normalcrafter")
    tiny_pipeline(0).save_pretrained(normalcrafter)
    marigold = tmp_path_factory.mktemp("marigold")
    tiny_marigold_normals_pipeline(0).save_pretrained(marigold)
    return str(normalcrafter), str(marigold)


def test_normalcrafter_its_per_frame_baseline_and_marigold_side_by_side_in_one_command(
    dsine_eval, model_folders, tmp_path, capsys
):
    normalcrafter, marigold = model_folders
    out = tmp_path / "sintel"
    argv = ["--benchmark", "dsine:sintel", "--root", str(dsine_eval / "sintel"), "--out", str(out),
            "--model", normalcrafter, "--model", f"per-frame:{normalcrafter}", "--model", f"marigold:{marigold}",
            "--window-size", "2", "--overlap", "1", "--decode-chunk-size", "2"]  # fmt: skip
    assert evaluation.main(argv) == 0
    comparison = json.loads((out / "metrics.json").read_text())
    models = [normalcrafter, f"per-frame:{normalcrafter}", f"marigold:{marigold}"]
    assert comparison["models"] == models
    runs = comparison["benchmarks"]["dsine:sintel"]["models"]
    for model in models:
        for aggregation in ("pooled_pixels", "per_image_mean"):
            assert set(COLUMNS) <= set(runs[model][aggregation])
            assert 0.0 <= runs[model][aggregation]["mean"] <= 180.0
        assert runs[model]["num_frames"] == 5 and runs[model]["temporal_change"] is not None
        run_dir = out / runs[model]["dir"]
        assert sorted(os.listdir(run_dir / "clips")) == ["alley_1.json", "bamboo_1.json"]
    assert runs[f"per-frame:{normalcrafter}"]["settings"]["window_size"] == 1
    assert runs[f"marigold:{marigold}"]["settings"]["kind"] == "diffusers"
    # Same frames, same masks: every model scored the same pixels.
    assert len({runs[m]["pooled_pixels"]["num_pixels"] for m in models}) == 1
    table = (out / "metrics.md").read_text()
    assert "## Aggregation `pooled_pixels`" in table and "## Aggregation `per_image_mean`" in table
    assert f"| `marigold:{marigold}` |" in table and "Sintel mean ↓" in table
    assert "Sintel mean" in capsys.readouterr().out


def _documented_paper_command() -> list[str]:
    with open(os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "EVALUATION.md")) as handle:
        text = handle.read()
    section = text[text.index("## Reproducing the paper's numbers") :]
    line = next(line for line in section.splitlines() if line.startswith("normalcrafter-evaluate --benchmark paper"))
    return shlex.split(line)[1:]


def test_documented_paper_command_scores_the_four_dsine_sets(dsine_eval, model_folders, tmp_path):
    # The documented answer to "how do I reproduce the paper's numbers", run as written with the tiny model in place
    # of the released weights (the default model), on the CPU, over a miniature dsine_eval folder.
    argv = _documented_paper_command()
    options = evaluation.parse_args(argv)
    # The released model (the default) in video mode, as published.
    assert options.benchmark == ["paper"] and options.model is None
    assert (options.window_size, options.overlap, options.steps) == (14, 4, 1)
    normalcrafter, _ = model_folders
    out = tmp_path / "paper"
    argv[argv.index("--root") + 1] = str(dsine_eval)
    argv[argv.index("--out") + 1] = str(out)
    for option in ("--device", "--dtype"):
        del argv[argv.index(option) : argv.index(option) + 2]
    argv += ["--model", normalcrafter, "--window-size", "2", "--overlap", "1", "--decode-chunk-size", "2"]
    assert evaluation.main(argv) == 0
    comparison = json.loads((out / "metrics.json").read_text())
    assert list(comparison["benchmarks"]) == ["dsine:scannet", "dsine:sintel", "dsine:nyuv2", "dsine:ibims"]
    frames = {name: entry["models"][normalcrafter]["num_frames"] for name, entry in comparison["benchmarks"].items()}
    assert frames == {"dsine:scannet": 2, "dsine:sintel": 5, "dsine:nyuv2": 2, "dsine:ibims": 1}
    header = next(line for line in (out / "metrics.md").read_text().splitlines() if line.startswith("| model"))
    titles = [cell.split(" ")[0] for cell in header.strip("| ").split(" | ")[1::5]]
    assert titles == ["ScanNet", "Sintel", "NYUv2", "iBims-1"]

    # A rerun reuses every result: no sequence is scored again.
    clips = out / comparison["benchmarks"]["dsine:sintel"]["models"][normalcrafter]["dir"] / "clips"
    before = {name: os.stat(clips / name).st_mtime_ns for name in os.listdir(clips)}
    assert evaluation.main(argv) == 0
    assert {name: os.stat(clips / name).st_mtime_ns for name in os.listdir(clips)} == before


def test_bad_benchmark_data_fails_before_anything_is_written(dsine_eval, model_folders, tmp_path, capsys):
    normalcrafter, _ = model_folders
    broken = tmp_path / "dsine_eval"
    for set_name in ("sintel", "nyuv2"):
        write_oracle_dsine_set(broken / set_name, set_name, PAPER_SETS[set_name])
    (broken / "nyuv2" / "test" / "000001_normal.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    argv = ["--benchmark", f"dsine:sintel={broken / 'sintel'}", "--benchmark", f"dsine:nyuv2={broken / 'nyuv2'}",
            "--model", normalcrafter, "--out", str(out)]  # fmt: skip
    assert evaluation.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {broken / 'nyuv2' / 'test' / '000001_normal.png'}: does not decode")
    assert not out.exists()  # the Sintel run did not start either


def test_diffusers_predictor_returns_normals_at_the_frames_resolution():
    predictor = DiffusersNormalsPredictor(tiny_marigold_normals_pipeline(0), name="tiny marigold")
    frames = np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    normals = predictor(frames)
    assert normals.shape == (2, 20, 30, 3) and normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(predictor(frames), normals)  # seeded: reruns give the same numbers
