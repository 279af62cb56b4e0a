"""ComfyUI nodes for NormalCrafter, built on the `normalcrafter_pipeline` package (ComfyUI's V3 node API).

Four nodes:
- `NormalCrafterModelLoader`: a pipeline from a folder under `models/normalcrafter/`, a folder path or a Hub repo id,
  in a precision and an offload mode. Loaded once per node (ComfyUI caches the output) and registered with
  ComfyUI's model management, so that "unload models" releases it; the next run loads it again.
- `NormalCrafterEstimateNormals`: an IMAGE batch (or a list of batches, taken as one video in order) -> a
  visualisation IMAGE and float unit normals (`NORMALS`, `[F, H, W, 3]` float32) in a chosen axis convention.
  Frames stream through `pipe.stream`, with ComfyUI's progress bar per frame and its interrupt honoured between
  frames (so between windows).
- `NormalCrafterSaveNormals`: `NORMALS` -> EXR frames, 16-bit PNG frames and an npz in ComfyUI's output folder,
  through the package's atomic writers (all outputs of a run appear together, or none).
- `NormalCrafterLoadFrames`: the image files of a folder under ComfyUI's input folder, in name order, as a list of
  IMAGE batches (one per file).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils
import folder_paths
import node_helpers
import numpy as np
import torch
from comfy_api.latest import ComfyExtension, io

from normalcrafter_pipeline import (
    DEFAULT_BASE_MODEL_ID,
    DEFAULT_MODEL_ID,
    ExrSequenceWriter,
    NormalCrafterPipeline,
    NormalsProcessor,
    NpzWriter,
    Png16SequenceWriter,
    check_window_args,
)
from normalcrafter_pipeline.dtypes import torch_dtype
from normalcrafter_pipeline.model_setup import OFFLOAD_MODES, load_pipeline
from normalcrafter_pipeline.normals_writers import close_together
from normalcrafter_pipeline.paced_frames import (
    PacedFrames,
    is_out_of_memory,
    out_of_memory_advice,
)

logger = logging.getLogger(__name__)

MODELS_FOLDER = "normalcrafter"  # models/normalcrafter/<name>/ holds pipeline folders
folder_paths.add_model_folder_path(MODELS_FOLDER, os.path.join(folder_paths.models_dir, MODELS_FOLDER))

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
CONVENTIONS = ("opengl", "opencv")
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

NormalCrafterModelType = io.Custom("NORMALCRAFTER_MODEL")
NormalsType = io.Custom("NORMALS")


# ----------------------------------------------------------------------------------------------------------------
# The model handle: what the loader outputs
# ----------------------------------------------------------------------------------------------------------------


def local_model_names() -> list[str]:
    """Names of the pipeline folders under ComfyUI's `models/normalcrafter/` folders."""
    names = set()
    for root in folder_paths.get_folder_paths(MODELS_FOLDER):
        if os.path.isdir(root):
            names.update(entry.name for entry in os.scandir(root) if entry.is_dir())
    return sorted(names)


def resolve_model_source(model: str) -> str:
    """The folder or Hub repo id `model` names: a folder under `models/normalcrafter/`, else an existing folder
    path, else a Hub repo id (`owner/name`). Raises FileNotFoundError for anything else (a missing folder)."""
    model = model.strip()
    for root in folder_paths.get_folder_paths(MODELS_FOLDER):
        if model and os.path.isdir(os.path.join(root, model)):
            return os.path.join(root, model)
    if os.path.isdir(model):
        return model
    if HUB_REPO_ID.fullmatch(model) and not model.startswith("."):
        return model
    known = ", ".join(local_model_names()) or "none"
    roots = ", ".join(folder_paths.get_folder_paths(MODELS_FOLDER))
    raise FileNotFoundError(
        f"`model` is {model!r}: no such folder. Give a folder name under {roots} (found: {known}), a folder path, "
        "or a Hub repo id such as Yanrui95/NormalCrafter."
    )


class NormalCrafterModel:
    """A loaded pipeline and how it runs, registered with ComfyUI's model management.

    With offload `none` the components are wrapped in a `ModelPatcher`, so that ComfyUI moves them to its device
    before a run (unloading other models to make room) and counts their memory. When ComfyUI unloads models ("unload
    models", `/free`) and the device is the CPU, where there is no other memory to move the weights to, the pipeline
    is dropped; `pipeline()` loads it again from its source on the next run. The `model` and `sequential` offload
    modes use diffusers' CPU offload hooks, which move each component (or layer) to the accelerator only while it
    runs; ComfyUI frees room for the largest of them (the UNet) before each run.
    """

    def __init__(self, source: str, base_model: str, dtype: torch.dtype, offload: str, device: torch.device):
        self.source = source
        self.base_model = base_model
        self.dtype = dtype
        self.offload = offload
        self.device = device
        self._pipe: NormalCrafterPipeline | None = None
        self._patcher: comfy.model_patcher.ModelPatcher | None = None
        self._offloaded_peak = 0

    def _load(self) -> None:
        logger.info(f"NormalCrafter: loading the pipeline from {self.source} ({self.dtype}, offload {self.offload})")
        # The package's one loader; its progress bar is off (ComfyUI's own bar counts the frames). Without offload
        # the weights stay where they load: the patcher below moves them to ComfyUI's device.
        pipe = load_pipeline(
            self.source,
            device=self.device if self.offload != "none" else None,
            dtype=self.dtype,
            base_model=self.base_model,
            cpu_offload=self.offload,
        )
        if self.offload != "none":
            # The most that offload holds on the device at once: the UNet while it runs (less when sequential).
            self._offloaded_peak = comfy.model_management.module_size(pipe.unet)
        else:
            components = torch.nn.ModuleDict({"unet": pipe.unet, "vae": pipe.vae, "image_encoder": pipe.image_encoder})
            patcher = comfy.model_patcher.ModelPatcher(
                components,
                load_device=self.device,
                offload_device=comfy.model_management.unet_offload_device(),
            )
            patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_DETACH, self._on_detach)
            self._patcher = patcher
        self._pipe = pipe

    def _on_detach(self, patcher, unpatch_all: bool) -> None:
        # ComfyUI detaches with `unpatch_all` when it unloads the model (not when it only loads it again). On the CPU
        # unloading frees the weights: the components leave the patcher's container, the pipeline is dropped. The
        # patcher and its emptied container stay referenced until the next load, as ComfyUI is still unloading
        # them (their finaliser must not run before it is done).
        if unpatch_all and patcher is self._patcher and comfy.model_management.is_device_cpu(self.device):
            patcher.model.clear()
            self.release()

    def release(self) -> None:
        """Drop the pipeline (its memory is freed once nothing else holds it); the next run loads it again."""
        if self._pipe is not None:
            logger.info(f"NormalCrafter: released the pipeline from {self.source}; the next run loads it again")
        self._pipe = None

    def pipeline(self, memory_required: int = 0) -> NormalCrafterPipeline:
        """The pipeline, loaded if needed, its weights on the device, `memory_required` bytes freed for the run."""
        if self._pipe is None:
            self._load()
        if self._patcher is not None:
            comfy.model_management.load_models_gpu(
                [self._patcher], memory_required=memory_required, force_full_load=True
            )
        elif not comfy.model_management.is_device_cpu(self.device):
            comfy.model_management.free_memory(memory_required + self._offloaded_peak, self.device)
        return self._pipe


def choose_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto`: float16 on an accelerator (as the released model runs), float32 on the CPU; else the named one."""
    if precision == "auto":
        return torch.float32 if comfy.model_management.is_device_cpu(device) else torch.float16
    return torch_dtype(precision)


class NormalCrafterModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormalCrafterModelLoader",
            display_name="NormalCrafter Load Model",
            category="image/normals",
            description="Loads a NormalCrafter pipeline once; ComfyUI's 'unload models' releases it.",
            inputs=[
                io.String.Input(
                    "model",
                    default=DEFAULT_MODEL_ID,
                    tooltip="A folder name under models/normalcrafter, a folder path, or a Hub repo id.",
                ),
                io.String.Input(
                    "base_model",
                    default=DEFAULT_BASE_MODEL_ID,
                    tooltip="Completes a model that has only unet/ and vae/ (the released one); unused otherwise.",
                ),
                io.Combo.Input(
                    "precision",
                    options=list(PRECISIONS),
                    default="auto",
                    tooltip="auto: fp16 on a GPU, fp32 on the CPU.",
                ),
                io.Combo.Input(
                    "offload",
                    options=list(OFFLOAD_MODES),
                    default="none",
                    tooltip="GPU memory against speed: model moves components to the GPU one at a time, sequential "
                    "layer by layer. No effect on the CPU.",
                ),
            ],
            outputs=[NormalCrafterModelType.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model: str, base_model: str, precision: str, offload: str) -> io.NodeOutput:
        if precision not in PRECISIONS:
            raise ValueError(f"`precision` is {precision!r}; use one of {', '.join(PRECISIONS)}.")
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"`offload` is {offload!r}; use one of {', '.join(OFFLOAD_MODES)}.")
        device = comfy.model_management.get_torch_device()
        if offload != "none" and comfy.model_management.is_device_cpu(device):
            logger.warning(
                f"`offload` {offload!r} moves weights between the CPU and a GPU; ComfyUI runs on the CPU here, where "
                "the weights stay in memory anyway, so the model runs without offload."
            )
            offload = "none"
        handle = NormalCrafterModel(
            resolve_model_source(model), base_model, choose_dtype(precision, device), offload, device
        )
        handle.pipeline()  # load now: a wrong source fails here, at the loader
        return io.NodeOutput(handle)


# ----------------------------------------------------------------------------------------------------------------
# Estimation
# ----------------------------------------------------------------------------------------------------------------


def check_frame_batches(images: list[torch.Tensor]) -> tuple[int, int, int]:
    """(frames, height, width) of a list of IMAGE batches `[B, H, W, C]` that must share one frame size."""
    if not images or sum(int(batch.shape[0]) for batch in images) == 0:
        raise ValueError("`images` is empty: the batch holds no frame. Connect a node that outputs at least one.")
    height, width = int(images[0].shape[1]), int(images[0].shape[2])
    for index, batch in enumerate(images):
        if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4):
            raise ValueError(f"`images` batch {index} has shape {tuple(batch.shape)}; an IMAGE is [B, H, W, 3].")
        if (int(batch.shape[1]), int(batch.shape[2])) != (height, width):
            raise ValueError(
                f"`images` mixes frame sizes: batch 0 is {width}x{height}, batch {index} is "
                f"{int(batch.shape[2])}x{int(batch.shape[1])} (width x height). One video has one size: resize the "
                "frames to a common size first (e.g. with an Upscale Image node)."
            )
    return sum(int(batch.shape[0]) for batch in images), height, width


def iterate_frames(images: list[torch.Tensor]):
    """Each frame of the batches in order, as an (H, W, C) float32 numpy array in [0, 1]."""
    for batch in images:
        for frame in batch:
            yield frame.detach().to("cpu", torch.float32).numpy()


class NormalCrafterEstimateNormals(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormalCrafterEstimateNormals",
            display_name="NormalCrafter Estimate Normals",
            category="image/normals",
            description="Temporally consistent surface normals for a video given as an IMAGE batch.",
            is_input_list=True,  # a list of batches is one video, in order; frames of mixed sizes are an error
            inputs=[
                NormalCrafterModelType.Input("model"),
                io.Image.Input("images", tooltip="The video's frames; a list of batches is joined in order."),
                io.Int.Input("window_size", default=14, min=1, max=256, tooltip="Frames denoised together (14)."),
                io.Int.Input("overlap", default=4, min=0, max=255, tooltip="Frames shared by windows; < window_size."),
                io.Int.Input("steps", default=1, min=1, max=100, tooltip="Denoising steps per window (1)."),
                io.Int.Input(
                    "processing_resolution",
                    default=0,
                    min=0,
                    max=8192,
                    step=8,
                    tooltip="Longest side the model sees (0: the frames' size); normals come back at the input size.",
                ),
                io.Combo.Input(
                    "convention",
                    options=list(CONVENTIONS),
                    default="opengl",
                    tooltip="opengl: +x right, +y up, +z toward the camera; opencv: +y down, +z away.",
                ),
                io.Boolean.Input("flip_x", default=False),
                io.Boolean.Input("flip_y", default=False),
                io.Boolean.Input("flip_z", default=False),
            ],
            outputs=[
                io.Image.Output(display_name="visualization"),
                NormalsType.Output(display_name="normals"),
            ],
        )

    @classmethod
    def execute(
        cls,
        model: list[NormalCrafterModel],
        images: list[torch.Tensor],
        window_size: list[int],
        overlap: list[int],
        steps: list[int],
        processing_resolution: list[int],
        convention: list[str],
        flip_x: list[bool],
        flip_y: list[bool],
        flip_z: list[bool],
    ) -> io.NodeOutput:
        # A list input gives every input as a list; the settings are taken from their first item.
        handle, window, shared, num_steps, resolution = (
            model[0],
            window_size[0],
            overlap[0],
            steps[0],
            processing_resolution[0],
        )
        signs = NormalsProcessor.axis_signs(convention[0], flip_x[0], flip_y[0], flip_z[0])
        check_window_args(window, shared)
        if num_steps < 1:
            raise ValueError(f"`steps` must be >= 1, got {num_steps}.")
        if resolution < 0:
            raise ValueError(f"`processing_resolution` must be >= 0 (0 keeps the frames' size), got {resolution}.")
        num_frames, height, width = check_frame_batches(images)

        pipe = handle.pipeline()
        progress = comfy.utils.ProgressBar(num_frames)
        frames = PacedFrames(
            iterate_frames(images),
            before_frame=comfy.model_management.throw_exception_if_processing_interrupted,
            after_frame=progress.update_absolute,
        )
        normals = torch.empty((num_frames, height, width, 3), dtype=torch.float32)
        done = 0
        try:
            chunks = pipe.stream(
                frames,
                window_size=window,
                overlap=shared,
                num_inference_steps=num_steps,
                processing_resolution=resolution or None,
            )
            for chunk in chunks:  # (k, H, W, 3) float32 unit normals, in order
                comfy.model_management.throw_exception_if_processing_interrupted()
                normals[done : done + chunk.shape[0]] = torch.from_numpy(
                    chunk * signs if (signs != 1).any() else chunk
                )
                done += chunk.shape[0]
        except Exception as error:
            if is_out_of_memory(error):
                offload = None if comfy.model_management.is_device_cpu(handle.device) else handle.offload
                raise RuntimeError(out_of_memory_advice(window, resolution, offload, (height, width))) from error
            raise
        visualization = torch.from_numpy(NormalsProcessor.visualize_normals(normals.numpy())).float() / 255.0
        return io.NodeOutput(visualization, normals)


# ----------------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------------


class NormalCrafterSaveNormals(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormalCrafterSaveNormals",
            display_name="NormalCrafter Save Normals",
            category="image/normals",
            description="Writes float normals to ComfyUI's output folder: EXR frames, 16-bit PNG frames, an npz.",
            is_output_node=True,
            inputs=[
                NormalsType.Input("normals"),
                io.String.Input("filename_prefix", default="normalcrafter/normals"),
                io.Boolean.Input("exr", default=True, tooltip="A folder of EXR frames (R, G, B = x, y, z)."),
                io.Boolean.Input("png16", default=False, tooltip="A folder of 16-bit PNGs, (n + 1) / 2 * 65535."),
                io.Boolean.Input("npz", default=True, tooltip="One .npz with the key 'normal': [F, H, W, 3]."),
                io.Combo.Input(
                    "float_precision",
                    options=["float32", "float16"],
                    default="float32",
                    tooltip="Floats of the EXR and npz outputs.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls, normals: torch.Tensor, filename_prefix: str, exr: bool, png16: bool, npz: bool, float_precision: str
    ) -> io.NodeOutput:
        if not (exr or png16 or npz):
            raise ValueError("No output chosen: turn on at least one of `exr`, `png16`, `npz`.")
        if normals.ndim != 4 or normals.shape[-1] != 3 or normals.shape[0] == 0:
            raise ValueError(f"`normals` must be [F, H, W, 3] with F >= 1, got {tuple(normals.shape)}.")
        num_frames, height, width = (int(size) for size in normals.shape[:3])
        output_dir = folder_paths.get_output_directory()
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, output_dir, width, height
        )
        os.makedirs(folder, exist_ok=True)
        stem = f"{filename}_{counter:05}_"
        writers, saved = [], []
        try:
            if exr:
                writers.append(ExrSequenceWriter(Path(folder, stem + "exr"), dtype=float_precision))
                saved.append({"filename": stem + "exr", "subfolder": subfolder, "type": "output", "format": "exr"})
            if png16:
                writers.append(Png16SequenceWriter(Path(folder, stem + "png16")))
                saved.append({"filename": stem + "png16", "subfolder": subfolder, "type": "output", "format": "png16"})
            if npz:
                writers.append(
                    NpzWriter(Path(folder, stem + ".npz"), num_frames, height, width, dtype=float_precision)
                )
                saved.append({"filename": stem + ".npz", "subfolder": subfolder, "type": "output", "format": "npz"})
            progress = comfy.utils.ProgressBar(num_frames)
            for index in range(num_frames):
                comfy.model_management.throw_exception_if_processing_interrupted()
                frame = normals[index : index + 1].detach().to("cpu", torch.float32).numpy()
                for writer in writers:
                    writer.write(frame)
                progress.update_absolute(index + 1)
            close_together(writers)  # every output renamed into place, or none
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        return io.NodeOutput(ui={"normals": saved})


# ----------------------------------------------------------------------------------------------------------------
# Frames from a folder
# ----------------------------------------------------------------------------------------------------------------


def input_subfolders() -> list[str]:
    root = folder_paths.get_input_directory()
    if not os.path.isdir(root):
        return []
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


class NormalCrafterLoadFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormalCrafterLoadFrames",
            display_name="NormalCrafter Load Frames (folder)",
            category="image/normals",
            description="The image files of a folder under ComfyUI's input folder, in name order, one IMAGE each.",
            inputs=[
                io.Combo.Input("folder", options=input_subfolders()),
                io.Int.Input("skip_first", default=0, min=0, tooltip="Frames to skip from the start."),
                io.Int.Input("max_frames", default=0, min=0, tooltip="Frames to load at most (0: all)."),
            ],
            outputs=[io.Image.Output(display_name="frames", is_output_list=True)],
        )

    @classmethod
    def execute(cls, folder: str, skip_first: int, max_frames: int) -> io.NodeOutput:
        from PIL import Image, ImageOps

        root = os.path.join(folder_paths.get_input_directory(), folder)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"`folder` {folder!r}: {root} is not a folder; put the frames there first.")
        names = sorted(name for name in os.listdir(root) if name.lower().endswith(FRAME_EXTENSIONS))
        names = names[skip_first:]
        if max_frames:
            names = names[:max_frames]
        frames = []
        for name in names:
            image = node_helpers.pillow(Image.open, os.path.join(root, name))
            image = node_helpers.pillow(ImageOps.exif_transpose, image).convert("RGB")
            frames.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None])
        return io.NodeOutput(frames)


class NormalCrafterExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            NormalCrafterModelLoader,
            NormalCrafterEstimateNormals,
            NormalCrafterSaveNormals,
            NormalCrafterLoadFrames,
        ]
