#!/usr/bin/env python
"""Stage 1 of NormalCrafter training: latent-space denoising score matching with Semantic Feature Regularization.

All UNet parameters (and the SFR projector) train on L_DSM + lambda_reg * L_reg (DESIGN.md section 5), with EDM
preconditioning, ln(sigma) ~ N(p_mean, p_std^2) and clip lengths drawn uniformly from [1, 14] per batch.

    accelerate launch training/train_stage1.py --pretrained_model_name_or_path <pipeline> \
        --train_data_dir <clips> --output_dir <out>
"""

from __future__ import annotations

import sys

from accelerate.logging import get_logger

from normalcrafter_pipeline.training import common
from normalcrafter_pipeline.training.steps import stage1_loss

logger = get_logger(__name__)


def parse_args(input_args=None):
    parser = common.build_parser(
        __doc__.splitlines()[0],
        learning_rate=3e-5,
        max_train_steps=20000,
        min_num_frames=1,
        max_num_frames=14,
        sfr=True,
    )
    stage = parser.add_argument_group("stage 1")
    stage.add_argument("--p_mean", type=float, default=0.7, help="Mean of ln(sigma).")
    stage.add_argument("--p_std", type=float, default=1.6, help="Standard deviation of ln(sigma).")
    args = common.check_args(parser.parse_args(input_args))
    if args.p_std <= 0:
        raise ValueError(f"`--p_std` is {args.p_std}; it must be positive.")
    return args


def main(args):
    accelerator = common.create_accelerator(args)
    weight_dtype = common.weight_dtype_of(accelerator)

    # Models: the UNet trains in full; the encoders are frozen; SFR adds a projector and a frozen DINOv2.
    pipe = common.load_pipeline(args)
    unet = pipe.unet
    common.freeze_encoders(pipe, accelerator, weight_dtype)
    unet.requires_grad_(True)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    projector, dino = common.create_sfr(args, unet, accelerator, weight_dtype)
    ema = common.create_ema(args, unet)
    trained = {"unet": unet} if projector is None else {"unet": unet, "sfr_projector": projector}
    common.register_checkpoint_hooks(accelerator, trained, ema, "unet_ema")

    parameters = [p for model in trained.values() for p in model.parameters()]
    optimizer = common.create_optimizer(args, parameters)
    _, sampler, dataloader = common.create_dataloader(args, accelerator)
    lr_scheduler = common.create_lr_scheduler(args, optimizer, accelerator)
    *models, optimizer, dataloader, lr_scheduler = accelerator.prepare(
        *trained.values(), optimizer, dataloader, lr_scheduler
    )
    train_unet, train_projector = models[0], models[1] if projector is not None else None
    if ema is not None:
        ema.to(accelerator.device)

    common.init_trackers(accelerator, args)
    initial_global_step = common.maybe_resume(accelerator, args)
    clips = common.load_validation_clips(args)

    def compute_loss(batch):
        return stage1_loss(
            pipe, train_unet, batch, train_projector, dino, args.lambda_reg, p_mean=args.p_mean, p_std=args.p_std
        )

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
