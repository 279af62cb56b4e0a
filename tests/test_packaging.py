"""What an installed wheel carries: the package data that the web demo and normalcrafter-publish read."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import normalcrafter_pipeline
from normalcrafter_pipeline import demo, publish

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(normalcrafter_pipeline.__file__).parent
ASSETS = ("sample_clip.mp4", "model_card.md")


def test_the_demo_and_publish_read_their_data_from_the_package():
    assert demo.SAMPLE_CLIP == PACKAGE_DIR / "assets" / "sample_clip.mp4" and demo.SAMPLE_CLIP.is_file()
    assert publish.MODEL_CARD_TEMPLATE == PACKAGE_DIR / "assets" / "model_card.md"
    assert publish.MODEL_CARD_TEMPLATE.read_text(encoding="utf-8").startswith("---\n")  # the Hub's YAML header


@pytest.mark.slow
def test_the_wheel_carries_the_sample_clip_and_the_model_card(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run([*command, "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    (wheel,) = (tmp_path / "dist").glob("normalcrafter_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"normalcrafter_pipeline/assets/{name}" for name in ASSETS} <= names
