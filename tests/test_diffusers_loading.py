"""diffusers' own loaders on our folders: remote code with the package hidden, the single-file community pipeline
over an SVD-xt layout, component re-assignment round trips, `from_pipe`, and the records in model_index.json."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, UNetSpatioTemporalConditionModel
from test_loading import (
    VIDEO,
    assert_same_normals,
    make_svd_layout,
    make_unet_vae_repo,
    put_in_hub_cache,
    run,
)

import normalcrafter_pipeline
from normalcrafter_pipeline import NormalCrafterPipeline, NormalCrafterUNet
from normalcrafter_pipeline.testing_utils import tiny_components, tiny_pipeline

# Run first in a child process: makes `import normalcrafter_pipeline` fail, as on a machine without the package.
HIDE_PACKAGE = textwrap.dedent(
    """
    import sys

    class _NoPackage:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "normalcrafter_pipeline":
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, _NoPackage())
    try:
        import normalcrafter_pipeline  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the package is still importable")
    """
)


RUN_AND_SAVE = """
import numpy as np
pipe.set_progress_bar_config(disable=True)
assert type(pipe).__name__ == "NormalCrafterPipeline" and type(pipe.unet).__name__ == "NormalCrafterUNet"
np.save(OUT, pipe(np.load(VIDEO)).normals)
"""


def run_without_package(load_script: str, tmp_path: Path, **env) -> np.ndarray:
    """Run `load_script` (which makes `pipe`) where the package cannot be imported; return `pipe`'s normals."""
    out = tmp_path / "out.npy"
    np.save(tmp_path / "video.npy", VIDEO)
    paths = f"\nVIDEO = {str(tmp_path / 'video.npy')!r}\nOUT = {str(out)!r}\n"
    code = HIDE_PACKAGE + paths + textwrap.dedent(load_script) + RUN_AND_SAVE
    child_env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), **env}
    result = subprocess.run(
        [sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return np.load(out)


# What the Hub code may import: the libraries a diffusers user has, and the standard library.
HUB_CODE_PACKAGES = {"torch", "numpy", "PIL", "diffusers", "transformers"}


def hub_code_imports(source: str) -> tuple[set[str], set[str]]:
    """(top-level packages imported, sibling modules imported with `from .name import ...`) by a module's source."""
    packages, siblings = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            packages.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            # diffusers copies only what `from .name import ...` names (not `from . import name`, nor `..name`)
            assert node.level == 1 and node.module and "." not in node.module, ast.dump(node)
            siblings.add(node.module)
    return packages, siblings


def test_saved_folder_follows_the_custom_pipeline_layout(saved):
    folder, _ = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "NormalCrafterPipeline"]
    assert index["unet"] == ["diffusers", "UNetSpatioTemporalConditionModel"]
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]


def test_saved_folder_holds_exactly_the_hub_code_and_it_imports_only_what_diffusers_users_have(saved):
    """diffusers copies the siblings that `pipeline.py` imports directly (not imports of imports) into a namespace
    that every local custom pipeline shares, and diffusers 0.32 refuses a file importing a package not installed."""
    folder, _ = saved
    package_dir = Path(normalcrafter_pipeline.__file__).parent
    written = sorted(path.name for path in folder.glob("*.py"))
    _, direct = hub_code_imports((folder / "pipeline.py").read_text())
    assert written == sorted(["pipeline.py", *(f"{name}.py" for name in direct)])  # no file more, none fewer
    allowed = HUB_CODE_PACKAGES | set(sys.stdlib_module_names)
    for name in written:
        source = (folder / name).read_text()
        module = "pipeline_normalcrafter" if name == "pipeline.py" else name[: -len(".py")]
        assert source == (package_dir / f"{module}.py").read_text(), name  # written from the package itself
        packages, siblings = hub_code_imports(source)
        assert packages <= allowed, (name, packages - allowed)
        assert siblings <= direct, (name, siblings - direct)  # every sibling is imported by pipeline.py itself
        assert name == "pipeline.py" or name.startswith("normalcrafter_"), name  # distinctive in the namespace


@pytest.mark.slow
def test_diffusers_loads_the_saved_folder_without_the_package(saved, tmp_path):
    folder, expected = saved
    script = f"""
    import diffusers
    import torch
    from diffusers import DiffusionPipeline
    from packaging import version
    if version.parse(diffusers.__version__) >= version.parse("0.38"):  # earlier releases ran local code unasked
        try:
            DiffusionPipeline.from_pretrained({str(folder)!r})
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise SystemExit("custom code ran without trust_remote_code=True")
    pipe = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True, torch_dtype=torch.float64)
    """
    assert_same_normals(run_without_package(script, tmp_path), expected)


@pytest.mark.slow
def test_diffusers_loads_the_repo_from_a_hub_cache_offline(saved, tmp_path):
    folder, expected = saved
    cache = tmp_path / "hub"
    put_in_hub_cache(folder, cache, "someone/normalcrafter-diffusers", "d" * 40)
    script = f"""
    import torch
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(
        "someone/normalcrafter-diffusers", cache_dir={str(cache)!r}, trust_remote_code=True, torch_dtype=torch.float64
    )
    """
    normals = run_without_package(script, tmp_path, HF_HUB_OFFLINE="1")
    assert_same_normals(normals, expected)


@pytest.mark.slow
def test_community_file_over_an_svd_layout_with_released_style_weights(saved, tmp_path):
    """A diffusers-only user: SVD-xt layout + our single file + unet/vae loaded with stock classes."""
    folder, expected = saved
    svd = make_svd_layout(folder, tmp_path / "svd")
    for name in ("unet", "vae"):  # the base's own unet/vae: never read, since they are passed
        for weights in (svd / name).glob("*.safetensors"):
            weights.unlink()
    weights = make_unet_vae_repo(folder, tmp_path / "weights")
    script = f"""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, DiffusionPipeline, UNetSpatioTemporalConditionModel
    unet = UNetSpatioTemporalConditionModel.from_pretrained({str(weights)!r}, subfolder="unet",
                                                            torch_dtype=torch.float64)
    vae = AutoencoderKLTemporalDecoder.from_pretrained({str(weights)!r}, subfolder="vae", torch_dtype=torch.float64)
    pipe = DiffusionPipeline.from_pretrained(
        {str(svd)!r}, custom_pipeline={str(folder / "pipeline.py")!r}, trust_remote_code=True, unet=unet, vae=vae,
        torch_dtype=torch.float64,
    )
    assert type(unet).__name__ == "UNetSpatioTemporalConditionModel"  # the caller's object is left as it is
    assert pipe.unet.conv_in.weight is unet.conv_in.weight  # wrapped, not copied
    # the same from a folder that carries pipeline.py (what save_pretrained or normalcrafter-publish wrote). A Hub
    # repo id works the same online; offline, diffusers' module loader asks the Hub for the commit (model_info).
    from_repo = DiffusionPipeline.from_pretrained(
        {str(svd)!r}, custom_pipeline={str(folder)!r}, trust_remote_code=True, unet=unet, vae=vae,
        torch_dtype=torch.float64,
    )
    import numpy as np
    from_repo.set_progress_bar_config(disable=True)
    np.save(OUT.replace(".npy", "-repo.npy"), from_repo(np.load(VIDEO)).normals)
    """
    assert_same_normals(run_without_package(script, tmp_path), expected)
    assert_same_normals(np.load(tmp_path / "out-repo.npy"), expected)


def test_stock_unet_is_wrapped_sharing_its_parameters():
    components = tiny_components(seed=0)
    reference = tiny_pipeline(seed=0).to(dtype=torch.float64)
    stock = UNetSpatioTemporalConditionModel.from_config(components["unet"].config)
    stock.load_state_dict(components["unet"].state_dict())
    components["unet"] = stock
    pipe = NormalCrafterPipeline(**components).to(dtype=torch.float64)
    assert type(pipe.unet) is NormalCrafterUNet and type(stock) is UNetSpatioTemporalConditionModel
    assert all(a is b for a, b in zip(pipe.unet.parameters(), stock.parameters()))
    np.testing.assert_array_equal(run(pipe), run(reference))


def test_assigning_a_stock_unet_wraps_it_too():
    pipe = tiny_pipeline(seed=0)
    stock = UNetSpatioTemporalConditionModel.from_config(pipe.unet.config)
    pipe.unet = stock
    assert type(pipe.unet) is NormalCrafterUNet
    assert pipe.unet.conv_in.weight is stock.conv_in.weight


@pytest.mark.parametrize(
    "component", ["unet", "compiled_unet", "vae", "image_encoder", "scheduler", "feature_extractor"]
)
def test_reassigned_components_round_trip(saved, tmp_path, component):
    folder, expected = saved
    pipe = NormalCrafterPipeline.from_pretrained(folder, torch_dtype=torch.float64)
    if component == "compiled_unet":
        pipe.unet = torch.compile(pipe.unet, backend="eager")
    else:
        setattr(pipe, component, getattr(pipe, component))
    pipe.save_pretrained(tmp_path / "again")
    index = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNetSpatioTemporalConditionModel"]
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    reloaded = NormalCrafterPipeline.from_pretrained(tmp_path / "again", torch_dtype=torch.float64)
    assert type(reloaded.unet) is NormalCrafterUNet
    assert_same_normals(run(reloaded), expected)


def test_diffusers_loads_the_folder_with_the_package_installed(saved):
    folder, expected = saved
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, torch_dtype=torch.float64)
    assert type(pipe).__name__ == "NormalCrafterPipeline"
    assert_same_normals(run(pipe), expected)


def test_from_pipe_shares_the_components(saved):
    folder, expected = saved
    pipe = NormalCrafterPipeline.from_pretrained(folder, torch_dtype=torch.float64)
    again = NormalCrafterPipeline.from_pipe(pipe, torch_dtype=torch.float64)
    assert again.unet is pipe.unet and again.vae is pipe.vae and again.image_encoder is pipe.image_encoder
    assert_same_normals(run(again), expected)


def test_own_loader_runs_no_code_from_the_folder(saved, tmp_path):
    """The package's `from_pretrained` reads weights and configs only: a booby-trapped pipeline.py never runs."""
    folder, expected = saved
    trapped = tmp_path / "trapped"
    shutil.copytree(folder, trapped)
    (trapped / "pipeline.py").write_text("raise SystemExit('remote code ran')\n")
    pipe = NormalCrafterPipeline.from_pretrained(trapped, torch_dtype=torch.float64)
    assert_same_normals(run(pipe), expected)


def test_unexpected_loading_options_are_named(saved):
    folder, _ = saved
    with pytest.raises(ValueError, match=r"unexpected keyword arguments \['device_mapp'\]"):
        NormalCrafterPipeline.from_pretrained(folder, device_mapp="cpu")
