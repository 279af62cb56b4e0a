"""The models an evaluation scores, behind one interface: frames in, normals in our axes out.

A predictor is called with one sequence's frames, uint8 `(F, H, W, 3)`, and returns float32 `(F, H, W, 3)` normals
in our axes (+x right, +y up, +z toward the camera) at the frames' resolution. It carries a `name` (the label in
tables) and `settings` (what decides its numbers; evaluation reuses earlier results only when they match). Models
load on the first call, so an evaluation that reuses every earlier result loads nothing.

- `NormalCrafterPredictor`: a NormalCrafter pipeline (folder, Hub id or object), in video mode, or frame by frame
  with `window_size=1, overlap=0` (the image-model baseline);
- `DiffusersNormalsPredictor`: any diffusers normals pipeline whose output's `prediction` is `(N, H, W, 3)` normals
  in our axes, `MarigoldNormalsPipeline` first; each frame is predicted on its own;
- `CallablePredictor`: any function from frames to normals.

`predictor_from_spec` turns the command line's model names into predictors: `Yanrui95/NormalCrafter` (video mode),
`per-frame:Yanrui95/NormalCrafter`, `marigold:prs-eth/marigold-normals-v1-1`, `diffusers:<id>` (any diffusers
pipeline, loaded with `DiffusionPipeline.from_pretrained`).
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .model_setup import load_pipeline, resolve_dtype
from .normalcrafter_checks import check_window_args
from .normalcrafter_video_processor import normalize_normals

MODEL_SPEC_PREFIXES = ("per-frame:", "marigold:", "diffusers:")


def resize_frames(rgb: np.ndarray, max_res: int | None) -> np.ndarray:
    """Downscale `(F, H, W, 3)` uint8 frames so the longer side is at most `max_res` (aspect kept)."""
    height, width = rgb.shape[1:3]
    if max_res is None or max(height, width) <= max_res:
        return rgb
    scale = max_res / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(PIL.Image.fromarray(frame).resize(size, PIL.Image.BICUBIC)) for frame in rgb])


def resize_normals(normals: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resample `(F, h, w, 3)` normals to `(F, height, width, 3)` and renormalise."""
    if normals.shape[1:3] == (height, width):
        return normals
    tensor = torch.from_numpy(np.ascontiguousarray(normals)).permute(0, 3, 1, 2).float()
    tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    tensor = normalize_normals(tensor, dim=1)
    return tensor.permute(0, 2, 3, 1).numpy()


def model_label(model) -> str:
    """The default label of a model: its path or Hub id, or a pipeline's `_name_or_path`, or its class name."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    name = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    return name or type(model).__name__


def _dtype_name(dtype) -> str:
    torch_dtype = resolve_dtype(dtype)
    return str(torch_dtype).replace("torch.", "") if torch_dtype is not None else "default"


class NormalsPredictor:
    """Frames `(F, H, W, 3)` uint8 -> normals `(F, H, W, 3)` float32 in our axes; see the module docstring."""

    name: str
    settings: dict

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class CallablePredictor(NormalsPredictor):
    """Any function `fn(frames) -> normals` (numpy or torch, `(F, H, W, 3)` in our axes) as a predictor."""

    def __init__(self, fn, name: str, settings: dict | None = None):
        if not callable(fn):
            raise ValueError(f"`fn` must be callable (frames -> normals), got {fn!r}.")
        self.fn = fn
        self.name = name
        self.settings = {"model": name, "kind": "callable", **(settings or {})}

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        normals = self.fn(frames)
        if isinstance(normals, torch.Tensor):
            normals = normals.detach().float().cpu().numpy()
        return np.asarray(normals, dtype=np.float32)


class NormalCrafterPredictor(NormalsPredictor):
    """A NormalCrafter pipeline (model folder, Hub id or pipeline object) run over each sequence.

    Args:
        model: a folder or Hub repo id (loaded with `NormalCrafterPipeline.from_pretrained` on first use), or a
            pipeline object called as `pipe(frames, window_size=..., ...).normals`.
        window_size, overlap, num_inference_steps, decode_chunk_size: passed to the pipeline; `window_size=1,
            overlap=0` predicts every frame on its own (the per-frame baseline).
        max_res: downscale the frames so the longer side is at most this; predictions are resampled back.
        device, dtype, load_kwargs: where, in which precision and with which `from_pretrained` arguments to load.
        name: the label in tables (default: the path or the pipeline's `_name_or_path`, with `per-frame:` in front
            for window 1).
    """

    def __init__(
        self,
        model,
        *,
        window_size: int = 14,
        overlap: int = 4,
        num_inference_steps: int = 1,
        decode_chunk_size: int = 7,
        max_res: int | None = None,
        device: str | None = None,
        dtype=None,
        load_kwargs: dict | None = None,
        name: str | None = None,
    ):
        check_window_args(window_size, overlap)
        for key, value, minimum in (
            ("num_inference_steps", num_inference_steps, 1),
            ("decode_chunk_size", decode_chunk_size, 1),
            ("max_res", max_res if max_res is not None else 8, 8),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"`{key}` must be an integer >= {minimum}, got {value!r}.")
        if not (isinstance(model, (str, os.PathLike)) or callable(model)):
            raise ValueError(
                f"`model` must be a model folder, a Hub repo id or a NormalCrafterPipeline, got {model!r}."
            )
        self.model = model
        self.call_kwargs = {
            "window_size": window_size,
            "overlap": overlap,
            "num_inference_steps": num_inference_steps,
            "decode_chunk_size": decode_chunk_size,
        }
        self.max_res = max_res
        self.device, self.dtype, self.load_kwargs = device, dtype, dict(load_kwargs or {})
        per_frame = window_size == 1
        self.name = name or ("per-frame:" if per_frame else "") + model_label(model)
        self.settings = {
            "model": self.name,
            "kind": "normalcrafter",
            **self.call_kwargs,
            "max_res": max_res,
            "per_frame": per_frame,
            "dtype": _dtype_name(dtype),
        }
        self._pipe = None

    @property
    def pipe(self):
        if self._pipe is None:
            self._pipe = load_pipeline(self.model, device=self.device, dtype=self.dtype, **self.load_kwargs)
        return self._pipe

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            normals = self.pipe(resize_frames(frames, self.max_res), **self.call_kwargs).normals
        if isinstance(normals, torch.Tensor):
            normals = normals.float().cpu().numpy()
        return resize_normals(np.asarray(normals, dtype=np.float32), *frames.shape[1:3])


class DiffusersNormalsPredictor(NormalsPredictor):
    """A diffusers normals pipeline (`MarigoldNormalsPipeline` or any whose output's `prediction` holds
    `(N, H, W, 3)` normals in our axes) run frame by frame at the frames' resolution.

    Args:
        model: a folder or Hub repo id, loaded on first use with `pipeline_class.from_pretrained`
            (`MarigoldNormalsPipeline` by default; `DiffusionPipeline` for any pipeline), or a pipeline object.
        call_kwargs: extra arguments for every call (e.g. `num_inference_steps`, `ensemble_size`,
            `processing_resolution`); `match_input_resolution=True` and `output_type="np"` are always passed.
        seed: the generator seed of every call (diffusion baselines start from noise), so reruns give the same
            numbers; `None` leaves the pipeline's randomness unseeded.
        device, dtype, load_kwargs, name: as for `NormalCrafterPredictor` (`marigold:` in front of the default
            label).
    """

    def __init__(
        self,
        model,
        *,
        pipeline_class=None,
        call_kwargs: dict | None = None,
        seed: int | None = 0,
        device: str | None = None,
        dtype=None,
        load_kwargs: dict | None = None,
        name: str | None = None,
        prefix: str = "marigold:",
    ):
        if not (isinstance(model, (str, os.PathLike)) or callable(model)):
            raise ValueError(f"`model` must be a model folder, a Hub repo id or a diffusers pipeline, got {model!r}.")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        self.model, self.pipeline_class = model, pipeline_class
        self.call_kwargs = {key: value for key, value in (call_kwargs or {}).items() if value is not None}
        self.seed = seed
        self.device, self.dtype, self.load_kwargs = device, dtype, dict(load_kwargs or {})
        self.name = name or prefix + model_label(model)
        self.settings = {
            "model": self.name,
            "kind": "diffusers",
            **self.call_kwargs,
            "seed": seed,
            "dtype": _dtype_name(dtype),
        }
        self._pipe = None

    @property
    def pipe(self):
        if self._pipe is None:
            torch_dtype = resolve_dtype(self.dtype)
            if isinstance(self.model, (str, os.PathLike)):
                pipeline_class = self.pipeline_class
                if pipeline_class is None:
                    from diffusers import MarigoldNormalsPipeline as pipeline_class
                kwargs = dict(self.load_kwargs)
                if torch_dtype is not None:
                    kwargs["torch_dtype"] = torch_dtype
                pipe = pipeline_class.from_pretrained(os.fspath(self.model), **kwargs)
            else:
                pipe = self.model if torch_dtype is None else self.model.to(dtype=torch_dtype)
            if self.device is not None:
                pipe = pipe.to(self.device)
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        return self._pipe

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        predictions = []
        for frame in frames:
            generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
            output = self.pipe(
                PIL.Image.fromarray(frame),
                match_input_resolution=True,
                output_type="np",
                generator=generator,
                **self.call_kwargs,
            )
            prediction = np.asarray(output.prediction, dtype=np.float32)  # [1, H, W, 3]
            if prediction.ndim != 4 or prediction.shape[-1] != 3:
                raise ValueError(
                    f"Model {self.name!r} returned a prediction of shape {prediction.shape}; a normals pipeline "
                    "gives (1, H, W, 3)."
                )
            predictions.append(prediction[0])
        return np.stack(predictions)


def predictor_from_spec(
    spec,
    *,
    window_size: int = 14,
    overlap: int = 4,
    num_inference_steps: int = 1,
    decode_chunk_size: int = 7,
    max_res: int | None = None,
    device: str | None = None,
    dtype=None,
    baseline_kwargs: dict | None = None,
    baseline_seed: int | None = 0,
) -> NormalsPredictor:
    """A predictor from a model name (see the module docstring), or `spec` itself when it already is one.

    The NormalCrafter options apply to NormalCrafter names (window 1 for `per-frame:`); `baseline_kwargs` and
    `baseline_seed` to `marigold:` and `diffusers:` names.
    """
    if isinstance(spec, NormalsPredictor):
        return spec
    normalcrafter = {
        "num_inference_steps": num_inference_steps,
        "decode_chunk_size": decode_chunk_size,
        "max_res": max_res,
        "device": device,
        "dtype": dtype,
    }
    if not isinstance(spec, (str, os.PathLike)):
        return NormalCrafterPredictor(spec, window_size=window_size, overlap=overlap, **normalcrafter)
    spec = os.fspath(spec)
    baseline = {"call_kwargs": baseline_kwargs, "seed": baseline_seed, "device": device, "dtype": dtype}
    if spec.startswith("per-frame:"):
        return NormalCrafterPredictor(spec[len("per-frame:") :], window_size=1, overlap=0, **normalcrafter)
    if spec.startswith("marigold:"):
        return DiffusersNormalsPredictor(spec[len("marigold:") :], **baseline)
    if spec.startswith("diffusers:"):
        from diffusers import DiffusionPipeline

        return DiffusersNormalsPredictor(
            spec[len("diffusers:") :], pipeline_class=DiffusionPipeline, prefix="diffusers:", **baseline
        )
    return NormalCrafterPredictor(spec, window_size=window_size, overlap=overlap, **normalcrafter)
