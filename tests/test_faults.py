"""Fault injection into the `normalcrafter` command and the training scripts: readers that raise or stop early at
random frames, writers that hit a full disk mid-file, kills (SIGINT, SIGTERM, SIGKILL) at random points of a run and
the run after them, folders of frames of mixed sizes, usage errors.

Each case asserts the exit status, one `error:` line on stderr without a traceback, and the exact set of files left
on disk. Each also records what it saw (a traceback, stray files) in the file named by `NORMALCRAFTER_FAULT_TALLY`
when that is set: `python benchmarks/fault_tally.py` runs this module and prints the tally.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from test_video_io import decode_all, make_frames, write_video

from normalcrafter_pipeline import cli, normals_writers, video_io
from normalcrafter_pipeline.testing_utils import tiny_pipeline
from normalcrafter_pipeline.training import render_dataset
from normalcrafter_pipeline.training.arguments import run_script

REPO = Path(__file__).resolve().parents[1]
FAST = ["--window-size", "4", "--overlap", "1", "--decode-chunk-size", "2", "--device", "cpu", "--dtype", "fp32"]
ALL_FORMATS = ["--save", "mp4", "--save", "npy", "--save", "png16", "--save", "side_by_side"]
NUM_FRAMES = 10
KILL_FRAMES = 16  # the kill tests' clips: long enough that the kill lands before the run ends, even on a fast CPU
TRACEBACK = "Traceback (most recent call last)"


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", make_frames(NUM_FRAMES, 24, 32), fps=6)
    return path.read_bytes()


@pytest.fixture(scope="module")
def long_clip_bytes(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("clip") / "long.mp4", make_frames(KILL_FRAMES, 24, 32), fps=6)
    return path.read_bytes()


def tree(folder: Path) -> set[str]:
    """Every file and folder under `folder` (hidden ones included), relative to it."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def outputs_of(stem: str, num_frames: int, folder: str = "out") -> set[str]:
    """The relative paths all four formats write for input `stem` of `num_frames` frames."""
    png = [f"{folder}/{stem}_normals_png16/frame_{i:06d}.png" for i in range(num_frames)]
    names = ("_normals.mp4", "_normals.npy", "_normals_png16", "_side_by_side.mp4")
    return {f"{folder}/{stem}{suffix}" for suffix in names} | set(png)


def assert_outputs_complete(folder: Path, stem: str, num_frames: int) -> None:
    assert np.load(folder / f"{stem}_normals.npy").shape == (num_frames, 24, 32, 3)
    assert decode_all(folder / f"{stem}_normals.mp4")[0].shape == (num_frames, 24, 32, 3)
    assert decode_all(folder / f"{stem}_side_by_side.mp4")[0].shape == (num_frames, 24, 64, 3)
    assert len(os.listdir(folder / f"{stem}_normals_png16")) == num_frames


def record(case: str, code: int, err: str, stray: set[str]) -> None:
    """Append what a case saw to the tally file (see benchmarks/fault_tally.py)."""
    tally = os.environ.get("NORMALCRAFTER_FAULT_TALLY")
    if tally:
        with open(tally, "a") as file:
            entry = {"case": case, "exit": code, "tracebacks": err.count(TRACEBACK), "stray": sorted(stray)}
            file.write(json.dumps(entry) + "\n")


def check(case, code, err, root, expected_files, expected_code, error_line=None, error_start=None):
    """Record, then assert: exit status, no traceback, the exact files under `root`, and the one `error:` line (equal
    to `error_line`, or starting with `error_start`; none when both are None)."""
    found = tree(root)
    record(case, code, err, found - expected_files)
    assert code == expected_code, err
    assert TRACEBACK not in err, err
    assert found == expected_files, (
        f"stray: {sorted(found - expected_files)}, missing: {sorted(expected_files - found)}"
    )
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    if error_line is None and error_start is None:
        assert error_lines == [], err
    else:
        assert len(error_lines) == 1, err
        if error_line is not None:
            assert error_lines[0] == error_line
        else:
            assert error_lines[0].startswith(error_start), error_lines[0]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def two_clips(tmp_path: Path, clip_bytes: bytes) -> tuple[Path, Path]:
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    first.write_bytes(clip_bytes)
    second.write_bytes(clip_bytes)
    return first, second


class FaultyReader:
    """A `VideoReader` that raises (`mode="raise"`) or stops (`mode="stop"`) when frame `at` is due."""

    def __init__(self, reader, at: int, mode: str):
        self._reader, self.at, self.mode = reader, at, mode

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def __len__(self):
        return len(self._reader)

    def __iter__(self):
        for index, frame in enumerate(self._reader):
            if index == self.at:
                if self.mode == "raise":
                    raise video_io.VideoReadError(f"{self._reader.path}: decoding failed at frame {index} (injected)")
                return
            yield frame


def inject_reader_fault(monkeypatch, name: str, at: int, mode: str) -> None:
    real_read_video = video_io.read_video

    def read_video(path, *args, **kwargs):
        reader = real_read_video(path, *args, **kwargs)
        return FaultyReader(reader, at, mode) if Path(path).name == name else reader

    monkeypatch.setattr(video_io, "read_video", read_video)


# ----------------------------------------------------------------------------------------------------------------
# Readers and writers that fail (in-process runs on the tiny model)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_reader_raising_at_a_random_frame_leaves_no_output_of_that_input(
    model_dir, clip_bytes, tmp_path, capsys, monkeypatch, seed
):
    first, second = two_clips(tmp_path, clip_bytes)
    at = int(np.random.default_rng(seed).integers(0, NUM_FRAMES))
    inject_reader_fault(monkeypatch, "a.mp4", at, "raise")
    code, out, err = run_cli(capsys, first, second, "--model", model_dir, "-o", tmp_path / "out", *FAST, *ALL_FORMATS)
    expected = {"a.mp4", "b.mp4", "out"} | outputs_of("b", NUM_FRAMES)
    line = f"error: {first}: decoding failed at frame {at} (injected)"
    check(f"reader raises at frame {at}", code, err, tmp_path, expected, 1, error_line=line)
    assert_outputs_complete(tmp_path / "out", "b", NUM_FRAMES)


@pytest.mark.parametrize("seed", [0, 1])
def test_reader_stopping_early_writes_the_frames_it_gave(model_dir, clip_bytes, tmp_path, capsys, monkeypatch, seed):
    (source,) = two_clips(tmp_path, clip_bytes)[:1]
    (tmp_path / "b.mp4").unlink()
    at = int(np.random.default_rng(seed).integers(1, NUM_FRAMES))
    inject_reader_fault(monkeypatch, "a.mp4", at, "stop")
    code, out, err = run_cli(capsys, source, "--model", model_dir, "-o", tmp_path / "out", *FAST, *ALL_FORMATS)
    check(f"reader stops at frame {at}", code, err, tmp_path, {"a.mp4", "out"} | outputs_of("a", at), 0)
    assert f"warning: {source}: the input ended after {at} of its {NUM_FRAMES} frames" in err
    assert_outputs_complete(tmp_path / "out", "a", at)


def test_reader_giving_no_frame_fails_that_input(model_dir, clip_bytes, tmp_path, capsys, monkeypatch):
    (source,) = two_clips(tmp_path, clip_bytes)[:1]
    (tmp_path / "b.mp4").unlink()
    inject_reader_fault(monkeypatch, "a.mp4", 0, "stop")
    code, out, err = run_cli(capsys, source, "--model", model_dir, "-o", tmp_path / "out", *FAST, *ALL_FORMATS)
    line = f"error: {source}: no frame could be read, although the input announced {NUM_FRAMES}; nothing was written."
    check("reader gives no frame", code, err, tmp_path, {"a.mp4", "out"}, 1, error_line=line)


@pytest.mark.parametrize("target, seed", [("png16", 0), ("npy", 1)])
def test_full_disk_mid_file_drops_that_inputs_outputs(
    model_dir, clip_bytes, tmp_path, capsys, monkeypatch, target, seed
):
    first, second = two_clips(tmp_path, clip_bytes)
    # The n-th write fails (a frame for png16, a chunk for npy), once: the disk is full, then space is freed.
    fail_at = int(np.random.default_rng(seed).integers(0, NUM_FRAMES if target == "png16" else 3))
    calls = []

    def failing(real):
        def write(*args, **kwargs):
            calls.append(1)
            if len(calls) == fail_at + 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)

        return write

    if target == "png16":
        monkeypatch.setattr(normals_writers, "write_png16", failing(normals_writers.write_png16))  # the writer's name
    else:
        monkeypatch.setattr(normals_writers.NpyWriter, "write", failing(normals_writers.NpyWriter.write))
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, first, second, "--model", model_dir, "-o", out_dir, *FAST, *ALL_FORMATS)
    failed = out_dir / ("a_normals_png16" if target == "png16" else "a_normals.npy")
    line = (
        f"error: {first}: No space left on device: {failed}; free some space, or write to another disk with "
        "--output-dir"
    )
    expected = {"a.mp4", "b.mp4", "out"} | outputs_of("b", NUM_FRAMES)
    check(f"disk full at {target} write {fail_at}", code, err, tmp_path, expected, 1, error_line=line)
    assert_outputs_complete(out_dir, "b", NUM_FRAMES)


def test_mixed_size_frame_folder_is_refused_before_the_model_loads(tmp_path, capsys):
    folder = tmp_path / "shot"
    folder.mkdir()
    odd = int(np.random.default_rng(0).integers(1, 6))
    for i, frame in enumerate(make_frames(6, 24, 32)):
        image = PIL.Image.fromarray(frame if i != odd else frame.transpose(1, 0, 2).copy())
        image.save(folder / f"{i}.png")
    # A model folder that does not exist: the run reaches the frame sizes only because they are checked first.
    code, out, err = run_cli(capsys, folder, "--model", tmp_path / "no_model", "-o", tmp_path / "out", *FAST)
    line = (
        f"error: {folder}: frame {odd}.png is 24x32 (width x height) but the first frame is 32x24; every frame of "
        "a folder must have the same size: resize them, or split the folder into one folder per size."
    )
    expected = {"out", "shot"} | {f"shot/{i}.png" for i in range(6)}
    check("frame folder of mixed sizes", code, err, tmp_path, expected, 1, error_line=line)
    assert "could not load the model" not in err


# ----------------------------------------------------------------------------------------------------------------
# Usage errors: one line, status 2, nothing written
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, start",
    [
        (["--overlap", "4"], "error: --overlap must be an integer with 0 <= overlap < window_size (4), got 4."),
        (["--steps", "0"], "error: --steps must be >= 1, got 0."),
        (["--max-res", "-8"], "error: --max-res must be >= 0"),
        (["--target-fps", "0"], "error: --target-fps must be > 0, got 0.0."),
        (["--process-length", "0"], "error: --process-length must be -1 (all frames) or >= 1, got 0."),
        (["--save", "gif"], "error: argument --save: invalid choice: 'gif'"),
        (["--window-size", "x"], "error: argument --window-size: invalid int value: 'x'; see normalcrafter --help."),
        (["--bogus"], "error: unrecognized arguments: --bogus; see normalcrafter --help."),
        (["--cpu-offload", "model"], "error: --cpu-offload model conflicts with --device cpu"),
        (["--device", "gpu0"], "error: --device gpu0 is not a device; use auto, cpu, cuda, cuda:N or mps."),
        (["-o", "a.mp4/out"], "error: --output-dir a.mp4/out cannot be written"),
    ],
)
def test_usage_errors(clip_bytes, tmp_path, capsys, monkeypatch, extra, start):
    monkeypatch.chdir(tmp_path)
    Path("a.mp4").write_bytes(clip_bytes)
    code, out, err = run_cli(capsys, "a.mp4", "--model", "no_model", *FAST, *extra)
    check(f"usage: {' '.join(extra)}", code, err, tmp_path, {"a.mp4"}, 2, error_start=start)
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------------------------
# Partial outputs of dead and live processes
# ----------------------------------------------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_partials_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead, live = dead_pid(), sleeper.pid
        (tmp_path / f".a_normals_png16.partial-{dead}").mkdir()
        (tmp_path / f".a_normals_png16.partial-{dead}" / "frame_000000.png").write_bytes(b"x")
        (tmp_path / f".a_normals.partial-{dead}.npy.shrunk.npy").write_bytes(b"x")
        (tmp_path / f".a_normals.partial-{live}.mp4").write_bytes(b"x")  # another run is writing it now
        (tmp_path / f".notes.partial-{dead}.txt").write_bytes(b"x")  # not named like our outputs
        (tmp_path / f".b_normals.partial-{dead}.mp4").write_bytes(b"x")
        removed = normals_writers.remove_stale_partials(tmp_path, name_suffixes=cli.OUTPUT_SUFFIXES.values())
        assert sorted(p.name for p in removed) == sorted(
            [
                f".a_normals_png16.partial-{dead}",
                f".a_normals.partial-{dead}.npy.shrunk.npy",
                f".b_normals.partial-{dead}.mp4",
            ]
        )
        assert tree(tmp_path) == {f".a_normals.partial-{live}.mp4", f".notes.partial-{dead}.txt"}
        # A writer removes the stale partials of its own output name only.
        (tmp_path / f".c_normals.partial-{dead}.mp4").write_bytes(b"x")
        (tmp_path / f".d_normals.partial-{dead}.mp4").write_bytes(b"x")
        with normals_writers.NormalsVideoWriter(tmp_path / "c_normals.mp4", fps=6) as writer:
            writer.write(np.zeros((2, 8, 8, 3), np.float32))
        assert tree(tmp_path) == {
            "c_normals.mp4",
            f".a_normals.partial-{live}.mp4",
            f".notes.partial-{dead}.txt",
            f".d_normals.partial-{dead}.mp4",
        }
    finally:
        sleeper.kill()
        sleeper.wait()


# ----------------------------------------------------------------------------------------------------------------
# Kills at random points of a run, and the run after them (subprocesses)
# ----------------------------------------------------------------------------------------------------------------


def start_cli(tmp_path: Path, model_dir: Path, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "normalcrafter_pipeline.cli", "a.mp4", "b.mp4", "--model", str(model_dir)]
    command += ["-o", "out", *FAST, *ALL_FORMATS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def handles_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (Linux: the SigCgt mask of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def wait_until(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before the kill point: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the kill point was not reached"
        time.sleep(0.005)


def writing(out_dir: Path) -> bool:
    return out_dir.is_dir() and any(".partial-" in name for name in os.listdir(out_dir))


def check_each_input_done_or_absent(out_dir: Path, num_frames: int = KILL_FRAMES) -> set[str]:
    """Every input has all its outputs, complete, or none; returns the stems that are done."""
    done = set()
    for stem in ("a", "b"):
        present = {name for name in ("_normals.mp4", "_normals.npy", "_normals_png16", "_side_by_side.mp4")
                   if (out_dir / f"{stem}{name}").exists()}  # fmt: skip
        assert len(present) in (0, 4), f"{stem}: only {sorted(present)}"
        if present:
            assert_outputs_complete(out_dir, stem, num_frames)
            done.add(stem)
    return done


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the signal handlers")
@pytest.mark.parametrize("signum, point, seed", [(signal.SIGINT, "start-up", 0), (signal.SIGTERM, "writing", 1)])
def test_sigint_and_sigterm_remove_partials_in_one_line(model_dir, long_clip_bytes, tmp_path, signum, point, seed):
    two_clips(tmp_path, long_clip_bytes)
    rng = np.random.default_rng(seed)
    process = start_cli(tmp_path, model_dir)
    try:
        # start-up: once the handlers are set (while torch, the model and the inputs load); writing: once a partial
        # output exists. Then a random delay.
        wait_until(lambda: handles_sigterm(process.pid), process)
        if point == "writing":
            wait_until(lambda: writing(tmp_path / "out"), process)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        assert process.poll() is None, "the run ended before the kill"
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    name = signal.Signals(signum).name
    line = f"error: interrupted by {name}; partial outputs were removed, finished outputs kept."
    done = check_each_input_done_or_absent(tmp_path / "out")
    expected = {"a.mp4", "b.mp4", "out"}.union(*(outputs_of(stem, KILL_FRAMES) for stem in done))
    check(f"{name} at {point}", process.returncode, err, tmp_path, expected, 128 + signum, error_line=line)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_while_writing_then_a_second_run_cleans_up_and_finishes(model_dir, long_clip_bytes, tmp_path, seed):
    two_clips(tmp_path, long_clip_bytes)
    rng = np.random.default_rng(seed)
    process = start_cli(tmp_path, model_dir)
    try:
        wait_until(lambda: writing(tmp_path / "out"), process)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        assert process.poll() is None, "the run ended before the kill"
        process.kill()  # SIGKILL: no handler runs
        process.communicate(timeout=60)
    finally:
        process.kill()
    left = tree(tmp_path)
    # Another run writing into the same folder at the same time: its partial output must survive.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    live_partial = f"out/.b_normals.partial-{sleeper.pid}.npy"
    (tmp_path / live_partial).write_bytes(b"x")
    try:
        second = start_cli(tmp_path, model_dir, "--skip-existing")
        out, err = second.communicate(timeout=300)
    finally:
        sleeper.kill()
        sleeper.wait()
    expected = {"a.mp4", "b.mp4", "out", live_partial} | outputs_of("a", KILL_FRAMES) | outputs_of("b", KILL_FRAMES)
    check("SIGKILL while writing, then a second run", second.returncode, err, tmp_path, expected, 0)
    assert any(".partial-" in path for path in left)  # the kill left partials, which the second run removed
    check_each_input_done_or_absent(tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------------
# Training scripts: data, output folder and arguments are checked before any model loads
# ----------------------------------------------------------------------------------------------------------------


def load_training_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"faults_{name}", REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["train_stage1", "train_stage2", "train_vae_decoder"])
def test_training_scripts_check_data_and_output_before_loading(tmp_path, capsys, script):
    module = load_training_script(script)

    def main_must_not_run(args):
        raise AssertionError("main() ran: a model would have been loaded")

    (tmp_path / "empty").mkdir()
    render_dataset(tmp_path / "clips", num_clips=1, frames=1, height=64, width=64, seed=0)
    (tmp_path / "a_file").write_text("")
    before = tree(tmp_path)
    # The model ids need the network: they must not be reached.
    common = ["--pretrained_model_name_or_path", "Yanrui95/NormalCrafter", "--output_dir", str(tmp_path / "run")]
    missing, empty, clips = (str(tmp_path / name) for name in ("missing", "empty", "clips"))
    cases = [
        (["--train_data_dir", missing], f"`--train_data_dir`: Dataset root {missing!r} does not exist"),
        (["--train_data_dir", empty], f"`--train_data_dir`: Dataset root {empty!r} holds no clip folders"),
        (["--train_data_dir", clips, "--validation_data_dir", empty], "`--validation_data_dir`: Dataset root"),
        (["--train_data_dir", clips, "--resume_from_checkpoint", missing], "`--resume_from_checkpoint` is"),
        (["--train_data_dir", clips, "--height", "100"], "`--height` is 100; use a positive multiple of 64."),
    ]
    for extra, start in cases:
        code = run_script(module.parse_args, main_must_not_run, common + extra)
        err = capsys.readouterr().err
        case = f"{script}: {extra[-2]} {Path(extra[-1]).name}"
        check(case, code, err, tmp_path, before, 2, error_start=f"error: {start}")
    unwritable = ["--train_data_dir", clips, "--output_dir", str(tmp_path / "a_file" / "run")]
    code = run_script(module.parse_args, main_must_not_run, common[:2] + unwritable)
    err = capsys.readouterr().err
    start = f"error: `--output_dir` {str(tmp_path / 'a_file' / 'run')!r} cannot be written"
    check(f"{script}: unwritable --output_dir", code, err, tmp_path, before, 2, error_start=start)


@pytest.mark.slow
def test_training_script_without_data_answers_in_one_line_without_the_network(tmp_path):
    command = [sys.executable, str(REPO / "training" / "train_stage1.py"), "--pretrained_model_name_or_path",
               "Yanrui95/NormalCrafter", "--train_data_dir", "missing", "--output_dir", "run"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    line = "error: `--train_data_dir`: Dataset root 'missing' does not exist; pass a folder of clip folders."
    check("train_stage1 without data (script)", result.returncode, result.stderr, tmp_path, set(), 2, error_line=line)


# ----------------------------------------------------------------------------------------------------------------
# No reachable Hub: the README's first command on a machine without network
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "HF_HUB_OFFLINE"])
def test_first_run_without_the_hub_fails_at_once_in_one_line(tmp_path, offline):
    from normalcrafter_pipeline.testing_utils import free_port

    # A port nothing listens on: connections are refused, as with no network.
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_HOME=str(tmp_path / "home"), HF_ENDPOINT=endpoint, **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    clip = tmp_path / "in" / "sample_clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes((REPO / "examples" / "sample_clip.mp4").read_bytes())
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "infer_video.py"), str(clip), "-o", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected_start = (
        "error: could not load the model 'Yanrui95/NormalCrafter': Downloads are off (HF_HUB_OFFLINE=1"
        if offline
        else f"error: could not load the model 'Yanrui95/NormalCrafter': The Hub cannot be reached ({endpoint}"
    )
    check(
        f"no hub ({'offline' if offline else 'unreachable'})",
        result.returncode,
        result.stderr,
        tmp_path,
        {"in", "in/sample_clip.mp4", "out"} | ({"home"} if (tmp_path / "home").exists() else set()),
        1,
        error_start=expected_start,
    )
    assert "Retrying" not in result.stderr and "--model <folder>" in result.stderr
