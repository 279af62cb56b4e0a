"""Publishing a saved pipeline: the Hub code's files written into its folder, and the folder uploaded to the Hub.

The Hub code is `pipeline_normalcrafter.py`, written as `pipeline.py` (diffusers' custom-pipeline file), and the
sibling modules it imports, each by `from .name import ...` in `pipeline.py` itself: diffusers copies exactly those
(it follows no import of an import) into one namespace shared by every local custom pipeline, hence their
distinctive names. They import only torch, numpy, PIL, diffusers, transformers and the standard library.
"""

import json
import os
import shutil

# The name under which the pipeline's module is written into a pipeline folder (diffusers' custom-pipeline file).
REMOTE_CODE_FILE = "pipeline.py"
PIPELINE_MODULE = "pipeline_normalcrafter"
# The sibling modules that `pipeline.py` imports directly, written under their own names.
HUB_CODE_SIBLINGS = (
    "normalcrafter_checks",
    "normalcrafter_normals_processor",
    "normalcrafter_unet",
    "normalcrafter_video_processor",
    "normalcrafter_windows",
)
PIPELINE_CLASS_NAME = "NormalCrafterPipeline"


def hub_code_files() -> dict[str, str]:
    """{file name in a pipeline folder: path of the package's module written under it}."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    files = {REMOTE_CODE_FILE: os.path.join(package_dir, f"{PIPELINE_MODULE}.py")}
    files.update({f"{name}.py": os.path.join(package_dir, f"{name}.py") for name in HUB_CODE_SIBLINGS})
    return files


def write_pipeline_code(folder: str | os.PathLike) -> None:
    """Make a saved pipeline folder loadable by diffusers alone: write the Hub code's files ([`hub_code_files`])
    and name the pipeline in `model_index.json` (`"_class_name": ["pipeline", "NormalCrafterPipeline"]`), diffusers'
    custom-pipeline layout. Each file is written under a temporary name and renamed when complete."""
    folder = os.fspath(folder)
    for name, source in hub_code_files().items():
        target = os.path.join(folder, name)
        shutil.copyfile(source, target + ".partial")
        os.replace(target + ".partial", target)
    index_file = os.path.join(folder, "model_index.json")
    with open(index_file, encoding="utf-8") as handle:
        index = json.load(handle)
    index["_class_name"] = [os.path.splitext(REMOTE_CODE_FILE)[0], PIPELINE_CLASS_NAME]
    with open(index_file + ".partial", "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(index_file + ".partial", index_file)


def upload_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
):
    """Create `repo_id` (default: the folder's name) if needed and upload `folder` to it; returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    create_kwargs = {} if private is None else {"private": private}
    repo_id = api.create_repo(repo_id or os.path.basename(os.path.abspath(folder)), exist_ok=True, **create_kwargs)
    return api.upload_folder(
        repo_id=repo_id.repo_id,
        folder_path=os.fspath(folder),
        commit_message=commit_message or "Upload NormalCrafter pipeline",
        create_pr=create_pr,
    )
