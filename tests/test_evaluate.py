import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from normalcrafter_pipeline import evaluation
from normalcrafter_pipeline.formats.clips import load_clip, write_clip
from normalcrafter_pipeline.testing_utils import tiny_pipeline
from normalcrafter_pipeline.training.renderer import render_dataset

ENTRY_POINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks", "evaluate.py")
WINDOW = {"window_size": 3, "overlap": 1, "decode_chunk_size": 2, "show_progress": False}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_data")
    render_dataset(root, 2, frames=5, height=32, width=48, seed=7)
    return str(root)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_model")
    tiny_pipeline(0).save_pretrained(folder)
    return str(folder)


def _mtimes(folder):
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in sorted(os.listdir(folder))}


def test_evaluate_end_to_end_and_resume(dataset, model_dir, tmp_path):
    out = tmp_path / "out"
    result = evaluation.evaluate_model(model_dir, dataset, out, **WINDOW)
    assert (result["num_scored"], result["num_skipped"]) == (2, 0)

    clips_dir = out / "clips"
    assert sorted(os.listdir(clips_dir)) == ["clip_00000.json", "clip_00001.json"]
    assert not [name for name in os.listdir(out) if ".tmp" in name]
    record = json.loads((clips_dir / "clip_00000.json").read_text())
    assert record["num_frames"] == 5 and len(record["frames"]) == 5
    assert record["settings"]["window_size"] == 3
    assert 0.0 <= record["normals"]["mean"] <= 180.0
    assert record["temporal_change"] is not None and record["reprojection"] is not None

    total = json.loads((out / "metrics.json").read_text())["total"]
    assert total["num_clips"] == 2 and total["num_frames"] == 10
    assert total["normals"]["num_pixels"] == sum(r["normals"]["num_pixels"] for r in result["clips"].values())
    assert total["normals"]["mean"] == pytest.approx(result["total"]["normals"]["mean"])
    table = (out / "metrics.md").read_text()
    assert "| clip_00000 | 5 |" in table and "| clip_00001 | 5 |" in table and "pooled" in table
    assert f"{total['normals']['mean']:.2f}" in table

    # The pooled mean weighs clips by their valid pixels.
    clips = list(result["clips"].values())
    weighted = sum(c["normals"]["mean"] * c["normals"]["num_pixels"] for c in clips) / sum(
        c["normals"]["num_pixels"] for c in clips
    )
    assert total["normals"]["mean"] == pytest.approx(weighted)

    before = _mtimes(clips_dir)
    again = evaluation.evaluate_model(model_dir, dataset, out, **WINDOW)
    assert (again["num_scored"], again["num_skipped"]) == (0, 2)
    assert _mtimes(clips_dir) == before
    assert again["total"] == result["total"]

    # Other settings re-score every clip; so does resume=False.
    changed = evaluation.evaluate_model(model_dir, dataset, out, **{**WINDOW, "overlap": 2})
    assert changed["num_scored"] == 2
    forced = evaluation.evaluate_model(model_dir, dataset, out, **{**WINDOW, "overlap": 2}, resume=False)
    assert forced["num_scored"] == 2


def test_evaluate_scores_ground_truth_normals_as_exact(tmp_path):
    # A "model" that returns the ground truth: every error metric is ~0 (16-bit PNG quantisation only).
    render_dataset(tmp_path / "data", 1, frames=3, height=48, width=64, seed=2)
    truth = load_clip(tmp_path / "data" / "clip_00000")["normal"]

    class Oracle:
        def __call__(self, frames, **kwargs):
            return type("Output", (), {"normals": truth})()

    result = evaluation.evaluate_model(Oracle(), tmp_path / "data", tmp_path / "out", model_name="oracle", **WINDOW)
    total = result["total"]
    assert total["normals"]["mean"] < 0.01 and total["normals"]["under_5"] == 100.0
    assert total["temporal_change"] < 0.01
    assert total["reprojection"] < 2.0  # nearest-pixel lookup on curved surfaces; planes are exact
    assert result["settings"]["model"] == "oracle"


def test_cli_per_frame_heatmaps_and_max_res(dataset, model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--model", model_dir, "--data", dataset, "--out", str(out), "--per-frame", "--heatmaps", "--max-res", "24"]
    assert evaluation.main(argv) == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["window_size"] == 1 and settings["overlap"] == 0
    assert settings["max_res"] == 24
    assert "pooled" in capsys.readouterr().out
    heatmaps = sorted(os.listdir(out / "heatmaps" / "clip_00001"))
    assert heatmaps == [f"{i:05d}.png" for i in range(5)]
    assert np.asarray(PIL.Image.open(out / "heatmaps" / "clip_00001" / "00000.png")).shape == (32, 48, 3)


def test_pipeline_object_is_used_as_given(dataset, tmp_path):
    pipe = tiny_pipeline(1)
    result = evaluation.evaluate_model(pipe, dataset, tmp_path / "obj", per_frame=True, **WINDOW)
    assert result["num_scored"] == 2
    assert result["settings"]["per_frame"] is True


def test_error_heatmap_colours():
    image = evaluation.error_heatmap(np.array([[0.0, 45.0, 90.0, np.nan]]), max_deg=45.0)
    assert image.dtype == np.uint8 and image.shape == (1, 4, 3)
    np.testing.assert_array_equal(image[0, 1], image[0, 2])  # clipped at max_deg
    np.testing.assert_array_equal(image[0, 3], [0, 0, 0])
    assert not np.array_equal(image[0, 0], image[0, 1])


def test_bad_arguments_raise(dataset, model_dir, tmp_path):
    with pytest.raises(ValueError, match="`overlap`"):
        evaluation.evaluate_model(model_dir, dataset, tmp_path, window_size=3, overlap=3)
    with pytest.raises(ValueError, match="`window_size`"):
        evaluation.evaluate_model(model_dir, dataset, tmp_path, window_size=0)
    with pytest.raises(ValueError, match="`dtype`"):
        evaluation.evaluate_model(model_dir, dataset, tmp_path, dtype="float64")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluation.evaluate_model(model_dir, tmp_path / "missing", tmp_path)


def test_clip_with_empty_mask_raises_naming_the_clip(model_dir, tmp_path):
    rgb = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    normal = np.zeros((2, 16, 16, 3), dtype=np.float32)
    normal[..., 2] = 1.0
    write_clip(tmp_path / "data" / "empty", rgb, normal, mask=np.zeros((2, 16, 16), dtype=bool))
    with pytest.raises(ValueError, match="empty.*no valid pixel"):
        evaluation.evaluate_model(model_dir, tmp_path / "data", tmp_path / "out", **WINDOW)


def test_cli_reports_bad_input_without_traceback(model_dir, tmp_path, capsys):
    argv = ["--model", model_dir, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]
    assert evaluation.main(argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err and "Traceback" not in err


def test_benchmarks_script_is_the_same_command():
    result = subprocess.run([sys.executable, ENTRY_POINT, "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("usage: normalcrafter-evaluate") and "--per-frame" in result.stdout
