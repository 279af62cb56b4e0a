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

from normalcrafter_pipeline.training.arguments import build_parser, check_args, run_script
from normalcrafter_pipeline.training.session import TrainingSession
from normalcrafter_pipeline.training.stage_losses import vae_decoder_loss
from normalcrafter_pipeline.training.validation import reconstruction_predictor


def parse_args(input_args=None):
    parser = build_parser(
        __doc__, stage="vae_decoder", sfr=False, learning_rate=1e-5, max_train_steps=20000, max_num_frames=7
    )
    stage = parser.add_argument_group("VAE decoder")
    stage.add_argument("--l1_weight", type=float, default=0.0, help="Weight of an extra L1 reconstruction term.")
    args = check_args(parser.parse_args(input_args))
    if args.l1_weight < 0:
        raise ValueError(f"`--l1_weight` is {args.l1_weight}; it must be >= 0.")
    return args


def main(args):
    session = TrainingSession(args)

    # Models: only the VAE decoder trains; the encoder (and its quantisation conv) is frozen, in fp32 with the
    # decoder; the CLIP encoder is not used but would be saved, so it is frozen too. The UNet stays as loaded.
    pipe = session.load_pipeline()
    session.freeze(pipe.image_encoder)
    vae = pipe.vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.to(session.device)
    parameters = [p for p in vae.parameters() if p.requires_grad]
    (train_vae,) = session.prepare({"vae": vae}, parameters, ema_of="vae")

    def compute_loss(batch):
        return vae_decoder_loss(train_vae, batch, l1_weight=args.l1_weight)

    # Validation encodes and decodes the validation clips' normal maps with the decoder being trained.
    session.train(compute_loss, validate_with=reconstruction_predictor)
    session.finish(validate_with=reconstruction_predictor, vae=vae)


if __name__ == "__main__":
    # Arguments, data and output folder are checked before any model is loaded; a problem is one line, status 2.
    sys.exit(run_script(parse_args, main))
