"""Speed levers, one model pass at a time: each lever against the eager default on the same inputs, alternating.

The four model passes of the pipeline at the shapes it runs them (window 14, encode and decode chunks of 7): CLIP on
7 frames at 224x224, the VAE encoder on 7 frames, the UNet on a window of 14 latents, the VAE decoder on 7 latents.
Each lever changes one thing; every repeat times the default and the lever back to back, alternating their order,
and the table keeps each one's best repeat. `max diff` is the largest absolute difference of the lever's output
from the default's, over the largest absolute output (bf16 rounding alone is about 4e-3).

Levers:
  clip-batch14        CLIP on 14 frames in one batch instead of two batches of 7 (`encode_chunk_size=14`)
  clip-eager-attn     CLIP attention as matmul-softmax-matmul instead of the fused SDPA kernel
  clip-onednn-mlp     CLIP's MLP through oneDNN with weights packed once, bias and GELU fused into the matmuls (what
                      inductor's weight freezing does for these layers, without compiling anything else)
  unet-eager-attn     the UNet's attention as diffusers' `AttnProcessor` (baddbmm-softmax-bmm) instead of SDPA
  encode-nchw         the VAE encoder fed NCHW pixels instead of channels_last (this script's default encode pass
                      in every dtype; the pipeline feeds channels_last in bf16 and fp16, NCHW in fp32 and fp64)
  decode-cl           the VAE decoder fed channels_last latents
  decode-silu-inplace the VAE's SiLU activations in place (saves one buffer per activation)
  compile-STAGE       `torch.compile` (inductor, weight freezing unless `--no-freezing`) of clip, encode, unet or
                      decode; the compile time of the first call is reported cold (empty cache) and warm (a second
                      process with the cache the first one filled)

    python benchmarks/bench_levers.py --tiny                              # smoke, seconds
    python benchmarks/bench_levers.py --full-arch --dtype bf16            # SVD-xt sizes, about 15 min on 2 cores
    python benchmarks/bench_levers.py --full-arch --dtype fp32 --levers clip-batch14 decode-cl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from normalcrafter_pipeline.dtypes import torch_dtype

LEVERS = (
    "clip-batch14",
    "clip-eager-attn",
    "clip-onednn-mlp",
    "unet-eager-attn",
    "encode-nchw",
    "decode-cl",
    "decode-silu-inplace",
    "compile-clip",
    "compile-encode",
    "compile-unet",
    "compile-decode",
)


def build(full_arch: bool, dtype: torch.dtype):
    from normalcrafter_pipeline.normalcrafter_unet import NormalCrafterUNet
    from normalcrafter_pipeline.testing_utils import svd_xt_components, tiny_components

    if full_arch:
        components = svd_xt_components(seed=0, dtype=dtype)
    else:
        components = {k: v.to(dtype) if isinstance(v, torch.nn.Module) else v for k, v in tiny_components().items()}
    components["unet"] = NormalCrafterUNet.from_unet(components["unet"])
    return components


class Stages:
    """The four passes, as the pipeline calls them, on fixed random inputs."""

    def __init__(self, components, dtype: torch.dtype, height: int, width: int):
        self.clip, self.vae, self.unet = components["image_encoder"], components["vae"], components["unet"]
        generator = torch.Generator().manual_seed(0)
        size = self.clip.config.image_size
        channels = self.vae.config.latent_channels
        self.images = torch.randn(14, 3, size, size, generator=generator).to(dtype)
        self.pixels = torch.rand(7, 3, height, width, generator=generator).to(dtype) * 2 - 1
        self.latents = torch.randn(7, channels, height // 8, width // 8, generator=generator).to(dtype)
        self.window = torch.randn(1, 14, 2 * channels, height // 8, width // 8, generator=generator).to(dtype)
        self.embeddings = torch.randn(14, 1, self.unet.config.cross_attention_dim, generator=generator).to(dtype)
        self.time_ids = torch.tensor([[7.0, 127.0, 0.0]]).to(dtype)

    def clip_pass(self, batch: int = 7) -> torch.Tensor:
        return torch.cat([self.clip(chunk).image_embeds for chunk in self.images.split(batch)])

    def encode_pass(self, channels_last: bool = True) -> torch.Tensor:
        pixels = self.pixels.contiguous(memory_format=torch.channels_last) if channels_last else self.pixels
        return self.vae.encode(pixels).latent_dist.mode()

    def unet_pass(self) -> torch.Tensor:
        timestep = torch.tensor(700.0)
        return self.unet(self.window, timestep, self.embeddings, added_time_ids=self.time_ids).sample

    def decode_pass(self, channels_last: bool = False) -> torch.Tensor:
        latents = self.latents.contiguous(memory_format=torch.channels_last) if channels_last else self.latents
        return self.vae.decode(latents, num_frames=len(latents)).sample


def set_attention(model, implementation: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(implementation)
    else:  # older transformers read the config at each forward
        model.config._attn_implementation = implementation


def set_silu_inplace(model, inplace: bool) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.SiLU):
            module.inplace = inplace


def set_onednn_mlp(clip, enabled: bool) -> None:
    """CLIP's MLPs through `torch.ops.mkldnn._linear_pointwise` with packed weights (bias and GELU fused), or back."""
    from transformers.models.clip.modeling_clip import CLIPMLP

    for module in clip.modules():
        if not isinstance(module, CLIPMLP):
            continue
        if not enabled:
            module.__dict__.pop("forward", None)
            continue
        fc1, fc2 = module.fc1, module.fc2
        packed1 = torch.ops.mkldnn._reorder_linear_weight(fc1.weight, None)
        packed2 = torch.ops.mkldnn._reorder_linear_weight(fc2.weight, None)

        def forward(hidden_states, fc1=fc1, fc2=fc2, packed1=packed1, packed2=packed2):
            flat = hidden_states.reshape(-1, hidden_states.shape[-1])
            hidden = torch.ops.mkldnn._linear_pointwise(flat, packed1, fc1.bias, "gelu", [None], "none")
            out = torch.ops.mkldnn._linear_pointwise(hidden, packed2, fc2.bias, "none", [], "")
            return out.reshape(*hidden_states.shape[:-1], out.shape[-1])

        module.forward = forward


def set_unet_attention(unet, processors):
    """Give the UNet's attention layers `processors` (one processor, or the dict `attn_processors` returned)."""
    previous = unet.attn_processors
    unet.set_attn_processor(processors)
    return previous


def compiled_module(stages: Stages, stage: str):
    modules = {"clip": stages.clip, "encode": stages.vae.encoder, "unet": stages.unet, "decode": stages.vae.decoder}
    return modules[stage]


# (frames per call, pass) of each stage
STAGE_PASSES = {
    "clip": lambda stages: (14, stages.clip_pass),
    "encode": lambda stages: (7, stages.encode_pass),
    "unet": lambda stages: (14, stages.unet_pass),
    "decode": lambda stages: (7, stages.decode_pass),
}


def lever_pair(stages: Stages, lever: str):
    """(frames per call, default pass, lever pass, set-up, tear-down) for `lever`."""
    if lever == "clip-batch14":
        return 14, stages.clip_pass, lambda: stages.clip_pass(14), None, None
    if lever == "clip-eager-attn":
        return (
            14,
            stages.clip_pass,
            stages.clip_pass,
            lambda: set_attention(stages.clip, "eager"),
            (lambda: set_attention(stages.clip, "sdpa")),
        )
    if lever == "clip-onednn-mlp":
        return (
            14,
            stages.clip_pass,
            stages.clip_pass,
            lambda: set_onednn_mlp(stages.clip, True),
            (lambda: set_onednn_mlp(stages.clip, False)),
        )
    if lever == "unet-eager-attn":
        from diffusers.models.attention_processor import AttnProcessor

        saved = {}
        return (
            14,
            stages.unet_pass,
            stages.unet_pass,
            lambda: saved.update(processors=set_unet_attention(stages.unet, AttnProcessor())),
            (lambda: set_unet_attention(stages.unet, saved["processors"])),
        )
    if lever == "encode-nchw":
        return 7, stages.encode_pass, lambda: stages.encode_pass(False), None, None
    if lever == "decode-cl":
        return 7, stages.decode_pass, lambda: stages.decode_pass(True), None, None
    if lever == "decode-silu-inplace":
        return (
            7,
            stages.decode_pass,
            stages.decode_pass,
            lambda: set_silu_inplace(stages.vae, True),
            (lambda: set_silu_inplace(stages.vae, False)),
        )
    frames, run = STAGE_PASSES[lever.removeprefix("compile-")](stages)
    return frames, run, run, None, None


def time_call(function) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    output = function()
    return time.perf_counter() - start, output


def measure(stages: Stages, lever: str, repeats: int, freezing: bool = True) -> dict:
    frames, default, variant, enter, leave = lever_pair(stages, lever)
    row = {"lever": lever, "compile_s": None}
    if lever.startswith("compile-"):
        module = compiled_module(stages, lever.removeprefix("compile-"))
        module.compile(options={"freezing": freezing})
        row["compile_s"], _ = time_call(variant)  # the first call compiles
        compiled_call = module._compiled_call_impl
        module._compiled_call_impl = None
        enter = lambda: setattr(module, "_compiled_call_impl", compiled_call)  # noqa: E731
        leave = lambda: setattr(module, "_compiled_call_impl", None)  # noqa: E731
    default()  # warm-up of the default path
    best = {"default": float("inf"), "lever": float("inf")}
    outputs = {}
    for repeat in range(repeats):
        order = ("default", "lever") if repeat % 2 == 0 else ("lever", "default")
        for name in order:
            if name == "lever" and enter is not None:
                enter()
            seconds, outputs[name] = time_call(variant if name == "lever" else default)
            if name == "lever" and leave is not None:
                leave()
            best[name] = min(best[name], seconds)
    reference = outputs["default"].float()
    scale = reference.abs().max().clamp_min(1e-12)
    row["max_diff"] = ((outputs["lever"].float() - reference).abs().max() / scale).item()
    row["default_s"] = best["default"] / frames
    row["lever_s"] = best["lever"] / frames
    return row


def warm_compile_seconds(lever: str, args) -> float:
    """The first-call time of `lever` in a fresh process that finds the cache this one filled."""
    command = [sys.executable, __file__, "--compile-only", lever, "--dtype", args.dtype]
    command += ["--full-arch"] if args.full_arch else ["--tiny"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.no_freezing:
        command += ["--no-freezing"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["compile_s"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full-arch", action="store_true", help="SVD-xt sizes at random weights.")
    size.add_argument("--tiny", action="store_true", help="the tiny test components (the default).")
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-freezing", action="store_true", help="compile-STAGE without inductor's weight freezing.")
    parser.add_argument("--compile-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench-levers-inductor-"))
    dtype = torch_dtype(args.dtype)
    stages = Stages(build(args.full_arch, dtype), dtype, args.height, args.width)

    with torch.inference_mode():
        if args.compile_only:
            module = compiled_module(stages, args.compile_only.removeprefix("compile-"))
            module.compile(options={"freezing": not args.no_freezing})
            seconds, _ = time_call(lever_pair(stages, args.compile_only)[2])
            print(json.dumps({"compile_s": seconds}))
            return []
        print(
            f"{'SVD-xt architecture' if args.full_arch else 'tiny components'}, random weights, {args.dtype}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}; frames {args.height}x{args.width}; "
            f"best of {args.repeats} alternating repeats{'; compiled without freezing' if args.no_freezing else ''}",
            flush=True,
        )
        rows = []
        for lever in args.levers:
            row = measure(stages, lever, args.repeats, freezing=not args.no_freezing)
            if lever.startswith("compile-"):
                row["warm_compile_s"] = warm_compile_seconds(lever, args)
            rows.append(row)
            print(f"  {lever}: {row['default_s']:.4f} -> {row['lever_s']:.4f} s/frame", flush=True)
    print()
    print("| lever | default s/frame | lever s/frame | speed-up | max diff (rel.) | compile s cold / warm |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        compile_cell = ""
        if row["compile_s"] is not None:
            compile_cell = f"{row['compile_s']:.1f} / {row['warm_compile_s']:.1f}"
        print(
            f"| {row['lever']} | {row['default_s']:.4f} | {row['lever_s']:.4f} | "
            f"{row['default_s'] / row['lever_s']:.2f}x | {row['max_diff']:.1e} | {compile_cell} |"
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
