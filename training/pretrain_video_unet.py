#!/usr/bin/env python
"""Video prior, part 2: train the spatio-temporal UNet as an image-to-video model (for models trained from scratch).

The paper starts from SVD-xt, an image-to-video model. For a model that starts from random weights, this script
plays that part on RGB clips, after `pretrain_vae.py`: EDM denoising score matching of a clip's latents,
conditioned as SVD is on its first frame (that frame's VAE latent concatenated to every frame's input, its CLIP
embedding as every frame's cross-attention input) with the pipeline's added time ids; ln(sigma) ~
N(p_mean, p_std^2), clips of 2 to 14 frames. All UNet parameters train; the VAE and the CLIP encoder are frozen.
The output is the starting point of the normal recipe (`train_vae_decoder.py`, then stages 1 and 2).

    accelerate launch training/pretrain_video_unet.py --pretrained_model_name_or_path <pretrain_vae output> \
        --train_data_dir <clips> --output_dir <out>
"""

from __future__ import annotations

import sys

from normalcrafter_pipeline.training.arguments import add_noise_level_options, build_parser, check_args, run_script
from normalcrafter_pipeline.training.session import TrainingSession
from normalcrafter_pipeline.training.stage_losses import image_to_video_loss


def parse_args(input_args=None):
    parser = build_parser(
        __doc__,
        stage="prior_unet",
        sfr=False,
        learning_rate=1e-4,
        max_train_steps=20000,
        min_num_frames=2,
        max_num_frames=14,
        validation=False,
    )
    add_noise_level_options(parser, "image-to-video")
    return check_args(parser.parse_args(input_args))


def main(args):
    session = TrainingSession(args)

    # Models: the VAE and the CLIP encoder only condition; the UNet trains in full.
    pipe = session.load_pipeline()
    session.freeze(pipe.vae, pipe.image_encoder)
    unet = pipe.unet.requires_grad_(True)
    (train_unet,) = session.prepare({"unet": unet}, list(unet.parameters()), ema_of="unet")

    def compute_loss(batch):
        return image_to_video_loss(pipe, train_unet, batch, p_mean=args.p_mean, p_std=args.p_std)

    session.train(compute_loss, validate_with=None)
    session.finish(validate_with=None, unet=unet)


if __name__ == "__main__":
    # Arguments, data and output folder are checked before any model is loaded; a problem is one line, status 2.
    sys.exit(run_script(parse_args, main))
