"""Peak memory and speed of `NormalCrafterPipeline.stream` against video length.

Each configuration runs in a fresh subprocess (so peak RSS is its own) on a synthetic video generated frame by
frame, with tiny random components: the point is how memory scales with length, not the model's cost. `stream`
should stay flat; `__call__` on a list (what the reference code does: every frame, latent and output in memory)
grows linearly. Model passes are counted too: one CLIP and one VAE encode per frame, one UNet pass per window per
step, one decode per frame.

    python benchmarks/bench_stream_memory.py                      # 60 / 240 / 600 frames at 288x512
    python benchmarks/bench_stream_memory.py --frames 60 600 --mode stream
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(mode: str, num_frames: int, height: int, width: int, window_size: int, overlap: int) -> dict:
    import numpy as np
    import torch

    from normalcrafter_pipeline.normalcrafter_windows import plan_windows
    from normalcrafter_pipeline.testing_utils import tiny_pipeline

    torch.set_num_threads(2)
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    counts = {"clip": 0, "vae_encode": 0, "unet": 0, "vae_decode": 0}

    def count(name, per_frame=True):
        def hook(module, args):
            sample = args[0]
            counts[name] += (sample.shape[0] * (sample.shape[1] if sample.ndim == 5 else 1)) if per_frame else 1

        return hook

    pipe.image_encoder.register_forward_pre_hook(count("clip"))
    pipe.vae.encoder.register_forward_pre_hook(count("vae_encode"))
    pipe.unet.register_forward_pre_hook(count("unet", per_frame=False))
    pipe.vae.decoder.register_forward_pre_hook(count("vae_decode"))

    def frames():
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for i in range(num_frames):
            yield np.roll(base, 3 * i, axis=1)  # a panning "camera"

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    checksum = 0.0
    if mode == "stream":
        for chunk in pipe.stream(frames(), window_size=window_size, overlap=overlap):
            checksum += float(chunk[:, ::16, ::16].sum())
    else:
        normals = pipe(list(frames()), window_size=window_size, overlap=overlap).normals
        checksum = float(normals[:, ::16, ::16].sum())
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "frames": num_frames,
        "seconds_per_frame": seconds / num_frames,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": baseline,
        "unet_calls_expected": len(plan_windows(num_frames, window_size, overlap)),
        "checksum": checksum,
        **counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 240, 600])
    parser.add_argument("--height", type=int, default=288)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--window-size", type=int, default=14)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--mode", choices=["stream", "call", "both"], default="both")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        mode, num_frames = args.child.split(":")
        result = child(mode, int(num_frames), args.height, args.width, args.window_size, args.overlap)
        print(json.dumps(result))
        return

    modes = ["stream", "call"] if args.mode == "both" else [args.mode]
    rows = []
    for mode in modes:
        for num_frames in args.frames:
            command = [
                sys.executable,
                __file__,
                "--child",
                f"{mode}:{num_frames}",
                "--height",
                str(args.height),
                "--width",
                str(args.width),
                "--window-size",
                str(args.window_size),
                "--overlap",
                str(args.overlap),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(f"  done {mode} {num_frames}", file=sys.stderr)

    print(
        f"\nNormalCrafterPipeline, tiny components, {args.height}x{args.width}, window {args.window_size}, "
        f"overlap {args.overlap}\n"
    )
    header = (
        "| mode | frames | s/frame | peak RSS (MB) | RSS after load (MB) | CLIP frames | VAE-encode frames "
        "| UNet calls (expected) | decoded frames |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['frames']} | {r['seconds_per_frame']:.4f} | {r['peak_rss_mb']:.0f} | "
            f"{r['rss_after_load_mb']:.0f} | {r['clip']} | {r['vae_encode']} | {r['unet']} "
            f"({r['unet_calls_expected']}) | {r['vae_decode']} |"
        )
    for mode in modes:
        peaks = [r["peak_rss_mb"] for r in rows if r["mode"] == mode]
        if len(peaks) > 1:
            print(f"\n{mode}: peak RSS, longest vs shortest video: {100 * (peaks[-1] / peaks[0] - 1):+.1f} %")


if __name__ == "__main__":
    main()
