"""Build one complete, self-contained diffusers repo from NormalCrafter weights and an SVD-xt base, and push it.

    normalcrafter-publish -o normalcrafter-diffusers                  # Yanrui95/NormalCrafter + SVD-xt, to a folder
    normalcrafter-publish -o normalcrafter-diffusers --push-to-hub --repo-id you/normalcrafter-diffusers --private

The folder holds every component in safetensors (fp32, plus an `fp16` variant unless `--no-fp16-variant`),
`model_index.json`, the Hub code (`pipeline.py` and the sibling modules it imports: diffusers' custom-pipeline
layout, written by `save_pretrained` from the installed package), and a `README.md` made from the model card
template installed with the package (the project's `model_card.md`): its YAML header (library, pipeline tag, the
base model's licence) and a usage section for this repo. Diffusers alone loads it with
`DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from importlib import resources
from pathlib import Path

DEFAULT_REPO_ID = "your-name/normalcrafter-diffusers"
# The project's model card, installed with the package as package data.
MODEL_CARD_TEMPLATE = Path(str(resources.files("normalcrafter_pipeline") / "assets" / "model_card.md"))

USAGE_SECTION = '''## Usage

With diffusers alone (the pipeline's code ships in this repo as `pipeline.py`; read it, then allow it to run):

```python
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import load_video

device, dtype = ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.bfloat16)
pipe = DiffusionPipeline.from_pretrained(
    "{repo_id}", trust_remote_code=True, variant="fp16", torch_dtype=dtype
).to(device)
frames = load_video("clip.mp4")  # a list of PIL images
normals = pipe(frames).normals  # (F, H, W, 3) float32 unit normals: +x right, +y up, +z toward the camera
```

With the `normalcrafter-pipeline` package (`pip install normalcrafter-pipeline`), which also streams videos of any
length in flat memory and runs no code from the repo:

```python
from normalcrafter_pipeline import NormalCrafterPipeline, read_video

pipe = NormalCrafterPipeline.from_pretrained("{repo_id}")
for normals in pipe.stream(read_video("clip.mp4", max_res=1024)):
    ...  # (k, H, W, 3) float32 unit normals, in order
```
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .normalcrafter_checks import DEFAULT_BASE_MODEL_ID, DEFAULT_MODEL_ID

    parser = argparse.ArgumentParser(
        prog="normalcrafter-publish",
        description="Build a complete diffusers repo (weights, code, model card) from NormalCrafter weights and an "
        "SVD-xt base; optionally push it to the Hub.",
    )
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="the repo folder to write")
    parser.add_argument("--weights", default=DEFAULT_MODEL_ID, help="repo id or folder with unet/ and vae/")
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL_ID, help="repo id or folder completing them")
    parser.add_argument("--revision", default=None, help="revision of --weights")
    parser.add_argument("--no-fp16-variant", dest="fp16_variant", action="store_false", help="write fp32 only")
    parser.add_argument("--model-card", type=Path, default=None, help=f"card template (default {MODEL_CARD_TEMPLATE})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--push-to-hub", action="store_true", help="upload the folder to --repo-id")
    parser.add_argument("--repo-id", default=None, help=f"Hub repo to create/update (default {DEFAULT_REPO_ID!r})")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--token", default=None, help="Hub token (default: the one `hf auth login` stored)")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.repo_id:
        parser.error("--push-to-hub needs --repo-id (e.g. you/normalcrafter-diffusers)")
    card = args.model_card or MODEL_CARD_TEMPLATE
    if not card.is_file():
        parser.error(f"model card template {str(card)!r} not found; pass --model-card path/to/model_card.md")
    args.model_card = card
    if args.output_dir.exists() and not args.overwrite:
        parser.error(f"--output-dir {str(args.output_dir)!r} exists; pass --overwrite to replace it")
    return args


def render_readme(model_card: str, repo_id: str) -> str:
    """The repo's README.md: `model_card` (YAML header + sections) with its `## Usage` section replaced by one that
    names `repo_id`."""
    sections = re.split(r"(?m)^(?=## )", model_card)
    usage = USAGE_SECTION.replace("{repo_id}", repo_id)
    replaced = [usage + "\n" if section.startswith("## Usage") else section for section in sections]
    if replaced == sections:
        raise ValueError("the model card has no `## Usage` section to replace")
    return "".join(replaced)


def build_repo(
    output_dir: str | os.PathLike,
    weights: str,
    base_model: str,
    model_card: str,
    repo_id: str,
    revision: str | None = None,
    fp16_variant: bool = True,
) -> Path:
    """Write the complete repo folder `output_dir` (under a temporary name first, renamed when complete)."""
    import torch

    from .normals_writers import atomic_output
    from .pretrained import NormalCrafterPipeline

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output_dir, is_dir=True) as partial:
        pipe = NormalCrafterPipeline.from_pretrained(
            weights, base_model=base_model, revision=revision, torch_dtype=torch.float32
        )
        pipe.save_pretrained(partial)
        if fp16_variant:  # only the weight files: the configs keep recording the default (fp32) weights
            pipe.to(dtype=torch.float16).save_pretrained(partial / ".fp16", variant="fp16")
            for weights in (partial / ".fp16").glob("*/*.fp16.*"):
                weights.rename(partial / weights.parent.name / weights.name)
            shutil.rmtree(partial / ".fp16")
        (partial / "README.md").write_text(render_readme(model_card, repo_id), encoding="utf-8")
    return output_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .hub_publishing import upload_folder_to_hub

    repo_id = args.repo_id or DEFAULT_REPO_ID
    try:
        folder = build_repo(
            args.output_dir,
            weights=args.weights,
            base_model=args.base_model,
            model_card=args.model_card.read_text(encoding="utf-8"),
            repo_id=repo_id,
            revision=args.revision,
            fp16_variant=args.fp16_variant,
        )
        print(f"wrote {folder}")
        if args.push_to_hub:
            commit = upload_folder_to_hub(folder, repo_id=repo_id, private=args.private or None, token=args.token)
            print(f"pushed to https://huggingface.co/{repo_id} ({getattr(commit, 'commit_url', commit)})")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
