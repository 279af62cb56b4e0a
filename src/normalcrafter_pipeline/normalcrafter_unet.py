# Copyright 2026 The normalcrafter-pipeline authors. Licensed under the MIT licence.
"""The UNet of NormalCrafter: the stock SVD spatio-temporal UNet taking one CLIP embedding per frame (same state
dict, so released weights load unchanged)."""

import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput


class NormalCrafterUNet(UNetSpatioTemporalConditionModel):
    r"""The SVD spatio-temporal UNet, taking one CLIP image embedding per frame.

    The stock [`UNetSpatioTemporalConditionModel`] repeats a single embedding per video over its frames. NormalCrafter
    conditions every frame on its own embedding: `encoder_hidden_states` may be `[batch * frames, 1, dim]` (one per
    frame, frames of a video contiguous) as well as `[batch, 1, dim]` (one per video, the stock behaviour). The
    spatial cross-attention of each frame sees that frame's embedding; the temporal blocks use the first frame's,
    as in SVD. Parameters and state dict are those of the stock class, so released weights load unchanged.
    """

    @classmethod
    def from_unet(cls, unet: UNetSpatioTemporalConditionModel) -> "NormalCrafterUNet":
        """A `NormalCrafterUNet` sharing `unet`'s parameters (no copy): how a stock UNet, as diffusers loads the
        released weights, becomes one that takes an embedding per frame. `unet` itself is left as it is."""
        with torch.device("meta"):
            converted = cls.from_config(unet.config)
        # keep_vars + assign: the very Parameter objects move over, requires_grad included.
        converted.load_state_dict(unet.state_dict(keep_vars=True), strict=True, assign=True)
        return converted.train(unet.training)

    # Adapted from diffusers.models.unets.unet_spatio_temporal_condition.UNetSpatioTemporalConditionModel.forward
    # (diffusers 0.42). Changed lines are marked "# changed:"; everything else follows the stock forward.
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple:
        r"""
        Args:
            sample (`torch.Tensor`): `[batch, frames, channels, height, width]`.
            timestep (`torch.Tensor`, `float` or `int`): the (continuous) timestep.
            encoder_hidden_states (`torch.Tensor`): `[batch * frames, 1, dim]` (one per frame, frames of a video
                contiguous) or `[batch, 1, dim]` (one per video, the stock behaviour).
            added_time_ids (`torch.Tensor`): `[batch, 3]` (fps, motion bucket id, noise augmentation strength).
            return_dict (`bool`): return a `UNetSpatioTemporalConditionOutput` instead of a tuple.
        """
        # By default samples have to be AT least a multiple of the overall upsampling factor.
        # The overall upsampling factor is equal to 2 ** (# num of upsampling layears).
        # However, the upsampling interpolation output size can be forced to fit any upsampling size
        # on the fly if necessary.
        default_overall_up_factor = 2**self.num_upsamplers

        # upsample size should be forwarded when sample is not a multiple of `default_overall_up_factor`
        forward_upsample_size = False
        upsample_size = None

        if any(s % default_overall_up_factor != 0 for s in sample.shape[-2:]):
            forward_upsample_size = True  # changed: no log line per call (every window would log it)

        # 1. time
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            # changed: the dtype choice inlined (diffusers' helper for it is newer than the releases we support)
            is_float = isinstance(timestep, float)
            if sample.device.type == "mps":
                dtype = torch.float32 if is_float else torch.int32
            else:
                dtype = torch.float64 if is_float else torch.int64
            timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)

        # broadcast to batch dimension in a way that's compatible with ONNX/Core ML
        batch_size, num_frames = sample.shape[:2]
        timesteps = timesteps.expand(batch_size)

        t_emb = self.time_proj(timesteps)

        # `Timesteps` does not contain any weights and will always return f32 tensors
        # but time_embedding might actually be running in fp16. so we need to cast here.
        # there might be better ways to encapsulate this.
        t_emb = t_emb.to(dtype=sample.dtype)

        emb = self.time_embedding(t_emb)

        time_embeds = self.add_time_proj(added_time_ids.flatten())
        time_embeds = time_embeds.reshape((batch_size, -1))
        time_embeds = time_embeds.to(emb.dtype)
        aug_emb = self.add_embedding(time_embeds)
        emb = emb + aug_emb

        # Flatten the batch and frames dimensions
        # sample: [batch, frames, channels, height, width] -> [batch * frames, channels, height, width]
        sample = sample.flatten(0, 1)
        # Repeat the embeddings num_video_frames times
        # emb: [batch, channels] -> [batch * frames, channels]
        emb = emb.repeat_interleave(num_frames, dim=0, output_size=emb.shape[0] * num_frames)
        # changed: encoder_hidden_states is repeated only when there is one per video; one per frame is kept as is
        if encoder_hidden_states.shape[0] == batch_size:
            # encoder_hidden_states: [batch, 1, channels] -> [batch * frames, 1, channels]
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(
                num_frames, dim=0, output_size=encoder_hidden_states.shape[0] * num_frames
            )
        elif encoder_hidden_states.shape[0] != batch_size * num_frames:
            raise ValueError(
                f"`encoder_hidden_states` has {encoder_hidden_states.shape[0]} embeddings for a batch of "
                f"{batch_size} videos of {num_frames} frames; pass {batch_size} (one per video) or "
                f"{batch_size * num_frames} (one per frame)."
            )

        # 2. pre-process
        sample = self.conv_in(sample)

        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        down_block_res_samples = (sample,)
        for downsample_block in self.down_blocks:
            if hasattr(downsample_block, "has_cross_attention") and downsample_block.has_cross_attention:
                sample, res_samples = downsample_block(
                    hidden_states=sample,
                    temb=emb,
                    encoder_hidden_states=encoder_hidden_states,
                    image_only_indicator=image_only_indicator,
                )
            else:
                sample, res_samples = downsample_block(
                    hidden_states=sample,
                    temb=emb,
                    image_only_indicator=image_only_indicator,
                )

            down_block_res_samples += res_samples

        # 4. mid
        sample = self.mid_block(
            hidden_states=sample,
            temb=emb,
            encoder_hidden_states=encoder_hidden_states,
            image_only_indicator=image_only_indicator,
        )

        # 5. up
        for i, upsample_block in enumerate(self.up_blocks):
            is_final_block = i == len(self.up_blocks) - 1

            res_samples = down_block_res_samples[-len(upsample_block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(upsample_block.resnets)]

            # if we have not reached the final block and need to forward the
            # upsample size, we do it here
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]

            if hasattr(upsample_block, "has_cross_attention") and upsample_block.has_cross_attention:
                sample = upsample_block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=res_samples,
                    encoder_hidden_states=encoder_hidden_states,
                    upsample_size=upsample_size,
                    image_only_indicator=image_only_indicator,
                )
            else:
                sample = upsample_block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=res_samples,
                    upsample_size=upsample_size,
                    image_only_indicator=image_only_indicator,
                )

        # 6. post-process
        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        sample = self.conv_out(sample)

        # 7. Reshape back to original shape
        sample = sample.reshape(batch_size, num_frames, *sample.shape[1:])

        if not return_dict:
            return (sample,)

        return UNetSpatioTemporalConditionOutput(sample=sample)
