#!/usr/bin/env python
"""Fine-tune the temporal VAE decoder of NormalCrafter to reconstruct normal maps.

The encoder stays frozen; normal maps (as images, n in [-1, 1]) are encoded to their latent mode and the decoder
learns to give them back, trained on the mean angular error (+ an optional L1 term) over valid pixels. Clips of
1 to 7 frames (the inference decode chunk) per batch.

    accelerate launch training/train_vae_decoder.py --pretrained_model_name_or_path <pipeline> \
        --train_data_dir <clips> --output_dir <out>
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from accelerate.logging import get_logger

from normalcrafter_pipeline.training import common
from normalcrafter_pipeline.training.steps import vae_decoder_loss

logger = get_logger(__name__)


def parse_args(input_args=None):
    parser = common.build_parser(
        __doc__.splitlines()[0],
        learning_rate=1e-5,
        max_train_steps=20000,
        min_num_frames=1,
        max_num_frames=7,
        sfr=False,
    )
    stage = parser.add_argument_group("VAE decoder")
    stage.add_argument("--l1_weight", type=float, default=0.0, help="Weight of an extra L1 reconstruction term.")
    args = common.check_args(parser.parse_args(input_args))
    if args.l1_weight < 0:
        raise ValueError(f"`--l1_weight` is {args.l1_weight}; it must be >= 0.")
    return args


def reconstruction_predictor(vae):
    """Validation: encode each clip's normal maps and decode them with the current decoder."""

    def predict(clip):
        normals = torch.from_numpy(clip["normal"]).permute(0, 3, 1, 2).to(vae.device, vae.dtype)  # [F, 3, H, W]
        latents = vae.encode(normals).latent_dist.mode()
        decoded = vae.decode(latents, num_frames=latents.shape[0]).sample.float()
        decoded = decoded / decoded.norm(dim=1, keepdim=True).clamp_min(1e-6)
        return np.ascontiguousarray(decoded.permute(0, 2, 3, 1).cpu().numpy())

    return predict


def main(args):
    accelerator = common.create_accelerator(args)
    weight_dtype = common.weight_dtype_of(accelerator)

    # Models: only the VAE decoder trains; the encoder (and its quantisation conv) is frozen.
    pipe = common.load_pipeline(args)
    vae = pipe.vae
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.to(accelerator.device)
    pipe.image_encoder.requires_grad_(False).to(accelerator.device, dtype=weight_dtype)
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    ema = common.create_ema(args, vae)
    common.register_checkpoint_hooks(accelerator, {"vae": vae}, ema, "vae_ema")

    parameters = [p for p in vae.parameters() if p.requires_grad]
    optimizer = common.create_optimizer(args, parameters)
    _, sampler, dataloader = common.create_dataloader(args, accelerator)
    lr_scheduler = common.create_lr_scheduler(args, optimizer, accelerator)
    train_vae, optimizer, dataloader, lr_scheduler = accelerator.prepare(vae, optimizer, dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)

    common.init_trackers(accelerator, args)
    initial_global_step = common.maybe_resume(accelerator, args)
    clips = common.load_validation_clips(args)

    def compute_loss(batch):
        return vae_decoder_loss(train_vae, batch, l1_weight=args.l1_weight)

    def validate(step, is_final):
        common.log_validation(accelerator, clips, reconstruction_predictor(vae), step, is_final)

    global_step = common.train_loop(
        accelerator,
        args,
        models=[train_vae],
        parameters=parameters,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        dataloader=dataloader,
        sampler=sampler,
        compute_loss=compute_loss,
        validate=validate,
        ema=ema,
        ema_parameters=list(vae.parameters()),
        initial_global_step=initial_global_step,
    )

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(vae.parameters())
        final = common.save_final_pipeline(accelerator, args, pipe, vae=vae)
        common.log_validation(accelerator, clips, reconstruction_predictor(final.vae), global_step, True)
    accelerator.end_training()


if __name__ == "__main__":
    # Arguments, data and output folder are checked before any model is loaded; a problem is one line, status 2.
    sys.exit(common.run_script(parse_args, main))
