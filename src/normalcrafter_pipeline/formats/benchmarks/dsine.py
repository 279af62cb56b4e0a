"""DSINE's evaluation sets (`dsine_eval`, from baegwangbin/DSINE), read as published.

Layout of one set folder (the folder passed as the root, e.g. `dsine_eval/sintel`)::

    <scene>/<id>_img.png          8-bit RGB (vkitti: `<id>_img.jpg`)
    <scene>/<id>_normal.png       nyuv2, scannet: 8-bit RGB, n = v / 255 * 2 - 1, valid where R + G + B > 0
                                  vkitti: 16-bit RGB, n = v / 65535 * 2 - 1, valid where R + G + B > 0
    <scene>/<id>_normal.exr       ibims, sintel: float RGB = (x, y, z), valid where |n| > 0.5
    <scene>/<id>_intrins.npy      3x3 intrinsics (not needed here)

nyuv2 holds `test/` (the 654 evaluated images) and `train/` (795 training images); only `test/` is read. Sintel's
scenes are sequences of consecutive frames (`frame_0001`, ...), read as one sequence each in frame order; every other
set is a collection of single images, each read as a sequence of one frame. `split=` takes one of DSINE's own split
files (`data/datasets/<set>/split/*.txt`, lines `<scene>/<id>_img.png`) to read exactly the frames it lists.

Axes: the stored vectors are outward normals with +x pointing **left**, +y up and +z toward the camera, which is the
negated normal in the OpenCV camera frame (x right, y down, z forward). DSINE's README names the frame as
"right, down, front" and also says a wall facing the camera is (0, 0, 1); both hold only for the negated vector.
Its depth-to-normal code (`utils/d2n/cross.py`, a negated cross product of OpenCV-frame points), its OASIS loader
(which turns OASIS normals "to LUB": left, up, back) and the published example (`notes/example`) agree: a wall facing
the camera is stored as (0, 0, 1), a floor as (0, 1, 0), a wall on the right of the image facing left as (+1, 0, 0).
So the reader negates x: ours = (-x, y, z).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..exr import read_exr
from ..png16 import read_png16
from .published import (
    BenchmarkDataError,
    BenchmarkFrame,
    BenchmarkSequence,
    check_frames,
    exr_size,
    image_size,
    read_split_file,
    warn_frame_count,
)

IMAGE_EXTENSIONS = (".png", ".jpg")
IMAGE_SUFFIXES = tuple("_img" + extension for extension in IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class DsineSet:
    """How one `dsine_eval` set is stored and scored."""

    normal_suffix: str  # the ground truth beside `<id>_img.<ext>`
    encoding: str  # "png8", "png16" or "exr"
    scenes: tuple[str, ...] | None  # the scene folders read (None: all)
    video: bool  # scenes are sequences of consecutive frames
    published_frames: int  # frames in DSINE's split file for the set
    source: str


DSINE_SETS = {
    "nyuv2": DsineSet("_normal.png", "png8", ("test",), False, 654, "NYUv2 test images; ground truth from GeoNet"),
    "scannet": DsineSet("_normal.png", "png8", None, False, 300, "ScanNet, 260 scenes; FrameNet ground truth"),
    "ibims": DsineSet("_normal.exr", "exr", None, False, 100, "iBims-1; normals plane-fitted to its laser depth"),
    "sintel": DsineSet("_normal.exr", "exr", None, True, 1064, "MPI Sintel, 23 sequences of up to 50 frames"),
    "vkitti": DsineSet("_normal.png", "png16", None, False, 1000, "Virtual KITTI 2, 200 sampled images per scene"),
}
# x is stored pointing left: ours = stored * (-1, 1, 1).
DSINE_TO_OURS = np.array([-1.0, 1.0, 1.0], dtype=np.float32)


def _frame_from_relative(root: str, relative: str, dsine_set: DsineSet) -> BenchmarkFrame:
    relative = relative.replace("\\", "/")
    scene, _, name = relative.rpartition("/")
    frame_id, marker, extension = name.rpartition("_img")
    if not marker or extension not in IMAGE_EXTENSIONS:
        raise BenchmarkDataError(f"{relative!r} is not a DSINE image name (`<scene>/<id>_img.png`).")
    folder = os.path.join(root, scene)
    return BenchmarkFrame(
        image=os.path.join(folder, name),
        normal=os.path.join(folder, frame_id + dsine_set.normal_suffix),
        scene=scene,
        frame_id=frame_id,
    )


def _not_a_set_folder(root: str, set_name: str) -> BenchmarkDataError:
    hint = f"pass the folder that holds its `<scene>/<id>_img.png` files (dsine_eval/{set_name})"
    if os.path.isdir(os.path.join(root, set_name)):
        hint = f"it holds {set_name}/: pass {os.path.join(root, set_name)}"
    elif any(name.endswith(("_img.png", "_img.jpg")) for name in os.listdir(root)):
        hint = "it holds images itself: pass its parent folder (DSINE sets keep images in scene folders)"
    scenes = DSINE_SETS[set_name].scenes
    expected = f"{scenes[0]}/<id>_img.png" if scenes else "<scene>/<id>_img.png"
    return BenchmarkDataError(f"{root}: not a DSINE {set_name} folder, no {expected} found; {hint}.")


def list_dsine_frames(root: str | os.PathLike, set_name: str, split: str | os.PathLike | None = None) -> list:
    """The frames of a DSINE set folder, by scene and then file name, or as listed by DSINE's `split` file."""
    root = os.fspath(root)
    dsine_set = DSINE_SETS[set_name]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: benchmark root does not exist; pass the dsine_eval/{set_name} folder.")
    if split is not None:
        return [_frame_from_relative(root, row[0], dsine_set) for row in read_split_file(split, 1)]
    frames = []
    for scene in sorted(os.listdir(root)):
        folder = os.path.join(root, scene)
        if not os.path.isdir(folder) or (dsine_set.scenes is not None and scene not in dsine_set.scenes):
            continue
        names = sorted(name for name in os.listdir(folder) if name.endswith(IMAGE_SUFFIXES))
        frames += [_frame_from_relative(root, f"{scene}/{name}", dsine_set) for name in names]
    if not frames:
        raise _not_a_set_folder(root, set_name)
    warn_frame_count(root, f"dsine:{set_name}", len(frames), dsine_set.published_frames)
    return frames


def decode_dsine_normal(path: str, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of one DSINE file as `(normal in our axes (H, W, 3) float32, valid (H, W) bool)`.

    Decoding and masks are DSINE's loaders': 8-bit PNG `v / 255 * 2 - 1` and 16-bit PNG `v / 65535 * 2 - 1`, valid
    where the channel sum is non-zero; EXR as stored, valid where the vector is longer than 0.5.
    """
    if encoding == "exr":
        stored = read_exr(path)
        if stored.ndim != 3 or stored.shape[2] != 3:
            raise BenchmarkDataError(f"{path}: EXR holds {stored.shape}; expected three channels R, G, B = x, y, z.")
        with np.errstate(invalid="ignore"):
            valid = np.linalg.norm(stored, axis=-1) > 0.5  # NaN compares false
    else:
        try:
            raw = read_png16(path)
        except (OSError, ValueError, SyntaxError) as error:
            raise BenchmarkDataError(f"{path}: does not decode as PNG ({error}).") from error
        dtype, scale = (np.uint8, 255.0) if encoding == "png8" else (np.uint16, 65535.0)
        if raw.dtype != dtype or raw.ndim != 3 or raw.shape[2] < 3:
            raise BenchmarkDataError(
                f"{path}: normal map is {raw.dtype} with shape {raw.shape}; this set publishes "
                f"{np.dtype(dtype).itemsize * 8}-bit RGB PNGs."
            )
        raw = raw[..., :3]
        valid = raw.astype(np.int64).sum(axis=-1) > 0
        stored = raw.astype(np.float32) / scale * 2.0 - 1.0
    return (stored * DSINE_TO_OURS).astype(np.float32), valid


def dsine_sequences(root: str | os.PathLike, set_name: str, split: str | os.PathLike | None = None) -> list:
    """The `FrameSequence`s of a DSINE set folder, every frame checked (files, headers, sizes) before returning."""
    if set_name not in DSINE_SETS:
        raise ValueError(
            f"`dsine:{set_name}` is not a DSINE evaluation set; use one of "
            f"{', '.join('dsine:' + name for name in DSINE_SETS)} (OASIS stores its ground truth as pickles, which "
            "are not read here)."
        )
    dsine_set = DSINE_SETS[set_name]
    frames = list_dsine_frames(root, set_name, split)
    check_frames(frames, exr_size if dsine_set.encoding == "exr" else image_size, f"dsine:{set_name}")

    def decode(frame: BenchmarkFrame):
        return decode_dsine_normal(frame.normal, dsine_set.encoding)

    if not dsine_set.video:
        return [BenchmarkSequence(f"{f.scene}_{f.frame_id}", [f], decode) for f in frames]
    by_scene: dict[str, list[BenchmarkFrame]] = {}
    for frame in frames:
        by_scene.setdefault(frame.scene, []).append(frame)
    return [
        BenchmarkSequence(scene, sorted(scene_frames, key=lambda f: f.frame_id), decode)
        for scene, scene_frames in sorted(by_scene.items())
    ]
