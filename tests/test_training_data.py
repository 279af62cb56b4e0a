"""Tests of the clip format, the 16-bit PNG codec, the dataset and sampler, and the synthetic renderer."""

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import PIL.Image
import pytest
import torch

from normalcrafter_pipeline import NormalsProcessor
from normalcrafter_pipeline.formats import list_clips, load_clip, read_png16, write_clip, write_png16
from normalcrafter_pipeline.metrics import reprojection_error
from normalcrafter_pipeline.training import ClipBatchSampler, NormalClipDataset, render_clip, render_dataset
from normalcrafter_pipeline.training.renderer import MATERIALS, OBJECT_KINDS, Nuisances, look_at, render_frame

# ---------------------------------------------------------------------------------------------------------------
# 16-bit PNG
# ---------------------------------------------------------------------------------------------------------------


def _filtered_png(image: np.ndarray, filters: list[int]) -> bytes:
    """Encode a uint16 RGB image with the given PNG row filter per row (a reference encoder for the reader)."""
    height, width, _ = image.shape
    rows = image.astype(">u2").view(np.uint8).reshape(height, width * 6).astype(np.int32)
    bpp, out, previous = 6, [], np.zeros(width * 6, np.int32)
    for r in range(height):
        row, kind = rows[r], filters[r % len(filters)]
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), previous[:-bpp]])
        if kind == 0:
            predictor = np.zeros_like(row)
        elif kind == 1:
            predictor = left
        elif kind == 2:
            predictor = previous
        elif kind == 3:
            predictor = (left + previous) // 2
        else:
            p = left + previous - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - previous), np.abs(p - up_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, previous, up_left))
        out.append(bytes([kind]) + ((row - predictor) & 0xFF).astype(np.uint8).tobytes())
        previous = row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(out)))
        + chunk(b"IEND", b"")
    )


def test_png16_round_trip_is_exact(tmp_path):
    image = np.random.default_rng(0).integers(0, 65536, size=(7, 9, 3), dtype=np.uint16)
    write_png16(tmp_path / "a.png", image)
    restored = read_png16(tmp_path / "a.png")
    assert restored.dtype == np.uint16 and np.array_equal(restored, image)


@pytest.mark.parametrize("filters", [[1], [2], [3], [4], [0, 1, 2, 3, 4]])
def test_png16_reader_undoes_every_row_filter(tmp_path, filters):
    image = np.random.default_rng(1).integers(0, 65536, size=(5, 4, 3), dtype=np.uint16)
    (tmp_path / "f.png").write_bytes(_filtered_png(image, filters))
    assert np.array_equal(read_png16(tmp_path / "f.png"), image)


def test_png16_errors_and_8bit_fallback(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_png16(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    PIL.Image.fromarray(rgb).save(tmp_path / "8.png")
    assert np.array_equal(read_png16(tmp_path / "8.png"), rgb)


# ---------------------------------------------------------------------------------------------------------------
# Clip format
# ---------------------------------------------------------------------------------------------------------------


def _random_clip(frames=3, height=16, width=20, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    normal = NormalsProcessor.normalize(rng.normal(size=(frames, height, width, 3)))
    mask = rng.random((frames, height, width)) > 0.2
    depth = rng.uniform(1, 5, size=(frames, height, width)).astype(np.float32)
    return rgb, normal, mask, depth


@pytest.mark.parametrize("normal_format", ["png", "npy"])
def test_write_and_load_clip_round_trip(tmp_path, normal_format):
    rgb, normal, mask, depth = _random_clip()
    write_clip(tmp_path / "c", rgb, normal, mask=mask, depth=depth, fps=12.0, normal_format=normal_format, note="x")
    assert sorted(os.listdir(tmp_path / "c" / "rgb")) == ["00000.png", "00001.png", "00002.png"]
    assert sorted(os.listdir(tmp_path / "c" / "normal")) == [f"0000{i}.{normal_format}" for i in range(3)]
    clip = load_clip(tmp_path / "c")
    assert clip["rgb"].dtype == np.uint8 and np.array_equal(clip["rgb"], rgb)
    assert clip["normal"].dtype == np.float32 and clip["normal"].shape == normal.shape
    tolerance = 1.0 / 65535 + 1e-6 if normal_format == "png" else 0.0
    assert np.abs(clip["normal"] - normal).max() <= tolerance
    assert clip["mask"].dtype == bool and np.array_equal(clip["mask"], mask)
    assert np.array_equal(clip["depth"], depth)
    assert clip["meta"] == {"fps": 12.0, "axis_convention": "opengl_camera", "note": "x"}
    # The 16-bit file holds exactly the NormalsProcessor mapping.
    if normal_format == "png":
        encoded = read_png16(tmp_path / "c" / "normal" / "00001.png")
        assert np.array_equal(encoded, NormalsProcessor.to_uint16(normal[1]))
    partial = load_clip(tmp_path / "c", [2])
    assert np.array_equal(partial["rgb"], rgb[2:]) and partial["mask"].shape == (1, 16, 20)


def test_load_clip_without_optional_parts(tmp_path):
    rgb, normal, _, _ = _random_clip(frames=1)
    write_clip(tmp_path / "c", rgb, normal)
    clip = load_clip(tmp_path / "c")
    assert clip["mask"] is None and clip["depth"] is None and clip["rgb"].shape == (1, 16, 20, 3)


def test_clip_format_errors(tmp_path):
    rgb, normal, _, _ = _random_clip(frames=2)
    write_clip(tmp_path / "c", rgb, normal)
    with pytest.raises(ValueError, match="frame_indices"):
        load_clip(tmp_path / "c", [5])
    meta_path = tmp_path / "c" / "meta.json"
    meta_path.write_text(json.dumps({"fps": 7, "axis_convention": "opencv_camera"}))
    with pytest.raises(ValueError, match="axis_convention"):
        load_clip(tmp_path / "c")
    os.remove(meta_path)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_clip(tmp_path / "c")
    write_clip(tmp_path / "d", rgb, normal)
    os.remove(tmp_path / "d" / "normal" / "00001.png")
    with pytest.raises(ValueError, match="normal maps"):
        load_clip(tmp_path / "d")
    with pytest.raises(ValueError, match="rgb"):
        write_clip(tmp_path / "e", rgb.astype(np.float32), normal)
    with pytest.raises(FileNotFoundError, match="no clip folders"):
        list_clips(tmp_path / "c")


def test_formats_and_inference_do_not_import_training():
    # Layers point one way: the file formats and the inference modules stand below training and evaluation.
    code = (
        "import sys, normalcrafter_pipeline.formats, normalcrafter_pipeline.video_io, normalcrafter_pipeline; "
        "print(sorted(m for m in sys.modules if m.startswith(('normalcrafter_pipeline.training', "
        "'normalcrafter_pipeline.evaluation'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# Dataset and sampler
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    render_dataset(base / "videos", num_clips=3, frames=5, height=48, width=80, seed=1)
    rgb, normal, mask, _ = _random_clip(frames=1, height=70, width=70, seed=2)
    for i in range(2):
        write_clip(base / "images" / f"img_{i}", rgb, normal, mask=mask)
    return str(base / "videos"), str(base / "images")


def test_dataset_items(roots):
    dataset = NormalClipDataset(roots[0], height=64, width=64)
    item = dataset[(1, 3, 123)]
    assert item["pixel_values"].shape == (3, 3, 64, 64) and item["pixel_values"].dtype == torch.float32
    assert item["normals"].shape == (3, 3, 64, 64) and item["valid_mask"].shape == (3, 1, 64, 64)
    assert 0.0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1.0
    norms = item["normals"].norm(dim=1, keepdim=True)
    assert torch.allclose(norms[item["valid_mask"]], torch.ones(()), atol=1e-5)
    assert torch.all(norms[~item["valid_mask"]] == 0)
    # Same key, same sample.
    again = dataset[(1, 3, 123)]
    assert all(torch.equal(item[k], again[k]) for k in item)


def test_dataset_flip_negates_x():
    rgb = np.zeros((1, 64, 64, 3), np.uint8)
    rgb[:, :, :32] = 255  # left half white: shows whether a sample was mirrored
    normal = np.broadcast_to(np.array([0.6, 0.0, 0.8], np.float32), (1, 64, 64, 3))
    clip = {"rgb": rgb, "normal": normal, "mask": None}
    dataset = NormalClipDataset.__new__(NormalClipDataset)
    dataset.height, dataset.width, dataset.max_scale, dataset.random_flip = 64, 64, 1.0, True
    flips = set()
    for seed in range(8):
        item = dataset.transform(clip, np.random.default_rng(seed))
        flipped = bool(item["pixel_values"][0, 0, 0, -1] > 0.5)
        flips.add(flipped)
        expected_x = -0.6 if flipped else 0.6
        assert torch.allclose(item["normals"][:, 0], torch.tensor(expected_x), atol=1e-6)
        assert torch.allclose(item["normals"][:, 2], torch.tensor(0.8), atol=1e-6)
    assert flips == {True, False}


def test_sampler_one_length_per_batch_and_images_mix_with_videos(roots):
    dataset = NormalClipDataset(list(roots), height=64, width=64, weights=[1.0, 1.0])
    sampler = ClipBatchSampler(dataset, batch_size=2, num_batches=40, min_num_frames=1, max_num_frames=4, seed=3)
    batches = list(sampler)
    assert len(batches) == 40
    lengths = set()
    for batch in batches:
        assert len({n for _, n, _ in batch}) == 1
        n = batch[0][1]
        lengths.add(n)
        if any(dataset.root_of(c) == 1 for c, _, _ in batch):
            assert n == 1  # a single image in the batch cuts the length to 1
    assert lengths == {1, 2, 3, 4}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape[:2] == (2, batch["normals"].shape[1])
    # Deterministic per (seed, epoch): every process draws the same batches.
    first, second = ClipBatchSampler(dataset, 2, 5, seed=9), ClipBatchSampler(dataset, 2, 5, seed=9)
    assert list(first) == list(second) and list(first) != list(ClipBatchSampler(dataset, 2, 5, seed=9))


def test_root_weights(roots):
    dataset = NormalClipDataset(list(roots), height=64, width=64, weights=[3.0, 0.0])
    sampler = ClipBatchSampler(dataset, batch_size=4, num_batches=20, seed=0)
    assert all(dataset.root_of(c) == 0 for batch in sampler for c, _, _ in batch)
    dataset = NormalClipDataset(list(roots), height=64, width=64, weights=[3.0, 1.0])
    counts = np.bincount([dataset.root_of(c) for b in ClipBatchSampler(dataset, 8, 250, seed=0) for c, _, _ in b])
    assert counts[0] / counts.sum() == pytest.approx(0.75, abs=0.03)


def test_dataset_and_sampler_errors(roots):
    with pytest.raises(ValueError, match="multiples of 64"):
        NormalClipDataset(roots[0], height=60, width=64)
    with pytest.raises(ValueError, match="weights"):
        NormalClipDataset(list(roots), height=64, width=64, weights=[1.0])
    with pytest.raises(ValueError, match="max_scale"):
        NormalClipDataset(roots[0], height=64, width=64, max_scale=0.5)
    dataset = NormalClipDataset(roots[0], height=64, width=64)
    with pytest.raises(ValueError, match="min_num_frames"):
        ClipBatchSampler(dataset, 1, 1, min_num_frames=3, max_num_frames=2)


# ---------------------------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------------------------


def _scene(*objects):
    defaults = {"color_a": np.ones(3), "color_b": np.zeros(3), "pattern": "plain", "frequency": 1.0}
    return {"objects": [{**defaults, **o} for o in objects], "light": np.array([0.0, 0.0, 1.0]), "sky": np.ones(3)}


def test_render_frame_exact_geometry():
    intrinsics = [40.0, 40.0, 16.0, 16.0]
    pose = look_at(np.zeros(3), np.array([0.0, 0.0, -1.0]))
    np.testing.assert_allclose(pose[:3, :3], np.eye(3), atol=1e-12)
    wall = {"kind": "plane", "point": np.array([0.0, 0.0, -5.0]), "normal": np.array([0.0, 0.0, 1.0])}
    frame = render_frame(_scene(wall), pose, intrinsics, 32, 32)
    assert frame["mask"].all()
    np.testing.assert_allclose(frame["normal"], np.broadcast_to([0, 0, 1], (32, 32, 3)), atol=1e-6)
    np.testing.assert_allclose(frame["depth"], 5.0, atol=1e-5)  # z-depth of a fronto-parallel wall is constant
    sphere = {"kind": "sphere", "center": np.array([0.0, 0.0, -3.0]), "radius": 1.0}
    frame = render_frame(_scene(sphere), pose, intrinsics, 32, 32)
    assert not frame["mask"].all() and frame["mask"][16, 16]
    assert frame["depth"][16, 16] == pytest.approx(2.0, abs=0.01)
    assert frame["normal"][16, 16, 2] > 0.99
    assert frame["normal"][16, 20, 0] > 0 and frame["normal"][12, 16, 1] > 0  # right is +x, up is +y
    assert np.all(frame["normal"][~frame["mask"]] == 0) and np.all(frame["depth"][~frame["mask"]] == 0)
    # An axis-aligned box straight ahead shows its +z face.
    box = {"kind": "box", "center": np.array([0.0, 0.0, -4.0]), "half": np.ones(3) * 0.5, "rotation": np.eye(3)}
    frame = render_frame(_scene(box), pose, intrinsics, 32, 32)
    np.testing.assert_allclose(frame["normal"][16, 16], [0, 0, 1], atol=1e-6)
    assert frame["depth"][16, 16] == pytest.approx(3.5, abs=1e-5)


def test_rendered_normals_agree_with_depth_and_face_the_camera():
    clip = render_clip(None, num_frames=3, height=96, width=96, seed=5)
    fx, fy, cx, cy = clip["meta"]["intrinsics"]
    assert clip["rgb"].shape == (3, 96, 96, 3) and len(clip["meta"]["poses"]) == 3
    for f in range(3):
        mask, normal, depth = clip["mask"][f], clip["normal"][f], clip["depth"][f]
        np.testing.assert_allclose(np.linalg.norm(normal[mask], axis=-1), 1.0, atol=1e-5)
        v, u = np.mgrid[0:96, 0:96] + 0.5
        rays = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], axis=-1)
        assert np.all((normal * rays).sum(-1)[mask] < 1e-6)  # visible surfaces face the camera
        points = rays * depth[..., None]
        du, dv = points[1:-1, 2:] - points[1:-1, :-2], points[2:, 1:-1] - points[:-2, 1:-1]
        from_depth = np.cross(dv, du)
        from_depth /= np.maximum(np.linalg.norm(from_depth, axis=-1, keepdims=True), 1e-12)
        inner = normal[1:-1, 1:-1]
        smooth = mask[1:-1, 1:-1] & mask[2:, 1:-1] & mask[:-2, 1:-1] & mask[1:-1, 2:] & mask[1:-1, :-2]
        cosine = (from_depth * inner).sum(-1)[smooth]
        assert np.median(np.degrees(np.arccos(np.clip(cosine, -1, 1)))) < 1.0
        # The poses are camera-to-world (OpenGL): floor points (world y = 0) have the world normal +y.
        pose = np.array(clip["meta"]["poses"][f])
        world_points = points @ pose[:3, :3].T + pose[:3, 3]
        floor = mask & (np.abs(world_points[..., 1]) < 1e-4)
        assert floor.sum() > 100
        np.testing.assert_allclose(
            normal[floor] @ pose[:3, :3].T, np.broadcast_to([0, 1, 0], (floor.sum(), 3)), atol=1e-4
        )


def test_render_clip_writes_the_clip_format(tmp_path):
    clip = render_clip(tmp_path / "c", num_frames=16, height=128, width=128, seed=0)
    loaded = load_clip(tmp_path / "c")
    assert np.array_equal(loaded["rgb"], clip["rgb"]) and np.array_equal(loaded["mask"], clip["mask"])
    assert np.abs(loaded["normal"] - clip["normal"]).max() <= 1.0 / 65535 + 1e-6
    np.testing.assert_array_equal(loaded["depth"], clip["depth"])
    meta = loaded["meta"]
    assert meta["axis_convention"] == "opengl_camera" and len(meta["intrinsics"]) == 4
    poses = np.array(meta["poses"])
    assert poses.shape == (16, 4, 4)
    np.testing.assert_allclose(
        poses[:, :3, :3] @ poses[:, :3, :3].transpose(0, 2, 1), np.broadcast_to(np.eye(3), (16, 3, 3)), atol=1e-9
    )
    # Deterministic per seed, different across seeds.
    assert np.array_equal(render_clip(None, 2, 32, 32, seed=0)["rgb"], render_clip(None, 2, 32, 32, seed=0)["rgb"])
    assert not np.array_equal(render_clip(None, 2, 32, 32, seed=0)["rgb"], render_clip(None, 2, 32, 32, seed=1)["rgb"])
    with pytest.raises(ValueError, match="num_frames"):
        render_clip(None, num_frames=0)


HARD = Nuisances(noise_std=0.1, flicker=0.3, occluders=2, motion_blur=1.0, flat_light=0.0)
GEOMETRY = ("normal", "depth", "mask", "kind", "material")


def test_noise_flicker_and_blur_change_the_pixels_and_nothing_else():
    plain = render_clip(None, num_frames=6, height=48, width=48, seed=4)
    for nuisances in (Nuisances(noise_std=0.1), Nuisances(flicker=0.3), Nuisances(motion_blur=1.0)):
        hard = render_clip(None, num_frames=6, height=48, width=48, seed=4, nuisances=nuisances)
        for key in GEOMETRY:
            np.testing.assert_array_equal(hard[key], plain[key], err_msg=f"{nuisances}: {key}")
        assert hard["meta"] == plain["meta"]
        assert not np.array_equal(hard["rgb"], plain["rgb"]), nuisances
    # The amounts change from frame to frame, so some frames are worse than their neighbours.
    noisy = render_clip(None, num_frames=6, height=48, width=48, seed=4, nuisances=Nuisances(noise_std=0.1))
    residual = (noisy["rgb"].astype(float) - plain["rgb"]).reshape(6, -1).std(axis=1)
    assert residual.max() > 2 * residual.min()
    flicker = render_clip(None, num_frames=6, height=48, width=48, seed=4, nuisances=Nuisances(flicker=0.3))
    gains = flicker["rgb"].reshape(6, -1).mean(axis=1) / plain["rgb"].reshape(6, -1).mean(axis=1)
    assert gains.max() - gains.min() > 0.1


def test_flat_light_keeps_the_geometry_and_removes_the_texture():
    plain = render_clip(None, num_frames=3, height=48, width=48, seed=6)
    flat = render_clip(None, num_frames=3, height=48, width=48, seed=6, nuisances=Nuisances(flat_light=1.0))
    for key in ("normal", "depth", "mask", "kind"):
        np.testing.assert_array_equal(flat[key], plain[key])
    assert set(np.unique(flat["material"])) <= {MATERIALS.index("sky"), MATERIALS.index("plain")}
    # Less contrast inside each object: shading is nearly ambient and no pattern is drawn.
    floor = plain["kind"] == OBJECT_KINDS.index("floor")
    assert flat["rgb"][floor].std(axis=0).mean() < 0.5 * plain["rgb"][floor].std(axis=0).mean()


def test_moving_occluders_are_geometry_with_exact_normals_and_no_static_depth():
    plain = render_clip(None, num_frames=8, height=64, width=64, seed=2)
    occluded = render_clip(None, num_frames=8, height=64, width=64, seed=2, nuisances=Nuisances(occluders=3))
    occluder = occluded["kind"] == OBJECT_KINDS.index("occluder")
    assert occluder.any(axis=(1, 2)).sum() >= 2  # seen in several frames...
    assert len({occluder[f].tobytes() for f in range(8)}) > 2  # ...and moving
    # Elsewhere the scene is untouched; on the occluders the pixels are valid, their normals unit and facing the
    # camera, and their depth is 0 (the static-scene reprojection metric leaves them out).
    for key in GEOMETRY:
        np.testing.assert_array_equal(occluded[key][~occluder], plain[key][~occluder], err_msg=key)
    assert occluded["mask"][occluder].all() and np.all(occluded["depth"][occluder] == 0)
    normals = occluded["normal"][occluder]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    fx, fy, cx, cy = occluded["meta"]["intrinsics"]
    v, u = np.mgrid[0:64, 0:64] + 0.5
    rays = np.broadcast_to(np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], axis=-1), (8, 64, 64, 3))
    assert np.all((normals * rays[occluder]).sum(-1) < 0)
    # The ground truth reprojects onto itself as well as without occluders (pixel rounding makes that 0.7 degrees
    # here): the moving geometry does not break the static-scene metric.
    errors = [
        reprojection_error(c["normal"], c["depth"], c["meta"]["intrinsics"], c["meta"]["poses"], c["mask"])
        for c in (plain, occluded)
    ]
    assert errors[1]["num_pixels"] > 0.8 * errors[0]["num_pixels"]
    assert errors[1]["mean"] < errors[0]["mean"] + 0.1


def test_labels_name_what_each_pixel_shows():
    clip = render_clip(None, num_frames=2, height=48, width=48, seed=1, nuisances=Nuisances(occluders=2))
    sky = clip["kind"] == OBJECT_KINDS.index("sky")
    np.testing.assert_array_equal(sky, ~clip["mask"])
    np.testing.assert_array_equal(clip["material"] == MATERIALS.index("sky"), sky)
    # Floor pixels are those whose world normal is +y (boxes may have up-facing faces too, but not all of them).
    pose = np.array(clip["meta"]["poses"][0])
    world_up = (clip["normal"][0] @ pose[:3, :3].T)[..., 1] > 1 - 1e-4
    floor = clip["kind"][0] == OBJECT_KINDS.index("floor")
    assert floor.sum() > 100 and world_up[floor].all()


def test_nuisances_are_deterministic_per_seed_and_checked():
    first = render_clip(None, num_frames=4, height=32, width=32, seed=3, nuisances=HARD)
    again = render_clip(None, num_frames=4, height=32, width=32, seed=3, nuisances=HARD)
    other = render_clip(None, num_frames=4, height=32, width=32, seed=4, nuisances=HARD)
    for key in ("rgb", *GEOMETRY):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["rgb"], other["rgb"])
    for bad, match in (
        ({"noise_std": -0.1}, "noise_std"),
        ({"flicker": 1.0}, "flicker"),
        ({"occluders": 1.5}, "occluders"),
        ({"blur_samples": 4}, "blur_samples"),
        ({"flat_light": 2.0}, "flat_light"),
    ):
        with pytest.raises(ValueError, match=match):
            Nuisances(**bad)


def test_nan_and_zero_normals_are_invalid(tmp_path):
    rgb, normal, _, _ = _random_clip(frames=1, height=64, width=64)
    normal = normal.copy()
    normal[0, :8] = np.nan
    normal[0, 8:16] = 0.0
    write_clip(tmp_path / "root" / "c", rgb, normal, normal_format="npy")
    dataset = NormalClipDataset(tmp_path / "root", height=64, width=64, max_scale=1.0, random_flip=False)
    item = dataset[0]
    assert not item["valid_mask"][0, 0, :16].any() and item["valid_mask"][0, 0, 16:].all()
    assert torch.isfinite(item["normals"]).all()
