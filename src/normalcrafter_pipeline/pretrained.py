"""The package's `NormalCrafterPipeline`: the Hub code's pipeline with this package's loading and saving.

`from_pretrained` reads the three layouts (a full folder or repo, a `unet/` + `vae/` repo completed from a base
model, components passed in) with errors that say what to do; `save_pretrained` writes a folder that diffusers
alone loads with `trust_remote_code=True`. Everything else is the Hub code's class.
"""

import os

import torch

from . import _torchvision_notice_dropped
from .hub_publishing import upload_folder_to_hub, write_pipeline_code
from .normalcrafter_checks import DEFAULT_BASE_MODEL_ID, DEFAULT_MODEL_ID

with _torchvision_notice_dropped():  # these import transformers' CLIPImageProcessor, whose first import may warn
    from . import pipeline_normalcrafter
    from .hub_loading import (
        _DIFFUSERS_DTYPE_KWARG,
        HUB_OPTIONS,
        MODEL_OPTIONS,
        PIPELINE_COMPONENTS,
        load_components,
    )


class NormalCrafterPipeline(pipeline_normalcrafter.NormalCrafterPipeline):
    r"""
    Video-to-normals pipeline of NormalCrafter, as the Hub code defines it (see its docstring for the components),
    with this package's [`~NormalCrafterPipeline.from_pretrained`] (three layouts, Hub errors that say what to do,
    no code from the repo runs) and [`~NormalCrafterPipeline.save_pretrained`] (the folder carries the Hub code).
    """

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike = DEFAULT_MODEL_ID,
        base_model: str | os.PathLike = DEFAULT_BASE_MODEL_ID,
        base_revision: str | None = None,
        **kwargs,
    ) -> "NormalCrafterPipeline":
        r"""Load a NormalCrafter pipeline from a folder or a Hub repo, running no code from it.

        Three layouts are understood:

        1. a full pipeline folder or repo (what `save_pretrained` writes, or a folder laid out like
           stable-video-diffusion-img2vid-xt); its UNet is loaded as [`NormalCrafterUNet`];
        2. a repo with only `unet/` and `vae/` (the released `Yanrui95/NormalCrafter`); the CLIP image encoder,
           feature extractor and scheduler then come from `base_model` (default
           `stabilityai/stable-video-diffusion-img2vid-xt`, a gated repo: accept its licence and log in);
        3. any component passed as a keyword argument (`unet=`, `vae=`, `image_encoder=`, `feature_extractor=`,
           `scheduler=`) is used as given and not loaded.

        Hub access is checked once before anything is downloaded: when the Hub cannot be reached, files come from
        the local cache, and a file missing there is a [`ModelUnavailableError`] saying so at once (not after
        huggingface_hub's retries). Gated, private and misspelled repos get errors that say what to do.

        Args:
            pretrained_model_name_or_path: a Hub repo id or a local folder (default `Yanrui95/NormalCrafter`).
            base_model: repo id or folder completing a `unet/` + `vae/` repo.
            base_revision: revision of `base_model` (default its main branch).
            kwargs: `torch_dtype` (or `dtype`; default `torch.float32`), `variant`, `revision`, `cache_dir`,
                `local_files_only`, `token`, `force_download`, `use_safetensors` (default `True`: no pickled
                weights are read), `low_cpu_mem_usage`, and components. `variant` applies where such files exist
                (the base model ships `fp16`; the released NormalCrafter weights have a single variant).
        """
        path = os.fspath(pretrained_model_name_or_path)
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        variant = kwargs.pop("variant", None)
        components = {name: kwargs.pop(name) for name in PIPELINE_COMPONENTS if name in kwargs}
        components = {name: component for name, component in components.items() if component is not None}
        hub_kwargs = {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}
        model_kwargs = {name: kwargs.pop(name) for name in MODEL_OPTIONS if name in kwargs}
        model_kwargs.setdefault("use_safetensors", True)
        # Float32 unless asked (a saved config's dtype does not decide); diffusers >= 0.42 says `dtype`, older
        # releases `torch_dtype`.
        model_kwargs[_DIFFUSERS_DTYPE_KWARG] = dtype or torch.float32
        if kwargs:
            raise ValueError(
                f"`from_pretrained` got unexpected keyword arguments {sorted(kwargs)}. It takes the components "
                f"{', '.join(PIPELINE_COMPONENTS)}, `base_model`, `base_revision`, `torch_dtype` (or `dtype`), "
                "`variant`, `revision`, `cache_dir`, `local_files_only`, `token`, `force_download`, `use_safetensors` "
                "and `low_cpu_mem_usage`; for other options load the components yourself and pass them."
            )
        components = load_components(
            path, os.fspath(base_model), base_revision, components, hub_kwargs, model_kwargs, variant
        )
        pipe = cls(**components)
        pipe.register_to_config(_name_or_path=path)
        if dtype is not None:  # components passed in by the caller follow the requested dtype too
            pipe.to(dtype=dtype)
        return pipe

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        r"""Save the pipeline to a folder that diffusers' own loaders read, with or without this package.

        Besides the components (safetensors by default) and `model_index.json`, the folder gets the Hub code: the
        pipeline's module as `pipeline.py`, named in `model_index.json` as `["pipeline", "NormalCrafterPipeline"]`,
        and the sibling modules it imports ([`~hub_publishing.write_pipeline_code`]): diffusers' convention for
        custom pipelines, so that `DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)`
        loads it where this package is not installed. The UNet is recorded as the stock
        `UNetSpatioTemporalConditionModel` (its weights are the stock state dict).

        Args:
            save_directory: the folder to write (created if needed).
            safe_serialization, variant: as in [`DiffusionPipeline.save_pretrained`].
            push_to_hub (`bool`, defaults to `False`): upload the folder to `repo_id` (default: the folder's name)
                afterwards; `private`, `token`, `commit_message` and `create_pr` are passed to huggingface_hub.
        """
        upload = {
            name: kwargs.pop(name)
            for name in ("repo_id", "private", "token", "commit_message", "create_pr")
            if name in kwargs
        }
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant, **kwargs)
        write_pipeline_code(save_directory)
        if push_to_hub:
            return upload_folder_to_hub(save_directory, **upload)
