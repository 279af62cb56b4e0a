"""The VAE encoder's input layout, NCHW against channels_last (NHWC): where float32 precision goes, what it does to
the pipeline's exactness, and what each layout is worth in speed, side by side in fp32 and bf16.

Parts (all three unless `--parts` says otherwise):
  groupnorm  the first GroupNorm of the tiny encoder (after `conv_in`) on white-padded and on unpadded frames, each
             layout against float64, and the channels_last kernel's statistics against a sequential float32 sum
  exactness  the whole pipeline on tiny random models (the suite's kind) over several lengths, sizes and window
             settings: fp32 and bf16, each layout, against the float64 pipeline (max and mean angle, share of pixels
             beyond 0.05 degrees); `default` marks the layout the pipeline picks for the dtype
  speed      the VAE encoder at SVD-xt size (random weights) on one chunk of 7 white-padded frames: NCHW, NHWC, and
             NHWC with every group norm run in NCHW (a layout change around each), alternating in one process, best
             of `--repeats`, in fp32 and bf16; latents against the float64 encoder (largest difference over the
             largest latent)

    python benchmarks/bench_encoder_layout.py --parts groupnorm exactness
    python benchmarks/bench_encoder_layout.py --parts speed --repeats 6 --height 128 --width 256
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from normalcrafter_pipeline import NormalCrafterPipeline
from normalcrafter_pipeline.testing_utils import SVD_XT_VAE_CONFIG, tiny_pipeline

LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
# (frames, height, width, window_size, overlap): lengths, padded sizes and window settings of the exactness guard
# (tests/test_exactness_guard.py), and the 29-frame case where the channels_last regression was first seen.
CASES = [(29, 72, 72, 14, 4), (20, 40, 50, 14, 4), (16, 100, 60, 8, 3), (9, 33, 70, 6, 2), (3, 64, 64, 14, 4)]


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def white_padded(num_frames: int, height: int, width: int, padded_height: int, padded_width: int, seed: int = 0):
    """`[N, 3, Hp, Wp]` float64 pixels in [-1, 1]: random frames padded with white as the pipeline pads them."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(num_frames, 3, height, width, generator=generator, dtype=torch.float64)
    top, left = (padded_height - height) // 2, (padded_width - width) // 2
    padding = (left, padded_width - width - left, top, padded_height - height - top)
    return F.pad(frames, padding, value=1.0) * 2.0 - 1.0


@contextlib.contextmanager
def encoder_layout(memory_format: torch.memory_format | None):
    """Force the pipeline's VAE-encoder input layout (None: the pipeline's own choice for its dtype)."""
    chosen = NormalCrafterPipeline.__dict__["_vae_encoder_memory_format"]
    if memory_format is not None:
        NormalCrafterPipeline._vae_encoder_memory_format = staticmethod(lambda dtype: memory_format)
    try:
        yield
    finally:
        NormalCrafterPipeline._vae_encoder_memory_format = chosen


def groupnorm_part() -> None:
    # One thread: with T threads the channels_last kernel splits the N * H * W positions into T runs of sums, so a
    # frame's statistics also depend on where the thread boundaries fall (on the chunk's frame count).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    vae = tiny_pipeline(seed=0).vae.double()
    norm = vae.encoder.down_blocks[0].resnets[0].norm1
    print(f"\nThe first GroupNorm of the tiny encoder ({norm}), 7 frames, input [7, 32, 128, 128], 1 thread:\n")
    print("| frames | layout | output: max diff vs fp64 (rel.) | mean (rel.) | rstd (rel.) |")
    print("|---|---|---:|---:|---:|")
    inputs = {
        "72x72 padded with white to 128x128": white_padded(7, 72, 72, 128, 128),
        "128x128 random, no padding": white_padded(7, 128, 128, 128, 128),
    }
    emulated = {}
    for name, pixels in inputs.items():
        with torch.no_grad():
            features = vae.encoder.conv_in(pixels)  # [7, 32, 128, 128] float64
        batch, channels, height, width = features.shape
        groups, eps = norm.num_groups, norm.eps
        exact = torch.native_group_norm(features, None, None, batch, channels, height * width, groups, eps)
        output64 = F.group_norm(features, groups, norm.weight, norm.bias, eps)
        for layout, memory_format in LAYOUTS.items():
            x = features.float().contiguous(memory_format=memory_format)
            output = F.group_norm(x, groups, norm.weight.float(), norm.bias.float(), eps)
            stats = torch.native_group_norm(x, None, None, batch, channels, height * width, groups, eps)
            errors = [
                ((output.double() - output64).abs().max() / output64.abs().max()).item(),
                *(((s.double() - e) / e).abs().max().item() for s, e in zip(stats[1:], exact[1:])),
            ]
            print(f"| {name} | {layout} | {errors[0]:.1e} | {errors[1]:.1e} | {errors[2]:.1e} |")
            if layout == "NHWC" and groups == channels:
                # The channels_last kernel's statistics: sum(x) and sum(x^2) over the positions, one after another,
                # in float32, then E[x^2] - E[x]^2.
                rows = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels).numpy()
                total, squares = np.zeros((batch, channels), np.float32), np.zeros((batch, channels), np.float32)
                for position in range(height * width):
                    total += rows[:, position]
                    squares += rows[:, position] * rows[:, position]
                mean = total / np.float32(height * width)
                rstd = 1.0 / np.sqrt(np.maximum(squares / np.float32(height * width) - mean * mean, 0.0) + eps)
                kernel = stats[2].view(batch, channels).double().numpy()
                emulated[name] = np.abs(rstd / kernel - 1.0).max()
    for name, difference in emulated.items():
        print(f"\n{name}: the channels_last kernel's rstd is a sequential float32 sum's within {difference:.0e}.")
    torch.set_num_threads(threads)


def exactness_part(seeds: list[int]) -> None:
    print(
        f"\nThe pipeline on tiny random models, fp32 and bf16 against float64 (NCHW), seeds {seeds} (model and video);"
        " angles over all pixels of all seeds:\n"
    )
    print("| frames, size, window / overlap | dtype | encoder input | max deg | mean deg | beyond 0.05 deg |")
    print("|---|---|---|---:|---:|---:|")
    for num_frames, height, width, window_size, overlap in CASES:
        results = {}
        for seed in seeds:
            video = np.random.RandomState(seed).randint(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
            kwargs = {"window_size": window_size, "overlap": overlap}
            exact = tiny_pipeline(seed=seed).to(dtype=torch.float64)
            exact.set_progress_bar_config(disable=True)
            with encoder_layout(torch.contiguous_format):
                expected = exact(video, **kwargs).normals
            for dtype in (torch.float32, torch.bfloat16):
                pipe = tiny_pipeline(seed=seed).to(dtype=dtype)
                pipe.set_progress_bar_config(disable=True)
                for layout, memory_format in LAYOUTS.items():
                    with encoder_layout(memory_format):
                        normals = pipe(video, **kwargs).normals
                    results.setdefault((dtype, layout), []).append(angles_deg(normals, expected).ravel())
        for (dtype, layout), angles in results.items():
            angles = np.concatenate(angles)
            chosen = LAYOUTS[layout] == NormalCrafterPipeline._vae_encoder_memory_format(dtype)
            share = 100 * (angles > 0.05).mean()
            name = f"{layout} (default)" if chosen else layout
            print(
                f"| {num_frames} frames {height}x{width}, {window_size} / {overlap} | {str(dtype)[6:]} | {name} | "
                f"{angles.max():.3f} | {angles.mean():.4f} | {share:.2f} % |",
                flush=True,
            )


def speed_part(height: int, width: int, repeats: int) -> None:
    from diffusers import AutoencoderKLTemporalDecoder

    torch.manual_seed(1)  # the seed svd_xt_components gives the VAE
    vae = AutoencoderKLTemporalDecoder(**SVD_XT_VAE_CONFIG).eval()
    del vae.decoder  # only the encoder is timed
    pixels = white_padded(7, height - height // 4, width - width // 4, height, width)
    norms = [module for module in vae.encoder.modules() if isinstance(module, torch.nn.GroupNorm)]

    def nchw_group_norms():
        def to_nchw(module, args):
            return (args[0].contiguous(),)

        def back_to_nhwc(module, args, output):
            return output.contiguous(memory_format=torch.channels_last) if output.ndim == 4 else output

        hooks = [(m.register_forward_pre_hook(to_nchw), m.register_forward_hook(back_to_nhwc)) for m in norms]
        return [handle for pair in hooks for handle in pair]

    variants = {
        "NCHW": (torch.contiguous_format, False),
        "NHWC": (torch.channels_last, False),
        "NHWC, group norms in NCHW": (torch.channels_last, True),
    }
    with torch.inference_mode():
        vae.double()
        expected = vae.encode(pixels).latent_dist.mode()
        rows = []
        for dtype in (torch.float32, torch.bfloat16):
            vae.to(dtype)
            best, latents = dict.fromkeys(variants, float("inf")), {}
            for repeat in range(repeats + 1):  # the first round warms up and is not counted
                for name in list(variants) if repeat % 2 == 0 else list(variants)[::-1]:
                    memory_format, hooked = variants[name]
                    handles = nchw_group_norms() if hooked else []
                    x = pixels.to(dtype).contiguous(memory_format=memory_format)
                    start = time.perf_counter()
                    latents[name] = vae.encode(x).latent_dist.mode()
                    seconds = time.perf_counter() - start
                    for handle in handles:
                        handle.remove()
                    if repeat:
                        best[name] = min(best[name], seconds)
            for name in variants:
                error = ((latents[name].double() - expected).abs().max() / expected.abs().max()).item()
                rows.append((str(dtype)[6:], name, best[name] / 7, best["NCHW"] / best[name], error))
            print(f"  {dtype} done", file=sys.stderr, flush=True)
    print(
        f"\nThe SVD-xt VAE encoder (random weights), 7 white-padded frames of {height}x{width}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, best of {repeats} alternating repeats:\n"
    )
    print("| dtype | encoder input | s/frame | speed vs NCHW | latents vs fp64 (rel.) |")
    print("|---|---|---:|---:|---:|")
    for dtype, name, seconds, ratio, error in rows:
        print(f"| {dtype} | {name} | {seconds:.4f} | {ratio:.2f}x | {error:.1e} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["groupnorm", "exactness", "speed"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="tiny models and videos (exactness)")
    parser.add_argument("--height", type=int, default=128, help="padded frame height (speed)")
    parser.add_argument("--width", type=int, default=256, help="padded frame width (speed)")
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds (speed)")
    args = parser.parse_args(argv)
    unknown = set(args.parts) - {"groupnorm", "exactness", "speed"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from groupnorm, exactness, speed")
    if "groupnorm" in args.parts:
        groupnorm_part()
    if "exactness" in args.parts:
        exactness_part(args.seeds)
    if "speed" in args.parts:
        speed_part(args.height, args.width, args.repeats)


if __name__ == "__main__":
    main(sys.argv[1:])
