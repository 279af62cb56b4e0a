"""Seeded random NormalCrafter components for tests, examples and benchmarks.

`tiny_components` follows the architecture of the released model (an SVD-style spatio-temporal UNet with 8 input
channels, a temporal-decoder VAE with a spatial factor of 8, a CLIP vision tower with projection) at a size that
runs in milliseconds on a CPU. `svd_xt_components` builds the real SVD-xt sizes (UNet 1.5B parameters, about 9 GB
in fp32) at random weights, for speed and memory measurements without the gated weights. `tiny_dino` is a toy
DINOv2 for the Semantic Feature Regularization of training. Nothing here touches the network.
"""

from __future__ import annotations

import os
import socket

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

# The scheduler configuration shipped with stabilityai/stable-video-diffusion-img2vid-xt.
SVD_XT_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}

# CLIP normalisation constants of the SVD-xt feature extractor (OpenAI CLIP).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# The sizes of stabilityai/stable-video-diffusion-img2vid-xt (its unet/, vae/ and image_encoder/ config.json).
SVD_XT_UNET_CONFIG = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    "up_block_types": ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": (5, 10, 20, 20),
    "num_frames": 25,
}
# (`AutoencoderKLTemporalDecoder()`'s own defaults are a one-level toy without down-sampling.)
SVD_XT_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
SVD_XT_CLIP_CONFIG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
}


def free_port() -> int:
    """A local TCP port free a moment ago (the OS picks it): for a server or process group a test starts while
    other tests may start theirs, or as an address nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def svd_xt_scheduler() -> EulerDiscreteScheduler:
    """The EDM-style Euler scheduler of SVD-xt, built from its configuration."""
    return EulerDiscreteScheduler.from_config(SVD_XT_SCHEDULER_CONFIG)


def tiny_components(seed: int = 0, cross_attention_dim: int = 32) -> dict:
    """Build the five pipeline components at toy size with seeded random weights.

    Returns a dict with `unet` (a `NormalCrafterUNet`), `vae`, `image_encoder`, `feature_extractor` and
    `scheduler`, ready for `NormalCrafterPipeline(**components)`.
    """
    from .normalcrafter_unet import NormalCrafterUNet

    torch.manual_seed(seed)
    unet = NormalCrafterUNet(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=cross_attention_dim,
        num_attention_heads=(2, 4),
        projection_class_embeddings_input_dim=3 * 32,
        addition_time_embed_dim=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        layers_per_block=1,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    clip_config = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=cross_attention_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=224,
        intermediate_size=37,
        patch_size=32,
    )
    image_encoder = CLIPVisionModelWithProjection(clip_config)
    feature_extractor = CLIPImageProcessor(
        crop_size={"height": 224, "width": 224},
        size={"shortest_edge": 224},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    for module in (unet, vae, image_encoder):
        module.eval()
    return {
        "unet": unet,
        "vae": vae,
        "image_encoder": image_encoder,
        "feature_extractor": feature_extractor,
        "scheduler": svd_xt_scheduler(),
    }


def svd_xt_components(seed: int = 0, dtype: torch.dtype | None = None) -> dict:
    """The five pipeline components at the real SVD-xt sizes with seeded random weights (eval mode).

    Each model is cast to `dtype` as soon as it is built, so fp32 and reduced-precision copies of everything never
    coexist in memory.
    """
    from .normalcrafter_unet import NormalCrafterUNet

    def built(module):
        module = module.eval()
        return module if dtype is None else module.to(dtype)

    torch.manual_seed(seed)
    unet = built(NormalCrafterUNet(**SVD_XT_UNET_CONFIG))
    torch.manual_seed(seed + 1)
    vae = built(AutoencoderKLTemporalDecoder(**SVD_XT_VAE_CONFIG))
    torch.manual_seed(seed + 2)
    image_encoder = built(CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_XT_CLIP_CONFIG)))
    return {
        "unet": unet,
        "vae": vae,
        "image_encoder": image_encoder,
        "feature_extractor": CLIPImageProcessor(image_mean=CLIP_MEAN, image_std=CLIP_STD),
        "scheduler": svd_xt_scheduler(),
    }


def tiny_pipeline(seed: int = 0, **kwargs):
    """A `NormalCrafterPipeline` made of `tiny_components(seed)`."""
    from .pretrained import NormalCrafterPipeline

    return NormalCrafterPipeline(**tiny_components(seed, **kwargs))


def tiny_dino(seed: int = 0, hidden_size: int = 32, patch_size: int = 14):
    """A 2-layer random `Dinov2Model` (transformers) at toy width."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=56,
        patch_size=patch_size,
    )
    return Dinov2Model(config).eval()


def save_tiny_dino(folder: str | os.PathLike, seed: int = 0) -> str:
    """Save `tiny_dino(seed)` to `folder` (loadable as `--dino_model folder`) and return the path."""
    tiny_dino(seed).save_pretrained(folder)
    return os.fspath(folder)


def tiny_marigold_normals_pipeline(seed: int = 0):
    """A diffusers `MarigoldNormalsPipeline` at toy size with seeded random weights, built in code (no download).

    The components follow diffusers' own Marigold tests: a two-level `UNet2DConditionModel` taking the image and
    normals latents (8 channels), a two-level `AutoencoderKL`, a 2-layer CLIP text encoder with a tokenizer over a
    six-token vocabulary (the pipeline only encodes the empty prompt), and a DDIM scheduler; one denoising step at a
    processing resolution of 32 by default.
    """
    import json
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, MarigoldNormalsPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=6,
        )
    )
    vocabulary = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "c</w>": 4, "!</w>": 5}
    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        with open(vocab_file, "w") as handle:
            json.dump(vocabulary, handle)
        with open(merges_file, "w") as handle:
            handle.write("#version: 0.2\n")
        tokenizer = CLIPTokenizer(vocab_file, merges_file, model_max_length=8)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    for module in (unet, vae, text_encoder):
        module.eval()
    return MarigoldNormalsPipeline(
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        prediction_type="normals",
        use_full_z_range=True,
        default_denoising_steps=1,
        default_processing_resolution=32,
    )
