"""A web demo of NormalCrafter: upload a video (or pick the sample clip), watch the frames go by, get the normals
beside the input and as downloads (normals mp4, float16 npy, 16-bit PNG zip, float EXR zip).

    pip install "normalcrafter-pipeline[demo]"
    normalcrafter-demo                                    # http://127.0.0.1:7860 with the released model
    normalcrafter-demo --model ./my-model --device cpu    # a local folder
    python examples/app.py ...                            # the same command

Safe by default: the server listens on 127.0.0.1 only (`--host 0.0.0.0` or `--share` open it to others, with a
warning); uploads larger than `--max-upload-mb` are refused by the server; every upload is checked by decoding it
(its name and extension play no part), and videos longer than `--max-frames` frames (after subsampling) are refused
before the model runs; the resolution is capped at `--max-resolution`. The limits are shown in the page. Requests
are queued and run one at a time per model (`--concurrency`), so two users cannot exhaust one device's memory.
Each request's files live in its own folder under one folder per server process; a session's folders are removed
when its tab is closed, everything when the server stops, and what a killed server left is removed by the next.

The model options (`--model`, `--base-model`, `--device`, `--dtype`, `--cpu-offload`) are those of `normalcrafter`,
loaded by the same code.
"""

# No `from __future__ import annotations`: Gradio finds the `gr.Request` parameters of the handlers by their
# annotations, which must be real classes.

import argparse
import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from normalcrafter_pipeline import cli
from normalcrafter_pipeline.dtypes import DTYPE_NAMES
from normalcrafter_pipeline.model_setup import UsageError, check_offload, load_pipeline, resolve_device, resolve_dtype
from normalcrafter_pipeline.normalcrafter_checks import check_window_args
from normalcrafter_pipeline.video_runner import Job, RunOptions, output_paths, process_video

logger = logging.getLogger(__name__)

# Package data: installed with the package (a wheel as well as a source checkout).
SAMPLE_CLIP = Path(str(resources.files("normalcrafter_pipeline") / "assets" / "sample_clip.mp4"))
DOWNLOAD_FORMATS = {
    "normals mp4": "mp4",
    "npy (float16)": "npy",
    "16-bit PNG (zip)": "png16",
    "EXR (zip)": "exr",
}
DEFAULT_DOWNLOADS = ("normals mp4", "npy (float16)")
ROOT_PREFIX = "normalcrafter-demo-"
DEMO_INSTALL_HINT = 'pip install "normalcrafter-pipeline[demo]"'


class DemoInputError(ValueError):
    """A bad upload or setting: its message is shown in the page as it is."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; shown in the page."""

    max_upload_mb: float = 200.0
    max_frames: int = 600
    max_resolution: int = 1024

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def describe(self) -> str:
        return (
            f"Limits of this server: uploads up to {self.max_upload_mb:g} MB, at most {self.max_frames} frames "
            f"after subsampling and length, longest side at most {self.max_resolution} pixels."
        )


@dataclass(frozen=True)
class Settings:
    """The options of one request, as chosen in the page."""

    max_res: int = 1024
    target_fps: float = 0.0  # 0: every frame
    length: int = 0  # 0: every frame
    window_size: int = 14
    overlap: int = 4
    steps: int = 1
    dtype: str = "auto"


# ----------------------------------------------------------------------------------------------------------------
# Checks: everything about a request that is known before the model runs
# ----------------------------------------------------------------------------------------------------------------


def check_settings(settings: Settings, limits: Limits) -> None:
    """Raise `DemoInputError` for a setting out of range (the same window check as the pipeline and the CLI)."""
    try:
        check_window_args(settings.window_size, settings.overlap)
    except ValueError as error:
        raise DemoInputError(str(error).replace("`window_size`", "Window").replace("`overlap`", "Overlap")) from None
    if not isinstance(settings.steps, int) or not 1 <= settings.steps <= 50:
        raise DemoInputError(f"Steps must be a whole number from 1 to 50, got {settings.steps!r}.")
    if not 64 <= settings.max_res <= limits.max_resolution:
        raise DemoInputError(
            f"Max resolution must be between 64 and {limits.max_resolution} (this server's limit), got "
            f"{settings.max_res}."
        )
    if settings.target_fps < 0:
        raise DemoInputError(f"Target fps must be 0 (every frame) or more, got {settings.target_fps:g}.")
    if settings.length < 0:
        raise DemoInputError(f"Length must be 0 (every frame) or more, got {settings.length}.")
    if settings.dtype not in ("auto", *DTYPE_NAMES):
        raise DemoInputError(f"Precision must be one of auto, {', '.join(DTYPE_NAMES)}; got {settings.dtype!r}.")


def check_upload(path: str | os.PathLike | None, settings: Settings, limits: Limits):
    """Open an upload as a video, by its content, and apply the limits; return its `VideoReader`.

    Raises `DemoInputError` for no upload, an upload over the size limit, a file that does not decode as a video
    (or image), and more frames than the limit allows (naming the settings that bring it under)."""
    from normalcrafter_pipeline.video_io import read_video

    if path is None:
        raise DemoInputError("No video: upload one (or pick the sample clip) first.")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise DemoInputError("The upload is no longer on the server (it may have expired); upload it again.") from None
    if size > limits.max_upload_bytes:
        raise DemoInputError(
            f"The upload is {size / 2**20:.1f} MB, over this server's limit of {limits.max_upload_mb:g} MB; "
            "upload a shorter or more compressed video."
        )
    try:
        reader = read_video(
            path,
            max_res=settings.max_res,
            target_fps=settings.target_fps or None,
            process_length=settings.length or -1,
        )
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split()).replace(f"{path}: ", "").replace(str(path), "the upload")
        raise DemoInputError(f"The upload could not be read as a video: {reason}") from None
    if len(reader) > limits.max_frames:
        raise DemoInputError(
            f"The video has {len(reader)} frames after subsampling, over this server's limit of {limits.max_frames}; "
            "set Length (frames) or Target fps to bring it under the limit."
        )
    return reader


def safe_stem(name: str | None) -> str:
    """A file name stem made from an upload's name that cannot leave its folder or surprise a shell."""
    stem = Path(str(name or "")).name  # drops every folder part, "../" included
    stem = stem.rsplit(".", 1)[0] if "." in stem.strip(".") else stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:64]
    return stem or "video"


# ----------------------------------------------------------------------------------------------------------------
# Files: one folder per server process, one per session inside it, one per request inside that
# ----------------------------------------------------------------------------------------------------------------


class WorkArea:
    """`<tmp>/normalcrafter-demo-<pid>/`: every file this server writes lives under it. It is Gradio's cache
    (`GRADIO_TEMP_DIR`), so uploads land in it and results are served from where they are written, not copied. A
    request gets a fresh folder; a session's folders and uploads are removed when the session ends
    (`remove_session`), the whole area when the server stops (`remove`), and areas of server processes that no
    longer run are removed when a new server starts (`remove_stale`)."""

    def __init__(self, parent: str | os.PathLike | None = None):
        self.parent = Path(parent or tempfile.gettempdir())
        self.root = self.parent / f"{ROOT_PREFIX}{os.getpid()}"
        self.root.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._uploads: dict[str, set[Path]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def remove_stale(parent: str | os.PathLike | None = None) -> list[Path]:
        """Remove the areas of demo servers that no longer run (killed by SIGKILL or the OOM killer)."""
        from normalcrafter_pipeline.normals_writers import process_is_running

        parent = Path(parent or tempfile.gettempdir())
        removed = []
        for entry in parent.glob(f"{ROOT_PREFIX}*"):
            pid = entry.name[len(ROOT_PREFIX) :]
            if entry.is_dir() and pid.isdigit() and not process_is_running(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def new_request(self, session: str) -> Path:
        with self._lock:
            self._count += 1
            number = self._count
        folder = self.session_folder(session) / f"request-{number}"
        folder.mkdir(parents=True)
        return folder

    def session_folder(self, session: str) -> Path:
        return self.root / "sessions" / (re.sub(r"[^A-Za-z0-9_-]", "_", session) or "anonymous")

    def note_upload(self, session: str, path: str | os.PathLike) -> None:
        """Remember an upload of `session` (Gradio stores each in a folder of its own) to remove it with the
        session; files outside this area are never touched."""
        folder = Path(path).resolve().parent
        if folder.is_relative_to(self.root.resolve()) and folder != self.root.resolve():
            with self._lock:
                self._uploads.setdefault(session, set()).add(folder)

    def remove_session(self, session: str, uploads: bool = True) -> None:
        """Remove the results of `session` (and, with `uploads`, the uploads it used)."""
        shutil.rmtree(self.session_folder(session), ignore_errors=True)
        if uploads:
            with self._lock:
                folders = self._uploads.pop(session, set())
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# The model, loaded as every front end loads it; one precision held at a time
# ----------------------------------------------------------------------------------------------------------------


class Models:
    """The pipeline in the precision a request asks for. Holding one precision at a time keeps memory at one
    model; switching reloads from the (cached) weights rather than converting, which would lose precision."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = resolve_device(args.device)
        check_offload(args.cpu_offload, args.device, self.device)
        self.default_dtype = resolve_dtype(args.dtype, self.device)
        self._pipe = None
        self._dtype = None
        self._lock = threading.Lock()

    def dtype_for(self, name: str):
        return self.default_dtype if name == "auto" else resolve_dtype(name, self.device)

    def get(self, name: str = "auto"):
        dtype = self.dtype_for(name)
        with self._lock:
            if self._dtype != dtype:
                self._pipe = None  # the old one goes before the new one loads: one model in memory
                self._pipe = load_pipeline(
                    self.args.model,
                    self.device,
                    dtype,
                    base_model=self.args.base_model,
                    cpu_offload=self.args.cpu_offload,
                )
                self._dtype = dtype
            return self._pipe


# ----------------------------------------------------------------------------------------------------------------
# One request
# ----------------------------------------------------------------------------------------------------------------


def zip_folder(folder: Path, destination: Path) -> Path:
    """Zip the files of `folder` (sorted, stored without compression: PNG and EXR are compressed already) into
    `destination`, written under a temporary name and renamed when complete."""
    from normalcrafter_pipeline.normals_writers import atomic_output

    with atomic_output(destination) as partial:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, arcname=f"{folder.name}/{file.name}")
    return destination


def run_request(
    pipe,
    reader,
    name: str,
    settings: Settings,
    downloads: list[str],
    folder: Path,
    on_frames: Callable[[int, int], None] | None = None,
    exr_dtype: str = "float16",
) -> tuple[Path, list[Path]]:
    """Stream `reader` through `pipe` with the shared runner, writing the side-by-side video and the requested
    downloads (keys of `DOWNLOAD_FORMATS`) into `folder`; return the side-by-side video and the download files.
    `on_frames(done, total)` is called as frames come out."""
    formats = ["side_by_side", *(DOWNLOAD_FORMATS[label] for label in downloads)]
    job = Job(source=Path(name), outputs=output_paths(Path(name), folder, formats))
    options = RunOptions(
        window_size=settings.window_size, overlap=settings.overlap, steps=settings.steps, exr_dtype=exr_dtype
    )

    class _Progress:
        done = 0

        def update(self, count: int) -> None:
            self.done += count
            if on_frames is not None:
                on_frames(self.done, len(reader))

    process_video(pipe, reader, job, options, _Progress())
    files = []
    for fmt, path in job.outputs.items():
        if fmt in ("png16", "exr"):  # folders of frames travel as one zip
            files.append(zip_folder(path, path.with_name(path.name + ".zip")))
            shutil.rmtree(path)
        elif fmt != "side_by_side":
            files.append(path)
    return job.outputs["side_by_side"], files


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


def build_demo(models: Models, limits: Limits, work: WorkArea, sample: Path | None = None, exr_available=True):
    """The Gradio Blocks of the demo (not launched)."""
    import gradio as gr

    download_choices = [label for label in DOWNLOAD_FORMATS if exr_available or DOWNLOAD_FORMATS[label] != "exr"]
    default_dtype = str(models.default_dtype).replace("torch.", "")

    # Gradio hands a progress tracker to a handler whose parameter defaults to `gr.Progress()`.
    def process(
        upload,
        max_res,
        target_fps,
        length,
        window,
        overlap,
        steps,
        dtype,
        downloads,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008
    ):
        settings = Settings(
            max_res=int(max_res),
            target_fps=float(target_fps or 0),
            length=int(length or 0),
            window_size=int(window),
            overlap=int(overlap),
            steps=int(steps),
            dtype=str(dtype),
        )
        try:
            check_settings(settings, limits)
            reader = check_upload(upload, settings, limits)
        except DemoInputError as error:
            raise gr.Error(str(error), duration=None) from None
        session = getattr(request, "session_hash", None) or "anonymous"
        work.note_upload(session, upload)
        work.remove_session(session, uploads=False)  # the previous results of this tab are replaced by these
        folder = work.new_request(session)
        started = time.perf_counter()
        try:
            progress((0, len(reader)), desc="Loading the model", unit="frames")
            pipe = models.get(settings.dtype)
            progress((0, len(reader)), desc="Estimating normals", unit="frames")
            video, files = run_request(
                pipe,
                reader,
                safe_stem(Path(upload).name),
                settings,
                list(downloads or []),
                folder,
                on_frames=lambda done, total: progress((done, total), desc="Estimating normals", unit="frames"),
            )
        except Exception as error:  # shown in the page; the request's files go
            shutil.rmtree(folder, ignore_errors=True)
            logger.exception("request failed")
            raise gr.Error(f"The run failed: {cli.describe_error(error)}", duration=None) from None
        seconds = time.perf_counter() - started
        status = (
            f"Done: {len(reader)} frames at {reader.width}x{reader.height} in {seconds:.1f} s "
            f"({len(reader) / seconds:.2f} frames/s)."
        )
        return str(video), [str(path) for path in files], status

    with gr.Blocks(title="NormalCrafter", delete_cache=(900, 3600)) as demo:
        gr.Markdown(
            "# NormalCrafter\nTemporally consistent surface normals from a video: x right, y up, z toward the "
            "camera, shown as (n + 1) / 2 in RGB."
        )
        gr.Markdown(limits.describe(), elem_id="limits")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Video", file_count="single", type="filepath", elem_id="upload")
                if sample is not None:
                    sample_button = gr.Button("Use the sample clip", elem_id="sample")
                    sample_button.click(lambda: str(sample), outputs=upload, queue=False)
                max_res = gr.Slider(
                    64, limits.max_resolution, value=min(1024, limits.max_resolution), step=64,
                    label="Max resolution (longest side)",
                )  # fmt: skip
                target_fps = gr.Number(value=0, minimum=0, label="Target fps (0: every frame)")
                length = gr.Number(value=0, minimum=0, precision=0, label="Length in frames (0: every frame)")
                with gr.Row():
                    window = gr.Number(value=14, minimum=1, precision=0, label="Window")
                    overlap = gr.Number(value=4, minimum=0, precision=0, label="Overlap")
                    steps = gr.Number(value=1, minimum=1, maximum=50, precision=0, label="Steps")
                dtype = gr.Dropdown(
                    ["auto", *DTYPE_NAMES], value="auto", label=f"Precision (auto: {default_dtype} here)"
                )
                downloads = gr.CheckboxGroup(download_choices, value=list(DEFAULT_DOWNLOADS), label="Downloads")
                run = gr.Button("Estimate normals", variant="primary", elem_id="run")
            with gr.Column():
                result = gr.Video(label="Input | normals", elem_id="result", interactive=False)
                files = gr.File(label="Downloads", file_count="multiple", elem_id="downloads", interactive=False)
                status = gr.Markdown(elem_id="status")
        run.click(
            process,
            inputs=[upload, max_res, target_fps, length, window, overlap, steps, dtype, downloads],
            outputs=[result, files, status],
            concurrency_id="model",
        )

        def end_session(request: gr.Request) -> None:  # the tab was closed or reloaded
            work.remove_session(request.session_hash)

        demo.unload(end_session)
    return demo


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="normalcrafter-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_model_options(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine).")
    server.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860).")
    server.add_argument(
        "--share", action="store_true", help="also publish a public gradio.live link (anyone with it can use this)."
    )
    server.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests the model runs at once; more need more memory (default 1).",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload (default 200 MB).")
    limits.add_argument(
        "--max-frames", type=int, default=600, help="most frames per request, after subsampling (default 600)."
    )
    limits.add_argument(
        "--max-resolution", type=int, default=1024, help="largest longest side users may choose (default 1024)."
    )
    parser.add_argument(
        "--sample",
        default=str(SAMPLE_CLIP) if SAMPLE_CLIP.is_file() else None,
        help="video offered by the 'Use the sample clip' button (default: the sample clip installed with the "
        "package).",
    )
    parser.add_argument("--verbose", action="store_true", help="library logs and tracebacks of failures.")
    args = parser.parse_args(argv)
    if args.max_upload_mb <= 0 or args.max_frames < 1 or args.max_resolution < 64 or args.concurrency < 1:
        parser.error("--max-upload-mb must be > 0, --max-frames and --concurrency >= 1, --max-resolution >= 64.")
    if args.sample is not None and not Path(args.sample).is_file():
        parser.error(f"--sample {args.sample}: no such file.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        cli.print_error(f"the demo needs Gradio: {DEMO_INSTALL_HINT}")
        return cli.EXIT_USAGE
    handlers = cli.configure_logging(args.verbose)
    try:
        return _serve(args)
    finally:
        for handler in handlers:
            logging.getLogger("normalcrafter_pipeline").removeHandler(handler)


def _serve(args: argparse.Namespace) -> int:
    from normalcrafter_pipeline.formats.exr import openexr_missing_reason

    if not args.verbose:
        cli.quiet_libraries()
    for stale in WorkArea.remove_stale():
        logger.info(f"removed {stale}: left by a demo server that no longer runs")
    try:
        models = Models(args)
        models.get("auto")  # fail now, with the CLI's message, rather than on the first request
    except UsageError as error:
        cli.print_error(str(error))
        return cli.EXIT_USAGE
    except Exception as error:
        cli.print_error(f"could not load the model {args.model!r}: {cli.describe_error(error)}")
        return cli.EXIT_FAILED
    print(f"model {args.model} on {models.device} ({str(models.default_dtype).replace('torch.', '')})", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") or args.share:
        logger.warning(
            f"the demo is reachable from other machines (--host {args.host}{', --share' if args.share else ''}): "
            "anyone who can reach it can upload videos and use this device; keep the limits low."
        )

    work = WorkArea()
    os.environ["GRADIO_TEMP_DIR"] = str(work.root)  # uploads and results served from the area, removed with it
    atexit.register(work.remove)
    if threading.current_thread() is threading.main_thread():  # SIGTERM unwinds like Ctrl-C, removing the area
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    limits = Limits(args.max_upload_mb, args.max_frames, args.max_resolution)
    sample = Path(args.sample).resolve() if args.sample else None
    demo = build_demo(models, limits, work, sample, exr_available=openexr_missing_reason() is None)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=32)
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            max_file_size=limits.max_upload_bytes,
            allowed_paths=[str(sample)] if sample is not None else None,
            show_error=True,
        )
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            demo.close()
        work.remove()
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
