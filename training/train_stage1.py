#!/usr/bin/env python
"""Stage 1 of NormalCrafter training: latent-space denoising score matching with Semantic Feature Regularization.

All UNet parameters (and the SFR projector) train on L_DSM + lambda_reg * L_reg, with EDM preconditioning,
ln(sigma) ~ N(p_mean, p_std^2) and clip lengths drawn uniformly from [1, 14] per batch.

    accelerate launch training/train_stage1.py --pretrained_model_name_or_path <pipeline> \
        --train_data_dir <clips> --output_dir <out>
"""

from __future__ import annotations

import sys

from normalcrafter_pipeline.training.arguments import add_noise_level_options, build_parser, check_args, run_script
from normalcrafter_pipeline.training.session import TrainingSession
from normalcrafter_pipeline.training.stage_losses import stage1_loss
from normalcrafter_pipeline.training.validation import pipeline_predictor


def parse_args(input_args=None):
    parser = build_parser(
        __doc__, stage="stage1", sfr=True, learning_rate=3e-5, max_train_steps=20000, max_num_frames=14
    )
    add_noise_level_options(parser, "stage 1")
    return check_args(parser.parse_args(input_args))


def main(args):
    session = TrainingSession(args)

    # Models: the VAE and CLIP encoder only condition; the UNet trains in full; SFR adds a projector (trained)
    # against a frozen DINOv2, unless --lambda_reg is 0.
    pipe = session.load_pipeline()
    session.freeze(pipe.vae, pipe.image_encoder)
    unet = pipe.unet.requires_grad_(True)
    projector, dino = session.create_sfr(unet)
    trained = {"unet": unet, "sfr_projector": projector}
    parameters = [p for model in trained.values() if model is not None for p in model.parameters()]
    train_unet, train_projector = session.prepare(trained, parameters, ema_of="unet")

    def compute_loss(batch):
        return stage1_loss(
            pipe, train_unet, batch, train_projector, dino, args.lambda_reg, p_mean=args.p_mean, p_std=args.p_std
        )

    # Validation runs the whole inference pipeline, the trained UNet in place.
    session.train(compute_loss, validate_with=pipeline_predictor)
    session.finish(validate_with=pipeline_predictor, unet=unet)


if __name__ == "__main__":
    # Arguments, data and output folder are checked before any model is loaded; a problem is one line, status 2.
    sys.exit(run_script(parse_args, main))
