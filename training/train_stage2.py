#!/usr/bin/env python
"""Stage 2 of NormalCrafter training: pixel-space angular loss on the one-step prediction, spatial layers only.

The UNet runs the very one-step deterministic prediction of inference (`predict_window_latents`, from zero
latents), the VAE decodes it to normals, and the spatial layers (and the SFR projector) train on the mean angular
error + lambda_reg * L_reg (DESIGN.md section 5). Temporal transformer blocks, temporal res blocks and their
mixers stay frozen. Clip lengths are drawn uniformly from [1, 4] per batch.

    accelerate launch training/train_stage2.py --pretrained_model_name_or_path <stage-1 output> \
        --train_data_dir <clips> --output_dir <out>
"""

from __future__ import annotations

import copy
import sys

from accelerate.logging import get_logger

from normalcrafter_pipeline.training import common
from normalcrafter_pipeline.training.freeze import freeze_temporal_layers
from normalcrafter_pipeline.training.steps import stage2_loss

logger = get_logger(__name__)


def parse_args(input_args=None):
    parser = common.build_parser(
        __doc__.splitlines()[0],
        learning_rate=1e-5,
        max_train_steps=10000,
        min_num_frames=1,
        max_num_frames=4,
        sfr=True,
    )
    return common.check_args(parser.parse_args(input_args))


def main(args):
    accelerator = common.create_accelerator(args)
    weight_dtype = common.weight_dtype_of(accelerator)

    # Models: only the UNet's spatial layers train; the VAE (decoder included) and CLIP encoder are frozen.
    pipe = common.load_pipeline(args)
    unet = pipe.unet
    common.freeze_encoders(pipe, accelerator, weight_dtype)
    trainable, frozen = freeze_temporal_layers(unet)
    logger.info(f"Training {len(trainable)} spatial parameter tensors; {len(frozen)} temporal ones stay frozen.")
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    projector, dino = common.create_sfr(args, unet, accelerator, weight_dtype)
    ema = common.create_ema(args, unet)
    trained = {"unet": unet} if projector is None else {"unet": unet, "sfr_projector": projector}
    common.register_checkpoint_hooks(accelerator, trained, ema, "unet_ema")

    parameters = [p for model in trained.values() for p in model.parameters() if p.requires_grad]
    optimizer = common.create_optimizer(args, parameters)
    _, sampler, dataloader = common.create_dataloader(args, accelerator)
    lr_scheduler = common.create_lr_scheduler(args, optimizer, accelerator)
    *models, optimizer, dataloader, lr_scheduler = accelerator.prepare(
        *trained.values(), optimizer, dataloader, lr_scheduler
    )
    train_unet, train_projector = models[0], models[1] if projector is not None else None
    if ema is not None:
        ema.to(accelerator.device)
    # The prediction sets the scheduler's timesteps; a private copy leaves the pipeline's untouched.
    train_scheduler = copy.deepcopy(pipe.scheduler)

    common.init_trackers(accelerator, args)
    initial_global_step = common.maybe_resume(accelerator, args)
    clips = common.load_validation_clips(args)

    def compute_loss(batch):
        return stage2_loss(pipe, train_unet, train_scheduler, batch, train_projector, dino, args.lambda_reg)

    def validate(step, is_final):
        common.log_validation(accelerator, clips, common.pipeline_predictor(pipe), step, is_final)

    global_step = common.train_loop(
        accelerator,
        args,
        models=models,
        parameters=parameters,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        dataloader=dataloader,
        sampler=sampler,
        compute_loss=compute_loss,
        validate=validate,
        ema=ema,
        ema_parameters=list(unet.parameters()),
        initial_global_step=initial_global_step,
    )

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unet.parameters())
        final = common.save_final_pipeline(accelerator, args, pipe, unet=unet)
        common.log_validation(accelerator, clips, common.pipeline_predictor(final), global_step, True)
    accelerator.end_training()


if __name__ == "__main__":
    # Arguments, data and output folder are checked before any model is loaded; a problem is one line, status 2.
    sys.exit(common.run_script(parse_args, main))
