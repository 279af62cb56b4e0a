#!/usr/bin/env python
"""Estimate temporally consistent surface normals for videos with NormalCrafter.

    python examples/infer_video.py clip.mp4                          # writes clip_normals.mp4 beside clip.mp4
    python examples/infer_video.py videos/ frames_dir/ "shots/*.mov" --output-dir out --save mp4 --save npy
    accelerate launch --num_processes 4 examples/infer_video.py videos/ -o out   # 4 GPUs: inputs split 4 ways

Inputs are video files, folders of frames (one video per folder, images in natural order), globs, or folders
of videos (each video one input). The first run downloads the released weights (`Yanrui95/NormalCrafter`, completed
from `stabilityai/stable-video-diffusion-img2vid-xt`: a gated repo, accept its licence and `hf auth login`).

Under `accelerate launch` (or torchrun) each process loads the model once and takes every N-th input, so no input
is done twice or skipped; with several GPUs each process uses its own. On a machine without GPUs, add `--multi_gpu`
to start N CPU processes (accelerate's `--cpu` starts a single process).

On a CPU (Linux), glibc hands large freed buffers back to the kernel, which zero-fills them again on the next use;
that can cost as much time as the arithmetic. Backing them with transparent huge pages keeps memory flat and was
1.4x faster in benchmarks/bench_inference.py (--malloc thp):
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python examples/infer_video.py clip.mp4

Outputs per input `NAME` (in `--output-dir`, default beside the input), each written under a temporary name and
renamed when complete:
  mp4           NAME_normals.mp4        (n + 1) / 2 as RGB, H.264, the input's fps after subsampling
  png16         NAME_normals_png16/     frame_000000.png, ...: 16-bit RGB, round((n + 1) / 2 * 65535)
  npy           NAME_normals.npy        float16 (F, H, W, 3) unit normals (x right, y up, z toward the camera)
  side_by_side  NAME_side_by_side.mp4   the input frame and its normals side by side

Exit status: 0 when every input succeeded (or was skipped), 1 when any failed (a summary lists them), 2 for a
usage error (bad options, unwritable output folder).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import os
import queue
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

SAVE_FORMATS = ("mp4", "png16", "npy", "side_by_side")
DEFAULT_SAVE = ("mp4",)
OUTPUT_SUFFIXES = {
    "mp4": "_normals.mp4",
    "png16": "_normals_png16",
    "npy": "_normals.npy",
    "side_by_side": "_side_by_side.mp4",
}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """An error in the options of the whole run, reported as one line (exit status 2)."""


@dataclass
class Job:
    """One input and where its outputs go."""

    source: Path
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class VideoStats:
    frames: int = 0
    seconds: float = 0.0
    read_wait_s: float = 0.0  # compute waited for decoded frames
    write_s: float = 0.0  # the writer thread was busy (overlaps compute)
    write_wait_s: float = 0.0  # compute waited for the writer thread

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from normalcrafter_pipeline import DEFAULT_BASE_MODEL_ID, DEFAULT_MODEL_ID

    parser = argparse.ArgumentParser(
        prog="infer_video.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        help="video files, folders of frames, globs (quote them), or folders of videos.",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=DEFAULT_MODEL_ID,
        help=f"Hub repo id or local folder of the NormalCrafter weights (default {DEFAULT_MODEL_ID}).",
    )
    model.add_argument(
        "--base-model",
        default=DEFAULT_BASE_MODEL_ID,
        help="repo id or folder completing a unet/ + vae/ model with the CLIP encoder, feature extractor and "
        f"scheduler (default {DEFAULT_BASE_MODEL_ID}, gated: accept its licence and log in).",
    )
    model.add_argument(
        "--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps, ... (default auto)."
    )
    model.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", *DTYPES),
        help="auto: fp16 on cuda, bf16 on a cpu with native bf16, else fp32 (default auto).",
    )
    model.add_argument(
        "--cpu-offload",
        default="none",
        choices=("none", "model", "sequential"),
        help="keep weights on the CPU and move each model (model) or each layer (sequential) to the device only "
        "while it runs: less GPU memory, slower. Needs an accelerator device (default none).",
    )
    reading = parser.add_argument_group("reading")
    reading.add_argument(
        "--max-res",
        type=int,
        default=1024,
        help="resize so the longest side is at most this (multiples of 8); 0 keeps the size (default 1024).",
    )
    reading.add_argument(
        "--target-fps",
        type=float,
        default=None,
        help="subsample: keep every round(fps / target_fps)-th frame (default: every frame).",
    )
    reading.add_argument(
        "--process-length",
        type=int,
        default=-1,
        help="process only the first N frames after subsampling; -1 for all (default -1).",
    )
    inference = parser.add_argument_group("inference")
    inference.add_argument("--window-size", type=int, default=14, help="frames denoised together (default 14).")
    inference.add_argument("--overlap", type=int, default=4, help="frames shared by consecutive windows (default 4).")
    inference.add_argument(
        "--steps", type=int, default=1, help="denoising steps per window (default 1, as the model was trained)."
    )
    inference.add_argument(
        "--decode-chunk-size",
        type=int,
        default=7,
        help="frames decoded together by the VAE; lower it to save memory (default 7).",
    )
    inference.add_argument("--seed", type=int, default=42, help="random seed, set before each video (default 42).")
    output = parser.add_argument_group("output")
    output.add_argument(
        "-o",
        "--output-dir",
        default=None,
        help="folder for the outputs (created if needed; default: beside each input).",
    )
    output.add_argument(
        "--save",
        action="append",
        choices=SAVE_FORMATS,
        default=None,
        help="output format, repeatable: mp4 (visualisation), png16 (16-bit PNG sequence), npy (float16 array), "
        f"side_by_side (input | normals mp4) (default: {' '.join(DEFAULT_SAVE)}).",
    )
    output.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose requested outputs all exist already."
    )
    output.add_argument("--verbose", action="store_true", help="library logs and tracebacks of failures.")
    args = parser.parse_args(argv)
    args.save = list(dict.fromkeys(args.save or DEFAULT_SAVE))
    return args


def check_args(args: argparse.Namespace) -> None:
    """Reject out-of-range and conflicting options (raises `UsageError`)."""
    if args.window_size < 1:
        raise UsageError(f"--window-size must be >= 1, got {args.window_size}.")
    if not 0 <= args.overlap < args.window_size:
        raise UsageError(
            f"--overlap must be >= 0 and smaller than --window-size ({args.window_size}), got {args.overlap}."
        )
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}.")
    if args.decode_chunk_size < 1:
        raise UsageError(f"--decode-chunk-size must be >= 1, got {args.decode_chunk_size}.")
    if args.max_res < 0:
        raise UsageError(f"--max-res must be >= 0 (0 keeps the input size), got {args.max_res}.")
    if args.target_fps is not None and not args.target_fps > 0:
        raise UsageError(f"--target-fps must be > 0, got {args.target_fps}.")
    if args.process_length == 0 or args.process_length < -1:
        raise UsageError(f"--process-length must be -1 (all frames) or >= 1, got {args.process_length}.")
    if args.cpu_offload != "none" and args.device.split(":")[0] == "cpu":
        raise UsageError(
            f"--cpu-offload {args.cpu_offload} conflicts with --device cpu: offloading moves weights between the "
            "CPU and an accelerator; drop --cpu-offload or pick a GPU --device."
        )


def check_output_dir(folder: Path) -> None:
    """Create `folder` if needed and make sure a file can be written in it (raises `UsageError`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UsageError(f"--output-dir {folder} cannot be written: {error.strerror or error}.") from None


# ----------------------------------------------------------------------------------------------------------------
# Inputs and outputs
# ----------------------------------------------------------------------------------------------------------------


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Turn the positional arguments into inputs: (inputs in order, without duplicates; (argument, error) pairs)."""
    from normalcrafter_pipeline.video_io import is_image_file, is_video_file, list_image_files, natural_sort_key

    inputs: list[Path] = []
    errors: list[tuple[str, str]] = []
    for pattern in patterns:
        if os.path.exists(pattern):
            candidates = [Path(pattern)]
        elif glob.has_magic(pattern):
            candidates = [Path(p) for p in sorted(glob.glob(pattern, recursive=True), key=natural_sort_key)]
            if not candidates:
                errors.append((pattern, "no file matches this pattern"))
                continue
        else:
            errors.append((pattern, "no such file or folder"))
            continue
        for candidate in candidates:
            if candidate.is_dir():
                videos = sorted(
                    (
                        p
                        for p in candidate.iterdir()
                        if p.is_file() and not p.name.startswith(".") and is_video_file(p)
                    ),
                    key=lambda p: natural_sort_key(p.name),
                )
                if videos:
                    inputs.extend(videos)
                elif list_image_files(candidate):
                    inputs.append(candidate)
                else:
                    errors.append((str(candidate), "the folder holds no video files and no images"))
            elif candidate.is_file():
                # A glob like `shots/*` also matches non-media files: keep only videos and images from globs.
                if candidate.name.startswith(".") and len(candidates) > 1:
                    continue
                if len(candidates) > 1 and not (is_video_file(candidate) or is_image_file(candidate)):
                    continue
                inputs.append(candidate)
    unique = list({os.path.realpath(p): p for p in reversed(inputs)}.values())[::-1]
    return unique, errors


def output_paths(source: Path, output_dir: Path | None, formats: list[str]) -> dict[str, Path]:
    stem = source.name if source.is_dir() else source.stem
    folder = output_dir if output_dir is not None else source.resolve().parent
    return {fmt: folder / f"{stem}{OUTPUT_SUFFIXES[fmt]}" for fmt in formats}


def plan_jobs(inputs: list[Path], output_dir: Path | None, formats: list[str]) -> tuple[list[Job], list]:
    """One job per input; an input whose outputs would overwrite an earlier input's is a failure."""
    jobs, errors, claimed = [], [], {}
    for source in inputs:
        outputs = output_paths(source, output_dir, formats)
        clash = next((claimed[p] for p in outputs.values() if p in claimed), None)
        if clash is not None:
            errors.append(
                (
                    str(source),
                    f"its outputs would overwrite those of {clash} (same name); rename one or use another "
                    "--output-dir for it",
                )
            )
            continue
        claimed.update({path: source for path in outputs.values()})
        jobs.append(Job(source, outputs))
    return jobs, errors


def open_writers(job: Job, reader, stack: contextlib.ExitStack) -> list:
    from normalcrafter_pipeline.video_io import (
        NormalsVideoWriter,
        NpyWriter,
        Png16SequenceWriter,
        SideBySideVideoWriter,
    )

    writers = []
    for fmt, path in job.outputs.items():
        if fmt == "mp4":
            writer = NormalsVideoWriter(path, fps=reader.fps)
        elif fmt == "side_by_side":
            writer = SideBySideVideoWriter(path, fps=reader.fps)
        elif fmt == "png16":
            writer = Png16SequenceWriter(path)
        else:
            writer = NpyWriter(path, len(reader), reader.height, reader.width)
        writers.append(stack.enter_context(writer))
    return writers


# ----------------------------------------------------------------------------------------------------------------
# Background reading and writing, so decoding and encoding overlap the model
# ----------------------------------------------------------------------------------------------------------------


class Prefetcher:
    """Iterate `iterable` in a background thread, `maxsize` items ahead; errors surface in the consumer."""

    def __init__(self, iterable, maxsize: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self.wait_s = 0.0
        self._thread = threading.Thread(target=self._run, args=(iterable,), daemon=True, name="frame-reader")
        self._thread.start()

    def _put(self, message) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterable) -> None:
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as error:  # handed to the consumer thread
            self._put(("error", error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        while True:
            start = time.perf_counter()
            kind, value = self._queue.get()
            self.wait_s += time.perf_counter() - start
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class BackgroundWriter:
    """Run `writer.write(normals, frames)` for every writer in one background thread, a few chunks behind."""

    def __init__(self, writers: list, maxsize: int = 4):
        self._writers = writers
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self.busy_s = 0.0
        self.wait_s = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="normals-writer")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain without writing after a failure
            start = time.perf_counter()
            try:
                for writer in self._writers:
                    writer.write(*item)
            except BaseException as error:
                self._error = error
            self.busy_s += time.perf_counter() - start

    def submit(self, normals, frames) -> None:
        if self._error is not None:
            raise self._error
        start = time.perf_counter()
        self._queue.put((normals, frames))
        self.wait_s += time.perf_counter() - start

    def finish(self) -> None:
        """Wait for every chunk to be written; re-raise a write error."""
        start = time.perf_counter()
        self._queue.put(None)
        self._thread.join()
        self.wait_s += time.perf_counter() - start
        if self._error is not None:
            raise self._error


# ----------------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------------


def process_video(pipe, reader, job: Job, args: argparse.Namespace, progress=None) -> VideoStats:
    """Stream `reader` through `pipe` into the writers of `job`; outputs are renamed only if everything worked."""
    import numpy as np

    stats = VideoStats()
    keep_inputs = "side_by_side" in job.outputs
    pending_inputs: collections.deque = collections.deque()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = open_writers(job, reader, stack)
        prefetcher = Prefetcher(reader, maxsize=args.window_size + args.decode_chunk_size)
        stack.callback(prefetcher.close)
        background = BackgroundWriter(writers)

        def frames():
            for frame in prefetcher:
                if keep_inputs:  # held until their normals are final: O(window) frames
                    pending_inputs.append(frame)
                yield frame

        try:
            for normals in pipe.stream(
                frames(),
                window_size=args.window_size,
                overlap=args.overlap,
                num_inference_steps=args.steps,
                decode_chunk_size=args.decode_chunk_size,
                output_type="np",
                num_frames=len(reader),
            ):
                inputs = np.stack([pending_inputs.popleft() for _ in range(len(normals))]) if keep_inputs else None
                background.submit(normals, inputs)
                stats.frames += len(normals)
                if progress is not None:
                    progress.update(len(normals))
        finally:
            background.finish()
        stats.read_wait_s = prefetcher.wait_s
        stats.write_s = background.busy_s
        stats.write_wait_s = background.wait_s
    stats.seconds = time.perf_counter() - start
    return stats


@dataclass
class ProcessInfo:
    """This process's place among those started by `accelerate launch` (or torchrun, or mpirun)."""

    process_index: int = 0
    num_processes: int = 1
    local_process_index: int = 0

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @classmethod
    def from_env(cls) -> ProcessInfo:
        # The launchers' environment variables, as accelerate's `PartialState` reads them. No process group is
        # needed: every process expands the same inputs in the same order and takes every N-th one.
        def first(*names: str, default: int) -> int:
            return next((int(os.environ[n]) for n in names if os.environ.get(n, "").isdigit()), default)

        return cls(
            process_index=first("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", default=0),
            num_processes=first("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", default=1),
            local_process_index=first("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", default=0),
        )


def resolve_device(name: str, state: ProcessInfo | None = None):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            if state is not None and state.num_processes > 1:  # one GPU per process on each machine
                return torch.device("cuda", state.local_process_index % torch.cuda.device_count())
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device auto or cpu.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: MPS is not available here; use --device auto or cpu.")
    if device.type == "cuda" and device.index is None and state is not None and state.num_processes > 1:
        device = torch.device("cuda", state.local_process_index % torch.cuda.device_count())
    return device


def cpu_has_native_bf16() -> bool:
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(name: str, device):
    import torch

    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, DTYPES[name])


def load_pipeline(args: argparse.Namespace, device, dtype):
    from normalcrafter_pipeline import NormalCrafterPipeline

    pipe = NormalCrafterPipeline.from_pretrained(args.model, base_model=args.base_model, torch_dtype=dtype)
    if args.cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif args.cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)  # the CLI shows its own bar over frames
    return pipe


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _describe(error: BaseException, source: Path | None = None) -> str:
    text = str(error).strip() or type(error).__name__
    if source is not None and text.startswith(f"{source}: "):  # the summary names the input already
        text = text[len(f"{source}: ") :]
    return text if isinstance(error, (OSError, ValueError)) else f"{type(error).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

    from tqdm.auto import tqdm

    from normalcrafter_pipeline.video_io import read_video

    state = ProcessInfo.from_env()
    prefix = f"[process {state.process_index}/{state.num_processes}] " if state.num_processes > 1 else ""
    failures: list[tuple[str, str]] = []
    try:
        check_args(args)
        output_dir = Path(args.output_dir) if args.output_dir else None
        if output_dir is not None:
            check_output_dir(output_dir)
        inputs, input_errors = expand_inputs(args.inputs)
        jobs, plan_errors = plan_jobs(inputs, output_dir, args.save)
        device = resolve_device(args.device, state)
        dtype = resolve_dtype(args.dtype, device)
    except UsageError as error:
        if state.is_main_process:
            _error(str(error))
        return EXIT_USAGE
    if state.is_main_process:  # every process sees these; report them once
        failures.extend(input_errors + plan_errors)
        for name, reason in failures:
            _error(f"{name}: {reason}")

    # Each process takes every N-th job: together they cover every input exactly once.
    jobs = jobs[state.process_index :: state.num_processes]

    # Open every input (cheap: container headers and frame counts) so that bad files fail before the model loads.
    ready = []
    for job in jobs:
        if args.skip_existing and all(path.exists() for path in job.outputs.values()):
            print(f"{prefix}skipped {job.source}: outputs exist", flush=True)
            continue
        try:
            if output_dir is None:
                check_output_dir(next(iter(job.outputs.values())).parent)
            reader = read_video(job.source, args.max_res, args.target_fps, args.process_length)
        except (OSError, ValueError, UsageError) as error:
            failures.append((str(job.source), _describe(error, job.source)))
            _error(f"{prefix}{job.source}: {_describe(error, job.source)}")
            continue
        ready.append((job, reader))

    if ready:
        import torch

        try:
            pipe = load_pipeline(args, device, dtype)
        except Exception as error:
            hint = "" if args.verbose else " (--verbose shows the traceback)"
            _error(f"{prefix}could not load the model {args.model!r}: {_describe(error)}{hint}")
            if args.verbose:
                traceback.print_exc()
            return EXIT_FAILED
        dtype_name = str(dtype).replace("torch.", "")
        print(f"{prefix}model {args.model} on {device} ({dtype_name}); {len(ready)} input(s)", flush=True)

        num_done = 0
        for job, reader in ready:
            torch.manual_seed(args.seed)
            name = job.source.name
            try:
                with tqdm(
                    total=len(reader),
                    desc=f"{prefix}{name}",
                    unit="frame",
                    dynamic_ncols=True,
                    position=state.process_index,
                    leave=state.num_processes == 1,
                ) as progress:
                    stats = process_video(pipe, reader, job, args, progress)
            except KeyboardInterrupt:
                _error(f"{prefix}interrupted during {job.source}; its outputs were not written.")
                return 130
            except Exception as error:  # one bad input does not stop the others
                failures.append((str(job.source), _describe(error, job.source)))
                _error(f"{prefix}{job.source}: {_describe(error, job.source)}")
                if args.verbose:
                    traceback.print_exc()
                continue
            written = ", ".join(str(path) for path in job.outputs.values())
            print(
                f"{prefix}done {job.source}: {stats.frames} frames {reader.height}x{reader.width} in "
                f"{stats.seconds:.1f} s ({stats.frames_per_second:.2f} frames/s) -> {written}",
                flush=True,
            )
            num_done += 1
        print(f"{prefix}{num_done} of {len(ready)} input(s) done", flush=True)

    if failures:
        print(f"{prefix}{len(failures)} input(s) failed:", file=sys.stderr)
        for name, reason in failures:
            print(f"{prefix}  {name}: {reason}", file=sys.stderr)
        sys.stderr.flush()
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
