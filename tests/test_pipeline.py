"""NormalCrafterPipeline: exactness against the reference semantics, streaming, inputs, outputs, checks, offload."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from accelerate import cpu_offload
from reference_impl import reference_normals

from normalcrafter_pipeline.normalcrafter_windows import plan_windows
from normalcrafter_pipeline.testing_utils import tiny_pipeline


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def random_video(num_frames, height, width, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe64():
    """Float64 weights: the tiny random model amplifies float32 rounding (fp32 conv layouts alone move its latents
    by ~1e-4), so exactness against the reference is checked where rounding cannot hide a semantic slip."""
    pipe = tiny_pipeline(seed=0).to(dtype=torch.float64)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class CallCounter:
    """Counts forward calls and the frames (batch rows) each module sees, through forward pre-hooks."""

    def __init__(self, **modules):
        self.calls = dict.fromkeys(modules, 0)
        self.frames = dict.fromkeys(modules, 0)
        self.handles = [module.register_forward_pre_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name):
        def hook(module, args):
            self.calls[name] += 1
            sample = args[0]
            self.frames[name] += sample.shape[0] * (sample.shape[1] if sample.ndim == 5 else 1)

        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


# ------------------------------------------------------------------------------------------------------------------
# Exactness
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_frames,height,width,window_size,overlap,steps",
    [
        (20, 40, 50, 14, 4, 1),  # two windows, the second one the tail window
        (3, 64, 64, 14, 4, 1),  # shorter than a window, no padding
        (15, 33, 70, 14, 4, 1),  # window + 1, odd size
        (31, 40, 50, 6, 2, 2),  # several windows, two Euler steps
        (9, 40, 50, 4, 0, 1),  # no overlap but an overlapping tail window
    ],
)
def test_matches_reference_semantics(pipe64, num_frames, height, width, window_size, overlap, steps):
    video = random_video(num_frames, height, width, seed=num_frames)
    expected = reference_normals(pipe64, video, window_size, overlap, steps)
    normals = pipe64(video, window_size=window_size, overlap=overlap, num_inference_steps=steps).normals
    assert normals.shape == (num_frames, height, width, 3)
    assert angles_deg(normals, expected).max() < 0.01


def test_fp32_stays_close_to_reference(pipe):
    video = random_video(20, 40, 50)
    expected = reference_normals(pipe, video)
    assert np.median(angles_deg(pipe(video).normals, expected)) < 0.05


# ------------------------------------------------------------------------------------------------------------------
# Streaming
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [1, 5, 14, 15, 27])
def test_stream_equals_call_and_returns_unit_normals(pipe, num_frames):
    video = random_video(num_frames, 37, 45, seed=num_frames)
    called = pipe(video).normals
    chunks = list(pipe.stream(iter(list(video))))
    streamed = np.concatenate(chunks)
    assert called.shape == streamed.shape == (num_frames, 37, 45, 3)
    assert called.dtype == np.float32
    np.testing.assert_array_equal(streamed, called)
    assert np.isfinite(called).all()
    np.testing.assert_allclose(np.linalg.norm(called, axis=-1), 1.0, atol=1e-5)
    # chunks are decode chunks counted from frame 0
    assert [c.shape[0] for c in chunks[:-1]] == [7] * (len(chunks) - 1)


def test_stream_is_lazy_and_yields_before_the_video_ends(pipe):
    num_frames = 60
    consumed = []

    def frames():
        for i, frame in enumerate(random_video(num_frames, 32, 32)):
            consumed.append(i)
            yield frame

    stream = pipe.stream(frames(), window_size=8, overlap=2, decode_chunk_size=4)
    first = next(stream)
    assert first.shape == (4, 32, 32, 3)
    assert len(consumed) < 20  # only a window or two has been read
    rest = list(stream)
    assert sum(c.shape[0] for c in rest) + 4 == num_frames


class AnnouncedLength:
    """An iterable whose `len` says one thing and whose iteration yields another (a damaged mp4's reader)."""

    def __init__(self, frames, announced):
        self.frames, self.announced, self.frames_read = frames, announced, 0

    def __len__(self):
        return self.announced

    def __iter__(self):  # lazy, like a video reader: a frame counts when it is decoded
        for frame in self.frames:
            self.frames_read += 1
            yield frame


@pytest.mark.parametrize("num_frames,announced", [(19, 20), (16, 12), (9, 9)])
def test_frames_are_counted_as_read_not_as_announced(pipe, num_frames, announced, caplog):
    video = random_video(num_frames, 32, 32, seed=4)
    lying = AnnouncedLength(list(video), announced)
    normals = pipe(lying).normals
    assert lying.frames_read == num_frames  # read once: no separate pass to check or count frames
    assert normals.shape == (num_frames, 32, 32, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)  # no uninitialised frame
    np.testing.assert_array_equal(normals, pipe(video).normals)
    assert ("announced" in caplog.text) == (num_frames != announced)


def test_generator_input_equals_list_input(pipe):
    video = random_video(9, 32, 40, seed=5)
    np.testing.assert_array_equal(pipe(frame for frame in video).normals, pipe(list(video)).normals)
    assert pipe(frame for frame in video).normals.shape == (9, 32, 40, 3)


def test_one_model_pass_per_frame_and_per_window(pipe):
    num_frames, window_size, overlap, steps = 23, 6, 2, 2
    counter = CallCounter(clip=pipe.image_encoder, encoder=pipe.vae.encoder, unet=pipe.unet, decoder=pipe.vae.decoder)
    try:
        pipe(random_video(num_frames, 32, 32), window_size=window_size, overlap=overlap, num_inference_steps=steps)
    finally:
        counter.remove()
    assert counter.frames["clip"] == num_frames
    assert counter.frames["encoder"] == num_frames
    assert counter.frames["decoder"] == num_frames
    assert counter.calls["unet"] == len(plan_windows(num_frames, window_size, overlap)) * steps


# ------------------------------------------------------------------------------------------------------------------
# Inputs and outputs
# ------------------------------------------------------------------------------------------------------------------


def test_input_types_agree(pipe):
    video = random_video(4, 30, 41)
    expected = pipe(video).normals
    as_pil = [PIL.Image.fromarray(f) for f in video]
    as_float = video.astype(np.float32) / 255.0
    as_tensor = torch.from_numpy(as_float).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(pipe(as_pil).normals, expected)
    np.testing.assert_allclose(pipe(as_float).normals, expected, atol=1e-6)
    np.testing.assert_allclose(pipe(as_tensor).normals, expected, atol=1e-6)
    np.testing.assert_array_equal(pipe(list(video)).normals, expected)


def test_grayscale_and_rgba_are_converted(pipe):
    gray = random_video(3, 32, 32)[..., 0]
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    expected = pipe(rgb).normals
    np.testing.assert_array_equal(pipe(list(gray)).normals, expected)
    np.testing.assert_array_equal(pipe([PIL.Image.fromarray(g, mode="L") for g in gray]).normals, expected)
    rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=-1)
    np.testing.assert_array_equal(pipe(rgba).normals, expected)


def test_output_types_and_tuple(pipe):
    video = random_video(9, 40, 50)
    as_np = pipe(video).normals
    as_pt = pipe(video, output_type="pt").normals
    assert isinstance(as_pt, torch.Tensor) and as_pt.shape == (9, 3, 40, 50)
    np.testing.assert_array_equal(as_pt.permute(0, 2, 3, 1).numpy(), as_np)
    latents = pipe(video, output_type="latent").normals
    assert latents.shape == (9, 4, 64 // 8, 64 // 8)  # padded to 64x64, VAE factor 8
    (as_tuple,) = pipe(video, return_dict=False)
    np.testing.assert_array_equal(as_tuple, as_np)
    np.testing.assert_allclose(pipe.decode_latents(latents[:7]).shape, (7, 3, 64, 64))


def test_pil_output_is_the_marigold_visualisation(pipe):
    from diffusers.pipelines.marigold.marigold_image_processing import MarigoldImageProcessor

    video = random_video(9, 40, 50)
    normals = pipe(video).normals
    images = pipe(video, output_type="pil").normals
    assert isinstance(images, list) and len(images) == 9
    assert all(isinstance(im, PIL.Image.Image) and im.mode == "RGB" and im.size == (50, 40) for im in images)
    expected = MarigoldImageProcessor.visualize_normals(normals)
    for image, reference in zip(images, expected):
        np.testing.assert_array_equal(np.asarray(image), np.asarray(reference))
    chunks = list(pipe.stream(iter(list(video)), output_type="pil"))  # lists of images, one per decode chunk
    assert [len(chunk) for chunk in chunks] == [7, 2]
    assert all(isinstance(image, PIL.Image.Image) for chunk in chunks for image in chunk)
    np.testing.assert_array_equal(np.asarray(chunks[1][1]), np.asarray(images[8]))


def test_processing_resolution_none_or_zero_keeps_the_exact_numbers(pipe):
    video = random_video(9, 40, 50)
    reference = pipe(video).normals
    for value in (None, 0):
        np.testing.assert_array_equal(pipe(video, processing_resolution=value).normals, reference)
    # A longest side already equal to `processing_resolution`: nothing is resized either.
    np.testing.assert_array_equal(pipe(video, processing_resolution=50).normals, reference)


@pytest.mark.parametrize(
    "resolution,method_in,method_out",
    [(32, "bilinear", "bilinear"), (32, "bicubic", "nearest"), (96, "area", "bicubic"), (24, "nearest", "area")],
)
def test_processing_resolution_resizes_in_and_out(pipe, resolution, method_in, method_out):
    """The same numbers as resizing the frames by hand (as Marigold does: longest side scaled, sides rounded
    down, anti-aliased bilinear/bicubic), running at that size, and resizing the normals back."""
    video = random_video(9, 40, 50)
    model_size = (40 * resolution // 50, resolution)
    pixels = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255.0
    antialias = method_in in ("bilinear", "bicubic")
    resized = torch.nn.functional.interpolate(pixels, model_size, mode=method_in, antialias=antialias).clamp(0, 1)
    at_model_size = pipe(resized.permute(0, 2, 3, 1).numpy()).normals

    small = pipe(
        video, processing_resolution=resolution, match_input_resolution=False, resample_method_input=method_in
    )
    assert small.normals.shape == (9, *model_size, 3)
    np.testing.assert_allclose(small.normals, at_model_size, atol=1e-6, rtol=0)

    kwargs = {"resample_method_input": method_in, "resample_method_output": method_out}
    normals = pipe(video, processing_resolution=resolution, **kwargs).normals
    assert normals.shape == (9, 40, 50, 3) and normals.dtype == np.float32
    back = torch.nn.functional.interpolate(
        torch.from_numpy(at_model_size).permute(0, 3, 1, 2), (40, 50), mode=method_out
    )
    back = back / back.norm(dim=1, keepdim=True).clamp_min(1e-6)
    np.testing.assert_allclose(normals, back.permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    # The streaming path applies the same options.
    streamed = np.concatenate(list(pipe.stream(iter(list(video)), processing_resolution=resolution, **kwargs)))
    np.testing.assert_array_equal(streamed, normals)
    images = pipe(video, output_type="pil", processing_resolution=resolution, match_input_resolution=False).normals
    assert images[0].size == (model_size[1], model_size[0])


def test_frame_0_feels_later_frames_through_the_temporal_layers(pipe):
    video = random_video(6, 32, 32)
    base = pipe(video).normals
    changed = video.copy()
    changed[5] = 255 - changed[5]
    other = pipe(changed).normals
    assert angles_deg(base[0], other[0]).mean() > 1e-3


def test_each_frame_is_conditioned_on_its_own_clip_embedding(pipe, monkeypatch):
    """Change only frame 3's CLIP embedding (its pixels and VAE latents stay): frame 3's normals must change. With one
    embedding per video (the stock UNet's behaviour, simulated below) the same change has no effect at all."""
    video = random_video(6, 32, 32, seed=8)
    base = pipe(video).normals
    encode = pipe.encode_image_embeddings

    def frame_3_embedding_changed(pixels):
        embeddings = encode(pixels).clone()  # [6, 1, D]: the 6 frames are encoded in one chunk
        embeddings[3] = -embeddings[3]
        return embeddings

    monkeypatch.setattr(pipe, "encode_image_embeddings", frame_3_embedding_changed)
    changed = pipe(video).normals
    assert angles_deg(base[3], changed[3]).mean() > 0.05
    np.testing.assert_allclose(np.linalg.norm(changed, axis=-1), 1.0, atol=1e-5)

    # Control: a UNet that keeps only the first frame's embedding cannot see the change.
    unet_forward = pipe.unet.forward

    def first_embedding_only(sample, timestep, encoder_hidden_states, **kwargs):
        return unet_forward(sample, timestep, encoder_hidden_states[: sample.shape[0]], **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", first_embedding_only)
    with_first_only = pipe(video).normals  # frame 3's changed embedding still in place
    monkeypatch.setattr(pipe, "encode_image_embeddings", encode)
    np.testing.assert_array_equal(pipe(video).normals, with_first_only)


# ------------------------------------------------------------------------------------------------------------------
# Checks: every bad input raises before any model runs
# ------------------------------------------------------------------------------------------------------------------

GOOD = random_video(3, 32, 32)


@pytest.mark.parametrize(
    "video,kwargs,match",
    [
        ([], {}, "zero frames"),
        (np.zeros((0, 32, 32, 3), np.uint8), {}, "zero frames"),
        (None, {}, "None"),
        ([GOOD[0], GOOD[1][:16]], {}, r"frame 1 is 32x16 \(width x height\) but frame 0 is 32x32"),
        (np.zeros((2, 32, 32, 2), np.uint8), {}, "shape"),
        (np.full((2, 32, 32, 3), 1.5, np.float32), {}, r"\[0, 1\]"),
        (np.full((2, 32, 32, 3), -0.1, np.float32), {}, r"\[0, 1\]"),
        (np.full((2, 32, 32, 3), np.nan, np.float32), {}, r"\[0, 1\]"),
        (np.zeros((2, 32, 32, 3), np.int32), {}, "dtype"),
        (np.zeros((32, 32, 3), np.uint8), {}, "3-D"),
        ("clip.mp4", {}, "read_video"),
        (["not a frame"], {}, "str"),
        (GOOD, {"window_size": 0}, "`window_size`"),
        (GOOD, {"window_size": 4.0}, "`window_size`"),
        (GOOD, {"overlap": -1}, "`overlap`"),
        (GOOD, {"overlap": 14}, "`overlap`"),
        (GOOD, {"window_size": 4, "overlap": 5}, "`overlap`"),
        (GOOD, {"num_inference_steps": 0}, "`num_inference_steps`"),
        (GOOD, {"decode_chunk_size": 0}, "`decode_chunk_size`"),
        (GOOD, {"encode_chunk_size": 0}, "`encode_chunk_size`"),
        (torch.zeros(2, 32, 40, 3), {}, r"shape \(32, 40, 3\); tensors are channel-first .*permute\(0, 3, 1, 2\)"),
        (GOOD, {"output_type": "image"}, "`output_type`"),
        (GOOD, {"processing_resolution": -1}, "`processing_resolution`.*got -1"),
        (GOOD, {"processing_resolution": 32.0}, "`processing_resolution`.*got 32.0"),
        (GOOD, {"match_input_resolution": "yes"}, "`match_input_resolution`.*got 'yes'"),
        (GOOD, {"resample_method_input": "lanczos"}, "`resample_method_input`.*got 'lanczos'"),
        (GOOD, {"resample_method_output": "cubic"}, "`resample_method_output`.*got 'cubic'"),
        (random_video(1, 2, 200), {"processing_resolution": 64}, "`processing_resolution`=64 turns a 200x2"),
    ],
)
def test_bad_input_raises_before_any_model_runs(pipe, video, kwargs, match):
    counter = CallCounter(clip=pipe.image_encoder, vae=pipe.vae.encoder, unet=pipe.unet)
    try:
        with pytest.raises(ValueError, match=match):
            pipe(video, **kwargs)
    finally:
        counter.remove()
    assert sum(counter.calls.values()) == 0


def test_stream_checks_arguments_before_reading(pipe):
    read = []

    def frames():
        read.append(1)
        yield GOOD[0]

    with pytest.raises(ValueError, match="`overlap`"):
        next(pipe.stream(frames(), window_size=4, overlap=4))
    with pytest.raises(ValueError, match="`resample_method_output`"):
        next(pipe.stream(frames(), resample_method_output="lanczos"))
    with pytest.raises(ValueError, match="`processing_resolution`"):
        next(pipe.stream(frames(), processing_resolution=-5))
    assert read == []
    with pytest.raises(ValueError, match="zero frames"):
        list(pipe.stream(iter([])))
    with pytest.raises(ValueError, match="frame 2 is 16x32"):
        list(pipe.stream(iter([GOOD[0], GOOD[1], GOOD[2][:, :16]])))


# ------------------------------------------------------------------------------------------------------------------
# Dtypes and offloading
# ------------------------------------------------------------------------------------------------------------------


def test_bfloat16_runs_and_returns_float32_unit_normals(pipe):
    video = random_video(9, 40, 50)
    reference = pipe(video).normals
    bf16 = tiny_pipeline(seed=0).to(dtype=torch.bfloat16)
    bf16.set_progress_bar_config(disable=True)
    normals = bf16(video).normals
    assert normals.dtype == np.float32 and normals.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    assert np.median(angles_deg(normals, reference)) < 10.0  # close to fp32 (random tiny weights, bf16 rounding)


def test_model_cpu_offload_gives_the_same_numbers(pipe):
    video = random_video(9, 40, 50)
    offloaded = tiny_pipeline(seed=0)
    offloaded.set_progress_bar_config(disable=True)
    offloaded.enable_model_cpu_offload(device="cpu")
    np.testing.assert_array_equal(offloaded(video).normals, pipe(video).normals)


def test_sequential_offload_hooks_give_the_same_numbers(pipe):
    """Sequential offloading puts every weight on the meta device between uses. `enable_sequential_cpu_offload`
    itself needs an accelerator (with `device="cpu"` accelerate turns parameters into plain tensors at "cpu:0"),
    so the same accelerate hooks are installed here per component with the CPU as execution device."""
    video = random_video(9, 40, 50)
    offloaded = tiny_pipeline(seed=0)
    offloaded.set_progress_bar_config(disable=True)
    for name in ("unet", "vae", "image_encoder"):
        cpu_offload(getattr(offloaded, name), execution_device=torch.device("cpu"))
    assert next(offloaded.unet.parameters()).device.type == "meta"
    np.testing.assert_array_equal(offloaded(video).normals, pipe(video).normals)


# ------------------------------------------------------------------------------------------------------------------
# Compilation (opt-in)
# ------------------------------------------------------------------------------------------------------------------


def test_compile_refuses_bad_arguments_before_compiling_anything():
    fresh = tiny_pipeline(seed=0)
    with pytest.raises(ValueError, match=r"must name some of \['image_encoder', 'unet', 'vae'\], got \['text'\]"):
        fresh.compile("text")
    with pytest.raises(ValueError, match="must name some of"):
        fresh.compile([])
    with pytest.raises(ValueError, match="`mode` or `options`, not both"):
        fresh.compile(mode="max-autotune")
    cpu_offload(fresh.unet, execution_device=torch.device("cpu"))
    with pytest.raises(ValueError, match="unet is offloaded"):
        fresh.compile(["vae", "unet"])
    compiled = [fresh.unet, fresh.vae.encoder, fresh.vae.decoder, fresh.image_encoder]
    assert all(module._compiled_call_impl is None for module in compiled)


def test_compile_on_the_cpu_without_a_cpp_compiler_says_what_to_install(monkeypatch):
    from torch._inductor import cpp_builder

    def no_compiler(search):
        raise RuntimeError(f"Failed to find a working C++ compiler. Tried: {search}")

    monkeypatch.setattr(cpp_builder, "cpp_compiler_search", no_compiler)
    fresh = tiny_pipeline(seed=0)
    with pytest.raises(RuntimeError, match=r"needs a C\+\+ compiler.*Install one \(g\+\+ or clang\+\+"):
        fresh.compile()
    assert fresh.unet._compiled_call_impl is None
    fresh.compile(backend="eager", freezing=False)  # other backends need no compiler
    assert fresh.unet._compiled_call_impl is not None


@pytest.mark.slow
def test_compiled_unet_gives_the_eager_numbers_and_compiles_once_per_shape(pipe):
    from torch._dynamo.utils import counters

    video = random_video(15, 40, 50)  # two windows of 14 frames: one shape
    compiled = tiny_pipeline(seed=0)
    compiled.set_progress_bar_config(disable=True)
    compiled.compile()  # the UNet, inductor with weight freezing
    assert compiled.vae.decoder._compiled_call_impl is None and compiled.image_encoder._compiled_call_impl is None
    graphs = counters["stats"]["unique_graphs"]
    first = compiled(video).normals
    assert counters["stats"]["unique_graphs"] > graphs  # it did compile
    graphs = counters["stats"]["unique_graphs"]
    second = compiled(video[::-1].copy()).normals  # same shapes, other frames: no recompilation
    assert counters["stats"]["unique_graphs"] == graphs
    np.testing.assert_allclose(np.linalg.norm(first, axis=-1), 1.0, atol=1e-5)
    assert np.median(angles_deg(first, pipe(video).normals)) < 0.05
    assert np.median(angles_deg(second, pipe(video[::-1].copy()).normals)) < 0.05


@pytest.mark.parametrize(
    "dtype,channels_last", [(torch.float64, False), (torch.float32, False), (torch.bfloat16, True)]
)
def test_vae_encoder_input_layout_follows_the_dtype_and_keeps_the_latents(dtype, channels_last):
    """bf16 runs the encoder in NHWC (faster on CPUs); fp32 and fp64 in NCHW, whose CPU group norms are exact. The
    latents are those of a plain call."""
    pipe = tiny_pipeline(seed=0).to(dtype=dtype)
    pixels = torch.rand(3, 3, 64, 64, dtype=torch.float64)
    seen = []
    handle = pipe.vae.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        latents = pipe.encode_video_latents(pixels)
    finally:
        handle.remove()
    assert seen[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    expected = pipe.vae.encode((pixels.contiguous() * 2.0 - 1.0).to(dtype)).latent_dist.mode()
    if channels_last:  # NHWC against NCHW kernels: bf16 rounding apart
        torch.testing.assert_close(latents, expected, rtol=0.02, atol=0.02)
    else:
        torch.testing.assert_close(latents, expected, rtol=0.0, atol=0.0)

