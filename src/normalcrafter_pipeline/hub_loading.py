"""Loading NormalCrafter components from folders and Hub repos for the package's `from_pretrained`: the three
layouts, one question whether the Hub answers, and errors that say why a folder or repo could not be read.

Package only: when diffusers loads a saved repo with `trust_remote_code=True` it builds the Hub pipeline class
itself, so none of this would run there, and none of it is in the Hub code.
"""

import contextlib
import os
import re
import warnings
from collections.abc import Iterator

import diffusers
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from diffusers.utils import logging as diffusers_logging
from packaging import version
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from .normalcrafter_checks import DEFAULT_BASE_MODEL_ID, DEFAULT_MODEL_ID
from .normalcrafter_unet import NormalCrafterUNet

logger = diffusers_logging.get_logger(__name__)  # pylint: disable=invalid-name

PIPELINE_COMPONENTS = ("vae", "image_encoder", "unet", "scheduler", "feature_extractor")
HUB_OPTIONS = ("cache_dir", "revision", "local_files_only", "token", "force_download")
MODEL_OPTIONS = ("use_safetensors", "low_cpu_mem_usage")
_DIFFUSERS_DTYPE_KWARG = "dtype" if version.parse(diffusers.__version__) >= version.parse("0.42") else "torch_dtype"


def load_components(
    path: str,
    base_model: str,
    base_revision: str | None,
    components: dict,
    hub_kwargs: dict,
    model_kwargs: dict,
    variant: str | None,
) -> dict:
    """Every pipeline component: those in `components` as given, the others from `path` (a folder or repo id; the
    UNet and the VAE always), completed from `base_model` for those `path` lacks."""
    hub = _HubAccess(hub_kwargs)
    source = None
    base = None
    components = dict(components)
    with _library_notices_dropped():
        for name in PIPELINE_COMPONENTS:
            if name in components:
                continue
            source = source or _ModelSource(path, hub_kwargs.get("revision"), hub, "model")
            if name in ("unet", "vae") or source.has(name):
                components[name] = source.load(name, model_kwargs, variant)
                continue
            base = base or _ModelSource(base_model, base_revision, hub, "base", model_path=path)
            components[name] = base.load(name, model_kwargs, variant)
    return components


@contextlib.contextmanager
def _library_notices_dropped() -> Iterator[None]:
    """While our loader runs, and only then: drop huggingface_hub's (>= 0.23) warning that `local_dir_use_symlinks`
    is deprecated, an argument diffusers (<= 0.42) passes on every Hub download and the user never set."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=re.escape("The `local_dir_use_symlinks` argument is deprecated"),
            category=UserWarning,
            module=r"huggingface_hub\.",
        )
        yield


class ModelUnavailableError(OSError):
    """A model folder or Hub repo could not be read; the message names the cause and what to do."""


class BaseModelUnavailableError(ModelUnavailableError):
    """A component of the base model (stable-video-diffusion-img2vid-xt by default) could not be loaded."""


# The file whose presence tells that a folder or repo holds a component (read before any weights are).
_COMPONENT_CONFIG_FILES = {
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "image_encoder": "image_encoder/config.json",
    "feature_extractor": "feature_extractor/preprocessor_config.json",
    "scheduler": "scheduler/scheduler_config.json",
}
_GATED_BASE_HELP = (
    f"The default base {DEFAULT_BASE_MODEL_ID!r} is gated: accept its licence at "
    f"https://huggingface.co/{DEFAULT_BASE_MODEL_ID} and log in (`hf auth login`, or pass `token=`)."
)


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the Hub endpoint (`HF_ENDPOINT`) cannot be reached, or None when it answers.

    One request without retries, through huggingface_hub's own HTTP session (so proxies apply): any HTTP answer
    counts as reachable, only a failure to connect does not. Asked once per `from_pretrained`, it spares an offline
    user huggingface_hub's retries (about half a minute per file) before the same conclusion.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - requests and httpx raise different classes; all mean "no answer"
        return f"{constants.ENDPOINT}: {type(error).__name__}: {error}".replace("\n", " ")
    return None


class _HubAccess:
    """The Hub settings shared by the folders and repos of one `from_pretrained`.

    Whether the Hub answers is asked once, when a repo (not a folder) is first needed; when it does not, every
    repo is read from the local cache.
    """

    def __init__(self, hub_kwargs: dict):
        self.kwargs = {k: v for k, v in hub_kwargs.items() if k != "revision"}
        self.offline_reason: str | None = None
        self._asked = False

    def is_offline(self) -> bool:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE or self.kwargs.get("local_files_only"):
            return True
        if not self._asked:
            self._asked = True
            self.offline_reason = hub_unreachable_reason()
            if self.offline_reason is not None:  # info only: a file missing from the cache raises with this reason
                logger.info(f"The Hub cannot be reached ({self.offline_reason}); using the local cache only.")
        return self.offline_reason is not None


class _ModelSource:
    """One local folder or Hub repo that components are loaded from, with errors classified before any retry.

    Offline (HF_HUB_OFFLINE=1, `local_files_only=True`, or the Hub unreachable), a repo is its cached snapshot
    folder: a repo that is not in the cache fails at once, saying so, and a file absent from the snapshot is absent.
    `role` is `"model"` (the NormalCrafter weights) or `"base"` (the model completing a `unet/` + `vae/` repo);
    errors about a base are `BaseModelUnavailableError`s that also say how to pass the components directly.
    """

    def __init__(self, name: str, revision: str | None, hub: _HubAccess, role: str, model_path: str = ""):
        self.name = self.path = name
        self.hub_kwargs = {**hub.kwargs, **({} if revision is None else {"revision": revision})}
        self.role = role
        self.model_path = model_path
        self.is_local = os.path.isdir(name)
        self._has: dict[str, bool] = {}  # component -> whether its config file exists
        if self.is_local:
            return
        if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.exists(name):
            raise self._error(
                f"{name!r} is not a folder, nor a Hub repo id ('owner/name'). Pass an existing folder or a repo id "
                f"such as {DEFAULT_MODEL_ID if role == 'model' else DEFAULT_BASE_MODEL_ID!r}.",
                not_found=True,
            )
        if hub.is_offline():
            self.path = self._cached_snapshot(hub.offline_reason)
            self.is_local = True

    def _error(self, message: str, not_found: bool = False) -> OSError:
        if self.role == "base":
            return BaseModelUnavailableError(
                f"{self.model_path!r} has no image encoder, feature extractor or scheduler of its own, so they come "
                f"from the base model {self.name!r}: {message} {_GATED_BASE_HELP} Or pass `base_model=` a local "
                "folder laid out like it, or pass `image_encoder=`, `feature_extractor=` and `scheduler=` yourself."
            )
        return FileNotFoundError(message) if not_found else ModelUnavailableError(message)

    def _cached_snapshot(self, offline_reason: str | None) -> str:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import LocalEntryNotFoundError

        kwargs = {k: v for k, v in self.hub_kwargs.items() if k in ("cache_dir", "revision")}
        try:
            return snapshot_download(self.name, local_files_only=True, **kwargs)
        except LocalEntryNotFoundError as error:
            cache = os.fspath(kwargs.get("cache_dir") or constants.HF_HUB_CACHE)
            where = f"{self.name!r} is not in the local Hub cache {cache!r}"
            if offline_reason is not None:
                message = (
                    f"The Hub cannot be reached ({offline_reason}) and {where}. Connect to the internet and run "
                    "again, or pass a local model folder (`--model <folder>` on the command line)."
                )
            else:
                message = (
                    f"Downloads are off (HF_HUB_OFFLINE=1 or `local_files_only=True`) and {where}. Run once with a "
                    "network connection (HF_HUB_OFFLINE unset) to download it, or pass a local model folder "
                    "(`--model <folder>` on the command line)."
                )
            raise self._error(message) from error

    def has(self, component: str) -> bool:
        """Whether this folder or repo holds `component` (its configuration file exists); asked once per component,
        since `load` asks again and, online, each ask is a request."""
        if component not in self._has:
            self._has[component] = self._look_up(component)
        return self._has[component]

    def _look_up(self, component: str) -> bool:
        filename = _COMPONENT_CONFIG_FILES[component]
        if self.is_local:
            return os.path.isfile(os.path.join(self.path, filename))
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            hf_hub_download(self.name, filename, **self.hub_kwargs)
        except LocalEntryNotFoundError as error:  # before EntryNotFoundError, its base class
            raise self._error(
                f"{self.name}/{filename} could not be downloaded and is not in the local cache ({error})."
            ) from error
        except EntryNotFoundError:
            return False
        except GatedRepoError as error:  # before RepositoryNotFoundError, its base class
            raise self._error(
                f"{self.name!r} is a gated repo: accept its licence at https://huggingface.co/{self.name} and log in "
                "(`hf auth login`, or pass `token=`)."
            ) from error
        except RepositoryNotFoundError as error:
            raise self._error(
                f"{self.name!r} is neither a local folder nor a Hub repo you can access. Check the name, or log in "
                "(`hf auth login`) if it is private.",
                not_found=True,
            ) from error
        except RevisionNotFoundError as error:
            revision = self.hub_kwargs.get("revision")
            message = f"{self.name!r} has no revision {revision!r}. Check the branch, tag or commit."
            raise self._error(message) from error
        return True

    def load(self, component: str, model_kwargs: dict, variant: str | None):
        """Load `component` as the class the pipeline needs; a base's loading errors say what to do."""
        if not self.has(component):
            raise self._error(
                f"{self.name!r} has no `{os.path.dirname(_COMPONENT_CONFIG_FILES[component])}/` "
                f"({_COMPONENT_CONFIG_FILES[component]} is missing).",
                not_found=True,
            )
        try:
            return self._load(component, model_kwargs, variant)
        except (OSError, ValueError) as error:
            if self.role != "base":
                raise
            raise self._error(f"its `{component}` could not be loaded ({type(error).__name__}: {error}).") from error

    def _load(self, component: str, model_kwargs: dict, variant: str | None):
        kwargs = {"subfolder": component} if self.is_local else {**self.hub_kwargs, "subfolder": component}
        if component == "scheduler":
            return _scheduler_class(self.path, kwargs).from_pretrained(self.path, **kwargs)
        if component == "feature_extractor":
            return CLIPImageProcessor.from_pretrained(self.path, **kwargs)
        model_class = {
            "unet": NormalCrafterUNet,
            "vae": AutoencoderKLTemporalDecoder,
            "image_encoder": CLIPVisionModelWithProjection,
        }[component]
        if model_class is CLIPVisionModelWithProjection:
            model_kwargs = _transformers_dtype_kwargs(model_kwargs)
        kwargs.update(model_kwargs)
        if variant is not None:
            try:
                return model_class.from_pretrained(self.path, variant=variant, **kwargs)
            except (OSError, ValueError):
                logger.info(f"No {variant!r} variant of {self.path}/{component}; loading its default weights.")
        return model_class.from_pretrained(self.path, **kwargs)


def _scheduler_class(path: str, kwargs: dict) -> type:
    """The diffusers scheduler class named in a scheduler's configuration (the pipeline's default: Euler)."""
    config = EulerDiscreteScheduler.load_config(path, **kwargs)
    scheduler_class = getattr(diffusers, config.get("_class_name", ""), None)
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, diffusers.SchedulerMixin)):
        raise ValueError(
            f"{path}/scheduler names {config.get('_class_name')!r}, which is not a diffusers scheduler; pass "
            "`scheduler=` yourself."
        )
    return scheduler_class


def _transformers_dtype_kwargs(model_kwargs: dict) -> dict:
    """`model_kwargs` for a transformers model: its dtype keyword is `dtype` from 4.56 on, `torch_dtype` before."""
    import transformers

    kwargs = {k: v for k, v in model_kwargs.items() if k != _DIFFUSERS_DTYPE_KWARG}
    if model_kwargs.get(_DIFFUSERS_DTYPE_KWARG) is not None:
        new_api = version.parse(transformers.__version__) >= version.parse("4.56")
        kwargs["dtype" if new_api else "torch_dtype"] = model_kwargs[_DIFFUSERS_DTYPE_KWARG]
    return kwargs
