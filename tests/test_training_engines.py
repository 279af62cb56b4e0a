"""Training engines: stage 1 on a mixture of three published layouts (Hypersim, 3D Ken Burns, rendered sequences)
for a few steps on two processes under each shipped configuration (DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3), with
checkpoints, a resume that gives the very next loss of an uninterrupted run, and the model DDP trains.

They run on two CPU processes (gloo) where there are no two GPUs: `accelerate launch` with the configuration and
`ACCELERATE_USE_CPU=true` for DDP and FSDP (the training session turns FSDP on for CPU processes, which accelerate
does only for GPUs); DeepSpeed starts its CPU processes itself (its first run compiles its shared-memory
communication op, which needs a C++ compiler). The DeepSpeed tests need `pip install deepspeed`."""

import glob
import os
import shutil
import subprocess
import sys

import pytest
import torch

from normalcrafter_pipeline.testing_utils import save_tiny_dino, tiny_pipeline

sys.path.insert(0, os.path.dirname(__file__))
from distributed_launch import check_processes, launch  # noqa: E402
from test_training_layouts import write_hypersim, write_kenburns, write_rendered  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "training", "configs")
pytest.importorskip("h5py")
DDP = ["--config_file", os.path.join(CONFIGS, "ddp.yaml")]
FSDP = ["--config_file", os.path.join(CONFIGS, "fsdp.yaml")]
ZERO2 = ["--config_file", os.path.join(CONFIGS, "deepspeed_zero2.yaml")]
ZERO3 = ["--config_file", os.path.join(CONFIGS, "deepspeed_zero3.yaml")]
EMA = ["--use_ema", "--ema_decay", "0.5"]  # decay 0.5, so the EMA differs from the trained weights


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    base = tmp_path_factory.mktemp("engines")
    tiny_pipeline(seed=0).save_pretrained(base / "pipe")
    save_tiny_dino(base / "dino")
    write_hypersim(base / "hypersim", frames=3)
    write_kenburns(base / "kenburns")
    write_rendered(base / "rendered", frames=3)
    return base


@pytest.fixture(scope="module")
def ddp_run(assets, tmp_path_factory):
    """Four steps of DDP with an EMA: the run every engine is compared with (the tests using it share one
    xdist group, so one worker runs them in turn and makes it once)."""
    output_dir = tmp_path_factory.mktemp("ddp") / "straight"
    assert _engine(_launch(assets, output_dir, 4, DDP, EMA)) in ("MULTI_CPU", "MULTI_GPU")
    return output_dir


def _launch(assets, output_dir, steps, launch_args, extra=()):
    """Run stage 1 for `steps` steps on two processes (CPU ones unless two GPUs are present); returns the log."""
    deepspeed = launch_args in (ZERO2, ZERO3)
    launcher, env = launch(2, launch_args, deepspeed=deepspeed)
    if deepspeed:  # its ops compile into a folder of this test run's own (a killed compile leaves a lock behind)
        env["TORCH_EXTENSIONS_DIR"] = str(assets / "torch_extensions")
    command = [
        *launcher, os.path.join(REPO, "training", "train_stage1.py"),
        "--pretrained_model_name_or_path", str(assets / "pipe"), "--output_dir", str(output_dir),
        "--train_data_dir", f"hypersim:{assets / 'hypersim'}", f"kenburns:{assets / 'kenburns'}",
        f"rendered:{assets / 'rendered'}", "--train_data_weights", "1", "1", "2",
        "--height", "64", "--width", "64", "--max_num_frames", "2", "--max_train_steps", str(steps),
        "--checkpointing_steps", "1", "--lr_warmup_steps", "1", "--learning_rate", "1e-3", "--seed", "0",
        "--dino_model", str(assets / "dino"), "--sfr_hidden_dim", "32", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, f"stage 1 failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    log = result.stdout + result.stderr
    check_processes(log, 2)
    return log


def _scalars(output_dir, tag):
    """The values the run in `output_dir` logged under `tag` to tensorboard, by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for path in sorted(glob.glob(os.path.join(output_dir, "logs", "**", "events.out.tfevents*"), recursive=True)):
        events = EventAccumulator(path)
        events.Reload()
        if tag in events.Tags()["scalars"]:
            values.update({event.step: event.value for event in events.Scalars(tag)})
    return values


def _losses(output_dir):
    return _scalars(output_dir, "train/loss")


def _engine(log):
    """The distributed type the run's main process reported."""
    return log.split("[RANK 0] Distributed environment: DistributedType.")[1].split()[0]


def _resume_gives_the_same_next_loss(assets, tmp_path, launch_args, extra, engines, straight=None):
    """Four steps straight (or the run in `straight`); then the run interrupted after step 2 (its output folder
    holding checkpoint-2 only, as a run killed then would leave it) resumed with the same arguments. Both runs used
    one of `engines`."""
    resumed = tmp_path / "resumed"
    if straight is None:
        straight = tmp_path / "straight"
        assert _engine(_launch(assets, straight, 4, launch_args, extra)) in engines
    assert {d for d in os.listdir(straight) if d.startswith("checkpoint")} == {f"checkpoint-{k}" for k in range(1, 5)}
    os.makedirs(resumed)
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    log = _launch(assets, resumed, 4, launch_args, [*extra, "--resume_from_checkpoint", "latest"])
    assert "Resuming from checkpoint" in log and "checkpoint-2" in log and _engine(log) in engines
    expected, got = _losses(straight), _losses(resumed)
    assert sorted(expected) == [1, 2, 3, 4] and sorted(got) == [3, 4]
    assert len(set(expected.values())) == 4
    # Steps 3 and 4 ran after the resume: the same batches, noise, weights and optimiser state as without the
    # interruption (step 3 ends an epoch of the sampler here, step 4 starts the next).
    assert [got[3], got[4]] == [expected[3], expected[4]], (expected, got)
    assert {d for d in os.listdir(resumed) if d.startswith("checkpoint")} == {f"checkpoint-{k}" for k in (2, 3, 4)}
    from normalcrafter_pipeline import NormalCrafterPipeline

    final = {
        k: NormalCrafterPipeline.from_pretrained(f).unet.state_dict() for k, f in (("a", straight), ("b", resumed))
    }
    assert all(torch.equal(v, final["b"][k]) for k, v in final["a"].items())
    return straight


def _trains_as_ddp(assets, ddp, other, weights, exact=True):
    """The run in `other` logged DDP's losses and saved its weights (`weights`: pairs of folders, DDP's then the
    other's), up to the order of float sums. Not `exact` (DeepSpeed reduces gradients in an order of its own):
    Adam's normalised first steps turn the last bits of near-zero gradients into updates of either sign, so a few
    weights differ by up to the learning rate; the whole update agrees to a thousandth."""
    from safetensors.torch import load_file

    expected, got = _losses(ddp), _losses(other)
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4]
    assert all(abs(got[k] - expected[k]) <= 1e-5 * abs(expected[k]) for k in expected), (expected, got)
    start = load_file(assets / "pipe" / "unet" / "diffusion_pytorch_model.safetensors")
    for folder, other_folder in weights:
        want = load_file(ddp / folder / "diffusion_pytorch_model.safetensors")
        have = load_file(other / other_folder / "diffusion_pytorch_model.safetensors")
        assert want.keys() == have.keys() == start.keys()
        if exact:
            assert all(torch.allclose(have[k], want[k], rtol=1e-5, atol=1e-6) for k in want), other_folder
            continue
        flat = {name: torch.cat([d[k].flatten() for k in sorted(d)]) for name, d in (("want", want), ("have", have))}
        update = (flat["want"] - torch.cat([start[k].flatten() for k in sorted(start)])).abs().mean()
        difference = (flat["have"] - flat["want"]).abs()
        assert difference.mean() <= 1e-3 * update, (other_folder, difference.mean(), update)
        assert (difference > 1e-5).float().mean() < 0.01, other_folder


@pytest.mark.slow
@pytest.mark.xdist_group("training_engines")
def test_ddp_two_processes_mixture_resumes_exactly(assets, tmp_path, ddp_run):
    # With an EMA, which is checkpointed, resumed and saved.
    _resume_gives_the_same_next_loss(assets, tmp_path, DDP, EMA, ("MULTI_CPU", "MULTI_GPU"), straight=ddp_run)
    from safetensors.torch import load_file

    assert "unet_ema" in os.listdir(ddp_run / "checkpoint-4")
    trained = load_file(ddp_run / "checkpoint-4" / "unet" / "diffusion_pytorch_model.safetensors")
    ema = load_file(ddp_run / "checkpoint-4" / "unet_ema" / "diffusion_pytorch_model.safetensors")
    final = load_file(ddp_run / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(final[k], ema[k]) for k in ema) and any(not torch.equal(final[k], trained[k]) for k in ema)

    # Checkpoints (whose EMA is saved through a model built for it) change nothing in training: a run without
    # them logs the same losses and ends with the same weights.
    unsaved = tmp_path / "one_checkpoint"
    _launch(assets, unsaved, 4, DDP, [*EMA, "--checkpointing_steps", "4"])
    assert _losses(unsaved) == _losses(ddp_run)
    once = load_file(unsaved / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(once[k], final[k]) for k in final)


@pytest.mark.slow
@pytest.mark.xdist_group("training_engines")
def test_fsdp_two_processes_mixture_resumes_exactly_and_trains_as_ddp(assets, tmp_path, ddp_run):
    """FSDP2 with the UNet and SFR projector sharded over two processes, with a sharded EMA and validation (the
    main process validates whole weights gathered from both): resumes exactly, and trains the model DDP trains
    (same losses, same final and EMA weights, up to the order of float sums); validation changes nothing."""
    validation = [
        "--validation_data_dir", f"rendered:{assets / 'rendered'}", "--validation_steps", "2",
        "--num_validation_clips", "1", "--validation_num_frames", "2",
    ]  # fmt: skip
    fsdp = _resume_gives_the_same_next_loss(assets, tmp_path, FSDP, EMA + validation, ("FSDP",))
    assert _scalars(fsdp, "validation/mean_angular_error_deg").keys() == {2, 4}
    assert {"optimizer_0", "pytorch_model_fsdp_0", "unet_ema"} <= set(os.listdir(fsdp / "checkpoint-4"))
    ema = "checkpoint-4/unet_ema"
    _trains_as_ddp(assets, ddp_run, fsdp, [("unet", "unet"), (ema, ema)])


@pytest.mark.slow
@pytest.mark.xdist_group("training_engines")
def test_deepspeed_zero2_two_processes_mixture_resumes_exactly_and_trains_as_ddp(assets, tmp_path, ddp_run):
    """ZeRO-2 (gradients and optimiser states sharded; the UNet and projector as one module) with an EMA."""
    pytest.importorskip("deepspeed")
    zero2 = _resume_gives_the_same_next_loss(assets, tmp_path, ZERO2, EMA, ("DEEPSPEED",))
    assert {"pytorch_model", "unet_ema"} <= set(os.listdir(zero2 / "checkpoint-4"))
    ema = "checkpoint-4/unet_ema"
    _trains_as_ddp(assets, ddp_run, zero2, [("unet", "unet"), (ema, ema)], exact=False)


@pytest.mark.slow
@pytest.mark.xdist_group("training_engines")
def test_deepspeed_zero3_two_processes_mixture_resumes_exactly_and_trains_as_ddp(assets, tmp_path, ddp_run):
    """ZeRO-3 (weights sharded too) with an EMA, which is kept whole: the final folder holds the EMA's weights, the
    checkpoints the trained ones, which the test gathers."""
    pytest.importorskip("deepspeed")
    zero3 = _resume_gives_the_same_next_loss(assets, tmp_path, ZERO3, EMA, ("DEEPSPEED",))
    ema = "checkpoint-4/unet_ema"
    _trains_as_ddp(assets, ddp_run, zero3, [("unet", "unet"), (ema, ema)], exact=False)


def test_dry_run_prints_the_memory_plan_from_configs_alone(tmp_path, capsys):
    """`--dry_run` builds the stage's real models on the meta device from the folder's config.json files (the
    weights are deleted here, the data root does not exist) and prints the per-GPU bytes; `main` never runs."""
    import importlib.util

    from normalcrafter_pipeline.training.arguments import run_script
    from normalcrafter_pipeline.training.memory_plan import plan_memory
    from normalcrafter_pipeline.training.sfr import SFRProjector, sfr_feature_channels

    pipe = tiny_pipeline(seed=0)
    pipe.save_pretrained(tmp_path / "pipe")
    for weights in glob.glob(str(tmp_path / "pipe" / "*" / "*.safetensors")):
        os.remove(weights)
    dino = save_tiny_dino(tmp_path / "dino")
    os.remove(os.path.join(dino, "model.safetensors"))
    spec = importlib.util.spec_from_file_location("train_stage1", os.path.join(REPO, "training", "train_stage1.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ran = []
    argv = [
        "--pretrained_model_name_or_path", str(tmp_path / "pipe"), "--train_data_dir", "hypersim:/does/not/exist",
        "--output_dir", str(tmp_path / "out"), "--height", "64", "--width", "64", "--max_num_frames", "3",
        "--dino_model", dino, "--sfr_hidden_dim", "32", "--mixed_precision", "bf16", "--dry_run",
    ]  # fmt: skip
    assert run_script(script.parse_args, ran.append, argv) == 0 and ran == []
    out = capsys.readouterr().out
    assert "Memory plan: stage1, 64x64, 3 frames" in out and "| activations (estimate) |" in out
    assert not os.path.exists(tmp_path / "out")

    # The counts are those of the real models: all UNet parameters and the SFR projector train (fp32 weights,
    # gradients and two AdamW moments), the VAE, CLIP and DINOv2 are held in bf16.
    projector = SFRProjector(sfr_feature_channels(pipe.unet, 1), 32, hidden_dim=32)
    trained = sum(p.numel() for p in pipe.unet.parameters()) + sum(p.numel() for p in projector.parameters())
    from transformers import Dinov2Config, Dinov2Model

    frozen_models = (pipe.vae, pipe.image_encoder, Dinov2Model(Dinov2Config.from_pretrained(dino)))
    frozen = sum(p.numel() for model in frozen_models for p in model.parameters())
    kwargs = dict(
        pretrained=str(tmp_path / "pipe"), height=64, width=64, num_frames=3, dino_model=dino, sfr_hidden_dim=32
    )
    ddp = plan_memory("stage1", engine="ddp", **kwargs)
    assert ddp.trained_parameters == trained and ddp.weights == 4 * trained + 2 * frozen
    assert (ddp.gradients, ddp.optimizer) == (4 * trained, 8 * trained)
    zero2 = plan_memory("stage1", engine="zero2", num_gpus=4, **kwargs)
    zero3 = plan_memory("stage1", engine="zero3", num_gpus=4, **kwargs)
    assert zero2.weights == ddp.weights and zero2.gradients == 4 * trained // 4 and zero2.optimizer == 8 * trained // 4
    assert ddp.weights - zero3.weights == 4 * trained - 4 * trained // 4
    # The EMA is an fp32 copy of the UNet: a shard per GPU under FSDP, whole under the other engines.
    unet_parameters = sum(p.numel() for p in pipe.unet.parameters())
    assert plan_memory("stage1", engine="ddp", use_ema=True, **kwargs).optimizer == ddp.optimizer + 4 * unet_parameters
    fsdp = plan_memory("stage1", engine="fsdp", num_gpus=4, **kwargs)
    fsdp_ema = plan_memory("stage1", engine="fsdp", num_gpus=4, use_ema=True, **kwargs)
    assert fsdp_ema.optimizer == fsdp.optimizer + 4 * unet_parameters // 4
    zero3_ema = plan_memory("stage1", engine="zero3", num_gpus=4, use_ema=True, **kwargs)
    assert zero3_ema.optimizer == zero3.optimizer + 4 * unet_parameters
    adam8 = plan_memory("stage1", engine="ddp", use_8bit_adam=True, **kwargs)
    assert adam8.optimizer == 2 * trained
    checkpointed = plan_memory("stage1", engine="ddp", gradient_checkpointing=True, **kwargs)
    assert 0 < checkpointed.activations < ddp.activations
    longer = plan_memory("stage1", engine="ddp", **{**kwargs, "num_frames": 6})
    assert longer.activations > 1.5 * ddp.activations
