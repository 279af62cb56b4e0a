"""Pure helpers: window plan, streaming planner, blend weights, padding, resize, normals, UNet equivalence."""

import numpy as np
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from hypothesis import given, settings
from hypothesis import strategies as st

from normalcrafter_pipeline import NormalCrafterUNet, NormalsProcessor
from normalcrafter_pipeline.normalcrafter_video_processor import (
    compute_padding,
    normalize_normals,
    resize_with_antialiasing,
)
from normalcrafter_pipeline.normalcrafter_windows import WindowPlanner, blend_weights, plan_windows
from normalcrafter_pipeline.testing_utils import tiny_components

window_args = st.integers(1, 20).flatmap(lambda w: st.tuples(st.just(w), st.integers(0, w - 1)))


def test_plan_windows_examples():
    assert plan_windows(20, 14, 4) == [(0, 14), (6, 20)]
    assert plan_windows(24, 14, 4) == [(0, 14), (10, 24)]
    assert plan_windows(25, 14, 4) == [(0, 14), (10, 24), (11, 25)]
    assert plan_windows(14, 14, 4) == [(0, 14)]
    assert plan_windows(5, 14, 4) == [(0, 5)]
    assert plan_windows(1, 14, 4) == [(0, 1)]
    assert plan_windows(9, 4, 0) == [(0, 4), (4, 8), (5, 9)]


@settings(max_examples=300, deadline=None)
@given(num_frames=st.integers(1, 200), args=window_args)
def test_plan_covers_every_frame_and_follows_the_rule(num_frames, args):
    window_size, overlap = args
    windows = plan_windows(num_frames, window_size, overlap)
    covered = np.zeros(num_frames, bool)
    for start, end in windows:
        assert 0 <= start < end <= num_frames
        covered[start:end] = True
    assert covered.all()
    starts = [s for s, _ in windows]
    assert starts == sorted(set(starts))  # strictly increasing
    assert windows[-1][1] == num_frames
    if num_frames <= window_size:
        assert windows == [(0, num_frames)]
    else:
        stride = window_size - overlap
        assert all(end - start == window_size for start, end in windows)
        regular = [(s, s + window_size) for s in range(0, num_frames, stride) if s + window_size <= num_frames]
        assert windows[: len(regular)] == regular
        assert windows[len(regular) :] in ([], [(num_frames - window_size, num_frames)])
        for (_, prev_end), (start, _) in zip(windows, windows[1:]):
            assert start <= prev_end  # consecutive windows touch or overlap: nothing is skipped


@settings(max_examples=300, deadline=None)
@given(num_frames=st.integers(1, 200), args=window_args, reads=st.lists(st.integers(1, 7), max_size=60))
def test_streaming_planner_equals_plan(num_frames, args, reads):
    planner = WindowPlanner(*args)
    windows, available = [], 0
    for step in reads:
        available = min(num_frames, available + step)
        windows += planner.ready(available)
    windows += planner.finish(num_frames)
    assert windows == plan_windows(num_frames, *args)


@given(n=st.integers(0, 50))
def test_blend_weights(n):
    w = blend_weights(n)
    assert w.shape == (n,)
    assert ((w > 0) & (w < 1)).all()
    assert (np.diff(w) < 0).all()
    np.testing.assert_allclose(w + w[::-1], 1.0)  # symmetric: the old and new predictions trade places


def test_blend_weights_values():
    np.testing.assert_allclose(blend_weights(4), [0.8, 0.6, 0.4, 0.2])
    with pytest.raises(ValueError, match="num_overlap"):
        blend_weights(-1)


@given(h=st.integers(1, 3000), w=st.integers(1, 3000))
def test_compute_padding(h, w):
    top, bottom, left, right = compute_padding(h, w)
    assert (h + top + bottom) % 64 == 0 and (w + left + right) % 64 == 0
    assert 0 <= top + bottom < 64 and 0 <= left + right < 64
    assert top == (top + bottom) // 2 and left == (left + right) // 2


def test_compute_padding_examples():
    assert compute_padding(576, 1024) == (0, 0, 0, 0)
    assert compute_padding(33, 70) == (15, 16, 29, 29)
    assert compute_padding(480, 854) == (16, 16, 21, 21)


@pytest.mark.parametrize("shape", [(2, 3, 576, 1024), (1, 3, 64, 64), (1, 3, 320, 448), (3, 3, 129, 77)])
def test_resize_matches_diffusers(shape):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = resize_with_antialiasing(images, (224, 224))
    torch.testing.assert_close(ours, _resize_with_antialiasing(images, (224, 224)), atol=0, rtol=0)  # bit for bit


@pytest.mark.parametrize("bad", [(0, 0), (4, 4), (4, -1), (14, 20)])
def test_window_argument_errors(bad):
    with pytest.raises(ValueError, match="`window_size`|`overlap`"):
        plan_windows(10, *bad)
    with pytest.raises(ValueError, match="num_frames"):
        plan_windows(0, 14, 4)


def test_normalize_normals_clamps_then_normalises():
    x = torch.tensor([[2.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]).T[None]  # [1, 3, 3]
    n = normalize_normals(x, dim=1)[0].T
    torch.testing.assert_close(n[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(n[1], torch.tensor([0.5**0.5, 0.5**0.5, 0.0]))
    torch.testing.assert_close(n[2], torch.zeros(3))


def test_normals_processor_round_trips():
    rng = np.random.default_rng(0)
    n = NormalsProcessor.normalize(rng.normal(size=(5, 7, 3)))
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-6)
    assert np.abs(NormalsProcessor.from_uint16(NormalsProcessor.to_uint16(n)) - n).max() <= 1.0 / 65535 + 1e-7
    rgb = NormalsProcessor.to_rgb(n)
    assert rgb.dtype == np.uint8
    cos = (NormalsProcessor.from_rgb(rgb) * n).sum(-1).clip(-1, 1)
    assert np.degrees(np.arccos(cos)).max() < 1.0
    np.testing.assert_array_equal(NormalsProcessor.to_rgb(np.array([0.0, 0.0, 1.0])), [128, 128, 255])
    with pytest.raises(ValueError, match="uint16"):
        NormalsProcessor.from_uint16(np.zeros(3, np.float32))


# ------------------------------------------------------------------------------------------------------------------
# The UNet subclass
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unets():
    ours = tiny_components()["unet"]
    stock = UNetSpatioTemporalConditionModel.from_config(ours.config).eval()
    result = stock.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours, stock


def test_unet_state_dict_is_the_stock_one(unets):
    ours, stock = unets
    assert list(ours.state_dict()) == list(stock.state_dict())
    result = NormalCrafterUNet.from_config(stock.config).load_state_dict(stock.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])  # (6, 10) is not a multiple of the up-sampling factor
def test_unet_equals_stock_with_one_shared_embedding(unets, size):
    ours, stock = unets
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 3, 8, *size, generator=generator)
    embedding = torch.randn(2, 1, 32, generator=generator)
    ids = torch.tensor([[7.0, 127.0, 0.0]] * 2)
    with torch.no_grad():
        expected = stock(sample, 1.3, embedding, ids).sample
        per_video = ours(sample, 1.3, embedding, ids).sample
        per_frame = ours(sample, 1.3, embedding.repeat_interleave(3, dim=0), ids).sample
    torch.testing.assert_close(per_video, expected, atol=0, rtol=0)
    torch.testing.assert_close(per_frame, expected, atol=1e-6, rtol=0)


def test_unet_uses_each_frames_embedding(unets):
    ours, _ = unets
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 3, 8, 8, 8, generator=generator)
    embeddings = torch.randn(3, 1, 32, generator=generator)
    ids = torch.tensor([[7.0, 127.0, 0.0]])
    with torch.no_grad():
        base = ours(sample, 1.3, embeddings, ids).sample
        changed = embeddings.clone()
        changed[2] += 1.0
        moved = ours(sample, 1.3, changed, ids).sample
    assert (moved[0, 2] - base[0, 2]).abs().max() > 1e-3  # frame 2's own cross-attention sees the change
    with pytest.raises(ValueError, match="one per frame"):
        ours(sample, 1.3, embeddings[:2], ids)
