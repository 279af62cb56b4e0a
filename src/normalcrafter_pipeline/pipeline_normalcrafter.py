# Copyright 2026 The normalcrafter-pipeline authors. Licensed under the MIT licence.
"""The NormalCrafter pipeline: temporally consistent surface normals from videos of any length.

This module is the Hub code's `pipeline.py`: plain diffusers, built on its sibling modules (imported here directly,
as diffusers copies only those) and on torch, numpy, PIL, diffusers and transformers. The package's public
`NormalCrafterPipeline` (`normalcrafter_pipeline.pretrained`) adds its own loading and saving to this class.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    UNetSpatioTemporalConditionModel,
)
from diffusers.utils import BaseOutput, logging, replace_example_docstring
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from .normalcrafter_checks import StreamSettings
from .normalcrafter_normals_processor import NormalsProcessor  # noqa: F401 - imported here so diffusers copies it
from .normalcrafter_unet import NormalCrafterUNet
from .normalcrafter_video_processor import (
    PAD_MULTIPLE,
    NormalCrafterVideoProcessor,
    processing_size,
    resize_with_antialiasing,
)
from .normalcrafter_windows import WindowedDenoiser

logger = logging.get_logger(__name__)  # pylint: disable=invalid-name

# The conditioning of the released model: fps 7, motion bucket 127, no noise augmentation (not SVD's fps - 1).
ADDED_TIME_IDS = (7.0, 127.0, 0.0)
CLIP_INPUT_SIZE = (224, 224)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from normalcrafter_pipeline import NormalCrafterPipeline, read_video

        >>> pipe = NormalCrafterPipeline.from_pretrained("Yanrui95/NormalCrafter", torch_dtype=torch.float16)
        >>> pipe.to("cuda")

        >>> frames = read_video("clip.mp4", max_res=1024)  # lazy, one frame at a time
        >>> for normals in pipe.stream(frames, window_size=14, overlap=4):
        ...     print(normals.shape)  # (k, H, W, 3) float32 unit vectors, in order

        >>> # or everything at once, for a short clip held in memory:
        >>> normals = pipe(list(read_video("clip.mp4"))).normals  # (F, H, W, 3)
        ```
"""


@dataclass
class NormalCrafterPipelineOutput(BaseOutput):
    r"""
    Args:
        normals (`np.ndarray`, `torch.Tensor` or `list[PIL.Image.Image]`):
            Unit surface normals: `(F, H, W, 3)` float32 for `output_type="np"`, `[F, 3, H, W]` for `"pt"`, F RGB
            images `(n + 1) / 2` for `"pil"`, or the merged latents `[F, C, H/8, W/8]` of the padded video for
            `"latent"`.
    """

    normals: np.ndarray | torch.Tensor | list[PIL.Image.Image]


class NormalCrafterPipeline(DiffusionPipeline):
    r"""
    Video-to-normals pipeline of NormalCrafter (a Stable Video Diffusion backbone fine-tuned for surface normals).

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    (downloading, saving, running on a particular device, offloading).

    Args:
        vae ([`AutoencoderKLTemporalDecoder`]):
            Encodes the frames to conditioning latents and decodes normal latents (its decoder is fine-tuned for
            normal maps).
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`]):
            CLIP vision tower giving one embedding per frame.
        unet ([`NormalCrafterUNet`] or [`UNetSpatioTemporalConditionModel`]):
            The spatio-temporal denoiser, conditioned on per-frame embeddings. A stock UNet (as diffusers loads the
            released weights) is wrapped as a [`NormalCrafterUNet`] sharing its parameters.
        scheduler ([`EulerDiscreteScheduler`]):
            The EDM-style Euler scheduler of SVD-xt (v-prediction, continuous timesteps, Karras sigmas).
        feature_extractor ([`~transformers.CLIPImageProcessor`]):
            Supplies the CLIP normalisation constants.
    """

    model_cpu_offload_seq = "image_encoder->vae->unet"
    _optional_components = []

    # What `model_index.json` records for classes that not every supported diffusers/transformers release can load:
    # a NormalCrafterUNet's weights are the stock UNet's (any loader reads them; this pipeline wraps them again), and
    # transformers 5 names its CLIP processors `CLIPImageProcessorPil` / `...Fast`, classes transformers 4 lacks.
    _portable_component_classes = {
        "NormalCrafterUNet": ("diffusers", "UNetSpatioTemporalConditionModel"),
        "CLIPImageProcessorPil": ("transformers", "CLIPImageProcessor"),
        "CLIPImageProcessorFast": ("transformers", "CLIPImageProcessor"),
    }

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        # typing.Union, not `X | Y`: diffusers 0.32 reads only the former from the signature
        unet: Union[NormalCrafterUNet, UNetSpatioTemporalConditionModel],
        scheduler: EulerDiscreteScheduler,
        feature_extractor: CLIPImageProcessor,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=scheduler,
            feature_extractor=feature_extractor,
        )
        self.video_processor = NormalCrafterVideoProcessor(pad_multiple=PAD_MULTIPLE)

    def __setattr__(self, name: str, value: Any):
        # Every component assignment passes here (`register_modules` and `pipe.unet = ...` alike).
        if name == "unet" and type(value) is UNetSpatioTemporalConditionModel:
            value = NormalCrafterUNet.from_unet(value)
        super().__setattr__(name, value)

    def register_to_config(self, **kwargs):
        for name, value in kwargs.items():
            if isinstance(value, (tuple, list)) and len(value) == 2 and value[1] in self._portable_component_classes:
                kwargs[name] = self._portable_component_classes[value[1]]
        super().register_to_config(**kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Checks
    # ------------------------------------------------------------------------------------------------------------

    def check_inputs(self, video: Any, settings: StreamSettings) -> None:
        """Validate the container of `video`, and every frame of a video held in memory (a list, tuple, array or
        tensor), so that a bad frame raises before any model runs; `settings` were checked when they were made.

        Lazy iterables (generators, [`VideoReader`]s) are not read here, so nothing is decoded twice: their frames
        are checked as the run reads them.
        """
        frames = self.video_processor.as_frames(video)
        if not isinstance(frames, (list, tuple, np.ndarray, torch.Tensor)):
            return
        if len(frames) == 0:
            raise ValueError("`video` has zero frames; pass at least one frame.")
        first_size = None
        for index, frame in enumerate(frames):
            size = self.video_processor.frame_to_array(frame, index).shape[:2]
            first_size = self.video_processor.check_size(index, size, first_size)
        processing_size(first_size, settings.processing_resolution)  # a side that would shrink to nothing

    # ------------------------------------------------------------------------------------------------------------
    # Model passes
    # ------------------------------------------------------------------------------------------------------------

    def encode_image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` pixels in [0, 1] -> `[N, 1, D]` CLIP image embeddings, one per frame."""
        device = self._execution_device
        images = resize_with_antialiasing(pixels.to(device) * 2.0 - 1.0, CLIP_INPUT_SIZE)
        images = (images + 1.0) / 2.0
        mean = torch.tensor(self.feature_extractor.image_mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std, device=device).view(1, 3, 1, 1)
        images = ((images - mean) / std).to(dtype=self.image_encoder.dtype)
        return self.image_encoder(images).image_embeds.unsqueeze(1)  # [N, 1, D]

    def encode_video_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` pixels in [0, 1] -> `[N, C, H/8, W/8]` unscaled latents (the distribution's mode)."""
        device = self._execution_device
        # As in SVD, an fp16 VAE that asks for it encodes in fp32.
        upcast = (
            self.vae.dtype == torch.float16
            and self.vae.config.force_upcast
            and next(self.vae.parameters()).device.type != "meta"
        )
        if upcast:
            self.vae.to(dtype=torch.float32)
        pixels = pixels.to(device).contiguous(memory_format=self._vae_encoder_memory_format(self.vae.dtype))
        latents = self.vae.encode((pixels * 2.0 - 1.0).to(self.vae.dtype)).latent_dist.mode()
        if upcast:
            self.vae.to(dtype=torch.float16)
        return latents

    @staticmethod
    def _vae_encoder_memory_format(dtype: torch.dtype) -> torch.memory_format:
        """The layout of the VAE encoder's input, which its convolutions and group norms keep: channels_last (NHWC)
        in bf16 and fp16, where NHWC convolutions are faster on CPUs; the plain layout (NCHW) in fp32 and fp64. On
        the CPU, GroupNorm on a channels_last tensor takes E[x^2] - E[x]^2 from float32 sums run one position after
        another, which drift on white-padded frames (many equal terms) far beyond fp32 rounding, and the model
        amplifies that; the NCHW kernel's statistics stay at rounding level (benchmarks/BENCHMARKS.md)."""
        return torch.channels_last if dtype in (torch.bfloat16, torch.float16) else torch.contiguous_format

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """`[N, C, h, w]` merged latents (one decode chunk) -> `[N, 3, H, W]` float32 in about [-1, 1]."""
        latents = latents / self.vae.config.scaling_factor
        frames = self.vae.decode(latents.to(self.vae.dtype), num_frames=latents.shape[0]).sample
        return frames.float()

    def compile(self, components: Iterable[str] = ("unet",), *, freezing: bool = True, **compile_kwargs) -> None:
        """`torch.compile` model components in place (opt-in; the default eager path is the exact one).

        Compiling takes minutes, so it pays for long videos only; what it gains and costs per component and precision
        is measured in `benchmarks/BENCHMARKS.md`. Only the UNet is compiled by default. Windows keep one shape per
        resolution: a video compiles once (a clip shorter than the window, or another resolution, compiles again).

        Compile after loading, casting and moving the pipeline; the first call then compiles. With `freezing`, the
        weights become constants of the compiled code (on CPUs, packed for oneDNN once): weights changed afterwards
        are not seen until `compile` is called again, and CPU offloading cannot move them.

        Args:
            components: any of `"unet"`, `"image_encoder"`, `"vae"` (its encoder and decoder).
            freezing: inductor's weight freezing (`options={"freezing": True}`); the model runs under `no_grad`.
            compile_kwargs: passed to `torch.compile` (`backend`, `dynamic`, `fullgraph`, `options`, ...).
        """
        modules = {"unet": [self.unet], "image_encoder": [self.image_encoder]}
        modules["vae"] = [self.vae.encoder, self.vae.decoder]  # the pipeline calls `vae.encode`/`decode`, not `vae()`
        components = [components] if isinstance(components, str) else list(components)
        unknown = sorted(set(components) - set(modules))
        if unknown or not components:
            raise ValueError(f"`components` must name some of {sorted(modules)}, got {components}.")
        options = dict(compile_kwargs.pop("options", None) or {})
        if freezing:
            if "mode" in compile_kwargs:
                raise ValueError(
                    "`torch.compile` takes `mode` or `options`, not both, and weight freezing is an option: pass "
                    "`freezing=False` with `mode`, or put the mode's settings in `options`."
                )
            offloaded = [name for name in components for module in modules[name] if hasattr(module, "_hf_hook")]
            if offloaded:
                raise ValueError(
                    f"{offloaded[0]} is offloaded (`enable_*_cpu_offload`); frozen weights would stay on the device. "
                    "Compile with `freezing=False`, or without offloading."
                )
            options["freezing"] = True
        targets = [module for name in components for module in modules[name]]
        on_cpu = any(next(module.parameters()).device.type == "cpu" for module in targets)
        if compile_kwargs.get("backend", "inductor") == "inductor" and on_cpu:
            _check_cpp_compiler()
        for module in targets:
            module.compile(options=options or None, **compile_kwargs)

    def get_added_time_ids(self, dtype: torch.dtype) -> torch.Tensor:
        """`[[7, 127, 0]]` (fps, motion bucket, noise augmentation) as the released model is conditioned."""
        expected = self.unet.add_embedding.linear_1.in_features
        passed = self.unet.config.addition_time_embed_dim * len(ADDED_TIME_IDS)
        if expected != passed:
            raise ValueError(
                f"The UNet expects {expected} added-time embedding features but {len(ADDED_TIME_IDS)} ids give "
                f"{passed}; check `unet.config.addition_time_embed_dim`."
            )
        return torch.tensor([ADDED_TIME_IDS], dtype=dtype, device=self._execution_device)

    @torch.no_grad()
    def stream(
        self,
        video: Iterable,
        window_size: int = 14,
        overlap: int = 4,
        num_inference_steps: int = 1,
        decode_chunk_size: int = 7,
        output_type: str = "np",
        encode_chunk_size: int = 7,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        resample_method_input: str = "bilinear",
        resample_method_output: str = "bilinear",
    ) -> Iterator[np.ndarray | torch.Tensor | list[PIL.Image.Image]]:
        r"""Estimate normals for a video of any length, yielding them in order as soon as they are final.

        Frames are read from `video` one at a time (a generator over a two-hour video is fine); at any moment only
        O(`window_size` + `decode_chunk_size`) frames, latents and outputs are held. The numbers are identical to
        [`~NormalCrafterPipeline.__call__`], which runs this very path.

        Args:
            video: an iterable of frames: PIL images, `(H, W, 3)` arrays (uint8, or float in [0, 1]) or `(3, H, W)`
                tensors. Grayscale and RGBA frames are converted to RGB. All frames must share one size; a frame
                that does not raises when it is read.
            window_size (`int`, defaults to 14): frames denoised together.
            overlap (`int`, defaults to 4): frames shared by consecutive windows, blended linearly.
            num_inference_steps (`int`, defaults to 1): Euler steps per window (the released model uses 1).
            decode_chunk_size (`int`, defaults to 7): frames decoded together by the temporal VAE decoder; chunks
                are counted from frame 0, so the result does not depend on how the video is read.
            output_type (`str`, defaults to `"np"`): `"np"` yields `(k, H, W, 3)` float32 arrays, `"pt"` yields
                `[k, 3, H, W]` tensors, `"pil"` yields lists of k RGB PIL images `(n + 1) / 2` (the colours of
                diffusers' `MarigoldImageProcessor.visualize_normals`), `"latent"` yields the merged latents
                `[k, C, h, w]`.
            encode_chunk_size (`int`, defaults to 7): frames CLIP and the VAE encoder see at once (memory against
                speed; both encode each frame on its own).
            processing_resolution (`int`, *optional*): longest side of the frames the model sees; frames are
                resized to it (aspect kept, sides rounded down; smaller frames are scaled up) before the white
                padding to multiples of 64. `None` or 0 (the default) keeps the input size.
            match_input_resolution (`bool`, defaults to `True`): resize the normals back to the input size (and
                scale them to unit length again); `False` returns them at the processing size.
            resample_method_input (`str`, defaults to `"bilinear"`): how frames are resized to
                `processing_resolution`: `"bilinear"` or `"bicubic"` (anti-aliased), `"nearest"` or `"area"`.
            resample_method_output (`str`, defaults to `"bilinear"`): how normals are resized back to the input size
                (the same choices, not anti-aliased).

        Yields:
            Consecutive chunks of unit normals (or latents), covering every frame exactly once, in order.
        """
        settings = StreamSettings.from_arguments(locals())  # raises for a bad value before any frame is read
        yield from self._stream(self.video_processor.as_frames(video), settings)

    def _stream(self, frames: Iterable, settings: StreamSettings) -> Iterator[Any]:
        """The work of [`~NormalCrafterPipeline.stream`] over `frames` with checked `settings`."""
        # 1. Prepare the windowed denoiser (the streaming core) and the decode queue
        denoiser = WindowedDenoiser(
            self, settings.window_size, settings.overlap, settings.num_inference_steps, settings.encode_chunk_size
        )
        size = None  # (H, W) of frame 0; every later frame must match it
        undecoded: list[torch.Tensor] = []  # final latents waiting for a full decode chunk
        # A bar over the frames read (outputs follow within a window); `set_progress_bar_config` applies as usual.
        with self.progress_bar(frames) as progress:
            progress.unit = "frame"
            for index, frame in enumerate(progress):
                # 2. Check, resize and pad the frame
                pixels, size = self.video_processor.preprocess(
                    frame, index, size, settings.processing_resolution, settings.resample_method_input
                )  # [3, Hp, Wp]
                if index == 0:  # (H, W) the model sees, and that of the outputs
                    model_size = processing_size(size, settings.processing_resolution)
                    output_size = size if settings.match_input_resolution else model_size
                # 3. Encode it, denoise the windows it completes, and merge them with the previous window
                for latents in denoiser.add(pixels):
                    undecoded.append(latents)
                    # 4. Decode the latents that became final and post-process them, a decode chunk at a time
                    yield from self._stream_outputs(undecoded, settings, model_size, output_size, last=False)
        # 5. After the last frame: the remaining windows, and every latent not decoded yet
        undecoded.extend(denoiser.finish())
        yield from self._stream_outputs(undecoded, settings, model_size, output_size, last=True)
        # 6. Offload all models
        self.maybe_free_model_hooks()

    def _stream_outputs(
        self,
        undecoded: list[torch.Tensor],
        settings: StreamSettings,
        model_size: tuple[int, int],
        output_size: tuple[int, int],
        last: bool,
    ) -> Iterator[np.ndarray | torch.Tensor | list[PIL.Image.Image]]:
        """Yield what `stream` gives for the final latents held in `undecoded`, leaving there what must wait: the
        latents themselves for `"latent"`, else the normals of each full decode chunk (and of the shorter rest when
        `last`). Chunks are counted from frame 0, as the reference decodes them, so the result does not depend on how
        the video arrives. `model_size`: the (H, W) the model saw; `output_size`: the (H, W) of the outputs."""
        if settings.output_type == "latent":
            yield from undecoded
            undecoded.clear()
            return
        chunk_size = settings.decode_chunk_size
        queue = torch.cat(undecoded)  # [n, C, h, w]
        num_decoded = queue.shape[0] if last else (queue.shape[0] // chunk_size) * chunk_size
        undecoded[:] = [queue[num_decoded:]] if num_decoded < queue.shape[0] else []
        for i in range(0, num_decoded, chunk_size):
            decoded = self.decode_latents(queue[i : min(i + chunk_size, num_decoded)])  # [k, 3, Hp, Wp]
            yield self.video_processor.postprocess(
                decoded, model_size, settings.output_type, output_size, settings.resample_method_output
            )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        video: list[PIL.Image.Image] | np.ndarray | torch.Tensor | Iterable,
        window_size: int = 14,
        overlap: int = 4,
        num_inference_steps: int = 1,
        decode_chunk_size: int = 7,
        output_type: str = "np",
        return_dict: bool = True,
        encode_chunk_size: int = 7,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        resample_method_input: str = "bilinear",
        resample_method_output: str = "bilinear",
    ) -> NormalCrafterPipelineOutput | tuple:
        r"""Estimate temporally consistent surface normals for every frame of `video`.

        Args:
            video: a list of PIL images, an `(F, H, W, C)` array (uint8, or float in [0, 1]), an `(F, C, H, W)`
                tensor in [0, 1], or any iterable of frames (a generator, a [`VideoReader`]), read once. Grayscale
                and RGBA are converted to RGB. The output has one frame per frame read, whatever `len(video)` says.
                For long videos use [`~NormalCrafterPipeline.stream`], which also yields as it goes.
            window_size, overlap, num_inference_steps, decode_chunk_size, output_type, encode_chunk_size,
            processing_resolution, match_input_resolution, resample_method_input, resample_method_output: see
                [`~NormalCrafterPipeline.stream`].
            return_dict (`bool`, defaults to `True`): return a [`NormalCrafterPipelineOutput`] or a tuple.

        Examples:

        Returns:
            [`NormalCrafterPipelineOutput`] or `tuple`: `normals`, float32 unit vectors `(F, H, W, 3)` (`"np"`),
            `[F, 3, H, W]` (`"pt"`), a list of F RGB PIL images (`"pil"`), or merged latents (`"latent"`).
        """
        # 1. Check the arguments, and every frame of a video held in memory, before any model runs
        settings = StreamSettings.from_arguments(locals())  # every argument but `video` and `return_dict`
        self.check_inputs(video, settings)
        frames = self.video_processor.as_frames(video)
        announced = len(frames) if hasattr(frames, "__len__") else None

        # 2. Run the streaming path and gather its chunks; the frames it read are counted, not the announced length
        chunks = self._stream(frames, settings)
        if output_type == "np":
            normals = _gather_chunks(chunks, expected=announced)
        elif output_type == "pil":
            normals = [image for chunk in chunks for image in chunk]
        else:
            normals = torch.cat(list(chunks))
        if announced is not None and len(normals) != announced:
            logger.warning(
                f"`video` announced {announced} frames (its `len`) but yielded {len(normals)}; the output has "
                f"{len(normals)}, one per frame read."
            )

        if not return_dict:
            return (normals,)
        return NormalCrafterPipelineOutput(normals=normals)


def _gather_chunks(chunks: Iterable[np.ndarray], expected: int | None) -> np.ndarray:
    """Stack streamed `(k, H, W, 3)` chunks into one array: allocated once when `expected` is right (no copy of the
    whole video at the end), grown when more frames come, and cut to the frames that came, never uninitialised."""
    gathered = None
    filled = 0
    for chunk in chunks:
        if gathered is None or filled + chunk.shape[0] > gathered.shape[0]:
            capacity = max(expected or 0, filled + chunk.shape[0], 2 * filled)
            grown = np.empty((capacity, *chunk.shape[1:]), dtype=np.float32)
            if gathered is not None:
                grown[:filled] = gathered[:filled]
            gathered = grown
        gathered[filled : filled + chunk.shape[0]] = chunk
        filled += chunk.shape[0]
    return gathered[:filled]


def _check_cpp_compiler() -> None:
    """Inductor compiles CPU kernels with a C++ compiler: say so now rather than after minutes of tracing."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: inductor reports it itself
        return
    try:
        get_cpp_compiler()
    except Exception as error:
        raise RuntimeError(
            f"torch.compile on the CPU needs a C++ compiler, and inductor found none ({error}). Install one (g++ or "
            "clang++; `apt install g++`), or leave the pipeline uncompiled."
        ) from error
