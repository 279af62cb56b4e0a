"""Loading: our saved folder, an SVD-xt-like folder, a unet/+vae/ repo completed from a base model, explicit
components, and repo ids resolved offline from a local huggingface_hub cache."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from normalcrafter_pipeline import BaseModelUnavailableError, NormalCrafterPipeline, NormalCrafterUNet
from normalcrafter_pipeline.testing_utils import free_port, tiny_components

VIDEO = np.random.RandomState(3).randint(0, 256, (5, 40, 50, 3), dtype=np.uint8)


def run(pipe):
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.image_encoder.dtype
    return pipe(VIDEO).normals


def assert_same_normals(actual, expected):
    """Same numbers up to float64 rounding. (Loaded weights can sit in memory with other strides, which changes
    the CPU kernels' summation order; float64 keeps that at ~1e-12 where the random tiny model would amplify
    float32 rounding.)"""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


def make_svd_layout(saved_folder: Path, target: Path) -> Path:
    """Rewrite a saved folder the way stable-video-diffusion-img2vid-xt is laid out."""
    shutil.copytree(saved_folder, target)
    index = json.loads((target / "model_index.json").read_text())
    index["_class_name"] = "StableVideoDiffusionPipeline"
    index["unet"] = ["diffusers", "UNetSpatioTemporalConditionModel"]
    (target / "model_index.json").write_text(json.dumps(index))
    unet_config = json.loads((target / "unet" / "config.json").read_text())
    unet_config["_class_name"] = "UNetSpatioTemporalConditionModel"
    (target / "unet" / "config.json").write_text(json.dumps(unet_config))
    return target


def make_unet_vae_repo(saved_folder: Path, target: Path) -> Path:
    """Only `unet/` and `vae/`, like the released Yanrui95/NormalCrafter."""
    target.mkdir(parents=True)
    for name in ("unet", "vae"):
        shutil.copytree(saved_folder / name, target / name)
    return target


def make_base_repo(saved_folder: Path, target: Path) -> Path:
    """What the base model contributes: image_encoder, feature_extractor, scheduler."""
    target.mkdir(parents=True)
    for name in ("image_encoder", "feature_extractor", "scheduler"):
        shutil.copytree(saved_folder / name, target / name)
    return target


def put_in_hub_cache(folder: Path, cache_dir: Path, repo_id: str, commit: str) -> None:
    """Lay `folder` out as huggingface_hub caches a repo: blobs, a snapshot of symlinks, refs/main."""
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for path in folder.rglob("*"):
        if path.is_file():
            blob = repo_dir / "blobs" / f"{abs(hash(str(path.relative_to(folder)))):x}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = repo_dir / "snapshots" / commit / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))


def test_save_and_load_round_trip(saved):
    folder, expected = saved
    library, class_name = json.loads((folder / "model_index.json").read_text())["unet"]
    assert (library, class_name) == ("diffusers", "UNetSpatioTemporalConditionModel")  # an SVD-xt layout
    assert list((folder / "unet").glob("*.safetensors")), "weights are saved as safetensors"
    pipe = NormalCrafterPipeline.from_pretrained(folder, torch_dtype=torch.float64)
    assert isinstance(pipe.unet, NormalCrafterUNet)
    assert_same_normals(run(pipe), expected)


def test_svd_layout_loads_its_unet_as_normalcrafter_unet(saved, tmp_path):
    folder, expected = saved
    svd = make_svd_layout(folder, tmp_path / "svd")
    pipe = NormalCrafterPipeline.from_pretrained(svd, torch_dtype=torch.float64)
    assert type(pipe.unet) is NormalCrafterUNet
    assert_same_normals(run(pipe), expected)


def test_unet_vae_repo_is_completed_from_the_base_model(saved, tmp_path):
    folder, expected = saved
    weights = make_unet_vae_repo(folder, tmp_path / "weights")
    base = make_base_repo(folder, tmp_path / "base")
    pipe = NormalCrafterPipeline.from_pretrained(weights, base_model=base, torch_dtype=torch.float64)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert_same_normals(run(pipe), expected)


def test_explicit_components_are_used_as_given(saved, tmp_path):
    folder, expected = saved
    weights = make_unet_vae_repo(folder, tmp_path / "weights")
    components = tiny_components(seed=0)
    components["image_encoder"].to(torch.float64)
    pipe = NormalCrafterPipeline.from_pretrained(
        weights,
        base_model=tmp_path / "does-not-exist",  # never touched: all base components are given
        image_encoder=components["image_encoder"],
        feature_extractor=components["feature_extractor"],
        scheduler=components["scheduler"],
        dtype=torch.float64,
    )
    assert pipe.image_encoder is components["image_encoder"]
    assert_same_normals(run(pipe), expected)


def test_torch_dtype_is_honoured(saved, tmp_path):
    folder, _ = saved
    pipe = NormalCrafterPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.image_encoder.dtype == torch.bfloat16
    weights = make_unet_vae_repo(folder, tmp_path / "weights")
    base = make_base_repo(folder, tmp_path / "base")
    pipe = NormalCrafterPipeline.from_pretrained(weights, base_model=base, torch_dtype=torch.bfloat16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.image_encoder.dtype == torch.bfloat16
    normals = run(pipe)
    assert normals.dtype == np.float32 and np.isfinite(normals).all()


def test_variant_is_used_where_it_exists(saved, tmp_path):
    folder, expected = saved
    weights = make_unet_vae_repo(folder, tmp_path / "weights")  # no fp16 files, like the released weights
    base = make_base_repo(folder, tmp_path / "base")
    encoder = base / "image_encoder"
    (encoder / "model.safetensors").rename(encoder / "model.fp16.safetensors")  # only an fp16 variant, like SVD-xt
    pipe = NormalCrafterPipeline.from_pretrained(weights, base_model=base, variant="fp16", torch_dtype=torch.float64)
    assert_same_normals(run(pipe), expected)


def test_missing_base_model_says_what_to_do(saved, tmp_path):
    folder, _ = saved
    weights = make_unet_vae_repo(folder, tmp_path / "weights")
    with pytest.raises(BaseModelUnavailableError, match="accept its licence") as info:
        NormalCrafterPipeline.from_pretrained(weights, base_model=tmp_path / "empty-base")
    message = str(info.value)
    assert "hf auth login" in message and "image_encoder=" in message and "base_model=" in message


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        NormalCrafterPipeline.from_pretrained(str(tmp_path / "nope"))


def test_pickled_weights_are_not_read(saved, tmp_path):
    folder, _ = saved
    unsafe = tmp_path / "unsafe"
    shutil.copytree(folder, unsafe)
    for weights in (unsafe / "unet").glob("*.safetensors"):
        weights.unlink()
    torch.save(tiny_components()["unet"].state_dict(), unsafe / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises((OSError, EnvironmentError), match="safetensors"):
        NormalCrafterPipeline.from_pretrained(unsafe)


@pytest.mark.slow
def test_repo_ids_load_offline_from_a_local_hub_cache(saved, tmp_path):
    """`from_pretrained("owner/name")` with HF_HUB_OFFLINE=1 and a cache laid out as huggingface_hub lays it out:
    the weights repo has only unet/ + vae/ (as the released one), the base repo is completed from the cache too;
    and a full pipeline repo with model_index.json loads by id as well."""
    folder, expected = saved
    cache = tmp_path / "hub"
    put_in_hub_cache(make_unet_vae_repo(folder, tmp_path / "w"), cache, "someone/normalcrafter-weights", "a" * 40)
    put_in_hub_cache(make_base_repo(folder, tmp_path / "b"), cache, "someone/svd-base", "b" * 40)
    put_in_hub_cache(folder, cache, "someone/normalcrafter-full", "c" * 40)
    np.save(tmp_path / "video.npy", VIDEO)
    script = textwrap.dedent(
        f"""
        import numpy as np
        import torch
        from normalcrafter_pipeline import NormalCrafterPipeline
        video = np.load({str(tmp_path / "video.npy")!r})
        out = []
        for pipe in (
            NormalCrafterPipeline.from_pretrained("someone/normalcrafter-weights", base_model="someone/svd-base",
                                                  cache_dir={str(cache)!r}, torch_dtype=torch.float64),
            NormalCrafterPipeline.from_pretrained("someone/normalcrafter-full", cache_dir={str(cache)!r},
                                                  torch_dtype=torch.float64),
        ):
            pipe.set_progress_bar_config(disable=True)
            out.append(pipe(video).normals)
        np.save({str(tmp_path / "out.npy")!r}, np.stack(out))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npy")
    assert_same_normals(out[0], expected)
    assert_same_normals(out[1], expected)


@pytest.mark.slow
def test_uncached_gated_base_offline_says_what_to_do(saved, tmp_path):
    folder, _ = saved
    cache = tmp_path / "hub"
    put_in_hub_cache(make_unet_vae_repo(folder, tmp_path / "w"), cache, "someone/normalcrafter-weights", "a" * 40)
    script = textwrap.dedent(
        f"""
        from normalcrafter_pipeline import NormalCrafterPipeline
        NormalCrafterPipeline.from_pretrained("someone/normalcrafter-weights", cache_dir={str(cache)!r})
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "BaseModelUnavailableError" in result.stderr
    assert "stabilityai/stable-video-diffusion-img2vid-xt" in result.stderr and "accept its licence" in result.stderr


# ------------------------------------------------------------------------------------------------------------------
# Hub errors: classified once, before huggingface_hub's retries, each saying what to do
# ------------------------------------------------------------------------------------------------------------------


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    """Answers as the Hub does for a gated repo (owner `gated`) and a missing one (any other owner); `/` is 200."""

    def _answer(self):
        owner = self.path.strip("/").split("/")[0] if self.path != "/" else ""
        if owner == "":
            status, code = 200, None
        elif owner == "gated":
            status, code = 403, "GatedRepo"
        else:
            status, code = 404, "RepoNotFound"
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", f"{code} (fake hub)")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there any more: connections are refused


LOAD_AND_REPORT = """
import sys
from normalcrafter_pipeline import NormalCrafterPipeline
for args, kwargs in CALLS:
    try:
        NormalCrafterPipeline.from_pretrained(*args, **kwargs)
    except OSError as error:
        print(type(error).__name__, "|", error)
    else:
        print("loaded")
"""


def load_in_child(tmp_path, calls, **env) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    child_env.update(HF_HOME=str(tmp_path / "home"), **env)
    script = f"CALLS = {calls!r}\n" + LOAD_AND_REPORT
    return subprocess.run([sys.executable, "-c", script], env=child_env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_unreachable_hub_says_so_at_once_and_uses_the_cache(saved, tmp_path):
    folder, _ = saved
    cache = tmp_path / "hub"
    put_in_hub_cache(folder, cache, "someone/normalcrafter-full", "c" * 40)
    calls = [(("Yanrui95/NormalCrafter",), {}), (("someone/normalcrafter-full",), {"cache_dir": str(cache)})]
    result = load_in_child(tmp_path, calls, HF_ENDPOINT=closed_port_endpoint())
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ModelUnavailableError | The Hub cannot be reached (http://127.0.0.1:")
    assert "'Yanrui95/NormalCrafter' is not in the local Hub cache" in lines[0] and "--model <folder>" in lines[0]
    assert lines[1] == "loaded"  # a cached repo loads although the Hub does not answer
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_offline_mode_names_the_missing_cache(tmp_path):
    result = load_in_child(tmp_path, [(("Yanrui95/NormalCrafter",), {})], HF_HUB_OFFLINE="1")
    (line,) = result.stdout.splitlines()
    assert line.startswith("ModelUnavailableError | Downloads are off (HF_HUB_OFFLINE=1")
    assert "'Yanrui95/NormalCrafter' is not in the local Hub cache" in line and "HF_HUB_OFFLINE unset" in line


@pytest.mark.slow
def test_gated_and_missing_repos_say_what_to_do(saved, tmp_path, fake_hub):
    folder, _ = saved
    weights = make_unet_vae_repo(folder, tmp_path / "weights")
    calls = [
        (("gated/normalcrafter",), {}),
        (("nobody/normalcrafter",), {}),
        ((str(weights),), {"base_model": "gated/svd-xt"}),
    ]
    result = load_in_child(tmp_path, calls, HF_ENDPOINT=fake_hub)
    gated, missing, gated_base = result.stdout.splitlines()
    assert gated.startswith("ModelUnavailableError | 'gated/normalcrafter' is a gated repo: accept its licence")
    assert "hf auth login" in gated
    assert missing.startswith("FileNotFoundError | 'nobody/normalcrafter' is neither a local folder nor a Hub repo")
    assert gated_base.startswith("BaseModelUnavailableError | ") and "'gated/svd-xt' is a gated repo" in gated_base
    assert "image_encoder=" in gated_base
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr
