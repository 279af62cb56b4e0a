"""End-to-end tests of the training scripts: a few steps through `accelerate launch` on tiny components and
synthetic clips, checkpoints before and after resume and pruning, and the final pipeline folder."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from normalcrafter_pipeline import NormalCrafterPipeline
from normalcrafter_pipeline.testing_utils import save_tiny_dino, tiny_pipeline
from normalcrafter_pipeline.training import NormalClipDataset, is_temporal_parameter, render_dataset

sys.path.insert(0, os.path.dirname(__file__))
from distributed_launch import check_processes, launch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "training")


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    tiny_pipeline(seed=0).save_pretrained(base / "pipe")
    save_tiny_dino(base / "dino")
    render_dataset(base / "clips", num_clips=2, frames=2, height=64, width=64, seed=0)
    return {"pipe": str(base / "pipe"), "dino": str(base / "dino"), "clips": str(base / "clips"), "base": base}


def _launch(script, args, num_processes=1):
    launcher, env = launch(num_processes)
    command = [*launcher, os.path.join(SCRIPTS, f"{script}.py"), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    log = result.stdout + result.stderr
    check_processes(log, num_processes)
    return log


def _common_args(assets, output_dir, steps, sfr=True):
    args = [
        "--pretrained_model_name_or_path", assets["pipe"], "--train_data_dir", assets["clips"],
        "--output_dir", str(output_dir), "--height", "64", "--width", "64", "--max_num_frames", "1",
        "--max_train_steps", str(steps), "--checkpointing_steps", "1", "--lr_warmup_steps", "1",
        "--learning_rate", "1e-3", "--seed", "0",
    ]  # fmt: skip
    if sfr:
        args += ["--dino_model", assets["dino"], "--sfr_hidden_dim", "32"]
    return args


def _checkpoints(output_dir):
    return {d for d in os.listdir(output_dir) if d.startswith("checkpoint")}


def _assert_final_pipeline_runs(output_dir):
    pipe = NormalCrafterPipeline.from_pretrained(output_dir)
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    normals = pipe(frames).normals
    assert normals.shape == (2, 64, 64, 3) and np.isfinite(normals).all()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)
    return pipe


def test_parse_args_defaults_and_errors(assets):
    required = ["--pretrained_model_name_or_path", "p", "--train_data_dir", "d", "--output_dir", "o"]
    stage1, stage2, vae = (_load_script(n) for n in ("train_stage1", "train_stage2", "train_vae_decoder"))
    args = stage1.parse_args(required)
    assert (args.learning_rate, args.max_train_steps, args.min_num_frames, args.max_num_frames) == (3e-5, 20000, 1, 14)
    assert (args.lambda_reg, args.dino_model, args.p_mean, args.p_std) == (0.5, "facebook/dinov2-base", 0.7, 1.6)
    assert args.lr_warmup_steps == 100
    args = stage2.parse_args(required)
    assert (args.learning_rate, args.max_train_steps, args.min_num_frames, args.max_num_frames) == (1e-5, 10000, 1, 4)
    args = vae.parse_args(required)
    assert (args.learning_rate, args.max_train_steps) == (1e-5, 20000)
    with pytest.raises(ValueError, match="--height"):
        stage1.parse_args(required + ["--height", "100"])
    with pytest.raises(ValueError, match="--train_data_weights"):
        stage2.parse_args(required + ["--train_data_weights", "1", "2"])
    with pytest.raises(ValueError, match="--max_num_frames"):
        stage2.parse_args(required + ["--min_num_frames", "3", "--max_num_frames", "2"])
    with pytest.raises(ValueError, match="--lambda_reg"):
        stage1.parse_args(required + ["--lambda_reg", "-1"])
    with pytest.raises(ValueError, match="--l1_weight"):
        vae.parse_args(required + ["--l1_weight", "-1"])
    prior_vae, prior_unet = (_load_script(n) for n in ("pretrain_vae", "pretrain_video_unet"))
    args = prior_unet.parse_args(required)
    assert (args.min_num_frames, args.max_num_frames, args.p_mean, args.p_std) == (2, 14, 0.7, 1.6)
    assert args.validation_data_dir is None and not hasattr(args, "lambda_reg")
    with pytest.raises(SystemExit):  # the prior predicts no normals: no validation flags
        prior_vae.parse_args(required + ["--validation_data_dir", "v"])
    with pytest.raises(ValueError, match="--scaling_clips"):
        prior_vae.parse_args(required + ["--scaling_clips", "0"])


@pytest.mark.slow
def test_stage1_checkpoints_resume_validation_and_final_pipeline(assets, tmp_path):
    out = tmp_path / "stage1"
    _launch("train_stage1", _common_args(assets, out, steps=2))
    assert _checkpoints(out) == {"checkpoint-1", "checkpoint-2"}
    assert {"unet", "sfr_projector"} <= set(os.listdir(out / "checkpoint-2"))

    resume_args = ["--resume_from_checkpoint", "latest", "--checkpoints_total_limit", "2"]
    validation_args = ["--validation_data_dir", assets["clips"], "--validation_steps", "3"]
    validation_args += ["--num_validation_clips", "1", "--validation_num_frames", "1"]
    log = _launch("train_stage1", _common_args(assets, out, steps=3) + resume_args + validation_args)
    assert "Resuming from checkpoint" in log and "mean angular error" in log
    assert _checkpoints(out) == {"checkpoint-2", "checkpoint-3"}
    events = [f for _, _, files in os.walk(out / "logs") for f in files if f.startswith("events.out.tfevents")]
    assert events
    _assert_final_pipeline_runs(out)


@pytest.mark.slow
def test_stage2_trains_spatial_layers_only(assets, tmp_path):
    out = tmp_path / "stage2"
    # --gradient_checkpointing reaches the UNet through `TrainingSession.prepare` (the SFR projector has none).
    first = ["--checkpoints_total_limit", "1", "--gradient_checkpointing"]
    _launch("train_stage2", _common_args(assets, out, steps=2) + first)
    assert _checkpoints(out) == {"checkpoint-2"}
    _launch("train_stage2", _common_args(assets, out, steps=3) + ["--resume_from_checkpoint", "latest"])
    assert _checkpoints(out) == {"checkpoint-2", "checkpoint-3"}

    pipe = _assert_final_pipeline_runs(out)
    start = NormalCrafterPipeline.from_pretrained(assets["pipe"])
    before, after = start.unet.state_dict(), pipe.unet.state_dict()
    temporal = [k for k in before if is_temporal_parameter(k)]
    spatial = [k for k in before if not is_temporal_parameter(k)]
    assert temporal and all(torch.equal(before[k], after[k]) for k in temporal)
    assert sum(not torch.equal(before[k], after[k]) for k in spatial) > 0.9 * len(spatial)
    assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in start.vae.state_dict().items())


@pytest.mark.slow
def test_vae_decoder_script_changes_only_the_decoder(assets, tmp_path):
    out = tmp_path / "vae"
    _launch("train_vae_decoder", _common_args(assets, out, steps=2, sfr=False))
    assert _checkpoints(out) == {"checkpoint-1", "checkpoint-2"}
    assert "vae" in os.listdir(out / "checkpoint-2")
    resume_args = ["--resume_from_checkpoint", str(out / "checkpoint-1"), "--checkpoints_total_limit", "2"]
    _launch("train_vae_decoder", _common_args(assets, out, steps=3, sfr=False) + resume_args)
    # Resuming from step 1 re-saves checkpoint-2 and adds checkpoint-3; pruning drops checkpoint-1.
    assert _checkpoints(out) == {"checkpoint-2", "checkpoint-3"}

    pipe = _assert_final_pipeline_runs(out)
    start = NormalCrafterPipeline.from_pretrained(assets["pipe"])
    before, after = start.vae.state_dict(), pipe.vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("decoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in start.unet.state_dict().items())


@pytest.mark.slow
def test_two_processes_write_one_set_of_checkpoints(assets, tmp_path):
    out = tmp_path / "ddp"
    args = _common_args(assets, out, steps=2) + ["--checkpointing_steps", "2"]
    _launch("train_stage1", args, num_processes=2)
    assert _checkpoints(out) == {"checkpoint-2"}
    contents = set(os.listdir(out / "checkpoint-2"))
    assert {"unet", "sfr_projector", "optimizer.bin", "scheduler.bin"} <= contents
    assert not any(name.startswith("model") for name in contents)  # models are save_pretrained folders only
    _assert_final_pipeline_runs(out)


@pytest.mark.slow
def test_video_prior_scripts_train_the_vae_then_the_unet(assets, tmp_path):
    vae_out, unet_out = tmp_path / "prior_vae", tmp_path / "prior_unet"
    _launch("pretrain_vae", _common_args(assets, vae_out, steps=2, sfr=False))
    assert _checkpoints(vae_out) == {"checkpoint-1", "checkpoint-2"}
    start = NormalCrafterPipeline.from_pretrained(assets["pipe"])
    pipe = NormalCrafterPipeline.from_pretrained(vae_out)
    before, after = start.vae.state_dict(), pipe.vae.state_dict()
    for part in ("encoder.", "decoder."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part)), part
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in start.unet.state_dict().items())
    # The scaling factor gives the latents of the training frames unit variance.
    frames = NormalClipDataset(assets["clips"], 64, 64, max_scale=1.0, random_flip=False)
    first_frames = torch.stack([frames[i]["pixel_values"][0] for i in range(len(frames))])
    scaled = pipe.encode_video_latents(first_frames) * pipe.vae.config.scaling_factor
    assert pipe.vae.config.scaling_factor != start.vae.config.scaling_factor
    assert scaled.std().item() == pytest.approx(1.0, rel=1e-3)

    args = _common_args(assets, unet_out, steps=2, sfr=False)
    args[args.index(assets["pipe"])] = str(vae_out)
    args[args.index("--max_num_frames") + 1] = "2"
    _launch("pretrain_video_unet", args)
    prior = _assert_final_pipeline_runs(unet_out)
    before, after = pipe.unet.state_dict(), prior.unet.state_dict()
    temporal = [k for k in before if is_temporal_parameter(k)]
    assert any(not torch.equal(before[k], after[k]) for k in temporal)
    assert sum(not torch.equal(before[k], after[k]) for k in before) > 0.9 * len(before)
    assert all(torch.equal(v, prior.vae.state_dict()[k]) for k, v in pipe.vae.state_dict().items())
