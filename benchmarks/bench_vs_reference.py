"""Our pipeline against the reference inference, side by side: same components, same weights, same process.

The reference is the all-at-once transcription in `tests/reference_impl.py` (docs/design.md section 4), imported
from there, the oracle the exactness tests hold the pipeline to, on the benchmark's `--device`: it computes what the
reference computes, in the same order, on the very modules our pipeline uses. Each repeat runs every variant once,
alternating the order from one repeat to the next, so drift of the machine (another job, thermal state) hits all of
them alike; the table keeps each variant's best repeat and the ratio is the reference's time over the variant's.

Variants (`--variants`): `reference`; `ours` (the defaults); `ours-compile` (`pipe.compile()`: the UNet through
inductor with weight freezing; it compiles in an untimed first run, whose time is printed); `ours-enc14`
(`encode_chunk_size=14`, CLIP and the VAE encoder see a whole window at once); `ours-cl` (channels_last memory
format for the UNet and VAE convolutions). Every variant's normals are compared with the reference's and with
`ours`'s (maximum angle over all pixels, degrees).

Columns: `s/frame`; `load peak` (peak RSS while the components were built, GB) and `run peak` (peak RSS of the run,
measured after resetting the kernel's high-water mark, so it is the run's own; on CUDA the peak allocated device
memory); per stage (CLIP, VAE encode, UNet, VAE decode) the seconds per frame and the achieved TFLOP/s with its
share of the matmul peak of the stage's dtype, measured in this process with a large matmul. FLOPs are counted by
`torch.utils.flop_counter` on one uncounted warm-up run of `ours` (matmuls, convolutions and attention; the
reference runs the same model passes on the same frames, so the counts apply to both).

    python benchmarks/bench_vs_reference.py --tiny                                      # smoke, seconds
    python benchmarks/bench_vs_reference.py --full-arch --frames 24 --dtypes fp32 bf16  # 15-20 min, 2-core CPU
    python benchmarks/bench_vs_reference.py --full-arch --device cuda --height 576 --width 1024 --dtypes fp16
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from normalcrafter_pipeline.dtypes import torch_dtype

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_impl import reference_normals  # noqa: E402  (the test suite's oracle, not a copy)

STAGES = ("clip", "vae_encode", "unet", "vae_decode")
VARIANTS = ("reference", "ours", "ours-compile", "ours-enc14", "ours-cl", "ours-nchw-encode")


# ----------------------------------------------------------------------------------------------------------------
# Measurement helpers
# ----------------------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Reset the peak the next `read_peak_gb` reports: the kernel's RSS high-water mark (Linux: writing 5 to
    clear_refs), or the CUDA allocator's peak."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def read_peak_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    # Without /proc the process-lifetime peak is all there is (it then includes loading).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_peak_tflops(dtype: torch.dtype, device: str, size: int, repeats: int = 3) -> float:
    """Best achieved TFLOP/s of a `size`x`size` matmul: the machine's practical GEMM ceiling for `dtype`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (thread pool, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


class StageMeter:
    """Wall time (and, while `counter` is set, FLOPs) per stage, taken at the models themselves so that our pipeline
    and the reference are measured at the same boundaries: CLIP = `image_encoder` forward, VAE encode =
    `vae.encode`, UNet = `unet` forward, VAE decode = `vae.decode`."""

    def __init__(self, pipe, device: str):
        self.device = device
        self.times = dict.fromkeys(STAGES, 0.0)
        self.flops = dict.fromkeys(STAGES, 0)
        self.counter = None
        self._wrap(pipe.image_encoder, "forward", "clip")
        self._wrap(pipe.vae, "encode", "vae_encode")
        self._wrap(pipe.unet, "forward", "unet")
        self._wrap(pipe.vae, "decode", "vae_decode")

    def _wrap(self, module, method: str, stage: str) -> None:
        function = getattr(module, method)

        def timed(*args, **kwargs):
            flops_before = self.counter.get_total_flops() if self.counter is not None else 0
            synchronize(self.device)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                synchronize(self.device)
                self.times[stage] += time.perf_counter() - start
                if self.counter is not None:
                    self.flops[stage] += self.counter.get_total_flops() - flops_before

        # An instance attribute: `module(...)` and the pipelines call it. Under a compiled module (`ours-compile`)
        # dynamo skips this frame (the timers run eagerly) and compiles the model's own `forward` it calls.
        setattr(module, method, torch.compiler.disable(timed, recursive=False))

    def reset(self) -> None:
        self.times = dict.fromkeys(STAGES, 0.0)


def count_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the CUDA attention kernels but not the CPU one; count it with the same formula."""
    from torch.utils import flop_counter

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is None or cpu_sdpa in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(cpu_sdpa)
    def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def angles_deg(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The maximum and median angle between two normal maps, over all pixels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return float(angles.max()), float(np.median(angles))


def set_channels_last(pipe, enabled: bool) -> None:
    """channels_last weights for the 2-D convolutions of the UNet and VAE (`Module.to(memory_format=...)` refuses
    the VAE decoder's 3-D temporal convolutions); convolutions then pick NHWC kernels and hand NHWC activations on."""
    layout = torch.channels_last if enabled else torch.contiguous_format
    for model in (pipe.unet, pipe.vae):
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=layout)


# ----------------------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------------------


def build_pipeline(full_arch: bool, dtype: torch.dtype, device: str):
    from normalcrafter_pipeline import NormalCrafterPipeline
    from normalcrafter_pipeline.testing_utils import svd_xt_components, tiny_components

    if full_arch:
        components = svd_xt_components(seed=0, dtype=dtype)
    else:
        components = tiny_components(seed=0)
        for name in ("unet", "vae", "image_encoder"):
            components[name] = components[name].to(dtype)
    pipe = NormalCrafterPipeline(**components).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compile_pipeline(pipe, video: np.ndarray, args) -> float:
    """`pipe.compile()` (the UNet, inductor with weight freezing), then one run of `ours-compile`, in which it
    compiles; returns that run's seconds. Outside `ours-compile` runs the compiled calls are switched off."""
    pipe.compile()
    args.compiled_calls = {}
    for module in (pipe.unet, pipe.image_encoder, pipe.vae.encoder, pipe.vae.decoder):
        if module._compiled_call_impl is not None:
            args.compiled_calls[module], module._compiled_call_impl = module._compiled_call_impl, None
    start = time.perf_counter()
    with torch.inference_mode():
        run_variant(pipe, "ours-compile", video, args)
    return time.perf_counter() - start


def run_variant(pipe, variant: str, video: np.ndarray, args) -> np.ndarray:
    common = dict(window_size=args.window_size, overlap=args.overlap, num_inference_steps=1)
    if variant == "reference":
        return reference_normals(pipe, video, chunk=args.decode_chunk_size, device=args.device, **common)
    kwargs = dict(common, decode_chunk_size=args.decode_chunk_size, encode_chunk_size=7)
    if variant == "ours-enc14":
        kwargs["encode_chunk_size"] = 14
    if variant == "ours-compile":
        for module, call in args.compiled_calls.items():
            module._compiled_call_impl = call
        try:
            return pipe(video, **kwargs).normals
        finally:
            for module in args.compiled_calls:
                module._compiled_call_impl = None
    if variant != "ours-nchw-encode":
        return pipe(video, **kwargs).normals
    encode = pipe.vae.encode  # the stage meter's timed wrapper
    pipe.vae.encode = lambda pixels, *rest, **options: encode(pixels.contiguous(), *rest, **options)
    try:
        return pipe(video, **kwargs).normals
    finally:
        pipe.vae.encode = encode


def bench_dtype(dtype_name: str, video: np.ndarray, args) -> list[dict]:
    dtype = torch_dtype(dtype_name)
    gc.collect()
    reset_peak(args.device)
    start = time.perf_counter()
    pipe = build_pipeline(args.full_arch, dtype, args.device)
    load_s = time.perf_counter() - start
    load_peak = read_peak_gb(args.device)
    meter = StageMeter(pipe, args.device)
    num_frames = len(video)

    # One warm-up run of `ours`, not timed, with FLOPs counted per stage.
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_attention_flops()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        meter.counter = counter
        run_variant(pipe, "ours", video, args)
    meter.counter = None
    flops = dict(meter.flops)

    if "ours-compile" in args.variants:
        first_s = compile_pipeline(pipe, video, args)
        print(f"  {dtype_name} ours-compile: first run (compiles the UNet) {first_s:.1f} s", flush=True)

    rows = {variant: {"variant": variant, "dtype": dtype_name, "seconds": float("inf")} for variant in args.variants}
    outputs = {}
    for repeat in range(args.repeats):
        order = args.variants if repeat % 2 == 0 else args.variants[::-1]
        for variant in order:
            gc.collect()
            set_channels_last(pipe, variant == "ours-cl")  # converting the weights is not part of the run
            meter.reset()
            reset_peak(args.device)
            synchronize(args.device)
            start = time.perf_counter()
            with torch.inference_mode():
                normals = run_variant(pipe, variant, video, args)
            synchronize(args.device)
            seconds = time.perf_counter() - start
            row = rows[variant]
            row["run_peak_gb"] = max(row.get("run_peak_gb", 0.0), read_peak_gb(args.device))
            if seconds < row["seconds"]:
                row.update(seconds=seconds, stage_s=dict(meter.times))
            outputs[variant] = normals
            set_channels_last(pipe, False)
            print(f"  {dtype_name} repeat {repeat} {variant}: {seconds / num_frames:.3f} s/frame", flush=True)
    for variant, row in rows.items():
        row.update(load_peak_gb=load_peak, load_s=load_s, frames=num_frames, flops=flops)
        row["seconds_per_frame"] = row["seconds"] / num_frames
        for baseline in ("reference", "ours"):
            found = outputs.get(baseline)
            row[f"angle_vs_{baseline}"] = angles_deg(outputs[variant], found) if found is not None else (math.nan,) * 2
    del pipe, meter
    gc.collect()
    return list(rows.values())


def print_table(rows: list[dict], peaks: dict, args) -> None:
    header = ["dtype", "variant", "s/frame", "ref/this", "angle vs ref max/median (deg)", "vs ours max/median (deg)"]
    header += ["load peak GB", "run peak GB"]
    header += [f"{stage} s/frame (TFLOP/s, % peak)" for stage in STAGES]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    references = {row["dtype"]: row for row in rows if row["variant"] == "reference"}
    for row in rows:
        reference = references.get(row["dtype"])
        ratio = reference["seconds"] / row["seconds"] if reference is not None else math.nan
        cells = [row["dtype"], row["variant"], f"{row['seconds_per_frame']:.3f}", f"{ratio:.2f}"]
        cells += [" / ".join(f"{angle:.4f}" for angle in row[f"angle_vs_{name}"]) for name in ("reference", "ours")]
        cells += [f"{row['load_peak_gb']:.2f}", f"{row['run_peak_gb']:.2f}"]
        for stage in STAGES:
            seconds = row["stage_s"][stage]
            tflops = row["flops"][stage] / seconds / 1e12 if seconds > 0 else 0.0
            share = tflops / peaks[row["dtype"]] * 100
            cells.append(f"{seconds / row['frames']:.3f} ({tflops:.3f}, {share:.0f} %)")
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full-arch", action="store_true", help="SVD-xt sizes at random weights (~9 GB in fp32).")
    size.add_argument("--tiny", action="store_true", help="the tiny test components (a smoke run; the default).")
    parser.add_argument("--frames", type=int, default=None, help="default 24 (full-arch) or 16 (tiny).")
    parser.add_argument("--height", type=int, default=None, help="default 128 (full-arch) or 64 (tiny).")
    parser.add_argument("--width", type=int, default=None, help="default 256 (full-arch) or 64 (tiny).")
    parser.add_argument("--window-size", type=int, default=14)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--decode-chunk-size", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--variants", nargs="+", default=["reference", "ours"], choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each variant (default 2).")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--matmul-size", type=int, default=None, help="default 2048 on CPU, 8192 on CUDA.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    num_frames = args.frames or (24 if args.full_arch else 16)
    args.height = args.height or (128 if args.full_arch else 64)
    args.width = args.width or (256 if args.full_arch else 64)
    video = np.random.RandomState(0).randint(0, 256, (num_frames, args.height, args.width, 3), dtype=np.uint8)

    matmul_size = args.matmul_size or (8192 if args.device.startswith("cuda") else 2048)
    peaks = {name: matmul_peak_tflops(torch_dtype(name), args.device, matmul_size) for name in args.dtypes}
    cuda = args.device.startswith("cuda")
    machine = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{'SVD-xt architecture' if args.full_arch else 'tiny components'}, random weights, {machine}, torch "
        f"{torch.__version__}; {num_frames} frames at {args.height}x{args.width}, window {args.window_size}/"
        f"{args.overlap}, decode chunk {args.decode_chunk_size}, best of {args.repeats} alternating repeats"
    )
    measured = ", ".join(f"{name} {tflops:.3f}" for name, tflops in peaks.items())
    print(f"matmul peak (TFLOP/s, {matmul_size}x{matmul_size}): {measured}")
    rows = []
    for dtype_name in args.dtypes:
        rows += bench_dtype(dtype_name, video, args)
    print()
    print_table(rows, peaks, args)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
