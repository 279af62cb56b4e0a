"""Unit tests of the training maths: EDM vs the scheduler, losses, SFR, the schedule, the stage-2 freeze rule, the
video-prior stages."""

import argparse
import copy
import json
import math
import os

import pytest
import torch

from normalcrafter_pipeline.normalcrafter_windows import predict_window_latents
from normalcrafter_pipeline.normals_writers import atomic_output
from normalcrafter_pipeline.testing_utils import svd_xt_scheduler, tiny_dino, tiny_pipeline
from normalcrafter_pipeline.training import (
    DinoFeatures,
    FeatureTap,
    NonFiniteLossError,
    SFRProjector,
    add_noise,
    angular_loss,
    dsm_loss,
    dsm_weight,
    edm_coefficients,
    edm_denoise,
    freeze_temporal_layers,
    image_to_video_loss,
    is_temporal_parameter,
    latent_scaling_factor,
    match_grid,
    mean_angular_error_deg,
    rgb_autoencoder_loss,
    sample_sigmas,
    sfr_alignment_loss,
    sfr_loss,
    stage1_loss,
    stage2_loss,
    vae_decoder_loss,
    warmup_exponential_factor,
)
from normalcrafter_pipeline.training.checkpointing import list_checkpoints
from normalcrafter_pipeline.training.semantic_teacher import (
    SemanticTeacher,
    patch_label_shares,
    semantic_teacher_config,
    semantic_teacher_loss,
    train_semantic_teacher,
)
from normalcrafter_pipeline.training.session import create_optimizer
from normalcrafter_pipeline.training.sfr import sfr_feature_channels
from normalcrafter_pipeline.training.unwrap import unwrap_model


def _batch(frames=1, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(1, frames, 3, size, size, generator=generator), dim=2)
    return {
        "pixel_values": torch.rand(1, frames, 3, size, size, generator=generator),
        "normals": normals,
        "valid_mask": torch.ones(1, frames, 1, size, size, dtype=torch.bool),
    }


# ---------------------------------------------------------------------------------------------------------------
# EDM
# ---------------------------------------------------------------------------------------------------------------


def test_edm_coefficients_match_the_scheduler():
    scheduler = svd_xt_scheduler()
    scheduler.set_timesteps(25)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 2, 4, 8, 8, generator=generator)
    model_output = torch.randn(1, 2, 4, 8, 8, generator=generator)
    for i, t in enumerate(scheduler.timesteps[:-1]):  # every sigma from 700 down to the smallest
        sigma = scheduler.sigmas[i]
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma.double())
        assert float(t) == pytest.approx(float(c_noise), rel=1e-5, abs=1e-6)
        scaled = scheduler.scale_model_input(sample, t)
        torch.testing.assert_close(scaled, (c_in * sample).float(), rtol=1e-5, atol=1e-6)
        x0 = scheduler.step(model_output, t, sample).pred_original_sample
        torch.testing.assert_close(x0, (c_skip * sample + c_out * model_output).float(), rtol=1e-5, atol=1e-5)


def test_edm_coefficients_closed_form_and_errors():
    sigmas = torch.tensor([0.002, 0.5, 1.0, 10.0, 700.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigmas)
    torch.testing.assert_close(c_skip, 1 / (sigmas**2 + 1))
    torch.testing.assert_close(c_out, -sigmas / (sigmas**2 + 1).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigmas**2 + 1).sqrt())
    torch.testing.assert_close(c_noise, 0.25 * sigmas.log())
    with pytest.raises(ValueError, match="positive"):
        edm_coefficients(torch.tensor([0.0]))


def test_edm_denoise_at_sigma_max_from_zeros_is_the_inference_prediction():
    """Stage 1's preconditioned denoiser and the inference one-step path are the same function of the UNet."""
    pipe = tiny_pipeline()
    generator = torch.Generator().manual_seed(0)
    conditioning = torch.randn(1, 2, 4, 8, 8, generator=generator)
    embeddings = torch.randn(2, 1, 32, generator=generator)
    time_ids = pipe.get_added_time_ids(torch.float32)
    with torch.no_grad():
        inference = predict_window_latents(
            pipe.unet, copy.deepcopy(pipe.scheduler), conditioning, embeddings, time_ids
        )
        sigma_max = torch.tensor([pipe.scheduler.config.sigma_max])
        denoised = edm_denoise(
            pipe.unet, torch.zeros_like(conditioning), sigma_max, conditioning, embeddings, time_ids
        )
    torch.testing.assert_close(denoised, inference, rtol=1e-4, atol=1e-5)


def test_sigma_sampling_is_log_normal():
    generator = torch.Generator().manual_seed(0)
    sigmas = sample_sigmas(50000, p_mean=0.7, p_std=1.6, generator=generator)
    assert sigmas.dtype == torch.float32 and torch.all(sigmas > 0)
    assert sigmas.log().mean().item() == pytest.approx(0.7, abs=0.03)
    assert sigmas.log().std().item() == pytest.approx(1.6, abs=0.03)
    with pytest.raises(ValueError, match="p_std"):
        sample_sigmas(2, p_std=0.0)


def test_add_noise_broadcasts_per_video_sigma():
    clean = torch.zeros(2, 3, 4, 2, 2)
    noise = torch.ones_like(clean)
    noisy = add_noise(clean, torch.tensor([1.0, 3.0]), noise)
    assert torch.all(noisy[0] == 1.0) and torch.all(noisy[1] == 3.0)


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------


def test_dsm_weighting():
    sigmas = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(dsm_weight(sigmas), torch.tensor([2.0, 1.25, 5.0]))
    clean = torch.zeros(3, 2, 4, 3, 3)
    denoised = torch.ones_like(clean)  # squared error 1 everywhere
    assert dsm_loss(denoised, clean, sigmas).item() == pytest.approx((2.0 + 1.25 + 5.0) / 3)
    denoised = clean.clone()
    denoised[1] = 2.0  # only the second video errs: squared error 4, weight 1.25
    assert dsm_loss(denoised, clean, sigmas).item() == pytest.approx(4 * 1.25 / 3)
    with pytest.raises(ValueError, match="shape"):
        dsm_loss(denoised[:2], clean, sigmas)


def test_dsm_loss_is_float32_under_half_inputs():
    clean = torch.zeros(1, 1, 4, 2, 2, dtype=torch.bfloat16)
    loss = dsm_loss(clean + 1, clean, torch.tensor([1.0]))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(2.0)


def test_angular_loss_values():
    n = torch.nn.functional.normalize(torch.randn(2, 3, 5, 5), dim=1)
    assert angular_loss(n, n).item() == pytest.approx(0.0, abs=2e-3)  # the clamp floor is acos(1 - 1e-6)
    assert angular_loss(n, -n).item() == pytest.approx(math.pi, abs=2e-3)
    assert mean_angular_error_deg(n, n) == pytest.approx(0.0, abs=0.03)
    x = torch.zeros(1, 3, 1, 1)
    x[:, 0] = 1.0
    y = torch.zeros(1, 3, 1, 1)
    y[:, 1] = 2.0  # length does not matter
    assert angular_loss(x, y).item() == pytest.approx(math.pi / 2, abs=1e-6)


def test_angular_loss_gradient_is_finite_at_equality():
    n = torch.nn.functional.normalize(torch.randn(1, 3, 4, 4), dim=1)
    prediction = n.clone().requires_grad_(True)
    angular_loss(prediction, n).backward()
    assert torch.isfinite(prediction.grad).all()
    prediction = (-n).clone().requires_grad_(True)
    angular_loss(prediction, n).backward()
    assert torch.isfinite(prediction.grad).all()


def test_angular_loss_honours_the_mask():
    target = torch.zeros(1, 2, 3, 2, 2)
    target[:, :, 2] = 1.0
    prediction = target.clone()
    prediction[:, 0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # 90 degrees off, at one pixel
    mask = torch.ones(1, 2, 1, 2, 2, dtype=torch.bool)
    mask[:, 0, :, 0, 0] = False
    assert angular_loss(prediction, target, mask, dim=2).item() == pytest.approx(0.0, abs=2e-3)
    unmasked = angular_loss(prediction, target, dim=2).item()
    assert unmasked == pytest.approx((math.pi / 2 + 7 * 1.4e-3) / 8, abs=1e-3)
    # No valid pixel: zero, finite gradient.
    prediction.requires_grad_(True)
    loss = angular_loss(prediction, target, torch.zeros_like(mask), dim=2)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(prediction.grad).all()


def test_non_finite_losses_raise():
    n = torch.ones(1, 3, 2, 2)
    bad = n.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="angular"):
        angular_loss(bad, n)
    with pytest.raises(NonFiniteLossError, match="DSM"):
        dsm_loss(bad[None], n[None], torch.tensor([1.0]))
    with pytest.raises(NonFiniteLossError, match="SFR"):
        sfr_alignment_loss(bad.permute(0, 2, 3, 1), n.permute(0, 2, 3, 1))


# ---------------------------------------------------------------------------------------------------------------
# SFR
# ---------------------------------------------------------------------------------------------------------------


def test_sfr_alignment_loss_extremes():
    features = torch.randn(4, 3, 5, 16)
    assert sfr_alignment_loss(features, 3.0 * features).item() == pytest.approx(-1.0, abs=1e-6)
    assert sfr_alignment_loss(features, -features).item() == pytest.approx(1.0, abs=1e-6)
    orthogonal_a = torch.zeros(1, 1, 1, 2)
    orthogonal_a[..., 0] = 1
    orthogonal_b = torch.zeros(1, 1, 1, 2)
    orthogonal_b[..., 1] = 1
    assert sfr_alignment_loss(orthogonal_a, orthogonal_b).item() == pytest.approx(0.0)


def test_sfr_projector_shapes_and_loss_through_grid_matching():
    projector = SFRProjector(in_channels=8, out_channels=6, hidden_dim=16)
    assert [type(m).__name__ for m in projector.mlp] == ["Linear", "SiLU", "Linear", "SiLU", "Linear"]
    features = torch.randn(2, 8, 4, 6)
    assert projector(features).shape == (2, 4, 6, 6)
    tokens = torch.randn(2, 2, 3, 6)
    assert match_grid(tokens, (4, 6)).shape == (2, 4, 6, 6)
    assert match_grid(tokens, (2, 3)) is tokens
    loss = sfr_loss(projector, features, tokens)
    loss.backward()
    assert -1.0 <= loss.item() <= 1.0 and projector.mlp[0].weight.grad is not None


def test_dino_patch_tokens_on_the_feature_grid():
    dino = DinoFeatures(tiny_dino())
    pixels = torch.rand(2, 3, 64, 64)
    tokens = dino(pixels, grid=(8, 8))  # the frames are resized to 112x112: an 8x8 grid of 14-pixel patches
    assert tokens.shape == (2, 8, 8, dino.hidden_size)
    assert torch.isfinite(tokens).all()
    assert not any(p.requires_grad for p in dino.parameters())


def test_feature_tap_records_up_block_1_and_leaves_no_hook():
    pipe = tiny_pipeline()
    unet = pipe.unet
    sample = torch.randn(1, 2, 8, 8, 8)
    embeddings = torch.randn(2, 1, 32)
    time_ids = pipe.get_added_time_ids(torch.float32)
    with torch.no_grad():
        plain = unet(sample, 1.0, embeddings, time_ids).sample
        with FeatureTap(unet) as tap:
            tapped = unet(sample, 1.0, embeddings, time_ids).sample
    assert torch.equal(plain, tapped)
    channels = sfr_feature_channels(unet)
    assert tap.features.shape == (2, channels, 8, 8)
    assert len(unet.up_blocks[1]._forward_hooks) == 0
    with pytest.raises(ValueError, match="block_index"):
        FeatureTap(unet, block_index=5)


def test_stage1_loss_trains_unet_and_projector():
    pipe = tiny_pipeline()
    dino = DinoFeatures(tiny_dino())
    projector = SFRProjector(sfr_feature_channels(pipe.unet), dino.hidden_size, hidden_dim=16)
    torch.manual_seed(0)
    losses = stage1_loss(pipe, pipe.unet, _batch(), projector, dino, lambda_reg=0.5)
    assert set(losses) == {"loss", "dsm", "sfr"}
    torch.testing.assert_close(losses["loss"], losses["dsm"] + 0.5 * losses["sfr"])
    losses["loss"].backward()
    assert pipe.unet.conv_in.weight.grad is not None and projector.mlp[-1].weight.grad is not None
    assert pipe.vae.encoder.conv_in.weight.grad is None and all(p.grad is None for p in dino.parameters())


class _Wrapper(torch.nn.Module):
    """Stands in for DDP (`.module`) or a `torch.compile`d model (`._orig_mod`)."""

    def __init__(self, attribute, model):
        super().__init__()
        setattr(self, attribute, model)


def test_unwrap_model_sees_through_ddp_and_compile_in_any_nesting():
    unet = tiny_pipeline().unet
    for wrapped in (
        _Wrapper("module", unet),
        _Wrapper("_orig_mod", unet),
        _Wrapper("_orig_mod", _Wrapper("module", unet)),
        _Wrapper("module", _Wrapper("_orig_mod", unet)),
    ):
        assert unwrap_model(wrapped) is unet
        assert sfr_feature_channels(wrapped) == sfr_feature_channels(unet)
        assert FeatureTap(wrapped).block is unet.up_blocks[1]
    assert unwrap_model(unet) is unet


def test_checkpoint_folder_appears_only_when_complete(tmp_path):
    final = tmp_path / "checkpoint-3"
    with pytest.raises(RuntimeError, match="cut short"):
        with atomic_output(final, is_dir=True) as partial:
            (partial / "unet").mkdir(parents=True)
            raise RuntimeError("cut short")
    assert os.listdir(tmp_path) == []
    with atomic_output(final, is_dir=True) as partial:
        (partial / "unet").mkdir(parents=True)
        assert list_checkpoints(str(tmp_path)) == []  # the hidden partial folder is not a checkpoint yet
    assert list_checkpoints(str(tmp_path)) == ["checkpoint-3"] and (final / "unet").is_dir()


# ---------------------------------------------------------------------------------------------------------------
# Schedule, optimiser
# ---------------------------------------------------------------------------------------------------------------


def test_warmup_then_exponential_decay():
    factors = [warmup_exponential_factor(s, 100, 1100, 0.1) for s in range(1200)]
    assert factors[0] == pytest.approx(0.01) and factors[99] == pytest.approx(1.0)
    assert factors[100] == pytest.approx(1.0)
    assert factors[600] == pytest.approx(0.1**0.5)
    assert factors[1100] == pytest.approx(0.1) and factors[1199] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[100:], factors[101:]))


def test_8bit_adam_without_bitsandbytes_says_how_to_install():
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    args = argparse.Namespace(
        use_8bit_adam=True,
        learning_rate=1e-5,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_weight_decay=0.0,
        adam_epsilon=1e-8,
    )
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        create_optimizer(args, [torch.nn.Parameter(torch.zeros(1))])


# ---------------------------------------------------------------------------------------------------------------
# Stage 2 freeze rule and the VAE decoder step
# ---------------------------------------------------------------------------------------------------------------


def test_temporal_parameter_names():
    assert is_temporal_parameter("down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight")
    assert is_temporal_parameter("mid_block.resnets.0.temporal_res_block.conv1.weight")
    assert is_temporal_parameter("up_blocks.1.resnets.0.time_mixer.mix_factor")
    assert is_temporal_parameter("down_blocks.0.attentions.0.time_pos_embed.linear_1.weight")
    assert not is_temporal_parameter("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight")
    assert not is_temporal_parameter("down_blocks.0.resnets.0.spatial_res_block.conv1.weight")
    assert not is_temporal_parameter("time_embedding.linear_1.weight")


def test_one_stage2_step_changes_spatial_and_keeps_temporal_and_vae_bit_identical():
    pipe = tiny_pipeline()
    trainable, frozen = freeze_temporal_layers(pipe.unet)
    assert frozen and trainable
    before_unet = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    before_vae = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    before_clip = {k: v.clone() for k, v in pipe.image_encoder.state_dict().items()}
    pipe.vae.requires_grad_(False)
    pipe.image_encoder.requires_grad_(False)
    parameters = [p for p in pipe.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    losses = stage2_loss(pipe, pipe.unet, copy.deepcopy(pipe.scheduler), _batch(frames=2), lambda_reg=0.0)
    losses["loss"].backward()
    optimizer.step()

    after = pipe.unet.state_dict()
    changed = {name for name in trainable if not torch.equal(before_unet[name], after[name])}
    assert all(torch.equal(before_unet[name], after[name]) for name in frozen)
    # Every spatial tensor that the loss reaches moves (AdamW's first step moves any parameter with a gradient).
    assert "conv_in.weight" in changed and "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight" in changed
    assert len(changed) > 0.9 * len(trainable)
    assert all(torch.equal(before_vae[k], v) for k, v in pipe.vae.state_dict().items())
    assert all(torch.equal(before_clip[k], v) for k, v in pipe.image_encoder.state_dict().items())


def test_stage2_loss_is_the_decoded_inference_prediction():
    """With the loss at a known prediction: the angular loss of stage 2 equals that of decoding the pipeline's
    own one-step latents."""
    pipe = tiny_pipeline()
    batch = _batch(frames=1, seed=1)
    with torch.no_grad():
        losses = stage2_loss(pipe, pipe.unet, copy.deepcopy(pipe.scheduler), batch, lambda_reg=0.0)
        latents = pipe(batch["pixel_values"][0], output_type="latent").normals  # [F, 4, 8, 8]
        decoded = pipe.decode_latents(latents)  # [F, 3, 64, 64]
    expected = angular_loss(decoded[None], batch["normals"], dim=2)
    torch.testing.assert_close(losses["angular"], expected, rtol=1e-4, atol=1e-5)


def test_vae_decoder_step_changes_only_the_decoder():
    pipe = tiny_pipeline()
    vae = pipe.vae
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=1e-3)
    losses = vae_decoder_loss(vae, _batch(frames=2), l1_weight=1.0)
    assert set(losses) == {"loss", "angular", "l1"}
    losses["loss"].backward()
    optimizer.step()
    after = vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if not k.startswith("decoder."))
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("decoder."))


def test_gradient_checkpointing_gives_the_same_stage1_gradients():
    """Memory savers are options, not edits: checkpointing changes neither the loss nor the gradients."""
    results = []
    for checkpointing in (False, True):
        pipe = tiny_pipeline()
        dino = DinoFeatures(tiny_dino())
        torch.manual_seed(1)
        projector = SFRProjector(sfr_feature_channels(pipe.unet), dino.hidden_size, hidden_dim=16)
        pipe.unet.train()
        if checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        torch.manual_seed(0)
        losses = stage1_loss(pipe, pipe.unet, _batch(frames=2), projector, dino, lambda_reg=0.5)
        losses["loss"].backward()
        results.append((losses["loss"].detach(), {k: p.grad for k, p in pipe.unet.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def _two_region_batch():
    """Two frames whose top half faces up and bottom half faces the camera."""
    normals = torch.zeros(1, 2, 3, 64, 64)
    normals[:, :, 2] = 1.0
    normals[..., :32, :] = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 3, 1, 1)
    pixels = torch.rand(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return {"pixel_values": pixels, "normals": normals, "valid_mask": torch.ones(1, 2, 1, 64, 64, dtype=torch.bool)}


def test_stage2_and_vae_decoder_steps_fit_one_clip():
    """A few real optimiser steps on one clip lower each stage's loss (the training signal reaches the weights)."""
    batch = _two_region_batch()
    pipe = tiny_pipeline()
    pipe.vae.requires_grad_(False)
    pipe.image_encoder.requires_grad_(False)
    freeze_temporal_layers(pipe.unet)
    optimizer = torch.optim.AdamW([p for p in pipe.unet.parameters() if p.requires_grad], lr=1e-3)
    scheduler = copy.deepcopy(pipe.scheduler)
    history = []
    for _ in range(12):
        loss = stage2_loss(pipe, pipe.unet, scheduler, batch, lambda_reg=0.0)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(loss.item())
    assert history[-1] < 0.9 * history[0], history

    vae = tiny_pipeline().vae
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(12):
        loss = vae_decoder_loss(vae, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0], history


def _tiny_teacher_config():
    return semantic_teacher_config(hidden_size=16, num_layers=1, num_heads=2)


def test_patch_label_shares():
    labels = torch.zeros(1, 4, 6, dtype=torch.long)
    labels[:, :, 3:] = 2  # left half label 0, right half label 2
    labels[:, 0, 0] = 1
    shares = patch_label_shares(labels, 3, (1, 2))
    torch.testing.assert_close(shares, torch.tensor([[[[11 / 12, 1 / 12, 0.0], [0.0, 0.0, 1.0]]]]))
    uneven = patch_label_shares(torch.randint(0, 4, (2, 7, 9)), 4, (3, 4))
    assert uneven.shape == (2, 3, 4, 4)
    torch.testing.assert_close(uneven.sum(-1), torch.ones(2, 3, 4))


def test_semantic_teacher_reads_its_heads_off_the_sfr_tokens_and_learns():
    torch.manual_seed(0)
    teacher = SemanticTeacher(_tiny_teacher_config())
    pixels = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    # The tokens the heads read are the ones SFR gets from the saved backbone (`DinoFeatures`).
    frozen = DinoFeatures(copy.deepcopy(teacher.backbone))
    torch.testing.assert_close(teacher(pixels, (8, 8))["kind"], teacher.heads["kind"](frozen(pixels, (8, 8))))
    # A learning signal: a few steps on fixed frames and labels lower the loss.
    labels = {"kind": torch.randint(0, 6, (4, 64, 64)), "material": torch.randint(0, 4, (4, 64, 64))}
    labels["kind"][:, :32] = 1
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    history = []
    for _ in range(20):
        losses = semantic_teacher_loss(teacher, pixels, labels, (8, 8))
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(losses["loss"].item())
    assert set(losses) == {"loss", "kind", "material"} and history[-1] < 0.8 * history[0], history


def test_trained_semantic_teacher_loads_as_the_sfr_target(tmp_path):
    metrics = train_semantic_teacher(
        tmp_path / "teacher", size=64, num_clips=2, num_frames=1, heldout_clips=1, steps=3, batch_size=2,
        config=_tiny_teacher_config(),
    )  # fmt: skip
    assert 0 <= metrics["kind"] <= 1 and 0 < metrics["kind_constant_guess"] <= 1 and metrics["grid"] == [8, 8]
    assert json.loads((tmp_path / "teacher" / "teacher_metrics.json").read_text()) == metrics
    # The folder is a plain Dinov2Model (no heads): SFR loads it as it loads DINOv2, and stage 1 trains against it.
    dino = DinoFeatures.from_pretrained(str(tmp_path / "teacher"))
    assert dino.hidden_size == 16
    pipe = tiny_pipeline()
    projector = SFRProjector(sfr_feature_channels(pipe.unet), dino.hidden_size, hidden_dim=16)
    losses = stage1_loss(pipe, pipe.unet, _batch(), projector, dino, lambda_reg=0.5)
    assert torch.isfinite(losses["sfr"]) and -1 <= losses["sfr"].item() <= 1
    with pytest.raises(ValueError, match="steps"):
        train_semantic_teacher(tmp_path / "bad", steps=0)


def test_dino_loading_error_names_the_flag(tmp_path):
    with pytest.raises(OSError, match="--dino_model"):
        DinoFeatures.from_pretrained(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------------------------
# Video prior
# ---------------------------------------------------------------------------------------------------------------


def test_rgb_autoencoder_trains_encoder_and_decoder_to_reconstruct_frames():
    vae = tiny_pipeline().vae.requires_grad_(True)
    batch = _batch(frames=2)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    history = []
    for _ in range(12):
        losses = rgb_autoencoder_loss(vae, batch)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(losses["loss"].item())
    assert set(losses) == {"loss", "l1"} and history[-1] < 0.95 * history[0], history
    after = vae.state_dict()
    for part in ("encoder.", "decoder."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(part)), part
    # The loss is the mean absolute error of the frames in [-1, 1], encoded to their latent mode and decoded.
    with torch.no_grad():
        pixels = batch["pixel_values"][0] * 2 - 1
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode(), num_frames=2).sample
        torch.testing.assert_close(rgb_autoencoder_loss(vae, batch)["l1"], (decoded - pixels).abs().mean())


def test_latent_scaling_factor_gives_unit_variance_latents():
    vae = tiny_pipeline().vae
    frames = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    factor = latent_scaling_factor(vae, frames)
    latents = vae.encode(frames * 2 - 1).latent_dist.mode().detach()
    assert (latents * factor).std().item() == pytest.approx(1.0, rel=1e-4)


def test_image_to_video_loss_conditions_every_frame_on_the_first():
    """As SVD: the first frame's latent on every frame's input channels and its CLIP embedding for every frame; the
    clip's own scaled latents are the target, and the pipeline's added time ids condition."""
    pipe = tiny_pipeline()
    batch = _batch(frames=3, seed=4)
    seen = {}

    def record(module, args, kwargs):
        seen["sample"], seen["states"], seen["time_ids"] = (
            args[0],
            kwargs["encoder_hidden_states"],
            kwargs["added_time_ids"],
        )

    handle = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    torch.manual_seed(0)
    losses = image_to_video_loss(pipe, pipe.unet, batch, p_mean=1.0, p_std=1.0)
    handle.remove()
    first = batch["pixel_values"][:, 0]
    conditioning = seen["sample"][:, :, 4:]  # [B, F, 4, h, w]
    for frame in range(3):
        torch.testing.assert_close(conditioning[:, frame], pipe.encode_video_latents(first))
        torch.testing.assert_close(seen["states"][frame], pipe.encode_image_embeddings(first)[0])
    torch.testing.assert_close(seen["time_ids"], pipe.get_added_time_ids(torch.float32))
    # The loss is the EDM DSM loss towards the clip's own latents (same noise draw).
    latents = pipe.encode_video_latents(batch["pixel_values"][0])[None] * pipe.vae.config.scaling_factor
    torch.manual_seed(0)
    sigmas = sample_sigmas(1, 1.0, 1.0)
    noisy = add_noise(latents, sigmas, torch.randn_like(latents))
    denoised = edm_denoise(pipe.unet, noisy, sigmas, conditioning, seen["states"], seen["time_ids"])
    torch.testing.assert_close(losses["dsm"], dsm_loss(denoised, latents, sigmas))
    losses["loss"].backward()
    temporal = [p.grad for n, p in pipe.unet.named_parameters() if is_temporal_parameter(n)]
    assert all(g is not None for g in temporal) and pipe.vae.encoder.conv_in.weight.grad is None
