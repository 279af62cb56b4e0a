"""The ComfyUI node pack (`comfyui/`) inside a real, running ComfyUI.

ComfyUI comes from the 0.3.64 snapshot in `../shared/comfyui/` beside the checkout (unpacked into a temporary
folder), or from an unpacked ComfyUI named by `COMFYUI_DIR`. It runs in its own Python environment: the one named by
`COMFYUI_VENV` (CI builds it with `.ci/comfyui-venv`), else `.venv-comfyui` in the checkout, built here by the same
script when missing. The server starts headless on 127.0.0.1 with `--base-directory` pointing at a temporary folder
that holds the pack (a symlink in `custom_nodes/`), a tiny random model in `models/normalcrafter/` and the inputs
and outputs, so the ComfyUI folder itself is not written to. Outside CI the module is skipped when neither the
snapshot nor `COMFYUI_DIR` is there; in CI (`CI=true`) that is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("comfyui")]  # one server for the module, one worker

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO.parent / "shared" / "comfyui" / "ComfyUI-0.3.64.tar.gz"
PACK = REPO / "comfyui"
NODE_IDS = {
    "NormalCrafterModelLoader",
    "NormalCrafterEstimateNormals",
    "NormalCrafterSaveNormals",
    "NormalCrafterLoadFrames",
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FRAMES, HEIGHT, WIDTH = 7, 40, 56


def _missing(reason: str):
    if IN_CI:
        pytest.fail(reason + " (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def comfyui_dir(tmp_path_factory) -> Path:
    if os.environ.get("COMFYUI_DIR"):
        folder = Path(os.environ["COMFYUI_DIR"])
        if not (folder / "main.py").is_file():
            pytest.fail(f"COMFYUI_DIR={folder} holds no ComfyUI (no main.py)")
        return folder
    if not SNAPSHOT.is_file():
        _missing(f"no ComfyUI: neither {SNAPSHOT} nor COMFYUI_DIR")
    target = tmp_path_factory.mktemp("comfyui-src")
    with tarfile.open(SNAPSHOT) as archive:
        archive.extractall(target, filter="data")
    return target / "ComfyUI"


@pytest.fixture(scope="module")
def comfyui_python(comfyui_dir) -> Path:
    venv = Path(os.environ.get("COMFYUI_VENV") or REPO / ".venv-comfyui")
    if not (venv / ".complete").is_file():  # built here once, as .ci/run builds it
        started = time.monotonic()
        subprocess.run([str(REPO / ".ci" / "comfyui-venv"), str(venv), str(comfyui_dir)], check=True)
        print(f"ComfyUI environment built in {time.monotonic() - started:.0f} s: {venv}")
    return venv / "bin" / "python"


class ComfyServer:
    """A running ComfyUI: HTTP helpers and its log."""

    def __init__(self, url: str, base: Path, log: Path, process: subprocess.Popen):
        self.url, self.base, self.log, self.process = url, base, log, process

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def queue(self, workflow: dict) -> str:
        return self.post("/prompt", {"prompt": workflow})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and entry["status"]["status_str"]:
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                pytest.fail(f"ComfyUI exited ({self.process.returncode}):\n{self.log_text()[-4000:]}")
            time.sleep(0.25)
        pytest.fail(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.get("/system_stats")["system"]["comfyui_version"] != ""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from normalcrafter_pipeline.testing_utils import tiny_pipeline

    base = tmp_path_factory.mktemp("comfyui-base")
    folder = base / "models" / "normalcrafter" / "tiny"
    tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


@contextlib.contextmanager
def _running_comfyui(comfyui_dir: Path, python: Path, base: Path, model_dir: Path, address_space: int | None = None):
    """ComfyUI serving from `base` (the pack linked in, the tiny model, the test inputs); `address_space` caps the
    server's virtual memory (RLIMIT_AS, bytes), a memory budget that a large request exceeds at once."""
    from normalcrafter_pipeline.testing_utils import free_port

    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "comfyui-normalcrafter").symlink_to(PACK, target_is_directory=True)
    for name in ("input", "output", "temp", "user"):
        (base / name).mkdir()
    if not (base / "models").exists():
        (base / "models").symlink_to(model_dir.parents[1], target_is_directory=True)
    _write_inputs(base / "input")
    port = free_port()
    log = base / "comfyui.log"
    command = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)]
    command += ["--base-directory", str(base), "--disable-auto-launch"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def limit_memory():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=comfyui_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limit_memory if address_space else None,
        )
    running = ComfyServer(f"http://127.0.0.1:{port}", base, log, process)
    started = time.monotonic()
    try:
        while True:
            with contextlib.suppress(OSError):
                running.alive()
                break
            if process.poll() is not None or time.monotonic() - started > 300:
                pytest.fail(f"ComfyUI did not start:\n{running.log_text()[-4000:]}")
            time.sleep(1)
        print(f"ComfyUI started in {time.monotonic() - started:.0f} s (log: {log})")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def server(comfyui_dir, comfyui_python, model_dir):
    with _running_comfyui(comfyui_dir, comfyui_python, model_dir.parents[2], model_dir) as running:
        yield running


def _frames(seed: int, count: int, height: int, width: int) -> np.ndarray:
    """Smooth random uint8 RGB frames (count, height, width, 3) that change a little from frame to frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(count, height // 8 + 2, width // 8 + 2, 3))
    frames = [np.asarray(Image.fromarray(c.astype(np.uint8)).resize((width, height), Image.BILINEAR)) for c in coarse]
    return np.stack(frames)


def _write_inputs(input_dir: Path) -> None:
    frames = _frames(0, FRAMES, HEIGHT, WIDTH)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(input_dir / "clip.tiff", save_all=True, append_images=images[1:])  # one multi-page file
    (input_dir / "mixed").mkdir()
    Image.fromarray(frames[0]).save(input_dir / "mixed" / "a.png")
    Image.fromarray(frames[1][:32, :48]).save(input_dir / "mixed" / "b.png")
    (input_dir / "long").mkdir()
    for index, frame in enumerate(_frames(1, 24, 128, 128)):
        Image.fromarray(frame).save(input_dir / "long" / f"{index:03d}.png")


def _loader(model="tiny", precision="fp32", offload="none") -> dict:
    inputs = {"model": model, "base_model": "unused/base", "precision": precision, "offload": offload}
    return {"class_type": "NormalCrafterModelLoader", "inputs": inputs}


def _estimate(images, window=3, overlap=1, steps=2, resolution=0, convention="opengl", flip_x=False) -> dict:
    inputs = {
        "model": ["1", 0],
        "images": images,
        "window_size": window,
        "overlap": overlap,
        "steps": steps,
        "processing_resolution": resolution,
        "convention": convention,
        "flip_x": flip_x,
        "flip_y": False,
        "flip_z": False,
    }
    return {"class_type": "NormalCrafterEstimateNormals", "inputs": inputs}


def _save(normals, prefix, exr=True, png16=True, npz=True) -> dict:
    inputs = {
        "normals": normals,
        "filename_prefix": prefix,
        "exr": exr,
        "png16": png16,
        "npz": npz,
        "float_precision": "float32",
    }
    return {"class_type": "NormalCrafterSaveNormals", "inputs": inputs}


def _saved(entry: dict, node: str) -> dict:
    return {item["format"]: item for item in entry["outputs"][node]["normals"]}


def _error_message(entry: dict) -> str:
    assert entry["status"]["status_str"] == "error", entry["status"]
    errors = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert errors, entry["status"]["messages"]
    return errors[0]["exception_message"]


def test_saved_normals_equal_the_pipeline(server, model_dir):
    """LoadImage (a 7-frame TIFF) -> load -> estimate -> save, twice (our convention, and opencv with x flipped):
    the npz floats equal the pipeline's own output on the same frames and settings up to float32 rounding, the EXR
    floats equal the npz's, the 16-bit PNGs decode to them within their step, and the model is loaded once."""
    from normalcrafter_pipeline import NormalCrafterPipeline, NormalsProcessor, read_png16

    workflow = {
        "1": _loader(),
        "2": {"class_type": "LoadImage", "inputs": {"image": "clip.tiff"}},
        "3": _estimate(["2", 0]),
        "4": _save(["3", 1], "parity/ours"),
        "5": _estimate(["2", 0], convention="opencv", flip_x=True),
        "6": _save(["5", 1], "parity/opencv", png16=False),
    }
    entry = server.wait(server.queue(workflow))
    assert entry["status"]["status_str"] == "success", entry["status"]

    with Image.open(server.base / "input" / "clip.tiff") as tiff:
        pages = []
        for index in range(FRAMES):
            tiff.seek(index)
            pages.append(np.asarray(tiff.convert("RGB"), dtype=np.float32) / 255.0)
    pipe = NormalCrafterPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = np.concatenate(list(pipe.stream(pages, window_size=3, overlap=1, num_inference_steps=2)))
    assert expected.shape == (FRAMES, HEIGHT, WIDTH, 3)

    output = server.base / "output"
    ours = _saved(entry, "4")
    npz = np.load(output / ours["npz"]["subfolder"] / ours["npz"]["filename"])["normal"]
    assert npz.dtype == np.float32
    # Equal up to float32 rounding: in ComfyUI's server the same pipeline on the same frames differs from this process
    # in the last bits (2.2e-5 to 2.6e-5 seen, varying between server runs); run through the same node code in one
    # process, with ComfyUI imported and its model management loading the model, they are bit-identical.
    np.testing.assert_allclose(npz, expected, rtol=0, atol=1e-4)
    import OpenEXR

    exr_dir = output / ours["exr"]["subfolder"] / ours["exr"]["filename"]
    exr_frames = sorted(exr_dir.glob("*.exr"))
    assert len(exr_frames) == FRAMES
    for index, path in enumerate(exr_frames):
        with OpenEXR.File(str(path)) as exr:
            np.testing.assert_array_equal(exr.channels()["RGB"].pixels, npz[index])  # the same floats
    png_dir = output / ours["png16"]["subfolder"] / ours["png16"]["filename"]
    decoded = np.stack([NormalsProcessor.from_uint16(read_png16(path)) for path in sorted(png_dir.glob("*.png"))])
    np.testing.assert_allclose(decoded, npz, rtol=0, atol=1.0 / 65535 + 1e-7)

    flipped = _saved(entry, "6")
    opencv = np.load(output / flipped["npz"]["subfolder"] / flipped["npz"]["filename"])["normal"]
    np.testing.assert_array_equal(opencv, npz * np.float32([-1, -1, -1]))  # opencv (1, -1, -1), then x flipped

    assert server.log_text().count("NormalCrafter: loading the pipeline from") == 1  # one load for both estimates
    leftovers = [path.name for path in output.rglob("*") if "partial" in path.name or path.name.startswith(".")]
    assert leftovers == []


def test_interrupt_stops_the_run_and_leaves_no_file(server):
    """A long run (24 frames, 8 steps a window) interrupted once frames are flowing ends as interrupted in the
    history, inside the estimate node, and nothing of its save node is in the output folder."""
    workflow = {
        "1": _loader(),
        "2": {"class_type": "NormalCrafterLoadFrames", "inputs": {"folder": "long", "skip_first": 0, "max_frames": 0}},
        "3": _estimate(["2", 0], window=4, overlap=1, steps=8),
        "4": _save(["3", 1], "interrupted/run"),
    }
    prompt_id = server.queue(workflow)
    deadline = time.monotonic() + 120
    while not server.get("/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.1)
    time.sleep(3)
    started = time.monotonic()
    server.post("/interrupt", {})
    entry = server.wait(prompt_id)
    assert time.monotonic() - started < 30
    assert entry["status"]["status_str"] == "error"
    interrupted = [data for kind, data in entry["status"]["messages"] if kind == "execution_interrupted"]
    assert interrupted, entry["status"]["messages"]
    # Stopped inside the estimate node (between its frames), not after it at the next node.
    assert interrupted[0]["node_id"] == "3" and "3" not in interrupted[0]["executed"], interrupted[0]
    assert not (server.base / "output" / "interrupted").exists() or not any(
        (server.base / "output" / "interrupted").iterdir()
    )
    assert server.alive()


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            {
                "2": {
                    "class_type": "NormalCrafterLoadFrames",
                    "inputs": {"folder": "long", "skip_first": 99, "max_frames": 0},
                }
            },
            "`images` is empty",
        ),
        (
            {
                "2": {
                    "class_type": "NormalCrafterLoadFrames",
                    "inputs": {"folder": "mixed", "skip_first": 0, "max_frames": 0},
                }
            },
            "`images` mixes frame sizes",
        ),
        ({"1": _loader(model="/no/such/normalcrafter-model")}, "no such folder"),
        (
            {"3": _estimate(["2", 0], window=3, overlap=3)},
            "`overlap` must be an integer with 0 <= overlap < window_size",
        ),
        ({}, None),
    ],
    ids=["empty-batch", "mixed-sizes", "missing-model-folder", "overlap-out-of-range", "control"],
)
def test_bad_input_is_a_node_error_and_the_server_keeps_serving(server, nodes, message):
    workflow = {
        "1": _loader(),
        "2": {"class_type": "NormalCrafterLoadFrames", "inputs": {"folder": "long", "skip_first": 0, "max_frames": 2}},
        "3": _estimate(["2", 0]),
        "4": _save(["3", 1], "bad/run", exr=False, png16=False),
    }
    workflow.update(nodes)
    entry = server.wait(server.queue(workflow))
    if message is None:  # the same workflow without the fault runs
        assert entry["status"]["status_str"] == "success", entry["status"]
    else:
        assert message in _error_message(entry)
    assert server.alive()


def test_window_size_below_one_is_refused_when_queued(server):
    """ComfyUI checks the widget's minimum itself: the prompt is refused at /prompt, naming the input."""
    workflow = {
        "1": _loader(),
        "2": {"class_type": "LoadImage", "inputs": {"image": "clip.tiff"}},
        "3": _estimate(["2", 0], window=0, overlap=0),
        "4": _save(["3", 1], "bad/window"),
    }
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.queue(workflow)
    assert refused.value.code == 400
    assert "window_size" in refused.value.read().decode()
    assert server.alive()


def test_free_releases_the_model_and_the_next_run_loads_it_again(server):
    workflow = {
        "1": _loader(),
        "2": {"class_type": "LoadImage", "inputs": {"image": "clip.tiff"}},
        "3": _estimate(["2", 0], window=5, overlap=2, steps=1),
        "4": _save(["3", 1], "free/run", exr=False, png16=False),
    }
    assert server.wait(server.queue(workflow))["status"]["status_str"] == "success"
    loads = server.log_text().count("NormalCrafter: loading the pipeline from")
    server.post("/free", {"unload_models": True})
    deadline = time.monotonic() + 30
    while "NormalCrafter: released the pipeline" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()[-3000:]
        time.sleep(0.25)
    workflow["3"] = _estimate(["2", 0], window=5, overlap=2, steps=2)  # the loader's output stays cached
    assert server.wait(server.queue(workflow))["status"]["status_str"] == "success"
    assert server.log_text().count("NormalCrafter: loading the pipeline from") == loads + 1


def test_example_workflow_matches_the_nodes_the_server_lists(server):
    """Every node of the shipped example workflow exists in this ComfyUI, and every input it sets is one that node
    declares (the example needs the released model and a clip, so it is checked, not run)."""
    info = server.get("/object_info")
    workflow = json.loads((PACK / "api_workflows" / "normalcrafter_video_api.json").read_text())
    assert {node["class_type"] for node in workflow.values()} >= NODE_IDS - {"NormalCrafterLoadFrames"}
    for node_id, node in workflow.items():
        assert node["class_type"] in info, node["class_type"]
        declared = info[node["class_type"]]["input"]
        names = set(declared.get("required", {})) | set(declared.get("optional", {}))
        assert set(node["inputs"]) <= names, (node_id, set(node["inputs"]) - names)
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [source node, output index]
                assert value[0] in workflow and value[1] < len(info[workflow[value[0]]["class_type"]]["output"])


def test_a_run_over_the_memory_budget_names_the_settings_to_lower(comfyui_dir, comfyui_python, model_dir, tmp_path):
    """A server capped at 4 GiB of address space (its own start-up takes about 1.2): frames processed at 4096 pixels
    need more, and the run ends as a node error that names `window_size` and `processing_resolution` (not
    `offload`, which does nothing on the CPU); the same workflow at the frames' own size then succeeds on the same
    server."""
    with _running_comfyui(comfyui_dir, comfyui_python, tmp_path / "base", model_dir, address_space=4 << 30) as capped:
        workflow = {
            "1": _loader(),
            "2": {"class_type": "LoadImage", "inputs": {"image": "clip.tiff"}},
            "3": _estimate(["2", 0], window=3, overlap=1, steps=1, resolution=4096),
            "4": _save(["3", 1], "budget/run", exr=False, png16=False),
        }
        message = _error_message(capped.wait(capped.queue(workflow)))
        assert message.startswith("Not enough memory for this run"), message
        for setting in ("`window_size` (now 3", "`processing_resolution` (now 4096"):
            assert setting in message, message
        assert "`offload`" not in message
        workflow["3"] = _estimate(["2", 0], window=3, overlap=1, steps=1, resolution=0)
        assert capped.wait(capped.queue(workflow))["status"]["status_str"] == "success"


@pytest.mark.browser
def test_page_lists_the_nodes(server, tmp_path):
    """Headless Chromium opens ComfyUI's page: its front end registers the pack's nodes, loads the UI-format example
    workflow onto the canvas (the nodes of the API-format one), and the page's own /object_info lists the nodes; a
    screenshot of the page is kept."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        _missing("needs chromium and chromedriver (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_script_timeout(120)
        driver.get(server.url)
        # The front end has booted when its app object has registered the server's node definitions.
        WebDriverWait(driver, 180).until(
            lambda d: d.execute_script(
                "return !!(window.LiteGraph && window.LiteGraph.registered_node_types"
                " && window.LiteGraph.registered_node_types['NormalCrafterEstimateNormals']);"
            )
        )
        # Show the pack's nodes on the canvas: the UI-format example, loaded as a template is.
        driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)  # the template dialog of a first visit
        example = json.loads((PACK / "example_workflows" / "normalcrafter_video.json").read_text())
        driver.execute_async_script(
            "const [workflow, done] = arguments;"
            "Promise.resolve(window.app.loadGraphData(workflow)).then(() => done(true));",
            example,
        )
        on_canvas = driver.execute_script("return window.app.graph._nodes.map(node => node.type);")
        time.sleep(1)  # let the canvas draw (and any alert about the file show)
        page_text = driver.find_element("tag name", "body").text
        listed = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/object_info').then(r => r.json()).then(info => done(Object.keys(info)));"
        )
        artefacts = Path(os.environ.get("ARTEFACTS_DIR") or tmp_path)  # CI keeps them in ./artefacts
        artefacts.mkdir(parents=True, exist_ok=True)
        screenshot = artefacts / "comfyui_page.png"
        driver.save_screenshot(str(screenshot))
        print(f"screenshot of ComfyUI's page: {screenshot}")
    finally:
        with contextlib.suppress(Exception):
            driver.quit()
    assert NODE_IDS <= set(listed)
    assert "Invalid workflow" not in page_text  # the front end's schema check accepts the file
    api = json.loads((PACK / "api_workflows" / "normalcrafter_video_api.json").read_text())
    assert sorted(on_canvas) == sorted(node["class_type"] for node in api.values())  # the UI file is the API file
    assert screenshot.stat().st_size > 0
