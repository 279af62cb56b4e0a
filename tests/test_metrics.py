import json
import math

import numpy as np
import pytest

from normalcrafter_pipeline.metrics import (
    HISTOGRAM_BIN_DEG,
    METRIC_NAMES,
    ErrorAccumulator,
    MeanAccumulator,
    angle_between_deg,
    angular_error_map_deg,
    mean_of_means,
    normal_metrics,
    per_frame_metrics,
    reprojection_error,
    summarize_errors,
    temporal_change_error,
    valid_pixels,
)
from normalcrafter_pipeline.training.renderer import camera_path, random_scene, render_clip, render_frame


def _rotate_x(normals: np.ndarray, degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    rotation = np.array(
        [[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)], [0.0, math.sin(angle), math.cos(angle)]]
    )
    return normals @ rotation.T


def _random_normals(shape, seed=0) -> np.ndarray:
    normals = np.random.default_rng(seed).normal(size=(*shape, 3))
    normals[..., 2] = np.abs(normals[..., 2]) + 0.1
    return normals / np.linalg.norm(normals, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------------
# Per-pixel angular error
# ---------------------------------------------------------------------------------------------------------------


def test_hand_computed_angles():
    target = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    pred = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    np.testing.assert_allclose(angular_error_map_deg(pred, target), [0.0, 180.0, 90.0, 45.0], atol=1e-12)


def test_prediction_is_normalised_and_nearly_identical_vectors_are_not_nan():
    target = _random_normals((50,), seed=1)
    error = angular_error_map_deg(3.0 * target, target)
    assert np.all(np.isfinite(error))
    np.testing.assert_allclose(error, 0.0, atol=1e-5)
    in_yz_plane = target * [0.0, 1.0, 1.0]  # rotating about x turns these by exactly the rotation angle
    np.testing.assert_allclose(angular_error_map_deg(_rotate_x(in_yz_plane, 0.001), in_yz_plane), 0.001, atol=1e-5)


def test_degenerate_predictions():
    target = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    pred = np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 1.0]])
    np.testing.assert_allclose(angular_error_map_deg(pred, target), [90.0, 180.0])


def test_mask_and_invalid_ground_truth_are_not_scored():
    target = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [np.nan, 0.0, 1.0], [0.0, 0.0, 1.0]])
    pred = np.array([[0.0, 1.0, 0.0]] * 4)
    mask = np.array([True, True, True, False])
    error = angular_error_map_deg(pred, target, mask)
    np.testing.assert_array_equal(np.isnan(error), [False, True, True, True])
    assert error[0] == pytest.approx(90.0)
    np.testing.assert_array_equal(valid_pixels(target), [True, False, False, True])
    assert normal_metrics(pred, target, mask)["num_pixels"] == 1


def test_empty_mask_raises():
    normals = _random_normals((2, 4, 4))
    with pytest.raises(ValueError, match="no valid pixel"):
        normal_metrics(normals, normals, np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="frame 1"):
        per_frame_metrics(normals, normals, np.array([np.ones((4, 4)), np.zeros((4, 4))], dtype=bool))
    with pytest.raises(ValueError, match="no valid pixel"):
        temporal_change_error(normals, normals, np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="no valid pixel"):
        reprojection_error(normals, np.ones((2, 4, 4)), [4, 4, 2, 2], np.stack([np.eye(4)] * 2), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="no valid pixel"):
        ErrorAccumulator().compute()


def test_bad_shapes_raise():
    normals = _random_normals((2, 4, 4))
    with pytest.raises(ValueError, match="`pred` has shape"):
        angular_error_map_deg(normals[:1], normals)
    with pytest.raises(ValueError, match="`mask` has shape"):
        angular_error_map_deg(normals, normals, np.ones((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="last axis of 3"):
        angular_error_map_deg(normals[..., :2], normals[..., :2])
    with pytest.raises(ValueError, match="intrinsics"):
        reprojection_error(normals, np.ones((2, 4, 4)), [1, 2, 3], np.stack([np.eye(4)] * 2))
    with pytest.raises(ValueError, match="poses"):
        reprojection_error(normals, np.ones((2, 4, 4)), [4, 4, 2, 2], np.eye(4))


# ---------------------------------------------------------------------------------------------------------------
# Summaries and pooling
# ---------------------------------------------------------------------------------------------------------------


def test_summary_hand_computed():
    summary = summarize_errors(np.array([0.0, 10.0, 20.0, 90.0, np.nan]))
    assert summary["num_pixels"] == 4
    assert summary["mean"] == pytest.approx(30.0)
    assert summary["median"] == pytest.approx(15.0)
    assert summary["rmse"] == pytest.approx(math.sqrt((0 + 100 + 400 + 8100) / 4))
    assert [summary[f"under_{t}"] for t in ("5", "7.5", "11.25", "22.5", "30")] == [25.0, 25.0, 50.0, 75.0, 75.0]
    assert set(METRIC_NAMES) <= set(summary)


def test_accumulator_matches_in_memory_summary_and_round_trips_json():
    errors = np.random.default_rng(0).uniform(0.0, 60.0, size=(3, 20, 30))
    errors[0, :5] = np.nan
    exact = summarize_errors(errors)
    accumulator = ErrorAccumulator()
    for frame in errors:
        accumulator.update(frame)
    pooled = accumulator.compute()
    for key in METRIC_NAMES:
        if key == "median":
            assert abs(pooled[key] - exact[key]) <= HISTOGRAM_BIN_DEG
        else:
            assert pooled[key] == pytest.approx(exact[key], rel=1e-12)
    restored = ErrorAccumulator.from_state_dict(json.loads(json.dumps(accumulator.state_dict())))
    assert restored.compute() == pooled
    halves = ErrorAccumulator().update(errors[:1]).merge(ErrorAccumulator().update(errors[1:]))
    assert halves.compute()["num_pixels"] == pooled["num_pixels"]
    assert halves.compute()["median"] == pooled["median"]


def test_histogram_median_resolution():
    # The exact median of these is 33.333; the histogram answer is within one bin.
    errors = np.array([1.0, 33.333, 100.0])
    assert abs(ErrorAccumulator().update(errors).median() - 33.333) <= HISTOGRAM_BIN_DEG


def test_dataset_pools_pixels_rather_than_averaging_clip_means():
    target = np.tile(np.array([0.0, 0.0, 1.0]), (1, 1, 4, 1))  # one frame of 1x4 pixels
    pred_a = np.tile(np.array([0.0, 1.0, 0.0]), (1, 1, 4, 1))  # 90 degrees everywhere
    mask_a = np.array([[[True, False, False, False]]])  # clip A: one valid pixel, error 90
    pred_b = target.copy()  # clip B: four valid pixels, error 0
    clip_a, clip_b = normal_metrics(pred_a, target, mask_a), normal_metrics(pred_b, target)
    pooled = (
        ErrorAccumulator()
        .update(angular_error_map_deg(pred_a, target, mask_a))
        .update(angular_error_map_deg(pred_b, target))
        .compute()
    )
    assert pooled["mean"] == pytest.approx(90.0 / 5)
    assert pooled["under_5"] == pytest.approx(80.0)
    assert mean_of_means([clip_a, clip_b]) == pytest.approx(45.0)


def test_mean_accumulator():
    accumulator = MeanAccumulator().update([1.0, 2.0, np.nan]).merge(MeanAccumulator(6.0, 1))
    assert accumulator.compute() == pytest.approx(3.0)
    assert MeanAccumulator.from_state_dict(accumulator.state_dict()).compute() == accumulator.compute()
    assert MeanAccumulator().compute() is None


# ---------------------------------------------------------------------------------------------------------------
# Temporal consistency
# ---------------------------------------------------------------------------------------------------------------


def test_temporal_change_zero_for_ground_truth_and_positive_for_flicker():
    target = np.stack([_rotate_x(_random_normals((6, 8), seed=2), 3.0 * t) for t in range(5)])
    assert temporal_change_error(target, target)["mean"] == pytest.approx(0.0, abs=1e-6)
    # A constant offset of every frame keeps each pixel's change: still ~0.
    assert temporal_change_error(_rotate_x(target, 10.0), target)["mean"] == pytest.approx(0.0, abs=1e-5)

    flicker = target.copy()
    flicker[2] = _rotate_x(target[2], 8.0)
    result = temporal_change_error(flicker, target)
    assert result["mean"] > 1.0
    assert result["num_pixels"] == 4 * 6 * 8
    assert result["per_pair"][0] == pytest.approx(0.0, abs=1e-6)
    assert result["per_pair"][1] > 1.0 and result["per_pair"][2] > 1.0
    assert result["per_pair"][3] == pytest.approx(0.0, abs=1e-6)


def test_temporal_change_respects_masks_and_single_frames():
    target = _random_normals((3, 4, 4), seed=3)
    pred = target.copy()
    pred[1, 0, 0] = [1.0, 0.0, 0.0]
    mask = np.ones((3, 4, 4), dtype=bool)
    mask[1, 0, 0] = False
    assert temporal_change_error(pred, target, mask)["mean"] == pytest.approx(0.0, abs=1e-6)
    assert temporal_change_error(pred, target, mask)["num_pixels"] == 2 * 16 - 2
    assert temporal_change_error(target[:1], target[:1])["mean"] is None


def test_reprojection_exact_on_planes_seen_by_a_moving_camera():
    rng = np.random.default_rng(5)
    scene = random_scene(rng, num_objects=0)  # floor (and maybe a back wall): constant normals per plane
    poses = camera_path(rng, 4)
    intrinsics = [40.0, 40.0, 24.0, 16.0]
    frames = [render_frame(scene, pose, intrinsics, 32, 48) for pose in poses]
    normal, depth, mask = (np.stack([f[key] for f in frames]) for key in ("normal", "depth", "mask"))
    result = reprojection_error(normal, depth, intrinsics, poses, mask)
    assert result["num_pixels"] > 0.5 * mask[:-1].sum()
    assert result["mean"] < 1e-3


def test_reprojection_near_zero_on_a_rendered_scene_and_large_for_flicker():
    clip = render_clip(None, num_frames=4, height=48, width=64, seed=3)
    meta = clip["meta"]
    args = (clip["depth"], meta["intrinsics"], meta["poses"], clip["mask"])
    exact = reprojection_error(clip["normal"], *args)
    assert exact["num_pixels"] > 0.5 * clip["mask"][:-1].sum()
    # Spheres and box edges leave small residuals from the nearest-pixel lookup at this tiny resolution.
    assert exact["mean"] < 1.5
    flicker = clip["normal"].copy()
    flicker[1] = _rotate_x(flicker[1], 15.0)
    flickered = reprojection_error(flicker, *args)
    assert flickered["per_pair"][0] > 10.0 and flickered["per_pair"][1] > 10.0
    assert flickered["per_pair"][2] == pytest.approx(exact["per_pair"][2])


def test_reprojection_identity_camera_on_a_flat_wall():
    # Static camera, wall at depth 2 facing the camera: every pixel maps to itself, the angle is the prediction's
    # own change between the frames.
    pred = np.zeros((2, 4, 6, 3))
    pred[..., 2] = 1.0
    pred[1] = _rotate_x(pred[1], 30.0)
    result = reprojection_error(pred, np.full((2, 4, 6), 2.0), [5.0, 5.0, 3.0, 2.0], np.stack([np.eye(4)] * 2))
    assert result["num_pixels"] == 24
    assert result["mean"] == pytest.approx(30.0)
    assert angle_between_deg([0.0, 0.0, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(45.0)
