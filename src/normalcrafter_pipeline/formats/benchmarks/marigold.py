"""Marigold's normals evaluation sets (prs-eth/Marigold, `evaluation_dataset.zip`), read as published.

Each set is a folder (the root: `nyuv2/test`, `scannet`, `ibims/ibims`, `diode/val` or `oasis/val` of the unzipped
archive, as `config/dataset_normals/data_*_test.yaml` name them) of images and float ground truth::

    [<scene>/]<id>_img.png        8-bit RGB (DIODE: `<id>.png`)
    [<scene>/]<id>_normal.npy     float (H, W, 3), valid where the vector is non-zero

and a split file in Marigold's repository (`data_split/<set>_normals/*.txt`) lists `<image> <normal>` pairs relative
to that folder. `split=` reads exactly those pairs; without it every `*_normal.npy` under the root is read with the
image beside it. Every image is a sequence of one frame.

Axes: as stored, +x right, +y up, +z toward the viewer (Marigold's prediction frame, which is ours: its evaluation
compares predictions with these files unchanged). Marigold averages its metrics per image, not over pooled pixels.
"""

from __future__ import annotations

import os

import numpy as np

from .published import (
    BenchmarkDataError,
    BenchmarkFrame,
    BenchmarkSequence,
    check_frames,
    npy_size,
    read_split_file,
    warn_frame_count,
)

# Frames listed by Marigold's split file of each evaluation set.
MARIGOLD_SETS = {"nyuv2": 654, "scannet": 300, "ibims": 100, "diode": 771, "oasis": 9999}
NORMAL_SUFFIX = "_normal.npy"


def _frame(root: str, image: str, normal: str) -> BenchmarkFrame:
    scene = os.path.dirname(normal)
    frame_id = os.path.basename(normal)[: -len(NORMAL_SUFFIX)] if normal.endswith(NORMAL_SUFFIX) else normal
    return BenchmarkFrame(
        image=os.path.join(root, image), normal=os.path.join(root, normal), scene=scene, frame_id=frame_id
    )


def list_marigold_frames(root: str | os.PathLike, set_name: str, split: str | os.PathLike | None = None) -> list:
    """The frames of a Marigold set folder: the split file's pairs, or every `*_normal.npy` with its image."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: benchmark root does not exist; pass the Marigold {set_name} folder.")
    if split is not None:
        return [_frame(root, row[0], row[1]) for row in read_split_file(split, 2)]
    frames = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            if not name.endswith(NORMAL_SUFFIX):
                continue
            stem = name[: -len(NORMAL_SUFFIX)]
            candidates = [stem + "_img.png", stem + ".png", stem + "_img.jpg", stem + ".jpg"]
            image = next((c for c in candidates if os.path.isfile(os.path.join(folder, c))), candidates[0])
            relative = os.path.relpath(folder, root)
            relative = "" if relative == "." else relative
            frames.append(_frame(root, os.path.join(relative, image), os.path.join(relative, name)))
    if not frames:
        raise BenchmarkDataError(
            f"{root}: not a Marigold {set_name} folder, no <id>{NORMAL_SUFFIX} found; pass the set's folder of the "
            "unzipped evaluation_dataset (e.g. nyuv2/test)."
        )
    warn_frame_count(root, f"marigold:{set_name}", len(frames), MARIGOLD_SETS[set_name])
    return frames


def decode_marigold_normal(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of one Marigold `.npy` file: `(normal (H, W, 3) float32 in our axes, valid (H, W) bool)`."""
    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise BenchmarkDataError(f"{path}: does not decode as a .npy array ({error}).") from error
    if stored.ndim != 3 or stored.shape[2] != 3 or not np.issubdtype(stored.dtype, np.floating):
        raise BenchmarkDataError(f"{path}: holds {stored.dtype} {stored.shape}; expected float (H, W, 3) normals.")
    stored = stored.astype(np.float32)
    valid = np.all(np.isfinite(stored), axis=-1) & (np.linalg.norm(np.nan_to_num(stored), axis=-1) > 0)
    return stored, valid


def marigold_sequences(root: str | os.PathLike, set_name: str, split: str | os.PathLike | None = None) -> list:
    """The one-frame `FrameSequence`s of a Marigold set folder, every frame checked before returning."""
    if set_name not in MARIGOLD_SETS:
        raise ValueError(
            f"`marigold:{set_name}` is not one of Marigold's normals evaluation sets; use one of "
            f"{', '.join('marigold:' + name for name in MARIGOLD_SETS)}."
        )
    frames = list_marigold_frames(root, set_name, split)
    check_frames(frames, npy_size, f"marigold:{set_name}")

    def decode(frame: BenchmarkFrame):
        return decode_marigold_normal(frame.normal)

    return [BenchmarkSequence(os.path.join(f.scene, f.frame_id).replace(os.sep, "_"), [f], decode) for f in frames]
