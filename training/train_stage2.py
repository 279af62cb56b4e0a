#!/usr/bin/env python
"""Stage 2 of NormalCrafter training: pixel-space angular loss on the one-step prediction, spatial layers only.

The UNet runs the very one-step deterministic prediction of inference (`predict_window_latents`, from zero
latents), the VAE decodes it to normals, and the spatial layers (and the SFR projector) train on the mean angular
error + lambda_reg * L_reg. Temporal transformer blocks, temporal res blocks and their mixers stay frozen. Clip
lengths are drawn uniformly from [1, 4] per batch.

    accelerate launch training/train_stage2.py --pretrained_model_name_or_path <stage-1 output> \
        --train_data_dir <clips> --output_dir <out>
"""

from __future__ import annotations

import copy
import sys

from accelerate.logging import get_logger

from normalcrafter_pipeline.training.arguments import build_parser, check_args, run_script
from normalcrafter_pipeline.training.freeze import freeze_temporal_layers
from normalcrafter_pipeline.training.session import TrainingSession
from normalcrafter_pipeline.training.stage_losses import stage2_loss
from normalcrafter_pipeline.training.validation import pipeline_predictor

logger = get_logger(__name__)


def parse_args(input_args=None):
    parser = build_parser(
        __doc__, stage="stage2", sfr=True, learning_rate=1e-5, max_train_steps=10000, max_num_frames=4
    )
    return check_args(parser.parse_args(input_args))


def main(args):
    session = TrainingSession(args)

    # Models: the VAE (decoder included) and CLIP encoder are frozen; only the UNet's spatial layers train; SFR
    # adds a projector (trained) against a frozen DINOv2, unless --lambda_reg is 0.
    pipe = session.load_pipeline()
    session.freeze(pipe.vae, pipe.image_encoder)
    unet = pipe.unet
    trainable, frozen = freeze_temporal_layers(unet)
    logger.info(f"Training {len(trainable)} spatial parameter tensors; {len(frozen)} temporal ones stay frozen.")
    projector, dino = session.create_sfr(unet)
    trained = {"unet": unet, "sfr_projector": projector}
    parameters = [p for model in trained.values() if model is not None for p in model.parameters() if p.requires_grad]
    train_unet, train_projector = session.prepare(trained, parameters, ema_of="unet")
    # The prediction sets the scheduler's timesteps; a private copy leaves the pipeline's untouched.
    train_scheduler = copy.deepcopy(pipe.scheduler)

    def compute_loss(batch):
        return stage2_loss(pipe, train_unet, train_scheduler, batch, train_projector, dino, args.lambda_reg)

    # Validation runs the whole inference pipeline, the trained UNet in place.
    session.train(compute_loss, validate_with=pipeline_predictor)
    session.finish(validate_with=pipeline_predictor, unet=unet)


if __name__ == "__main__":
    # Arguments, data and output folder are checked before any model is loaded; a problem is one line, status 2.
    sys.exit(run_script(parse_args, main))
