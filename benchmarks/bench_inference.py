"""Speed and memory of the CLI path (`normalcrafter_pipeline.cli`, the `normalcrafter` command): video file in,
normals files out.

Two tables, each configuration in a fresh subprocess (so its peak RSS is its own):

1. default: per-frame time and peak RSS against video length (60 / 240 / 600 frames at 288x512) with tiny random
   components. The model is cheap here, so the table shows how the streaming path scales: peak RSS should stay
   flat (within 10 %) however long the video is. (The tiny VAE still costs about 1 s per frame at 288x512 on a
   2-core CPU; choose `--frames` to fit your time.)
2. `--full-arch`: the real SVD-xt architecture at random weights (UNet 1.5B parameters, the SVD temporal VAE, a
   ViT-H/14-size CLIP vision tower; about 9 GB of RAM in fp32), on the CPU at 128x256, fp32 against bf16:
   seconds per frame and the share of the wall time spent in CLIP, VAE encode, UNet, VAE decode and I/O.

The I/O columns: `read wait` is time the model waited for decoded frames (the reader runs in a background
thread), `write` is the writer thread's busy time (it overlaps compute), `write wait` is time the model waited for
the writer. Small waits mean I/O is off the critical path. `sys` is the share of the process's CPU time spent in the
kernel, almost all of it first-touch page faults (`faults/frame`, minor faults).

CPU runs and the allocator: glibc's malloc returns every freed block above 32 MB (and trims freed heap) to the
kernel, so each new activation tensor is zero-filled page by page by the kernel again; at these sizes that costs
about as much as the arithmetic. `--malloc` runs the children with other settings (`GLIBC_TUNABLES`, which users
can set themselves: `GLIBC_TUNABLES=... python examples/infer_video.py ...`):

- `thp`: `glibc.malloc.hugetlb=1`, freed blocks still go back, but new ones are backed by transparent huge
  pages, so far fewer page faults. Memory stays flat with length: the setting to use for long videos.
- `retain`: `thp` plus `mmap_threshold=1 GB` and `trim_threshold=16 GB`: freed memory stays in the process for
  reuse. Fastest, but fragmentation makes the peak grow with the video's length; for short clips.

The default measures plain glibc.

    python benchmarks/bench_inference.py                              # 60 / 240 / 600 frames, tiny components
    python benchmarks/bench_inference.py --frames 30 120 --threads 2
    python benchmarks/bench_inference.py --full-arch                  # 14 frames at 128x256, fp32 and bf16
    python benchmarks/bench_inference.py --full-arch --frames 28 --dtypes bf16
    python benchmarks/bench_inference.py --frames 60 600 --malloc default thp  # allocator settings
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STAGES = ("clip", "vae_encode", "unet", "vae_decode")
# glibc malloc settings for CPU inference (see the module docstring); needs glibc >= 2.35 for `hugetlb`.
MALLOC_TUNABLES = {
    "default": None,
    "thp": "glibc.malloc.hugetlb=1",
    "retain": ":".join(
        ["glibc.malloc.hugetlb=1", "glibc.malloc.mmap_threshold=1073741824", "glibc.malloc.trim_threshold=17179869184"]
    ),
}


def make_video(path: Path, num_frames: int, height: int, width: int, fps: float = 24.0) -> None:
    """A synthetic panning video, written frame by frame."""
    import numpy as np

    from normalcrafter_pipeline.normals_writers import VideoWriter

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8, width // 8 * 2, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with VideoWriter(path, fps=fps, preset="ultrafast") as writer:
        for i in range(num_frames):
            shift = (2 * i) % width
            writer.write_frames(np.ascontiguousarray(base[:, shift : shift + width]))


def build_full_pipeline(dtype):
    from normalcrafter_pipeline import NormalCrafterPipeline
    from normalcrafter_pipeline.testing_utils import svd_xt_components

    return NormalCrafterPipeline(**svd_xt_components(seed=0, dtype=dtype))


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def instrument(pipe) -> tuple[dict, dict]:
    """Accumulate wall time per stage (main thread) by wrapping the pipeline's public stage methods, and note how
    much each stage raised the process's peak RSS (so the table can say which stage sets the peak)."""
    times = dict.fromkeys(STAGES, 0.0)
    peak_growth = dict.fromkeys(STAGES, 0.0)

    def account(name, start, peak_before):
        times[name] += time.perf_counter() - start
        peak_growth[name] += peak_rss_mb() - peak_before

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start, peak_before = time.perf_counter(), peak_rss_mb()
            try:
                return function(*args, **kwargs)
            finally:
                account(name, start, peak_before)

        return wrapper

    pipe.encode_image_embeddings = timed("clip", pipe.encode_image_embeddings)
    pipe.encode_video_latents = timed("vae_encode", pipe.encode_video_latents)
    pipe.decode_latents = timed("vae_decode", pipe.decode_latents)
    starts = []
    pipe.unet.register_forward_pre_hook(lambda module, args: starts.append((time.perf_counter(), peak_rss_mb())))
    pipe.unet.register_forward_hook(lambda module, args, output: account("unet", *starts.pop()))
    return times, peak_growth


def child(config: dict) -> dict:
    import resource

    import torch

    torch.set_num_threads(config["threads"])
    from normalcrafter_pipeline import cli
    from normalcrafter_pipeline.dtypes import torch_dtype
    from normalcrafter_pipeline.video_io import read_video
    from normalcrafter_pipeline.video_runner import Job, output_paths, process_video

    start = time.perf_counter()
    if config["full_arch"]:
        pipe = build_full_pipeline(torch_dtype(config["dtype"]))
    else:
        from normalcrafter_pipeline.testing_utils import tiny_pipeline

        pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - start
    times, peak_growth = instrument(pipe)
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    usage_before = resource.getrusage(resource.RUSAGE_SELF)

    video = Path(config["video"])
    argv = [str(video), "--window-size", str(config["window_size"]), "--overlap", str(config["overlap"])]
    argv += ["--max-res", "0", "--decode-chunk-size", str(config["decode_chunk_size"])]
    for fmt in config["save"]:
        argv += ["--save", fmt]
    args = cli.parse_args(argv)
    reader = read_video(video, max_res=0)
    out_dir = Path(config["out_dir"])
    job = Job(video, output_paths(video, out_dir, args.save))
    with torch.inference_mode():
        stats = process_video(pipe, reader, job, cli.run_options(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    user_s, sys_s = usage.ru_utime - usage_before.ru_utime, usage.ru_stime - usage_before.ru_stime
    return {
        **config,
        "frames": stats.frames,
        "build_s": build_s,
        "seconds": stats.seconds,
        "seconds_per_frame": stats.seconds / stats.frames,
        "read_wait_s": stats.read_wait_s,
        "write_s": stats.write_s,
        "write_wait_s": stats.write_wait_s,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "sys_share": sys_s / max(user_s + sys_s, 1e-9),
        "minor_faults_per_frame": (usage.ru_minflt - usage_before.ru_minflt) / stats.frames,
        **{f"{name}_s": value for name, value in times.items()},
        **{f"{name}_peak_growth_mb": value for name, value in peak_growth.items()},
    }


def run_child(config: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(config["threads"]), "PYTHONPATH": str(REPO / "src")}
    env.pop("GLIBC_TUNABLES", None)
    if MALLOC_TUNABLES[config["malloc"]] is not None:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES[config["malloc"]]
    command = [sys.executable, __file__, "--child", json.dumps(config)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(header: list[tuple[str, int]], lines: list[list[str]]) -> None:
    """A Markdown table; `header` holds (title, width) pairs, cells are right-aligned."""
    print("| " + " | ".join(f"{title:>{width}}" for title, width in header) + " |")
    print("|" + "|".join("-" * (width + 1) + ":" for _, width in header) + "|")
    for cells in lines:
        print("| " + " | ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, header)) + " |")


def print_length_table(rows: list[dict]) -> None:
    first = rows[0]
    print(
        f"\nCLI path, tiny components, {first['height']}x{first['width']}, window {first['window_size']}/"
        f"{first['overlap']}, save {'+'.join(first['save'])}, {first['threads']} torch threads"
    )
    header = [("malloc", 9), ("frames", 6), ("s/frame", 7), ("peak RSS MB", 11), ("RSS after load MB", 17)]
    header += [("sys", 5), ("faults/frame", 12), ("read wait s", 11), ("write s", 7), ("write wait s", 12)]
    lines = [
        [
            row["malloc"],
            str(row["frames"]),
            f"{row['seconds_per_frame']:.3f}",
            f"{row['peak_rss_mb']:.0f}",
            f"{row['rss_after_load_mb']:.0f}",
            f"{row['sys_share'] * 100:.0f}%",
            f"{row['minor_faults_per_frame']:.0f}",
            f"{row['read_wait_s']:.2f}",
            f"{row['write_s']:.2f}",
            f"{row['write_wait_s']:.2f}",
        ]
        for row in rows
    ]
    print_table(header, lines)
    for malloc in dict.fromkeys(row["malloc"] for row in rows):
        peaks = [row["peak_rss_mb"] for row in rows if row["malloc"] == malloc]
        if len(peaks) > 1:
            spread = (max(peaks) - min(peaks)) / min(peaks) * 100
            print(f"peak RSS spread over lengths, malloc {malloc}: {spread:.1f} % (target: within 10 %)")


def print_breakdown_table(rows: list[dict]) -> None:
    first = rows[0]
    print(
        f"\nFull SVD-xt architecture, random weights, CPU ({first['threads']} threads), {first['height']}x"
        f"{first['width']}, {first['frames']} frames, window {first['window_size']}/{first['overlap']}; share of "
        "the wall time per stage"
    )
    header = [("dtype", 5), ("malloc", 9), ("s/frame", 7), ("RSS built GB", 12), ("peak RSS GB", 11)]
    header += [("peak grew most in", 17), ("sys", 4), ("CLIP", 6), ("VAE enc", 7), ("UNet", 6), ("VAE dec", 7)]
    header += [("I/O wait", 8), ("other", 6), ("writer busy s", 13)]
    lines = []
    for row in rows:
        total = row["seconds"]
        shares = [row[f"{name}_s"] / total for name in STAGES] + [(row["read_wait_s"] + row["write_wait_s"]) / total]
        lines.append(
            [
                row["dtype"],
                row["malloc"],
                f"{row['seconds_per_frame']:.2f}",
                f"{row['rss_after_load_mb'] / 1024:.1f}",
                f"{row['peak_rss_mb'] / 1024:.1f}",
                max(STAGES, key=lambda name: row[f"{name}_peak_growth_mb"]),
                f"{row['sys_share'] * 100:.0f}%",
                *(f"{share * 100:.1f}%" for share in shares),
                f"{(1 - sum(shares)) * 100:.1f}%",
                f"{row['write_s']:.2f}",
            ]
        )
    print_table(header, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--full-arch", action="store_true", help="the SVD-xt architecture at random weights.")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="video lengths (default 60 240 600).")
    parser.add_argument("--height", type=int, default=None, help="default 288 (tiny) or 128 (full-arch).")
    parser.add_argument("--width", type=int, default=None, help="default 512 (tiny) or 256 (full-arch).")
    parser.add_argument("--window-size", type=int, default=14)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--decode-chunk-size", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2).")
    parser.add_argument("--save", action="append", default=None, choices=["mp4", "png16", "npy", "side_by_side"])
    parser.add_argument(
        "--malloc",
        nargs="+",
        default=["default"],
        choices=list(MALLOC_TUNABLES),
        help="malloc settings of the runs: default, thp, retain (see above), or several (default: default).",
    )
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return

    full = args.full_arch
    frames_list = args.frames or ([14] if full else [60, 240, 600])
    height = args.height or (128 if full else 288)
    width = args.width or (256 if full else 512)
    save = args.save or ["mp4"]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        videos = {}
        for num_frames in frames_list:
            videos[num_frames] = Path(workdir) / f"bench_{num_frames}.mp4"
            make_video(videos[num_frames], num_frames, height, width)
        for malloc in args.malloc:
            for num_frames, video in videos.items():
                for dtype in args.dtypes if full else ["fp32"]:
                    out_dir = Path(workdir) / f"out_{num_frames}_{dtype}_{malloc}"
                    out_dir.mkdir()
                    config = {
                        "full_arch": full,
                        "dtype": dtype,
                        "malloc": malloc,
                        "video": str(video),
                        "out_dir": str(out_dir),
                        "height": height,
                        "width": width,
                        "window_size": args.window_size,
                        "overlap": args.overlap,
                        "decode_chunk_size": args.decode_chunk_size,
                        "threads": args.threads,
                        "save": save,
                    }
                    row = run_child(config)
                    rows.append(row)
                    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                    print(json.dumps(rounded), flush=True)
    if full:
        print_breakdown_table(rows)
    else:
        print_length_table(rows)


if __name__ == "__main__":
    main()
