"""The web demo: its checks on uploads and settings, the files of a request, the clean-up of sessions and servers,
and the page itself in headless Chromium against a tiny model."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from normalcrafter_pipeline.demo import (
    DOWNLOAD_FORMATS,
    DemoInputError,
    Limits,
    Settings,
    WorkArea,
    check_settings,
    check_upload,
    run_request,
    safe_stem,
)

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "examples" / "sample_clip.mp4"  # 40 frames, 448x256, 10 fps
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def test_uploads_are_checked_by_content_not_by_name(tmp_path):
    settings, limits = Settings(max_res=128), Limits()
    not_a_video = tmp_path / "clip.mp4"
    not_a_video.write_text("this is a text file with a video's name\n")
    with pytest.raises(DemoInputError, match="could not be read as a video"):
        check_upload(not_a_video, settings, limits)

    renamed = tmp_path / "notes.txt"  # a real video under a name that says otherwise
    shutil.copyfile(SAMPLE, renamed)
    reader = check_upload(renamed, settings, limits)
    assert (len(reader), reader.width, reader.height) == (40, 128, 72)

    with pytest.raises(DemoInputError, match="No video"):
        check_upload(None, settings, limits)
    with pytest.raises(DemoInputError, match="no longer on the server"):
        check_upload(tmp_path / "gone.mp4", settings, limits)


def test_limits_refuse_oversized_and_long_uploads_naming_the_fix():
    settings = Settings(max_res=128)
    with pytest.raises(DemoInputError, match=r"0\.3 MB, over this server's limit of 0\.1 MB"):
        check_upload(SAMPLE, settings, Limits(max_upload_mb=0.1))
    with pytest.raises(DemoInputError, match="40 frames .* limit of 10; set Length .* or Target fps"):
        check_upload(SAMPLE, settings, Limits(max_frames=10))
    assert len(check_upload(SAMPLE, Settings(max_res=128, length=10), Limits(max_frames=10))) == 10
    assert len(check_upload(SAMPLE, Settings(max_res=128, target_fps=2.5), Limits(max_frames=10))) == 10


@pytest.mark.parametrize(
    "settings, message",
    [
        (Settings(window_size=4, overlap=4), "Overlap must be an integer with 0 <= overlap < window_size"),
        (Settings(window_size=0), "Window must be an integer >= 1"),
        (Settings(steps=0), "Steps must be a whole number from 1 to 50"),
        (Settings(max_res=2048), "between 64 and 1024"),
        (Settings(target_fps=-1.0), "Target fps must be 0"),
        (Settings(length=-3), "Length must be 0"),
        (Settings(dtype="int8"), "Precision must be one of"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(settings, message):
    with pytest.raises(DemoInputError, match=message):
        check_settings(settings, Limits())


def test_names_of_uploads_cannot_leave_their_folder():
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("/abs/path/My Clip (1).mov") == "My_Clip_1"
    assert safe_stem("..") == "video"
    assert safe_stem("$(rm -rf ~).mp4") == "rm_-rf"
    assert safe_stem(None) == "video"
    assert safe_stem("a" * 300 + ".mp4") == "a" * 64


def test_a_request_writes_the_side_by_side_video_and_every_download(tmp_path):
    from test_outputs import read_exr
    from test_video_io import decode_all

    from normalcrafter_pipeline.testing_utils import tiny_pipeline

    settings = Settings(max_res=64, length=6, window_size=4, overlap=1)
    reader = check_upload(SAMPLE, settings, Limits())
    seen = []
    video, files = run_request(
        tiny_pipeline(seed=0), reader, safe_stem("../../clip.mp4"), settings, list(DOWNLOAD_FORMATS), tmp_path,
        on_frames=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen[-1] == (6, 6) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert video == tmp_path / "clip_side_by_side.mp4"
    assert decode_all(video)[0].shape == (6, 40, 128, 3)  # input | normals, 64x40 each
    names = sorted(path.name for path in files)
    assert names == ["clip_normals.mp4", "clip_normals.npy", "clip_normals_exr.zip", "clip_normals_png16.zip"]
    assert all(path.parent == tmp_path for path in files)
    normals = np.load(tmp_path / "clip_normals.npy")
    assert normals.shape == (6, 40, 64, 3) and normals.dtype == np.float16
    with zipfile.ZipFile(tmp_path / "clip_normals_png16.zip") as archive:
        assert len(archive.namelist()) == 6
    with zipfile.ZipFile(tmp_path / "clip_normals_exr.zip") as archive:
        members = sorted(archive.namelist())
        assert len(members) == 6
        archive.extract(members[2], tmp_path / "unzipped")
    channels = read_exr(tmp_path / "unzipped" / members[2])
    exr = np.stack([channels[name] for name in "RGB"], axis=-1)
    np.testing.assert_allclose(exr.astype(np.float32), normals[2].astype(np.float32), atol=1e-3)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["clip_side_by_side.mp4", *names, "unzipped"])


def test_sessions_and_dead_servers_leave_nothing_behind(tmp_path):
    work = WorkArea(tmp_path)
    upload = work.root / "0123abcd" / "clip.mp4"  # where Gradio stores an upload
    upload.parent.mkdir()
    upload.write_bytes(b"x")
    outside = tmp_path / "user_file.mp4"
    outside.write_bytes(b"x")
    first, second = work.new_request("session-a"), work.new_request("session-a")
    other = work.new_request("session-b")
    work.note_upload("session-a", upload)
    work.note_upload("session-a", outside)  # not in the area: never removed
    work.remove_session("session-a")
    assert not first.exists() and not second.exists() and not upload.exists()
    assert other.exists() and outside.exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"normalcrafter-demo-{dead.pid}"
    (stale / "sessions").mkdir(parents=True)
    assert WorkArea.remove_stale(tmp_path) == [stale]
    assert work.root.exists() and not stale.exists()
    work.remove()
    assert not work.root.exists()


# ----------------------------------------------------------------------------------------------------------------
# The page, in a real browser
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by Selenium through Debian's chromedriver (nothing is downloaded)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed for the browser test (.ci/run installs them)")
        pytest.skip("needs chromium and chromedriver (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    with contextlib.suppress(Exception):
        driver.quit()


@pytest.fixture
def demo_server(tmp_path):
    """`normalcrafter-demo` on 127.0.0.1 with a tiny model, an upload limit of 1 MB and frames of 128 pixels."""
    from normalcrafter_pipeline.testing_utils import free_port, tiny_pipeline

    model = tmp_path / "tiny-model"
    tiny_pipeline(seed=0).save_pretrained(model)
    port = free_port()
    temp = tmp_path / "server-tmp"
    temp.mkdir()
    log = open(tmp_path / "server.log", "w")
    command = [
        sys.executable, "-m", "normalcrafter_pipeline.demo", "--model", str(model), "--device", "cpu",
        "--dtype", "fp32", "--port", str(port), "--max-upload-mb", "1", "--max-resolution", "128",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(temp)})
    url = f"http://127.0.0.1:{port}/"
    import httpx

    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                break
        assert time.monotonic() < deadline, "the demo did not start in 180 s"
        time.sleep(0.5)
    area = temp / f"normalcrafter-demo-{process.pid}"
    yield url, area, process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    log.close()


def _wait(driver, condition, timeout=240):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)


@pytest.mark.slow
@pytest.mark.browser
def test_the_demo_page_runs_a_video_and_reports_bad_uploads(tmp_path, browser, demo_server):
    import httpx
    from selenium.webdriver.common.by import By

    url, area, server = demo_server
    browser.get(url)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    limits = browser.find_element(By.ID, "limits").text
    assert "uploads up to 1 MB" in limits and "longest side at most 128 pixels" in limits

    browser.find_element(By.ID, "sample").click()  # "Use the sample clip"
    _wait(browser, lambda d: "sample_clip.mp4" in d.find_element(By.ID, "upload").text.replace("\n", ""))
    browser.find_element(By.ID, "run").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#result video[src]"))
    playing = _wait(
        browser,
        lambda d: d.execute_script(
            "const v = document.querySelector('#result video');"
            "return v.readyState >= 1 ? [v.duration, v.videoWidth, v.videoHeight] : null;"
        ),
    )
    duration, width, height = playing
    assert (width, height) == (256, 72)  # input | normals, 128x72 each
    assert duration == pytest.approx(4.0, abs=0.15)  # 40 frames at 10 fps
    assert "Done: 40 frames at 128x72" in browser.find_element(By.ID, "status").text
    links = {a.text.strip(): a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")}
    npy_link = next(href for href in links.values() if href and "sample_clip_normals.npy" in href)
    npy = tmp_path / "downloaded.npy"
    npy.write_bytes(httpx.get(npy_link, timeout=30).content)
    assert np.load(npy).shape == (40, 72, 128, 3)  # the frame count of the result, through the download
    browser.save_screenshot(str(tmp_path / "result_page.png"))
    sessions = list((area / "sessions").iterdir())
    assert len(sessions) == 1 and any(sessions[0].rglob("*_side_by_side.mp4"))

    # A new page is a new session: the old one's files go.
    not_a_video = tmp_path / "holiday.mp4"
    not_a_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))  # an mp4 header, then noise
    browser.get(url)
    _wait(browser, lambda d: not sessions[0].exists(), timeout=60)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(not_a_video))
    _wait(browser, lambda d: "holiday.mp4" in d.find_element(By.ID, "upload").text.replace("\n", ""))
    browser.find_element(By.ID, "run").click()
    _wait(browser, lambda d: "could not be read as a video" in d.find_element(By.TAG_NAME, "body").text, timeout=60)
    browser.save_screenshot(str(tmp_path / "error_page.png"))

    # The server refuses an upload over --max-upload-mb, and keeps a path-like name inside its area.
    upload_url = url + "gradio_api/upload"
    too_big = httpx.post(upload_url, files={"files": ("big.mp4", b"\x00" * (1024 * 1024 + 1))}, timeout=30)
    assert too_big.status_code == 413
    assert not list(area.rglob("big.mp4"))
    sneaky = httpx.post(upload_url, files={"files": ("../../../escaped.mp4", b"abc")}, timeout=30)
    assert sneaky.status_code == 200
    stored = Path(sneaky.json()[0]).resolve()
    assert stored.is_relative_to(area.resolve()) and stored.name.endswith("escaped.mp4")
    assert not list(area.parent.parent.glob("escaped.mp4")) and not list(area.parent.glob("escaped.mp4"))

    # Stopping the server removes everything it wrote.
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    assert not area.exists()


def test_a_model_that_cannot_load_stops_the_demo_before_it_serves(tmp_path, capsys):
    from normalcrafter_pipeline.demo import main
    from normalcrafter_pipeline.testing_utils import free_port

    status = main(["--model", str(tmp_path / "no-model-here"), "--device", "cpu", "--port", str(free_port())])
    assert status == 1
    error = capsys.readouterr().err
    assert f"could not load the model '{tmp_path / 'no-model-here'}'" in error
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"normalcrafter-demo-{os.getpid()}"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
        (["--max-resolution", "32"], "--max-resolution >= 64"),
        (["--sample", "/no/such/clip.mp4"], "--sample /no/such/clip.mp4: no such file"),
    ],
)
def test_bad_server_options_are_usage_errors(argv, message, capsys):
    from normalcrafter_pipeline.demo import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
