"""End-to-end tests of the `normalcrafter` command (`normalcrafter_pipeline.cli`, also run as
`examples/infer_video.py`) on a tiny model folder and small real videos."""

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from accelerate import PartialState
from test_video_io import decode_all, make_frames, write_video

from normalcrafter_pipeline import NormalCrafterPipeline, cli, model_setup
from normalcrafter_pipeline.formats.png16 import read_png16
from normalcrafter_pipeline.normalcrafter_normals_processor import NormalsProcessor
from normalcrafter_pipeline.testing_utils import free_port, tiny_pipeline
from normalcrafter_pipeline.video_io import read_video

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "infer_video.py"
FAST = ["--window-size", "6", "--overlap", "2", "--decode-chunk-size", "3", "--device", "cpu", "--dtype", "fp32"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    good = write_video(folder / "good.mp4", make_frames(11, 40, 56), fps=8)
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(2048))
    return good, corrupt


def mean_abs_block_difference(a, b, block=4):
    """Mean absolute difference of the `block` x `block` means of two (F, H, W, 3) uint8 videos."""

    def block_means(video):
        frames, height, width, _ = video.shape
        video = video[:, : height // block * block, : width // block * block].astype(np.float64)
        return video.reshape(frames, height // block, block, width // block, block, 3).mean(axis=(2, 4))

    return float(np.abs(block_means(a) - block_means(b)).mean())


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_end_to_end_outputs_match_the_pipeline(model_dir, videos, tmp_path, capsys):
    good, _ = videos
    out_dir = tmp_path / "out"
    save = ["--save", "mp4", "--save", "npy", "--save", "png16", "--save", "side_by_side"]
    code, out, err = run_cli(capsys, good, "--model", model_dir, "--output-dir", out_dir, *FAST, *save)
    assert code == 0, err
    assert "done" in out and "11 frames 56x40 (width x height)" in out
    assert sorted(os.listdir(out_dir)) == [
        "good_normals.mp4",
        "good_normals.npy",
        "good_normals_png16",
        "good_side_by_side.mp4",
    ]

    pipe = NormalCrafterPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(list(read_video(good)), window_size=6, overlap=2, decode_chunk_size=3).normals
    normals = np.load(out_dir / "good_normals.npy")
    assert normals.shape == (11, 40, 56, 3) and normals.dtype == np.float16
    np.testing.assert_allclose(normals.astype(np.float32), expected, atol=2e-3, rtol=0)

    png = [read_png16(out_dir / "good_normals_png16" / f"frame_{i:06d}.png") for i in range(11)]
    assert len(os.listdir(out_dir / "good_normals_png16")) == 11
    np.testing.assert_allclose(np.stack(png) / 65535 * 2 - 1, expected, atol=1.5 / 65535)
    # The mp4s are lossy (H.264 keeps colour at half resolution, and random weights give pixel noise): compare
    # 4x4 block means with the documented colour mapping of the pipeline's normals.
    video, meta = decode_all(out_dir / "good_normals.mp4")
    assert video.shape == (11, 40, 56, 3) and meta["fps"] == 8
    expected_rgb = NormalsProcessor.to_rgb(expected)
    assert mean_abs_block_difference(video, expected_rgb) < 4
    side_by_side, _ = decode_all(out_dir / "good_side_by_side.mp4")
    assert side_by_side.shape == (11, 40, 112, 3)
    assert mean_abs_block_difference(side_by_side[:, :, :56], np.stack(list(read_video(good)))) < 4
    assert mean_abs_block_difference(side_by_side[:, :, 56:], expected_rgb) < 4


def test_skip_existing_does_not_load_the_model(model_dir, videos, tmp_path, capsys):
    good, _ = videos
    out_dir = tmp_path / "out"
    assert run_cli(capsys, good, "--model", model_dir, "--output-dir", out_dir, *FAST)[0] == 0
    output = out_dir / "good_normals.mp4"
    before = output.stat().st_mtime_ns
    # A model folder that does not exist: the run can only succeed if nothing needs the model.
    code, out, err = run_cli(
        capsys, good, "--model", tmp_path / "no_model", "--output-dir", out_dir, "--skip-existing", *FAST
    )
    assert code == 0, err
    assert "skipped" in out and output.stat().st_mtime_ns == before
    # An output format not yet written makes the input run again.
    code, _, err = run_cli(
        capsys, good, "--model", tmp_path / "no_model", "--output-dir", out_dir, "--skip-existing", "--save", "npy"
    )
    assert code == 1 and "could not load the model" in err


def test_one_corrupt_input_fails_alone_with_a_summary(model_dir, videos, tmp_path, capsys):
    good, corrupt = videos
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        capsys, corrupt, good, tmp_path / "missing.mp4", "--model", model_dir, "--output-dir", out_dir, *FAST
    )
    assert code == 1
    assert (out_dir / "good_normals.mp4").exists()
    assert not (out_dir / "corrupt_normals.mp4").exists()
    summary = err[err.index("2 input(s) failed:") :]
    assert f"{corrupt}: not a readable video" in summary
    assert "missing.mp4: no such file or folder" in summary
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--overlap", "6"], "--overlap must be an integer with 0 <= overlap < window_size (6), got 6."),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--process-length", "0"], "--process-length must be -1"),
        (["--cpu-offload", "model"], "--cpu-offload model conflicts with --device cpu"),
    ],
)
def test_conflicting_options_are_one_line_before_loading(videos, tmp_path, capsys, extra, message):
    good, _ = videos
    code, out, err = run_cli(capsys, good, "--model", tmp_path / "no_model", *FAST, *extra)
    assert code == 2
    assert err.strip() == f"error: {err.strip()[7:]}" and message in err and len(err.strip().splitlines()) == 1


def test_unwritable_output_dir_is_a_usage_error(videos, tmp_path, capsys):
    good, _ = videos
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, good, "--model", tmp_path / "no_model", "--output-dir", blocker / "out", *FAST)
    assert code == 2
    assert f"--output-dir {blocker / 'out'} cannot be written" in err and len(err.strip().splitlines()) == 1


def test_unwritable_input_folder_names_the_folder_and_the_fix(videos, tmp_path, capsys, monkeypatch):
    good, _ = videos
    folder = tmp_path / "read_only"
    folder.mkdir()
    source = folder / "clip.mp4"
    source.write_bytes(good.read_bytes())
    real_temporary_file = cli.tempfile.NamedTemporaryFile

    def refuse_in_folder(*args, dir=None, **kwargs):  # a read-only folder, even for root (who may write anywhere)
        if Path(dir) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder / ".write-test-x"))
        return real_temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(cli.tempfile, "NamedTemporaryFile", refuse_in_folder)
    code, _, err = run_cli(capsys, source, "--model", tmp_path / "no_model", *FAST)
    assert code == 1
    line = (
        f"error: {source}: cannot write the outputs beside the input: its folder {folder} is not writable "
        "(Permission denied); pass --output-dir with a writable folder"
    )
    assert err.splitlines()[0] == line
    assert "UsageError" not in err and "--output-dir " + str(folder) not in err and "Traceback" not in err


def test_input_expansion_folders_globs_and_frames(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("b_10.mp4", "b_2.mp4", "notes.txt"):
        (shots / name).write_bytes(b"x")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    inputs, errors = cli.expand_inputs(
        [str(shots), str(tmp_path / "shots" / "*"), str(frames), str(tmp_path / "*.mkv"), str(tmp_path / "empty")]
    )
    assert inputs == [shots / "b_2.mp4", shots / "b_10.mp4", frames]  # natural order, no duplicates
    assert [reason for _, reason in errors] == [
        "no file matches this pattern",
        "the folder holds no video files and no images (outputs of this command aside)",
    ]
    jobs, clashes = cli.plan_jobs([shots / "b_2.mp4", tmp_path / "b_2.mp4"], tmp_path / "out", ["mp4"])
    assert len(jobs) == 1 and "would overwrite" in clashes[0][1]
    assert cli.output_paths(frames, None, ["png16"])["png16"] == frames.resolve().parent / "frames_normals_png16"


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--model",
        "--base-model",
        "--output-dir",
        "--max-res",
        "--target-fps",
        "--process-length",
        "--window-size",
        "--overlap",
        "--steps",
        "--decode-chunk-size",
        "--device",
        "--dtype",
        "--cpu-offload",
        "--save",
        "--skip-existing",
        "--exr-dtype",
        "--convention",
        "--flip-x",
        "--flip-y",
        "--flip-z",
    ):
        assert option in text
    for fmt in ("mp4", "png16", "npy", "npz", "exr", "side_by_side"):
        assert fmt in text
    words = " ".join(text.split())  # argparse wraps the help lines
    assert "streamed, not held in memory" in words and 'pip install "normalcrafter-pipeline[exr]"' in words


@pytest.mark.slow
def test_two_processes_cover_every_input_exactly_once(model_dir, tmp_path):
    inputs = [write_video(tmp_path / f"clip_{i}.mp4", make_frames(4, 24, 32, seed=i), fps=6) for i in range(5)]
    out_dir = tmp_path / "out"
    port = free_port()  # other tests may launch processes at the same time
    # `--multi_gpu` is what starts 2 processes on a machine without GPUs (`--cpu` would start one).
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
        "--num_processes", "2", "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
        str(SCRIPT),
        *map(str, inputs), "--model", str(model_dir), "--output-dir", str(out_dir), "--save", "npy", *FAST,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.findall(r"\[process (\d)/2\] done (\S+):", result.stdout)
    assert sorted(path for _, path in done) == sorted(map(str, inputs))  # each input exactly once
    assert {process for process, _ in done} == {"0", "1"}  # both processes worked
    assert sorted(os.listdir(out_dir)) == [f"clip_{i}_normals.npy" for i in range(5)]


def test_folder_of_frames_and_a_failure_midway_leaves_no_output(model_dir, tmp_path, capsys):
    frames = make_frames(8, 24, 40)
    good, broken = tmp_path / "shot_a", tmp_path / "shot_b"
    for folder in (good, broken):
        folder.mkdir()
        for i, frame in enumerate(frames):
            PIL.Image.fromarray(frame).save(folder / f"{i}.png")
    (broken / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))  # found when the headers are read
    out_dir = tmp_path / "out"
    argv = [good, broken, "--model", model_dir, "--output-dir", out_dir, "--save", "npy", "--save", "png16", *FAST]
    code, _, err = run_cli(capsys, *argv, "--process-length", "6")
    assert code == 1
    assert f"{broken / '5.png'}: not a readable image" in err
    assert sorted(os.listdir(out_dir)) == ["shot_a_normals.npy", "shot_a_normals_png16"]  # nothing of shot_b
    assert np.load(out_dir / "shot_a_normals.npy").shape == (6, 24, 40, 3)
    assert len(os.listdir(out_dir / "shot_a_normals_png16")) == 6


def test_device_dtype_and_process_resolution():
    assert model_setup.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    expected_cpu = torch.bfloat16 if model_setup.cpu_has_native_bf16() else torch.float32
    assert model_setup.resolve_dtype("auto", torch.device("cpu")) == expected_cpu
    assert model_setup.resolve_dtype("auto", torch.device("mps")) == torch.float32
    assert model_setup.resolve_dtype("fp32", torch.device("cuda")) == torch.float32
    # One set of precision names for every front end; torch dtypes and None (as loaded) pass through.
    assert [model_setup.resolve_dtype(name) for name in ("fp32", "fp16", "bf16")] == [
        torch.float32,
        torch.float16,
        torch.bfloat16,
    ]
    assert model_setup.resolve_dtype(torch.float64) == torch.float64 and model_setup.resolve_dtype(None) is None
    with pytest.raises(ValueError, match="`dtype` is 'bfloat16'; use auto, one of fp32, fp16, bf16"):
        model_setup.resolve_dtype("bfloat16")
    with pytest.raises(ValueError, match="`model` must be a model folder, a Hub repo id or a NormalCrafterPipeline"):
        model_setup.load_pipeline(42)  # named as the parameter it is
    if not torch.cuda.is_available():
        assert model_setup.resolve_device("auto", PartialState()).type in ("cpu", "mps")
        with pytest.raises(cli.UsageError, match="CUDA is not available"):
            model_setup.resolve_device("cuda")
    with pytest.raises(cli.UsageError, match="is not a device"):
        model_setup.resolve_device("gpu0")
    # Offloading needs an accelerator, whether the CPU was named or found by --device auto.
    with pytest.raises(cli.UsageError, match="--device auto found none"):
        model_setup.check_offload("model", "auto", torch.device("cpu"))
    with pytest.raises(cli.UsageError, match="conflicts with --device cpu"):
        model_setup.check_offload("sequential", "cpu", torch.device("cpu"))
    model_setup.check_offload("model", "auto", torch.device("cuda"))
    model_setup.check_offload("none", "auto", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="--device auto finds a GPU here")
def test_cpu_offload_with_device_auto_on_a_cpu_only_machine_is_refused(videos, tmp_path, capsys):
    good, _ = videos
    code, _, err = run_cli(capsys, good, "--model", tmp_path / "no_model", "--cpu-offload", "model", "-o", tmp_path)
    assert code == 2
    assert err.startswith("error: --cpu-offload model needs a GPU, but --device auto found none")
    assert len(err.strip().splitlines()) == 1


def test_compile_with_cpu_offload_is_a_usage_error_before_loading(videos, tmp_path, capsys):
    good, _ = videos
    argv = [good, "--model", tmp_path / "no_model", "--device", "cuda", "--cpu-offload", "model", "--compile"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("error: --compile conflicts with --cpu-offload model")


def test_compile_option_compiles_the_loaded_pipeline(model_dir, videos, tmp_path, capsys, monkeypatch):
    """`--compile` calls `pipe.compile()` once the pipeline is on its device (the compiled numbers are checked in
    test_pipeline.py; here the UNet runs eagerly after being handed to torch.compile's `eager` backend)."""
    calls = []
    original = NormalCrafterPipeline.compile

    def compile_eagerly(pipe, *args, **kwargs):
        calls.append((args, kwargs, next(pipe.unet.parameters()).device.type))
        original(pipe, *args, freezing=False, backend="eager", **kwargs)

    monkeypatch.setattr(NormalCrafterPipeline, "compile", compile_eagerly)
    good, _ = videos
    code, out, err = run_cli(capsys, good, "--model", model_dir, "--output-dir", tmp_path, *FAST, "--compile")
    assert code == 0, err
    assert calls == [((), {}, "cpu")]
    assert (tmp_path / "good_normals.mp4").is_file()


def test_importing_the_cli_and_help_do_not_import_torch():
    code = (
        "import sys, normalcrafter_pipeline.cli as cli, normalcrafter_pipeline as package; "
        "heavy = sorted({'torch', 'diffusers', 'transformers', 'accelerate'} & set(sys.modules)); "
        "assert not heavy, heavy; assert package.__version__ == '0.1.0'; "
        "sys.argv = ['normalcrafter', '--help']; cli.main()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: normalcrafter" in result.stdout and "--cpu-offload" in result.stdout
    # The script and the module are the same command.
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: normalcrafter" in result.stdout


def test_a_second_run_over_a_folder_does_not_take_the_first_runs_outputs(model_dir, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", make_frames(3, 24, 32), fps=6)
    save = ["--save", "mp4", "--save", "npy", "--save", "png16", "--save", "side_by_side"]
    code, out, err = run_cli(capsys, folder, "--model", model_dir, *FAST, *save)
    assert code == 0, err
    first = sorted(os.listdir(folder))
    assert first == ["a.mp4", "a_normals.mp4", "a_normals.npy", "a_normals_png16", "a_side_by_side.mp4"]
    # Again over the folder and over a glob: only a.mp4 is an input; --skip-existing then skips it.
    listed = {
        folder: "skipped 2 output(s) of an earlier run (a_normals.mp4, a_side_by_side.mp4)",  # the folder's videos
        folder / "*": "skipped 4 output(s) of an earlier run (a_normals.mp4, a_normals.npy, a_normals_png16, ...)",
    }
    for argument, notice in listed.items():
        code, out, err = run_cli(capsys, argument, "--model", model_dir, "--skip-existing", *FAST, *save)
        assert code == 0, err
        assert re.findall(r"skipped (\S+): outputs exist", out) == [str(folder / "a.mp4")]
        assert f"info: {argument}: {notice}" in out
        assert sorted(os.listdir(folder)) == first
    # Named explicitly, an output is an input like any other.
    inputs, errors = cli.expand_inputs([str(folder / "a_normals.mp4")])
    assert inputs == [folder / "a_normals.mp4"] and errors == []


def test_importing_the_package_changes_no_library_logging_or_warnings():
    """No filter of ours stays on other libraries' loggers or in the warnings filters once our modules are imported
    (the libraries imported first: they add filters of their own)."""
    code = "\n".join(
        [
            "import logging, warnings",
            "import diffusers, huggingface_hub, imageio_ffmpeg, torch, transformers",
            "from diffusers import DiffusionPipeline",
            "from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection",
            "names = ('transformers.utils.import_utils', 'imageio_ffmpeg', 'huggingface_hub', 'diffusers')",
            "before = (list(warnings.filters), {name: list(logging.getLogger(name).filters) for name in names})",
            "import normalcrafter_pipeline as package",
            "package.NormalCrafterPipeline, package.read_video, package.NormalsProcessor",
            "import normalcrafter_pipeline.cli, normalcrafter_pipeline.evaluation, normalcrafter_pipeline.publish",
            "after = (list(warnings.filters), {name: list(logging.getLogger(name).filters) for name in names})",
            "assert after == before, after",
        ]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize(
    "first_import",  # the first to import transformers' CLIPImageProcessor, which may warn about torchvision
    [
        "import normalcrafter_pipeline; normalcrafter_pipeline.NormalCrafterPipeline",
        "import normalcrafter_pipeline.pretrained",
    ],
)
def test_library_notices_are_silenced_only_around_our_own_calls(first_import):
    code = "\n".join(
        [
            "import logging, sys, warnings",
            first_import,
            "from normalcrafter_pipeline.hub_loading import _library_notices_dropped",
            "from huggingface_hub import hf_hub_download",
            "def download():",
            "    try:",
            "        hf_hub_download('x/y', 'f.json', local_dir_use_symlinks='auto')",  # what diffusers passes
            "    except Exception:",
            "        pass",
            "with _library_notices_dropped():",  # our loader's downloads
            "    download()",
            "print('--- our calls above, the user\\'s below ---', file=sys.stderr, flush=True)",
            "warnings.simplefilter('always')",
            "download()",
            "logging.getLogger('transformers.utils.import_utils').warning('another warning of that logger')",
        ]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    ours, users = result.stderr.split("--- our calls above, the user's below ---")
    assert "local_dir_use_symlinks" not in ours and "requires torchvision" not in ours
    assert "local_dir_use_symlinks" in users  # the user's own call still warns
    assert "another warning of that logger" in users


def test_npz_and_exr_in_the_opencv_convention_match_the_pipeline(model_dir, videos, tmp_path, capsys):
    OpenEXR = pytest.importorskip("OpenEXR")
    good, _ = videos
    out_dir = tmp_path / "out"
    save = ["--save", "npz", "--save", "exr", "--save", "npy", "--exr-dtype", "float32"]
    convention = ["--convention", "opencv", "--flip-x"]
    code, _, err = run_cli(capsys, good, "--model", model_dir, "--output-dir", out_dir, *FAST, *save, *convention)
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == ["good_normals.npy", "good_normals.npz", "good_normals_exr"]

    pipe = NormalCrafterPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    normals = pipe(list(read_video(good)), window_size=6, overlap=2, decode_chunk_size=3).normals
    # opencv: y down, z away from the camera; --flip-x on top of it.
    expected = normals * np.array([-1.0, -1.0, -1.0], np.float32)
    with np.load(out_dir / "good_normals.npz") as archive:
        assert archive.files == ["normal"]
        array = archive["normal"]
    assert array.shape == (11, 40, 56, 3) and array.dtype == np.float16
    np.testing.assert_allclose(array.astype(np.float32), expected, atol=2e-3, rtol=0)
    np.testing.assert_array_equal(np.load(out_dir / "good_normals.npy"), array)  # the same numbers in both

    frames = sorted(os.listdir(out_dir / "good_normals_exr"))
    assert frames == [f"frame_{i:06d}.exr" for i in range(11)]
    for i, name in enumerate(frames):
        with OpenEXR.File(str(out_dir / "good_normals_exr" / name), separate_channels=True) as exr:
            channels = exr.channels()
            assert sorted(channels) == ["B", "G", "R"]
            rgb = np.stack([channels[c].pixels for c in "RGB"], axis=-1)
        assert rgb.dtype == np.float32
        np.testing.assert_allclose(rgb, expected[i], atol=1e-6, rtol=0)


def test_exr_without_the_extra_is_a_usage_error_before_loading(videos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # as if the `exr` extra were not installed
    good, _ = videos
    code, _, err = run_cli(capsys, good, "--model", tmp_path / "no_model", *FAST, "--save", "exr", "-o", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --save exr:") and 'pip install "normalcrafter-pipeline[exr]"' in err
    assert os.listdir(tmp_path) == []
