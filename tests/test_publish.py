"""normalcrafter-publish: a complete repo from unet/+vae/ weights and a base, loadable by the package and by
diffusers alone (the README's own snippet, run from a local Hub cache), and the push through a mocked HfApi."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from test_diffusers_loading import HIDE_PACKAGE
from test_loading import make_base_repo, make_unet_vae_repo, put_in_hub_cache, run

from normalcrafter_pipeline import NormalCrafterPipeline
from normalcrafter_pipeline.publish import main, render_readme
from normalcrafter_pipeline.testing_utils import tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "someone/normalcrafter-diffusers"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Released-style weights (unet/ + vae/ only), a base with the rest, and the outputs of the whole pipeline."""
    pipe = tiny_pipeline(seed=0)
    root = tmp_path_factory.mktemp("released")
    pipe.save_pretrained(root / "full")
    return make_unet_vae_repo(root / "full", root / "weights"), make_base_repo(root / "full", root / "base"), run(pipe)


@pytest.fixture(scope="module")
def published(released, tmp_path_factory):
    weights, base, _ = released
    out = tmp_path_factory.mktemp("published") / "repo"
    code = main(["-o", str(out), "--weights", str(weights), "--base-model", str(base), "--repo-id", REPO_ID])
    assert code == 0
    return out


def test_repo_is_complete_and_self_contained(published):
    files = {str(path.relative_to(published)) for path in published.rglob("*") if path.is_file()}
    for component, weights in [("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")]:
        assert {f"{component}/{weights}.safetensors", f"{component}/{weights}.fp16.safetensors"} <= files
    assert {"image_encoder/model.safetensors", "image_encoder/model.fp16.safetensors"} <= files
    assert {"model_index.json", "pipeline.py", "README.md", "scheduler/scheduler_config.json"} <= files
    assert {"feature_extractor/preprocessor_config.json"} <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]  # safetensors only
    assert not list(published.parent.glob(".*partial*"))  # nothing half-written left beside it
    index = json.loads((published / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "NormalCrafterPipeline"]


def test_readme_has_the_hub_metadata_and_a_usage_for_this_repo(published):
    card = ModelCard.load(published / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "other"
    assert card.data.license_name == "stable-video-diffusion-community"
    assert card.data.base_model == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert f'DiffusionPipeline.from_pretrained(\n    "{REPO_ID}", trust_remote_code=True' in card.text
    assert card.text.count("## Usage") == 1 and "## Limitations" in card.text  # the rest of the card is kept


def test_package_loads_the_published_repo(released, published):
    _, _, expected = released
    pipe = NormalCrafterPipeline.from_pretrained(published)
    np.testing.assert_allclose(run(pipe), expected, atol=2e-4)
    fp16 = NormalCrafterPipeline.from_pretrained(published, variant="fp16", torch_dtype=torch.float16)
    assert fp16.unet.dtype == torch.float16 and fp16.image_encoder.dtype == torch.float16


@pytest.mark.slow
def test_readme_snippet_runs_with_diffusers_alone_from_the_hub_cache(published, tmp_path):
    """The README's first snippet, as a user copies it: repo id from a local Hub cache, our package hidden."""
    snippet = re.search(r"```python\n(.*?)```", (published / "README.md").read_text(), re.S).group(1)
    snippet = snippet.replace('"clip.mp4"', repr(str(ROOT / "examples" / "sample_clip.mp4")))
    cache = tmp_path / "hub"
    put_in_hub_cache(published, cache, REPO_ID, "e" * 40)
    check = (
        "\nassert type(pipe).__name__ == 'NormalCrafterPipeline' and len(frames) == 40"
        "\nassert normals.shape == (40, 256, 448, 3), normals.shape"
        "\nimport numpy as np"
        "\nassert np.allclose(np.linalg.norm(normals, axis=-1), 1, atol=1e-3)"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(tmp_path / "home"),
    }
    result = subprocess.run(
        [sys.executable, "-c", HIDE_PACKAGE + snippet + check], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi at the network boundary: records the calls and what the folder holds."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, exist_ok, kwargs, self.token))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, commit_message=None, create_pr=False):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, Path(folder_path).name, files, create_pr))
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(released, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    weights, base, _ = released
    RecordingHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    argv = ["-o", str(tmp_path / "repo"), "--weights", str(weights), "--base-model", str(base), "--no-fp16-variant"]
    assert main([*argv, "--push-to-hub", "--repo-id", "me/nc", "--private", "--token", "hf_x"]) == 0
    (create, upload) = RecordingHfApi.calls
    assert create == ("create_repo", "me/nc", True, {"private": True}, "hf_x")
    assert upload[:3] == ("upload_folder", "me/nc", "repo") and upload[4] is False
    uploaded = set(upload[3])
    assert {"README.md", "pipeline.py", "model_index.json", "unet/diffusion_pytorch_model.safetensors"} <= uploaded
    assert not [name for name in upload[3] if ".fp16." in name]
    assert "pushed to https://huggingface.co/me/nc" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--push-to-hub"], "--push-to-hub needs --repo-id"),
        (["--model-card", "nowhere.md"], "model card template 'nowhere.md' not found"),
    ],
)
def test_usage_errors_say_what_to_do(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as info:
        main(["-o", str(tmp_path / "repo"), *extra])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_existing_output_is_not_replaced_without_overwrite(published, capsys):
    with pytest.raises(SystemExit):
        main(["-o", str(published)])
    assert "pass --overwrite" in capsys.readouterr().err


def test_render_readme_replaces_only_the_usage_section():
    card = "---\nlibrary_name: diffusers\n---\n# T\n\nintro\n\n## Usage\n\nold\n\n## Citation\n\nbib\n"
    readme = render_readme(card, "a/b")
    assert readme.startswith("---\nlibrary_name: diffusers\n---\n# T\n\nintro\n\n## Usage\n")
    assert "old" not in readme and '"a/b"' in readme and readme.endswith("## Citation\n\nbib\n")
    with pytest.raises(ValueError, match="no `## Usage` section"):
        render_readme("# T\n", "a/b")
