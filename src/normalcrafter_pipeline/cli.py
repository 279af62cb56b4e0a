"""Estimate temporally consistent surface normals for videos with NormalCrafter.

    normalcrafter clip.mp4                          # writes clip_normals.mp4 beside clip.mp4
    normalcrafter videos/ frames_dir/ "shots/*.mov" --output-dir out --save mp4 --save npy
    accelerate launch --num_processes 4 examples/infer_video.py videos/ -o out   # 4 GPUs: inputs split 4 ways

(`python examples/infer_video.py ...` and `python -m normalcrafter_pipeline.cli ...` run the same command.)
Inputs are video files, folders of frames (one video per folder, images in natural order), globs, or folders of
videos (each video one input). Files and folders named like this command's outputs (NAME_normals.mp4,
NAME_normals.npy, NAME_normals.npz, NAME_normals_png16, NAME_normals_exr, NAME_side_by_side.mp4) are skipped when
folders and globs are expanded, so a second run over a folder does not take the first run's outputs as inputs. The
first run downloads the released weights (`Yanrui95/NormalCrafter`, completed from
`stabilityai/stable-video-diffusion-img2vid-xt`: a gated repo, accept its licence and `hf auth login`).

Under `accelerate launch` (or torchrun) each process loads the model once and takes every N-th input, so no input
is done twice or skipped; with several GPUs each process uses its own. On a machine without GPUs, add `--multi_gpu`
to start N CPU processes (accelerate's `--cpu` starts a single process).

On a CPU (Linux), glibc hands large freed buffers back to the kernel, which zero-fills them again on the next use;
that can cost as much time as the arithmetic. Backing them with transparent huge pages keeps memory flat (measured
in benchmarks/BENCHMARKS.md):
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 normalcrafter clip.mp4
For long videos, --compile runs the UNet through torch.compile: faster windows once it has compiled (minutes on a
CPU the first time; inductor keeps a cache for later runs).

Outputs per input `NAME` (in `--output-dir`, default beside the input), each written under a hidden temporary name
(`.NAME_normals.partial-<pid>.mp4`, ...) and renamed when all of that input's outputs are complete:
  mp4           NAME_normals.mp4        (n + 1) / 2 as RGB, H.264, the input's fps after subsampling
  png16         NAME_normals_png16/     frame_000000.png, ...: 16-bit RGB, round((n + 1) / 2 * 65535)
  npy           NAME_normals.npy        float16 (F, H, W, 3) unit normals (x right, y up, z toward the camera)
  npz           NAME_normals.npz        key "normal": float16 (F, H, W, 3) unit normals (the NormalCrafter release's
                                        layout), streamed: the video is never held in memory
  exr           NAME_normals_exr/       frame_000000.exr, ...: float EXR, channels R, G, B = x, y, z (half, or
                                        --exr-dtype float32); needs pip install "normalcrafter-pipeline[exr]"
  side_by_side  NAME_side_by_side.mp4   the input frame and its normals side by side
Every format holds the normals in the axis convention chosen by --convention and --flip-x/-y/-z (default opengl:
x right, y up, z toward the camera; opencv: x right, y down, z away from the camera); the mp4 colours follow it.
SIGINT (Ctrl-C) and SIGTERM remove the temporary outputs of the run; a run killed outright (SIGKILL, out of
memory) cannot, so every run removes the temporary outputs of processes that no longer run from its output folders.

Exit status: 0 when every input succeeded (or was skipped), 1 when any failed (a summary lists them) or the model
could not be loaded, 2 for a usage error (bad options, unwritable --output-dir, a device that is not there), 130
when interrupted by SIGINT, 143 by SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import glob
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from normalcrafter_pipeline.dtypes import DTYPE_NAMES
from normalcrafter_pipeline.model_setup import (
    OFFLOAD_MODES,
    UsageError,
    check_offload,
    load_pipeline,
    resolve_device,
    resolve_dtype,
)
from normalcrafter_pipeline.normalcrafter_checks import DEFAULT_BASE_MODEL_ID, DEFAULT_MODEL_ID, check_window_args
from normalcrafter_pipeline.video_runner import OUTPUT_SUFFIXES, Job, RunOptions, output_paths, process_video

# Only the standard library above (these modules import nothing else at import time): `--help` answers before
# numpy, torch, diffusers or transformers are imported (each function imports what it needs).

logger = logging.getLogger(__name__)

SAVE_FORMATS = tuple(OUTPUT_SUFFIXES)
DEFAULT_SAVE = ("mp4",)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt (every writer drops its temporary output)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line like every other usage error, instead of argparse's usage block and its own exit.
        raise UsageError(f"{message}; see normalcrafter --help.")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose and place the model (--model, --base-model, --device, --dtype, --cpu-offload), read
    by `resolve_device`, `resolve_dtype` and `load_pipeline`; shared with the web demo."""
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
        choices=("auto", *DTYPE_NAMES),
        help="auto: fp16 on cuda, bf16 on a cpu with native bf16, else fp32 (default auto).",
    )
    model.add_argument(
        "--cpu-offload",
        default="none",
        choices=OFFLOAD_MODES,
        help="keep weights on the CPU and move each model (model) or each layer (sequential) to the device only "
        "while it runs: less GPU memory, slower. Needs an accelerator device (cuda or mps; with --device auto, "
        "one must be found) (default none).",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; raises `UsageError` for unknown options and bad values (exits for --help)."""
    parser = _ArgumentParser(
        prog="normalcrafter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        help="video files, folders of frames, globs (quote them), or folders of videos.",
    )
    add_model_options(parser)
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
    inference.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet (inductor, weight freezing): faster windows after minutes of compilation (fewer "
        "once inductor's cache is warm); for long videos. Not with --cpu-offload.",
    )
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
        "npz (float16 array under the key 'normal', streamed, not held in memory), exr (float EXR sequence; needs "
        'pip install "normalcrafter-pipeline[exr]"), side_by_side (input | normals mp4) '
        f"(default: {' '.join(DEFAULT_SAVE)}).",
    )
    output.add_argument(
        "--exr-dtype",
        default="float16",
        choices=("float16", "float32"),
        help="float type of the exr output: float16 (half, 11-bit mantissa) or float32 (default float16).",
    )
    output.add_argument(
        "--convention",
        default="opengl",
        choices=("opengl", "opencv"),
        help="axes of the saved normals, in every format: opengl (x right, y up, z toward the camera) or opencv "
        "(x right, y down, z away from the camera) (default opengl).",
    )
    for axis in "xyz":
        output.add_argument(
            f"--flip-{axis}",
            action="store_true",
            help=f"negate the {axis} axis of the saved normals, on top of --convention (every format).",
        )
    output.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose requested outputs all exist already."
    )
    output.add_argument(
        "--verbose", action="store_true", help="library logs (diffusers, transformers) and tracebacks of failures."
    )
    args = parser.parse_args(argv)
    args.save = list(dict.fromkeys(args.save or DEFAULT_SAVE))
    return args


def check_args(args: argparse.Namespace) -> None:
    """Reject out-of-range and conflicting options known without torch (raises `UsageError`)."""
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
    if "exr" in args.save:  # found now rather than after the model has loaded
        from normalcrafter_pipeline.formats.exr import openexr_missing_reason

        reason = openexr_missing_reason()
        if reason is not None:
            raise UsageError(f"--save exr: {reason}.")
    if args.compile and args.cpu_offload != "none":
        raise UsageError(
            f"--compile conflicts with --cpu-offload {args.cpu_offload}: the compiled UNet keeps its weights as "
            "constants on the device, which offloading cannot move; drop one of them."
        )
    if args.cpu_offload != "none" and args.device.split(":")[0] == "cpu":  # known without importing torch
        raise UsageError(
            f"--cpu-offload {args.cpu_offload} conflicts with --device {args.device}: offloading moves weights "
            "between the CPU and an accelerator; drop --cpu-offload or pick a GPU --device."
        )


def check_window_options(args: argparse.Namespace) -> None:
    """Reject a bad `--window-size`/`--overlap` with the pipeline's check, its message naming the flags (raises
    `UsageError`)."""
    try:
        check_window_args(args.window_size, args.overlap)
    except ValueError as error:
        message = str(error).replace("`window_size`", "--window-size").replace("`overlap`", "--overlap")
        raise UsageError(message) from None


def check_output_dir(folder: Path, from_flag: bool = True) -> None:
    """Create `folder` if needed and make sure a file can be written in it. Raises `UsageError` for the folder of
    `--output-dir` (`from_flag`), `PermissionError`/`OSError` naming the folder beside an input otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        if from_flag:
            raise UsageError(f"--output-dir {folder} cannot be written ({reason}); pick a writable folder.") from None
        raise type(error)(  # without the errno, which would print as "[Errno 13]" before the message
            f"cannot write the outputs beside the input: its folder {folder} is not writable ({reason}); pass "
            "--output-dir with a writable folder",
        ) from None


# ----------------------------------------------------------------------------------------------------------------
# Inputs and outputs
# ----------------------------------------------------------------------------------------------------------------


def is_output_name(name: str) -> bool:
    """Whether a file or folder name is one this command writes (`NAME_normals.mp4`, ...)."""
    return name.endswith(tuple(OUTPUT_SUFFIXES.values()))


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Turn the positional arguments into inputs: (inputs in order, without duplicates; (argument, error) pairs).

    Folders and globs never yield this command's own outputs (see `is_output_name`); an output named explicitly is
    taken, as asked."""
    from normalcrafter_pipeline.video_io import is_image_file, is_video_file, list_image_files, natural_sort_key

    inputs: list[Path] = []
    errors: list[tuple[str, str]] = []

    def skip_outputs(paths: list[Path], where: str) -> list[Path]:
        outputs = [p for p in paths if is_output_name(p.name)]
        if outputs:
            names = ", ".join(p.name for p in outputs[:3]) + (", ..." if len(outputs) > 3 else "")
            logger.info(f"{where}: skipped {len(outputs)} output(s) of an earlier run ({names})")
        return [p for p in paths if not is_output_name(p.name)]

    for pattern in patterns:
        if os.path.exists(pattern):
            candidates = [Path(pattern)]
        elif glob.has_magic(pattern):
            matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True), key=natural_sort_key)]
            if not matches:
                errors.append((pattern, "no file matches this pattern"))
                continue
            candidates = skip_outputs(matches, pattern)
            if not candidates:
                errors.append((pattern, "the pattern matches only outputs of this command"))
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
                videos = skip_outputs(videos, str(candidate))
                if videos:
                    inputs.extend(videos)
                elif list_image_files(candidate):
                    inputs.append(candidate)
                else:
                    reason = "the folder holds no video files and no images (outputs of this command aside)"
                    errors.append((str(candidate), reason))
            elif candidate.is_file():
                # A glob like `shots/*` also matches non-media files: keep only videos and images from globs.
                if candidate.name.startswith(".") and len(candidates) > 1:
                    continue
                if len(candidates) > 1 and not (is_video_file(candidate) or is_image_file(candidate)):
                    continue
                inputs.append(candidate)
    unique = list({os.path.realpath(p): p for p in reversed(inputs)}.values())[::-1]
    return unique, errors


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


def run_options(args: argparse.Namespace) -> RunOptions:
    """The runner's options from the command line's (each flag is named as the option it sets)."""
    return RunOptions(**{option.name: getattr(args, option.name) for option in dataclasses.fields(RunOptions)})


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def describe_error(error: BaseException, source: Path | None = None) -> str:
    """One line for a failure: the message (without the input's name, which the caller prints), and the class name
    only for errors that are not the expected OSError/ValueError kinds."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        # "[Errno 28] No space left on device: 'x'" -> "No space left on device: x", with the fix for a full disk.
        text = error.strerror + (f": {error.filename}" if error.filename else "")
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            text += "; free some space, or write to another disk with --output-dir"
        return text
    text = " ".join(str(error).split()) or type(error).__name__
    if source is not None and text.startswith(f"{source}: "):  # the summary names the input already
        text = text[len(f"{source}: ") :]
    return text if isinstance(error, (OSError, ValueError)) else f"{type(error).__name__}: {text}"


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_logging(verbose: bool) -> list[logging.Handler]:
    """This package's log to the terminal: info lines on stdout beside the results, warnings and errors on stderr.
    Returns the handlers added (removed again when `main` returns)."""
    package_logger = logging.getLogger("normalcrafter_pipeline")
    to_stdout = logging.StreamHandler(sys.stdout)
    to_stdout.addFilter(lambda record: record.levelno < logging.WARNING)
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)
    for handler in (to_stdout, to_stderr):
        handler.setFormatter(_LevelFormatter())
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    package_logger.propagate = False
    return [to_stdout, to_stderr]


def quiet_libraries() -> None:
    """Errors only from diffusers and transformers, and none of their progress bars (the CLI shows its own)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class _SignalState:
    """What the handler of `signals_raise_interrupted` needs: whether a signal came, and whether it must wait."""

    received: list[int] = []
    deferring = 0
    pending: int | None = None


@contextlib.contextmanager
def signals_raise_interrupted():
    """Turn SIGINT and SIGTERM into `Interrupted` in the main thread, so that they unwind through every writer's
    clean-up like an exception; a second signal during that clean-up is ignored so it can finish. The previous
    handlers come back on exit. (Outside the main thread, where handlers cannot be set, nothing changes.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _SignalState.received:
            return
        _SignalState.received.append(signum)
        if _SignalState.deferring:
            _SignalState.pending = signum
            return
        raise Interrupted(signum)

    _SignalState.received, _SignalState.deferring, _SignalState.pending = [], 0, None
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old_handler in previous.items():
            signal.signal(signum, old_handler)


@contextlib.contextmanager
def signals_deferred():
    """Hold a SIGINT/SIGTERM that arrives inside the block and raise it at its end (for steps that must not be cut
    in half, like renaming the outputs of one input)."""
    _SignalState.deferring += 1
    try:
        yield
    finally:
        _SignalState.deferring -= 1
        if not _SignalState.deferring and _SignalState.pending is not None:
            signum, _SignalState.pending = _SignalState.pending, None
            raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (default `sys.argv[1:]`) and return its exit status."""
    handlers: list[logging.Handler] = []
    with signals_raise_interrupted():
        try:
            return _main(argv, handlers)
        except (Interrupted, KeyboardInterrupt) as interrupt:
            signum = interrupt.signum if isinstance(interrupt, Interrupted) else signal.SIGINT
            writers = sys.modules.get("normalcrafter_pipeline.normals_writers")
            if writers is not None:  # no writer ran without it
                writers.remove_own_partials()
            name = signal.Signals(signum).name
            print_error(f"interrupted by {name}; partial outputs were removed, finished outputs kept.")
            return 128 + signum
        finally:
            package_logger = logging.getLogger("normalcrafter_pipeline")
            for handler in handlers:
                package_logger.removeHandler(handler)


def _main(argv: list[str] | None, handlers: list[logging.Handler]) -> int:
    # Everything that needs no model, checked before one loads: options, the output folder, the inputs.
    try:
        args = parse_args(argv)
        handlers.extend(configure_logging(args.verbose))
        check_args(args)
        output_dir = Path(args.output_dir) if args.output_dir else None
        if output_dir is not None:
            check_output_dir(output_dir)
        check_window_options(args)
    except UsageError as error:
        # Every process of a multi-process run sees the same options: no process group exists yet to pick one.
        print_error(str(error))
        return EXIT_USAGE
    inputs, input_errors = expand_inputs(args.inputs)
    jobs, plan_errors = plan_jobs(inputs, output_dir, args.save)
    failures: list[tuple[str, str]] = input_errors + plan_errors
    if not jobs:  # nothing to run: no need for torch, nor for a process group
        for name, reason in failures:
            print_error(f"{name}: {reason}")
        return _summary(failures, "")

    import torch
    from accelerate import PartialState

    from normalcrafter_pipeline.normals_writers import remove_stale_partials
    from normalcrafter_pipeline.video_io import read_video

    # accelerate counts the processes of a launch on CPUs (`--multi_gpu` on a machine without GPUs, or --device
    # cpu) only when asked for CPU processes; otherwise each would see itself alone and do every input.
    state = PartialState(cpu=args.device.startswith("cpu") or not torch.cuda.is_available())
    prefix = f"[process {state.process_index}/{state.num_processes}] " if state.num_processes > 1 else ""
    try:
        device = resolve_device(args.device, state)
        check_offload(args.cpu_offload, args.device, device)
        dtype = resolve_dtype(args.dtype, device)
    except UsageError as error:
        if state.is_main_process:
            print_error(str(error))
        return EXIT_USAGE
    if not state.is_main_process:
        failures = []  # every process sees these; the main one reports them
    for name, reason in failures:
        print_error(f"{name}: {reason}")

    # Each process takes every N-th job: together they cover every input exactly once.
    jobs = jobs[state.process_index :: state.num_processes]

    # Open every input (container headers, frame counts, the size of every image of a folder) so that bad inputs
    # fail before the model loads.
    ready = []
    for job in jobs:
        folder = next(iter(job.outputs.values())).parent
        remove_stale_partials(folder, name_suffixes=OUTPUT_SUFFIXES.values())
        if args.skip_existing and all(path.exists() for path in job.outputs.values()):
            print(f"{prefix}skipped {job.source}: outputs exist", flush=True)
            continue
        try:
            if output_dir is None:
                check_output_dir(folder, from_flag=False)
            reader = read_video(job.source, args.max_res, args.target_fps, args.process_length)
        except (OSError, ValueError) as error:
            failures.append((str(job.source), describe_error(error, job.source)))
            print_error(f"{prefix}{job.source}: {describe_error(error, job.source)}")
            continue
        ready.append((job, reader))

    if ready and not _run_jobs(args, ready, device, dtype, state, prefix, failures):
        return EXIT_FAILED  # the model could not be loaded: its one line says why, and no input was processed
    return _summary(failures, prefix)


def _summary(failures: list[tuple[str, str]], prefix: str) -> int:
    if not failures:
        return EXIT_OK
    print(f"{prefix}{len(failures)} input(s) failed:", file=sys.stderr)
    for name, reason in failures:
        print(f"{prefix}  {name}: {reason}", file=sys.stderr)
    sys.stderr.flush()
    return EXIT_FAILED


def _run_jobs(args, ready, device, dtype, state, prefix: str, failures: list[tuple[str, str]]) -> bool:
    """Load the model and process `ready` (job, reader) pairs, appending failures; False if the model could not be
    loaded."""
    from tqdm.auto import tqdm

    if not args.verbose:
        quiet_libraries()
    try:
        pipe = load_pipeline(
            args.model,
            device,
            dtype,
            base_model=args.base_model,
            cpu_offload=args.cpu_offload,
            compile_unet=args.compile,
        )
    except Exception as error:
        hint = "" if args.verbose else " (--verbose shows the traceback)"
        if args.verbose:
            traceback.print_exc()
        # The loading errors name their cause and the fix in their message: one line, the same for every input.
        print_error(f"{prefix}could not load the model {args.model!r}: {describe_error(error)}{hint}")
        return False
    dtype_name = str(dtype).replace("torch.", "")
    print(f"{prefix}model {args.model} on {device} ({dtype_name}); {len(ready)} input(s)", flush=True)

    num_done = 0
    for job, reader in ready:
        try:
            with tqdm(
                total=len(reader),
                desc=f"{prefix}{job.source.name}",
                unit="frame",
                dynamic_ncols=True,
                position=state.process_index,
                leave=state.num_processes == 1,
            ) as progress:
                stats = process_video(pipe, reader, job, run_options(args), progress, commit_guard=signals_deferred)
        except Exception as error:  # one bad input does not stop the others
            failures.append((str(job.source), describe_error(error, job.source)))
            print_error(f"{prefix}{job.source}: {describe_error(error, job.source)}")
            if args.verbose:
                traceback.print_exc()
            continue
        if stats.frames < len(reader):
            logger.warning(
                f"{prefix}{job.source}: the input ended after {stats.frames} of its {len(reader)} frames; the "
                "outputs hold those frames."
            )
        written = ", ".join(str(path) for path in job.outputs.values())
        print(
            f"{prefix}done {job.source}: {stats.frames} frames {reader.width}x{reader.height} (width x height) in "
            f"{stats.seconds:.1f} s ({stats.frames_per_second:.2f} frames/s) -> {written}",
            flush=True,
        )
        num_done += 1
    print(f"{prefix}{num_done} of {len(ready)} input(s) done", flush=True)
    return True


if __name__ == "__main__":
    sys.exit(main())
