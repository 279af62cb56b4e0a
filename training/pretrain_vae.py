#!/usr/bin/env python
"""Video prior, part 1: train the temporal VAE as an RGB autoencoder (for models trained from scratch).

The paper starts from SVD-xt, whose VAE was trained on images before anything learned normals. For a model that
starts from random weights (a small reproduction), this script plays that part: the encoder and the temporal
decoder learn to reconstruct the frames of RGB clips (mean absolute error, clips of 1 to 7 frames: the inference
decode chunk). At the end the VAE's scaling factor is set to 1 / the standard deviation of its latents, so the
UNet sees unit-variance latents. Then `pretrain_video_unet.py` trains the UNet on these latents.

    accelerate launch training/pretrain_vae.py --pretrained_model_name_or_path <random pipeline> \
        --train_data_dir <clips> --output_dir <out>
"""

from __future__ import annotations

import sys

import torch
from accelerate.logging import get_logger

from normalcrafter_pipeline.training.arguments import build_parser, check_args, run_script
from normalcrafter_pipeline.training.data import NormalClipDataset
from normalcrafter_pipeline.training.session import TrainingSession
from normalcrafter_pipeline.training.stage_losses import latent_scaling_factor, rgb_autoencoder_loss

logger = get_logger(__name__)


def parse_args(input_args=None):
    parser = build_parser(
        __doc__,
        stage="prior_vae",
        sfr=False,
        learning_rate=1e-4,
        max_train_steps=20000,
        max_num_frames=7,
        validation=False,
    )
    stage = parser.add_argument_group("RGB autoencoder")
    stage.add_argument(
        "--scaling_clips", type=int, default=16, help="Training clips whose latents set the scaling factor."
    )
    args = check_args(parser.parse_args(input_args))
    if args.scaling_clips < 1:
        raise ValueError(f"`--scaling_clips` is {args.scaling_clips}; it must be at least 1.")
    return args


def main(args):
    session = TrainingSession(args)

    # Models: the whole VAE trains; the CLIP encoder is not used but would be saved, so it is frozen. The UNet
    # stays as loaded.
    pipe = session.load_pipeline()
    session.freeze(pipe.image_encoder)
    vae = pipe.vae.requires_grad_(True).to(session.device)
    (train_vae,) = session.prepare({"vae": vae}, list(vae.parameters()), ema_of="vae")

    def compute_loss(batch):
        return rgb_autoencoder_loss(train_vae, batch)

    session.train(compute_loss, validate_with=None)

    # The scaling factor of the final weights (the EMA's with --use_ema; whole under FSDP), from the first frames of
    # the first training clips.
    dataset = NormalClipDataset(args.train_data_dir, args.height, args.width, max_scale=1.0, random_flip=False)
    frames = torch.stack([dataset[index]["pixel_values"][0] for index in range(min(args.scaling_clips, len(dataset)))])

    def set_scaling_factor(final):
        final.vae.eval()
        final.vae.register_to_config(scaling_factor=latent_scaling_factor(final.vae, frames))
        logger.info(
            f"Scaling factor {final.vae.config.scaling_factor:.5f} (1 / std of the latents of {len(frames)} frames)."
        )

    session.finish(validate_with=None, finalize=set_scaling_factor, vae=vae)


if __name__ == "__main__":
    # Arguments, data and output folder are checked before any model is loaded; a problem is one line, status 2.
    sys.exit(run_script(parse_args, main))
