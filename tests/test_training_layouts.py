"""The dataset readers of published layouts (Hypersim, MatrixCity, 3D Ken Burns, rendered sequences) on miniature
copies written here with the releases' file names: a wall and a floor come out in our axes (+x right, +y up, +z
toward the camera), invalid pixels are masked, and bad data fails naming the file before any model loads."""

import json
import os

import numpy as np
import PIL.Image
import pytest

from normalcrafter_pipeline.formats.clips import write_clip
from normalcrafter_pipeline.formats.exr import ExrReadError, openexr_missing_reason, write_exr
from normalcrafter_pipeline.formats.hypersim import distance_to_z
from normalcrafter_pipeline.formats.kenburns import normals_from_depth
from normalcrafter_pipeline.formats.layout_io import LayoutError
from normalcrafter_pipeline.formats.layouts import open_layout, parse_layout
from normalcrafter_pipeline.formats.png16 import write_png16
from normalcrafter_pipeline.normalcrafter_normals_processor import NormalsProcessor
from normalcrafter_pipeline.training.data import NormalClipDataset

h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.skipif(openexr_missing_reason() is not None, reason="needs the OpenEXR bindings")

H, W = 24, 32
WALL, FLOOR = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
WALL_PIXEL, FLOOR_PIXEL = (4, 16), (22, 16)  # (row, column)


def scene(fov_deg=60.0, wall_depth=4.0, floor_height=1.0):
    """A wall facing the camera at z-depth `wall_depth` above a floor `floor_height` below it, in the camera frame:
    `(points (H, W, 3), normals (H, W, 3), z-depth (H, W))`."""
    focal = 0.5 * W / np.tan(np.radians(fov_deg) / 2)
    u = np.arange(W) - (W - 1) / 2
    v = np.arange(H) - (H - 1) / 2
    below = np.where(v > 0, floor_height * focal / np.maximum(v, 1e-9), np.inf)
    z = np.minimum(wall_depth, below)[:, None] * np.ones((1, W))
    points = np.stack([u[None, :] * z / focal, -v[:, None] * z / focal, -z], axis=-1)
    on_floor = (below < wall_depth)[:, None] * np.ones((1, W), bool)
    normals = np.where(on_floor[..., None], FLOOR, WALL)
    return points, normals, z


def rotation(yaw_deg, pitch_deg):
    a, b = np.radians(yaw_deg), np.radians(pitch_deg)
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pitch = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return yaw @ pitch


def assert_wall_and_floor(record, atol=1e-3):
    assert record.valid[WALL_PIXEL] and record.valid[FLOOR_PIXEL]
    np.testing.assert_allclose(record.normal[WALL_PIXEL], WALL, atol=atol)
    np.testing.assert_allclose(record.normal[FLOOR_PIXEL], FLOOR, atol=atol)


def h5(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("dataset", data=array)


# -- Hypersim -------------------------------------------------------------------------------------------------------


def write_hypersim(root, frames=3, grey=0.3):
    """ai_001_001 with one camera trajectory cam_00; pixels of columns 0-3 are back-facing in the release (their
    normals stored negated), row 0 has no geometry (render_entity_id -1)."""
    scene_dir = os.path.join(root, "ai_001_001")
    R, t = rotation(30, -20), np.array([1.0, 2.0, 3.0])
    points, normals, _ = scene()
    stored = normals.copy()
    stored[:, :4] *= -1.0
    entity = np.ones((H, W), np.int32)
    entity[0] = -1
    for i in range(frames):
        geometry = os.path.join(scene_dir, "images", "scene_cam_00_geometry_hdf5", f"frame.{i:04d}")
        h5(os.path.join(scene_dir, "images", "scene_cam_00_final_hdf5", f"frame.{i:04d}.color.hdf5"),
           np.full((H, W, 3), grey, np.float16))  # fmt: skip
        h5(geometry + ".normal_cam.hdf5", stored.astype(np.float16))
        h5(geometry + ".normal_world.hdf5", (stored @ R.T).astype(np.float16))
        h5(geometry + ".position.hdf5", (points @ R.T + t).astype(np.float16))
        h5(geometry + ".render_entity_id.hdf5", entity)
        h5(geometry + ".depth_meters.hdf5", np.linalg.norm(points, axis=-1).astype(np.float32))
    h5(os.path.join(scene_dir, "_detail", "cam_00", "camera_keyframe_positions.hdf5"), np.tile(t, (frames, 1)))
    return scene_dir


def test_hypersim_axes_back_facing_flip_tone_map_mask_and_depth(tmp_path):
    write_hypersim(tmp_path)
    (sequence,) = open_layout(f"hypersim:{tmp_path}")
    assert sequence.name == "ai_001_001_cam_00" and len(sequence) == 3
    record = sequence.load(1)
    assert_wall_and_floor(record, atol=2e-3)
    # The stored normals of columns 0-3 face away from the camera; they come out flipped, like the rest.
    np.testing.assert_allclose(record.normal[WALL_PIXEL[0], 1], WALL, atol=2e-3)
    np.testing.assert_allclose(record.normal[FLOOR_PIXEL[0], 1], FLOOR, atol=2e-3)
    assert not record.valid[0].any() and record.valid[1:].all()
    # A uniform grey frame: the release's tone mapper brings it to 0.8 after gamma.
    assert (record.rgb[1:] == round(0.8 * 255)).all()
    # depth_meters is the distance to the optical centre; the z-depth of the wall is 4 m.
    depth = open_layout(f"hypersim:{tmp_path}", with_depth=True)[0].load(0).depth
    np.testing.assert_allclose(depth[WALL_PIXEL], 4.0, rtol=1e-4)
    np.testing.assert_allclose(
        distance_to_z(np.full((2, 2), np.sqrt(3.0)), fov_x_deg=90.0)[0, 0], np.sqrt(2.0), rtol=1e-6
    )


# -- MatrixCity -----------------------------------------------------------------------------------------------------


def write_matrixcity(top, frames=2):
    """small_city/street/train/block_1 with its normals and depth in the release's parallel trees."""
    block = os.path.join(top, "small_city", "street", "train", "block_1")
    normal_dir = os.path.join(top, "small_city_normal", "street", "train", "block_1")
    depth_dir = os.path.join(top, "small_city_depth", "street", "train", "block_1")
    for folder in (block, normal_dir, depth_dir):
        os.makedirs(folder, exist_ok=True)
    _, normals, z = scene()
    entries = []
    for i in range(frames):
        R = rotation(40 * i + 10, -30)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R * 0.01, [10.0 * i, 0.0, 5.0]  # the block files scale the rotation by 0.01
        entries.append({"frame_index": i, "rot_mat": pose.tolist()})
        world = normals @ R.T
        stored = world * np.array([1.0, -1.0, 1.0])  # load_data.py negates y after decoding
        b, g, r = np.moveaxis((stored + 1.0) / 2.0, -1, 0)  # read in OpenCV's channel order B, G, R
        encoded = np.stack([r, g, b], axis=-1)
        encoded[:2] = 0.0  # the sky: all -1 after decoding
        write_exr(os.path.join(normal_dir, f"{i:04d}.exr"), encoded)
        depth_cm = z * 100.0
        depth_cm[:2] = 65504.0
        write_exr(os.path.join(depth_dir, f"{i:04d}.exr"), depth_cm, half=True)
        PIL.Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(os.path.join(block, f"{i:04d}.png"))
    with open(os.path.join(block, "transforms.json"), "w") as handle:
        json.dump({"camera_angle_x": np.radians(60.0), "frames": entries[::-1]}, handle)
    return block


def test_matrixcity_world_normals_rotate_into_the_camera_sky_invalid_depth_in_metres(tmp_path):
    write_matrixcity(tmp_path)
    (sequence,) = open_layout(f"matrixcity:{tmp_path / 'small_city'}", with_depth=True)
    assert len(sequence) == 2
    for index in range(2):  # two different camera rotations, the same scene in the camera frame
        record = sequence.load(index)
        assert_wall_and_floor(record)
        assert not record.valid[:2].any() and record.valid[2:].all()
        np.testing.assert_allclose(record.depth[WALL_PIXEL], 4.0, rtol=1e-3)
        assert np.isnan(record.depth[:2]).all()


# -- 3D Ken Burns ---------------------------------------------------------------------------------------------------


def write_kenburns(root, captures=1, fov=60.0):
    scene_dir, depth_dir = os.path.join(root, "asdf-flying"), os.path.join(root, "asdf-flying-depth")
    os.makedirs(scene_dir, exist_ok=True)
    os.makedirs(depth_dir, exist_ok=True)
    _, _, z = scene(fov_deg=fov)
    for capture in range(captures):
        with open(os.path.join(scene_dir, f"{capture:05d}-meta.json"), "w") as handle:
            json.dump({"intSample": capture, "fltFov": fov}, handle)
        for view in ("bl", "br", "tl", "tr"):
            PIL.Image.fromarray(np.full((H, W, 3), 120, np.uint8)).save(
                os.path.join(scene_dir, f"{capture:05d}-{view}-image.png")
            )
            write_exr(os.path.join(depth_dir, f"{capture:05d}-{view}-depth.exr"), z.astype(np.float32))
    return scene_dir


def test_kenburns_views_are_single_frames_with_normals_from_depth(tmp_path):
    write_kenburns(tmp_path, fov=50.0)
    views = open_layout(f"kenburns:{tmp_path}")
    assert [v.name for v in views] == [f"asdf-flying_00000-{v}" for v in ("bl", "br", "tl", "tr")]
    assert all(len(view) == 1 for view in views)
    record = views[0].load(0)
    assert_wall_and_floor(record, atol=1e-4)
    assert not record.valid[0].any() and not record.valid[:, -1].any()  # the border has no two-sided tangent
    # A pole one pixel wide in front of the wall: its pixels have a depth edge on both sides (invalid); the wall
    # pixels beside it take their tangent from the other side, so no normal is blended across the edge.
    _, _, z = scene(fov_deg=50.0)
    z[:, 10] = 2.0
    normal, valid = normals_from_depth(z, focal=0.5 * W / np.tan(np.radians(50.0) / 2))
    assert not valid[2:10, 10].any()
    assert valid[2:10, [9, 11]].all()
    np.testing.assert_allclose(normal[2:10, [9, 11]], np.broadcast_to(WALL, (8, 2, 3)), atol=1e-6)


# -- rendered sequences ---------------------------------------------------------------------------------------------


def write_rendered(root, frames=3, name="seq_a", world=True, normal_format="exr", size=(H, W)):
    folder = os.path.join(root, name)
    for sub in ("rgb", "normal", "mask"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    _, normals, _ = scene()
    poses = []
    for i in range(frames):
        R = rotation(25 * i, -15)
        pose = np.eye(4)
        pose[:3, :3] = R
        poses.append(pose.tolist())
        stored = normals @ R.T if world else normals
        stored = stored.copy()
        stored[:, :2] = 0.0  # no surface hit: zeros
        PIL.Image.fromarray(np.full((H, W, 3), 60, np.uint8)).save(os.path.join(folder, "rgb", f"{i:04d}.png"))
        if normal_format == "exr":
            write_exr(os.path.join(folder, "normal", f"{i:04d}.exr"), np.resize(stored, (*size, 3)).astype(np.float32))
        else:
            write_png16(os.path.join(folder, "normal", f"{i:04d}.png"), NormalsProcessor.to_uint16(stored))
        mask = np.full((H, W), 255, np.uint8)
        mask[-1] = 0
        PIL.Image.fromarray(mask).save(os.path.join(folder, "mask", f"{i:04d}.png"))
    if world:
        with open(os.path.join(folder, "cameras.json"), "w") as handle:
            json.dump({"normal_frame": "world", "camera_to_world": poses}, handle)
    return folder


def test_rendered_world_and_camera_normals_masks(tmp_path):
    write_rendered(tmp_path, name="seq_a", world=True)
    write_rendered(tmp_path, name="seq_b", world=False, normal_format="png")
    sequences = open_layout(f"rendered:{tmp_path}")
    assert [s.name for s in sequences] == ["seq_a", "seq_b"]
    for sequence in sequences:
        for index in range(len(sequence)):
            record = sequence.load(index)
            assert_wall_and_floor(record, atol=1e-3)
            assert not record.valid[:, :2].any() and not record.valid[-1].any()
            assert record.valid[:-1, 2:].all()


# -- a mixture, clip lengths, and bad data --------------------------------------------------------------------------


def test_mixture_of_layouts_feeds_the_training_dataset_and_short_sequences_are_skipped(tmp_path):
    write_hypersim(tmp_path / "hypersim", frames=3)
    write_kenburns(tmp_path / "kenburns")
    write_clip(tmp_path / "clips" / "clip_0", np.zeros((2, H, W, 3), np.uint8), np.tile(WALL, (2, H, W, 1)), fps=7.0)
    roots = [f"hypersim:{tmp_path / 'hypersim'}", f"kenburns:{tmp_path / 'kenburns'}", str(tmp_path / "clips")]
    dataset = NormalClipDataset(roots, 64, 64, max_scale=1.0, random_flip=False)
    assert dataset.clip_lengths == [3, 1, 1, 1, 1, 2]
    item = dataset[(0, 3, 0)]
    assert item["pixel_values"].shape == (3, 3, 64, 64) and item["valid_mask"].shape == (3, 1, 64, 64)
    assert item["valid_mask"][:, 0, 0].sum() == 0  # Hypersim's row without geometry stays invalid after scaling

    # Sequences shorter than the minimum clip length are skipped and counted while others remain...
    write_rendered(tmp_path / "rendered", frames=3, name="long")
    write_rendered(tmp_path / "rendered", frames=1, name="short")
    dataset = NormalClipDataset([f"rendered:{tmp_path / 'rendered'}"], 64, 64, min_num_frames=2)
    assert dataset.skipped == {f"rendered:{tmp_path / 'rendered'}": 1} and dataset.clip_lengths == [3]
    # ...and a root left with none is an error naming it.
    with pytest.raises(LayoutError, match="kenburns.*shorter than 2 frames"):
        NormalClipDataset(roots, 64, 64, min_num_frames=2)


def test_layout_names(tmp_path):
    assert parse_layout("hypersim:/data/hs") == ("hypersim", "/data/hs")
    assert parse_layout("/data/clips") == ("clips", "/data/clips")
    with pytest.raises(ValueError, match="'hypersimm'.*LAYOUT:PATH"):
        parse_layout("hypersimm:/data")


def _script_check(argv, tmp_path):
    """Run a stage script's checks (`run_script`) with a `main` that records whether it ran: the models load in
    `main`, so bad data must stop the run before it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "train_stage1", os.path.join(os.path.dirname(os.path.dirname(__file__)), "training", "train_stage1.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ran = []
    from normalcrafter_pipeline.training.arguments import run_script

    argv = [
        "--pretrained_model_name_or_path",
        "unused",
        "--output_dir",
        str(tmp_path / "out"),
        "--train_data_dir",
        *argv,
    ]
    status = run_script(module.parse_args, ran.append, argv)
    return status, ran


def test_bad_data_fails_before_any_model_loads_naming_the_file(tmp_path, capsys):
    clips = tmp_path / "clips"
    write_clip(clips / "clip_0", np.zeros((1, H, W, 3), np.uint8), np.tile(WALL, (1, H, W, 1)), fps=7.0)

    # A root that is not the named layout.
    status, ran = _script_check([f"hypersim:{clips}"], tmp_path)
    assert (status, ran) == (2, []) and "is not a Hypersim root" in capsys.readouterr().err

    # A frame without its normal map.
    folder = write_rendered(tmp_path / "missing", frames=2)
    os.remove(os.path.join(folder, "normal", "0001.exr"))
    status, ran = _script_check([f"rendered:{tmp_path / 'missing'}"], tmp_path)
    assert (status, ran) == (2, []) and os.path.join(folder, "rgb", "0001.png") in capsys.readouterr().err
    scene_dir = write_hypersim(tmp_path / "hs_missing", frames=2)
    missing = os.path.join(scene_dir, "images", "scene_cam_00_geometry_hdf5", "frame.0001.normal_cam.hdf5")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match="frame.0001.normal_cam.hdf5"):
        open_layout(f"hypersim:{tmp_path / 'hs_missing'}")

    # An unreadable HDF5 file and an unreadable EXR file.
    scene_dir = write_hypersim(tmp_path / "hs_bad", frames=1)
    color = os.path.join(scene_dir, "images", "scene_cam_00_final_hdf5", "frame.0000.color.hdf5")
    with open(color, "wb") as handle:
        handle.write(b"not an hdf5 file")
    status, ran = _script_check([f"hypersim:{tmp_path / 'hs_bad'}"], tmp_path)
    assert (status, ran) == (2, []) and color in capsys.readouterr().err
    write_kenburns(tmp_path / "kb_bad")
    depth = tmp_path / "kb_bad" / "asdf-flying-depth" / "00000-bl-depth.exr"
    depth.write_bytes(b"not an exr file")
    with pytest.raises(ExrReadError, match=str(depth)):
        open_layout(f"kenburns:{tmp_path / 'kb_bad'}")[0].load(0)
    status, ran = _script_check([f"kenburns:{tmp_path / 'kb_bad'}"], tmp_path)
    assert (status, ran) == (2, []) and str(depth) in capsys.readouterr().err

    # A normal map of the wrong size.
    folder = write_rendered(tmp_path / "wrong_size", frames=1, world=False, size=(H, W + 2))
    status, ran = _script_check([f"rendered:{tmp_path / 'wrong_size'}"], tmp_path)
    err = capsys.readouterr().err
    assert (status, ran) == (2, []) and os.path.join(folder, "normal", "0000.exr") in err and "34" in err

    # Good data passes the checks and reaches `main`.
    status, ran = _script_check([f"rendered:{tmp_path / 'missing'}", str(clips)], tmp_path)
    assert status == 2  # the missing normal map is still missing
    status, ran = (
        _script_check([str(clips), f"kenburns:{tmp_path / 'kb_ok'}"], tmp_path)
        if write_kenburns(tmp_path / "kb_ok")
        else (None, None)
    )
    assert status == 0 and len(ran) == 1


def test_validation_clips_come_from_any_layout(tmp_path):
    from types import SimpleNamespace

    from normalcrafter_pipeline.training.validation import load_validation_clips

    write_rendered(tmp_path / "val", frames=3, name="seq_a")
    write_rendered(tmp_path / "val", frames=2, name="seq_b")
    args = SimpleNamespace(
        validation_data_dir=f"rendered:{tmp_path / 'val'}", num_validation_clips=1, validation_num_frames=2
    )
    (clip,) = load_validation_clips(args)
    assert clip["rgb"].shape == (2, H, W, 3) and clip["normal"].shape == (2, H, W, 3)
    assert clip["mask"].shape == (2, H, W) and not clip["mask"][:, :, :2].any() and clip["mask"][:, :-1, 2:].all()
    np.testing.assert_allclose(clip["normal"][1][WALL_PIXEL], WALL, atol=1e-3)


def test_hypersim_without_h5py_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import importlib.util

    from normalcrafter_pipeline.formats import layout_io

    write_hypersim(tmp_path / "hs", frames=1)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        layout_io.importlib.util, "find_spec", lambda name, *a: None if name == "h5py" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"normalcrafter-pipeline\[train\]"):
        open_layout(f"hypersim:{tmp_path / 'hs'}")
    status, ran = _script_check([f"hypersim:{tmp_path / 'hs'}"], tmp_path)
    assert (status, ran) == (2, []) and "needs h5py" in capsys.readouterr().err


def test_the_evaluator_scores_a_training_layout_named_layout_path(tmp_path, capsys):
    """`normalcrafter-evaluate --data rendered:PATH` (and any `LAYOUT:PATH`) reads the set as published: the ground
    truth given back scores 0 degrees and a 90-degree error scores 90, on the pixels the layout marks valid."""
    from normalcrafter_pipeline import evaluation
    from normalcrafter_pipeline.evaluation_models import CallablePredictor

    write_rendered(tmp_path / "data", name="seq_a", world=True)
    root = f"rendered:{tmp_path / 'data'}"
    truth = scene()[1].astype(np.float32)
    exact = CallablePredictor(lambda frames: np.broadcast_to(truth, frames.shape).copy(), "truth")
    result = evaluation.evaluate_model(exact, root, tmp_path / "exact", show_progress=False)
    pooled = result["total"]["aggregations"]["pooled_pixels"]
    assert pooled["mean"] < 1e-3 and pooled["num_pixels"] == 3 * (H - 1) * (W - 2)

    sideways = np.broadcast_to(np.array([1.0, 0.0, 0.0], np.float32), truth.shape)
    turned = CallablePredictor(lambda frames: np.broadcast_to(sideways, frames.shape).copy(), "sideways")
    result = evaluation.evaluate_model(turned, root, tmp_path / "turned", show_progress=False)
    assert result["total"]["aggregations"]["pooled_pixels"]["mean"] == pytest.approx(90.0, abs=1e-3)

    assert evaluation.main(["--data", f"rendred:{tmp_path / 'data'}", "--out", str(tmp_path / "typo")]) == 1
    assert "names the layout 'rendred'" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
