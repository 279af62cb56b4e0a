"""The memory a training stage needs per GPU, from the real models built on the meta device (no weight is read or
allocated): weights, gradients and optimiser states by how the engine shards them, and the activations the trained
models keep for the backward pass, measured by running their forward on meta tensors of the batch's shapes.

`--dry_run` on every stage script prints this table and exits before any weight or data is read.

What is counted, per GPU:

- weights: the trained parameters in fp32 (sharded over the GPUs by ZeRO-3 and FSDP) and the frozen models the
  stage runs (the VAE, the CLIP encoder, DINOv2 with SFR) in the mixed-precision dtype, replicated on every GPU
  (the scripts do not hand frozen models to the engine);
- gradients: fp32, one per trained parameter (sharded by ZeRO-2, ZeRO-3 and FSDP);
- optimiser: AdamW's two fp32 moments (8 bytes per trained parameter), or bitsandbytes' AdamW8bit (2 bytes)
  (sharded by ZeRO-2, ZeRO-3 and FSDP); the EMA, with `--use_ema`, adds an fp32 copy of the model it follows
  (sharded by FSDP, whose EMA each process keeps of its own shard; whole under the other engines);
- activations: the bytes of the tensors autograd saves for the backward pass in one forward of the trained path
  (the UNet and the SFR projector; stage 2 adds the VAE decoder the loss differentiates through), for
  `--train_batch_size` clips of `--max_num_frames` frames at `--height` x `--width`, in the mixed-precision
  dtype. With gradient checkpointing it is what the checkpointed forward saves plus the largest top-level block's
  own activations (recomputed one block at a time during the backward). Temporary buffers of single operations,
  the no-grad passes of the frozen encoders, the allocator's fragmentation and the CUDA context (about 0.5-1 GB)
  are not counted: leave a margin.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

import torch

ENGINES = ("ddp", "zero2", "zero3", "fsdp")
GIB = 1024**3
# DINOv2 ViT-B/14 (facebook/dinov2-base), REPA's default SFR target.
DINOV2_BASE_CONFIG = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU bytes of one training configuration (see the module docstring). The parameter counts and the
    activations are measured; `dataclasses.replace(plan, engine=..., num_gpus=..., use_8bit_adam=...)` gives the
    same configuration under another engine or optimiser without measuring again."""

    stage: str
    engine: str
    num_gpus: int
    use_8bit_adam: bool
    trained_parameters: int
    frozen_fp32_parameters: int
    frozen_parameters: int  # held in the mixed-precision dtype
    ema_parameters: int
    dtype_size: int
    activations: int
    source: str

    @property
    def _states_divisor(self) -> int:
        return self.num_gpus if self.engine in ("zero2", "zero3", "fsdp") else 1

    @property
    def weights(self) -> int:
        divisor = self.num_gpus if self.engine in ("zero3", "fsdp") else 1
        trained = self.trained_parameters * 4 // divisor
        return trained + self.frozen_fp32_parameters * 4 + self.frozen_parameters * self.dtype_size

    @property
    def gradients(self) -> int:
        return self.trained_parameters * 4 // self._states_divisor

    @property
    def optimizer(self) -> int:
        moments = self.trained_parameters * (2 if self.use_8bit_adam else 8) // self._states_divisor
        return moments + self.ema_parameters * 4 // (self.num_gpus if self.engine == "fsdp" else 1)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def table(self, describe: str) -> str:
        rows = [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer states (+ EMA)", self.optimizer),
            ("activations (estimate)", self.activations),
            ("total", self.total),
        ]
        unit, scale = ("GiB", GIB) if self.total >= GIB else ("MiB", 1024**2)
        lines = [
            f"Memory plan: {describe}",
            f"models: {self.source}; trained parameters: {self.trained_parameters:,}",
            f"| per GPU | {unit} |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {value / scale:.2f} |" for name, value in rows]
        return "\n".join(lines)


def _dtype_size(mixed_precision: str | None) -> int:
    return 2 if mixed_precision in ("fp16", "bf16") else 4


def _local_config(path: str, subfolder: str) -> dict | None:
    config = os.path.join(path, subfolder, "config.json")
    if os.path.isfile(config):
        with open(config) as handle:
            return {k: v for k, v in json.load(handle).items() if not k.startswith("_")}
    return None


def build_meta_models(pretrained: str, dino_model: str | None, sfr_hidden_dim: int, sfr_block_index: int):
    """`(models, source)`: the UNet, VAE, CLIP encoder and (with `dino_model`) DINOv2 and the SFR projector on the
    meta device, from the configs of a local pipeline folder when `pretrained` is one, else SVD-xt's (the released
    model's architecture; Hub ids are not contacted)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

    from ..normalcrafter_unet import NormalCrafterUNet
    from ..testing_utils import SVD_XT_CLIP_CONFIG, SVD_XT_UNET_CONFIG, SVD_XT_VAE_CONFIG
    from .sfr import SFRProjector, sfr_feature_channels

    unet_config = _local_config(pretrained, "unet")
    vae_config = _local_config(pretrained, "vae")
    clip_config = _local_config(pretrained, "image_encoder")
    source = "configs of " + pretrained if unet_config else "SVD-xt configs (stable-video-diffusion-img2vid-xt)"
    dino_config = _local_config(dino_model, "") if dino_model else None
    with torch.device("meta"):
        models = {
            "unet": NormalCrafterUNet.from_config(unet_config or SVD_XT_UNET_CONFIG),
            "vae": AutoencoderKLTemporalDecoder.from_config(vae_config or SVD_XT_VAE_CONFIG),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**(clip_config or SVD_XT_CLIP_CONFIG))),
        }
        if dino_model:
            dino = Dinov2Model(Dinov2Config(**(dino_config or DINOV2_BASE_CONFIG)))
            models["dino"] = dino
            models["sfr_projector"] = SFRProjector(
                in_channels=sfr_feature_channels(models["unet"], sfr_block_index),
                out_channels=dino.config.hidden_size,
                hidden_dim=sfr_hidden_dim,
            )
    return models, source


class _FusedAttention(torch.autograd.Function):
    """Scaled dot-product attention as the fused GPU kernels (flash, memory-efficient) keep it for the backward
    pass: the inputs, the output and one fp32 log-sum-exp per query, never the attention matrix. On the meta
    device torch would pick the math kernel, which saves the full matrix and overstates training memory."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        logsumexp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, logsumexp)
        return out

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("Memory planning runs no backward pass.")


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    return _FusedAttention.apply(query, key, value)


class _SavedBytes:
    """Sum of the bytes of tensors autograd saves for backward while active (meta tensors have sizes, no data)."""

    def __init__(self):
        self.total = 0

    def pack(self, tensor):
        self.total += tensor.numel() * tensor.element_size()
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)
        self._hooks.__enter__()
        self._sdpa = torch.nn.functional.scaled_dot_product_attention
        torch.nn.functional.scaled_dot_product_attention = _fused_attention
        return self

    def __exit__(self, *exc):
        torch.nn.functional.scaled_dot_product_attention = self._sdpa
        self._hooks.__exit__(*exc)


def _unet_forward(unet, batch: int, frames: int, height: int, width: int, dtype, tap_projector=None):
    """One forward of the UNet (and the SFR projector on `up_blocks[1]`) on meta inputs of a training batch."""
    h, w = height // 8, width // 8
    in_channels = unet.config.in_channels
    sample = torch.randn(batch, frames, in_channels, h, w, device="meta", dtype=dtype, requires_grad=True)
    hidden = torch.randn(batch * frames, 1, unet.config.cross_attention_dim, device="meta", dtype=dtype)
    time_ids = torch.zeros(batch, 3, device="meta", dtype=dtype)
    timestep = torch.ones(batch, device="meta", dtype=dtype)
    features = {}
    handle = unet.up_blocks[1].register_forward_hook(lambda module, args, out: features.setdefault("h", out))
    try:
        out = unet(sample, timestep, encoder_hidden_states=hidden, added_time_ids=time_ids).sample
    finally:
        handle.remove()
    if tap_projector is not None:
        tap_projector(features["h"])
    return out


class _CheckpointedUnits:
    """Gradient checkpointing as diffusers applies it (`enable_gradient_checkpointing`), measured: in `checkpoint`
    mode each unit runs under `torch.utils.checkpoint` (what the forward keeps is the unit's inputs plus what the
    code outside units saves); in `direct` mode each unit runs plainly and the largest one's saved bytes are
    recorded (what the backward recomputes at once)."""

    def __init__(self, counter: _SavedBytes):
        self.counter, self.mode, self.inputs, self.largest = counter, "checkpoint", 0, 0

    def __call__(self, module, *args):
        if self.mode == "checkpoint":
            self.inputs += sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)
        before = self.counter.total
        out = module(*args)
        self.largest = max(self.largest, self.counter.total - before)
        return out


def plan_memory(
    stage: str,
    *,
    pretrained: str,
    height: int,
    width: int,
    num_frames: int,
    batch_size: int = 1,
    mixed_precision: str | None = "bf16",
    engine: str = "ddp",
    num_gpus: int = 8,
    use_8bit_adam: bool = False,
    gradient_checkpointing: bool = False,
    use_ema: bool = False,
    dino_model: str | None = None,
    sfr_hidden_dim: int = 2048,
    sfr_block_index: int = 1,
) -> MemoryPlan:
    """Per-GPU memory of `stage` (`vae_decoder`, `stage1`, `stage2`, `prior_vae`, `prior_unet`) under `engine`
    (`ddp`, `zero2`, `zero3`, `fsdp`) on `num_gpus` GPUs; `dino_model` (a name or folder, None without SFR) adds
    DINOv2 and the SFR projector. Reads at most the `config.json` files of local folders."""
    from .freeze import is_temporal_parameter

    if engine not in ENGINES:
        raise ValueError(f"`engine` is {engine!r}; use one of {ENGINES}.")
    if stage not in ("vae_decoder", "stage1", "stage2", "prior_vae", "prior_unet"):
        raise ValueError(f"`stage` is {stage!r}; use vae_decoder, stage1, stage2, prior_vae or prior_unet.")
    sfr = dino_model if stage in ("stage1", "stage2") else None
    models, source = build_meta_models(pretrained, sfr, sfr_hidden_dim, sfr_block_index)
    unet, vae = models["unet"], models["vae"]
    size = _dtype_size(mixed_precision)
    dtype = torch.bfloat16 if size == 2 else torch.float32

    def count(params):
        return sum(p.numel() for p in params)

    if stage in ("stage1", "prior_unet"):
        trained = count(unet.parameters())
        frozen_fp32, frozen_low = 0, count(vae.parameters()) + count(models["image_encoder"].parameters())
    elif stage == "stage2":
        trained = count(p for n, p in unet.named_parameters() if not is_temporal_parameter(n))
        frozen_fp32 = count(unet.parameters()) - trained
        frozen_low = count(vae.parameters()) + count(models["image_encoder"].parameters())
    elif stage == "vae_decoder":
        trained = count(vae.decoder.parameters())
        frozen_fp32, frozen_low = count(vae.parameters()) - trained, count(models["image_encoder"].parameters())
    else:  # prior_vae
        trained = count(vae.parameters())
        frozen_fp32, frozen_low = 0, count(models["image_encoder"].parameters())
    if sfr:
        trained += count(models["sfr_projector"].parameters())
        frozen_low += count(models["dino"].parameters())
    ema_params = 0
    if use_ema:
        ema_params = count((vae if stage in ("vae_decoder", "prior_vae") else unet).parameters())

    # Activations: the trained path's forward on meta tensors, in the compute dtype.
    batch, frames = batch_size, num_frames
    counter = _SavedBytes()
    units = _CheckpointedUnits(counter)
    for model in models.values():
        # nn.Module's cast (diffusers' `to` warns about it); a few tensors made by legacy constructors in __init__
        # (`torch.Tensor([alpha])`) are on the CPU even under the meta device: they go to meta too.
        model._apply(lambda t: t.to("meta", dtype) if t.is_floating_point() else t.to("meta"))
        model.train()
        if gradient_checkpointing and getattr(model, "_supports_gradient_checkpointing", False):
            model.enable_gradient_checkpointing(units)
    pixels = (batch * frames, 3, height, width)

    def run():
        if stage in ("stage1", "stage2", "prior_unet"):
            _unet_forward(unet, batch, frames, height, width, dtype, models.get("sfr_projector"))
        if stage == "stage2":
            latents = torch.randn(
                batch * frames, 4, height // 8, width // 8, device="meta", dtype=dtype, requires_grad=True
            )
            vae.decode(latents, num_frames=frames)
        if stage == "vae_decoder":
            latents = torch.randn(batch * frames, 4, height // 8, width // 8, device="meta", dtype=dtype)
            vae.decode(latents, num_frames=frames)
        if stage == "prior_vae":
            image = torch.randn(*pixels, device="meta", dtype=dtype, requires_grad=True)
            vae.decode(vae.encode(image).latent_dist.mode(), num_frames=frames)

    with torch.device("meta"), counter:
        run()
    activations = counter.total + units.inputs
    if gradient_checkpointing:
        units.mode = "direct"
        with torch.device("meta"), counter:
            run()
        activations += units.largest
    return MemoryPlan(
        stage=stage,
        engine=engine,
        num_gpus=num_gpus,
        use_8bit_adam=use_8bit_adam,
        trained_parameters=trained,
        frozen_fp32_parameters=frozen_fp32,
        frozen_parameters=frozen_low,
        ema_parameters=ema_params,
        dtype_size=size,
        activations=activations,
        source=source,
    )


def add_dry_run_options(parser: argparse.ArgumentParser) -> None:
    """`--dry_run` and the sharding it plans for."""
    group = parser.add_argument_group("memory plan")
    group.add_argument(
        "--dry_run",
        action="store_true",
        help="Print the per-GPU memory of this configuration (weights, gradients, optimiser, activations, from the "
        "models built on the meta device) and exit before any weight or data is read.",
    )
    group.add_argument(
        "--dry_run_engine", choices=ENGINES, default="ddp", help="Engine the plan is for (ZeRO-2/3: DeepSpeed)."
    )
    group.add_argument("--dry_run_num_gpus", type=int, default=8, help="GPUs the states are sharded over.")


def print_dry_run(args: argparse.Namespace) -> MemoryPlan:
    """Print (and return) the memory plan of a parsed stage script's arguments (`--dry_run`)."""
    sfr = args.dino_model if getattr(args, "lambda_reg", 0.0) > 0 else None
    precision = args.mixed_precision or "no"
    plan = plan_memory(
        args.stage,
        pretrained=args.pretrained_model_name_or_path,
        height=args.height,
        width=args.width,
        num_frames=args.max_num_frames,
        batch_size=args.train_batch_size,
        mixed_precision=precision,
        engine=args.dry_run_engine,
        num_gpus=args.dry_run_num_gpus,
        use_8bit_adam=args.use_8bit_adam,
        gradient_checkpointing=args.gradient_checkpointing,
        use_ema=args.use_ema,
        dino_model=sfr,
        sfr_hidden_dim=getattr(args, "sfr_hidden_dim", 2048),
        sfr_block_index=getattr(args, "sfr_block_index", 1),
    )
    describe = (
        f"{args.stage}, {args.height}x{args.width}, {args.max_num_frames} frames x {args.train_batch_size} clip(s) "
        f"per GPU, precision {precision}, {args.dry_run_engine} over {args.dry_run_num_gpus} GPUs, "
        f"{'AdamW8bit' if args.use_8bit_adam else 'AdamW'}, gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}{', EMA' if args.use_ema else ''}"
        f"{', SFR' if sfr else ''}"
    )
    print(plan.table(describe))
    return plan
