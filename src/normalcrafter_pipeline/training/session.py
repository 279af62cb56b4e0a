"""The mechanics every training script runs the same way, held by `TrainingSession`: the accelerator and logging,
the data loader, optimiser, learning-rate schedule and EMA, the checkpoint/resume/prune loop, validation and the
final pipeline folder. What differs between the stages (which models load, which parameters train, the loss) stays
in each script, in the order of its recipe."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
from collections.abc import Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed

from ..dtypes import torch_dtype
from ..pretrained import NormalCrafterPipeline
from .checkpointing import (
    is_sharded,
    register_checkpoint_hooks,
    resume_from_checkpoint,
    save_checkpoint,
    untouched_random_streams,
)
from .data import ClipBatchSampler, NormalClipDataset
from .schedule import get_warmup_exponential_scheduler
from .unwrap import unwrap_model
from .validation import Predictor, load_validation_clips, log_validation

logger = get_logger(__name__)

PIPELINE_COMPONENTS = ("vae", "image_encoder", "unet", "scheduler", "feature_extractor")


def create_accelerator(args: argparse.Namespace) -> Accelerator:
    """An `Accelerator` writing logs under `output_dir/logging_dir`, seeded, with logging configured."""
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=project_config,
        kwargs_handlers=_deepspeed_on_cpu_processes(),
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    _fsdp_on_cpu_processes(accelerator)
    logger.info(accelerator.state, main_process_only=False)
    import diffusers
    import transformers

    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_info()
    else:
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()
    set_seed(args.seed, device_specific=True)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    return accelerator


def _deepspeed_on_cpu_processes() -> list:
    """The process-group settings of a DeepSpeed launch on CPU processes (no accelerator): gloo. accelerate finds no
    back end for them by itself and then counts one process while DeepSpeed runs on all of them (its batch-size
    check fails). Empty for every other launch."""
    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1
    if not launched or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return []
    accelerators = getattr(torch, "accelerator", None)  # PyTorch 2.6 and later
    if torch.cuda.is_available() or (accelerators is not None and accelerators.is_available()):
        return []
    from accelerate.utils import InitProcessGroupKwargs

    return [InitProcessGroupKwargs(backend="gloo")]


def _fsdp_on_cpu_processes(accelerator: Accelerator) -> None:
    """Turn FSDP on for CPU processes when the launch configuration asks for it (`ACCELERATE_USE_FSDP`).

    accelerate enables FSDP only for accelerator processes: on CPU processes (gloo) it would silently run the
    configuration as plain data parallelism, unsharded. PyTorch's FSDP runs on gloo, so the state is switched to
    FSDP with the plugin the configuration describes; this is how a configuration is tried on a CPU machine before
    it runs on GPUs."""
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    from accelerate import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    # Every new `AcceleratorState` copies the process state, so both are switched.
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
    if accelerator.mixed_precision != "no":
        accelerator.state.fsdp_plugin.set_mixed_precision(accelerator.mixed_precision)
    logger.info("FSDP on CPU processes (gloo)")


def create_dataloader(args: argparse.Namespace, num_processes: int):
    """`(batch_sampler, dataloader)`; every batch holds clips of one length in `[min_num_frames, max_num_frames]`."""
    dataset = NormalClipDataset(
        args.train_data_dir,
        height=args.height,
        width=args.width,
        weights=args.train_data_weights,
        max_scale=args.max_scale,
        random_flip=not args.no_random_flip,
        min_num_frames=args.min_num_frames,
    )
    # An epoch draws about as many clips as the dataset holds, split evenly over the processes.
    num_batches = math.ceil(len(dataset) / args.train_batch_size / num_processes) * num_processes
    sampler = ClipBatchSampler(
        dataset, args.train_batch_size, num_batches, args.min_num_frames, args.max_num_frames, seed=args.seed
    )
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=args.dataloader_num_workers, pin_memory=torch.cuda.is_available()
    )
    return sampler, dataloader


def create_optimizer(args: argparse.Namespace, parameters) -> torch.optim.Optimizer:
    """AdamW (or bitsandbytes' AdamW8bit with `--use_8bit_adam`)."""
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise ImportError(
                "`--use_8bit_adam` needs bitsandbytes, which is not installed: run `pip install bitsandbytes` "
                "(CUDA only), or drop the flag to use torch's AdamW."
            ) from error
        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    return optimizer_class(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )


def create_ema(args: argparse.Namespace, model: torch.nn.Module, model_cls: type | None = None):
    """An `EMAModel` of `model`'s parameters (a model of class `model_cls`, by default its own) when `--use_ema`,
    else None. Under FSDP it is made of the sharded parameters, so each process averages its own shard."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(
        model.parameters(), decay=args.ema_decay, model_cls=model_cls or type(model), model_config=model.config
    )


def tracker_config(args: argparse.Namespace) -> dict:
    """The run's arguments for the trackers: lists as strings (tensorboard's hparams need scalars), no Nones."""
    config = {k: (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in vars(args).items()}
    return {k: v for k, v in config.items() if v is not None}


def _is_fsdp2(accelerator: Accelerator) -> bool:
    """Whether the engine is FSDP2 (`fully_shard`), which wraps one model per accelerator."""
    return bool(getattr(accelerator, "is_fsdp2", False))


class TrainedModules(torch.nn.Module):
    """The models a stage trains held as one module, for engines that wrap one model (DeepSpeed, FSDP2). Each part
    is a submodule under its name and runs through the wrapped module's forward, `wrapped(name, *args, **kwargs)`,
    so the engine's hooks gather and release its weights around the call (see `PartCall`)."""

    def __init__(self, parts: dict[str, torch.nn.Module]):
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)

    def forward(self, part: str, *args, **kwargs):
        return getattr(self, part)(*args, **kwargs)


class PartCall:
    """One part of a wrapped `TrainedModules`, called as the part itself would be (`unet(latents, ...)`); the call
    goes through the engine. `module` is the part (what `unwrap_model` returns: its config, blocks and hooks)."""

    def __init__(self, wrapped: torch.nn.Module, name: str):
        self.wrapped, self.name = wrapped, name
        self.module = getattr(unwrap_model(wrapped), name)

    def __call__(self, *args, **kwargs):
        return self.wrapped(self.name, *args, **kwargs)


def _resumed_batches(batches):
    """Iterate `batches` (the rest of an epoch a checkpoint was taken in) without the seed a new DataLoader iterator
    draws from torch's global generator: the uninterrupted run drew it when the epoch began, before the
    checkpoint whose random states were restored, so drawing it again would change every later noise sample."""
    iterator = iter(batches)
    state = torch.get_rng_state()
    first = next(iterator, None)  # the DataLoader iterator (and its seed) is created here
    torch.set_rng_state(state)
    if first is None:
        return
    yield first
    yield from iterator


class TrainingSession:
    """One training run of a script, in the order a script uses it:

    session = TrainingSession(args)                 # accelerator, logging, seed, weight dtype
    pipe = session.load_pipeline()
    session.freeze(...)                             # the models that only condition
    ... requires_grad on what trains ...
    prepared = session.prepare({"unet": unet, ...}, parameters, ema_of="unet")  # also --gradient_checkpointing
    session.train(compute_loss, validate_with)      # until --max_train_steps
    session.finish(validate_with, unet=unet)        # the final pipeline folder, the final validation
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.accelerator = create_accelerator(args)
        # The dtype the frozen models run in under the accelerator's mixed precision; trained ones stay fp32.
        self.weight_dtype = torch_dtype(self.accelerator.mixed_precision)
        fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        if args.use_ema and fsdp and not _is_fsdp2(self.accelerator):
            raise ValueError(
                "`--use_ema` under FSDP needs FSDP2, whose sharded parameters the EMA averages shard by shard; set "
                "`fsdp_version: 2` in the accelerate configuration (as training/configs/fsdp.yaml does)."
            )
        self.pipe: NormalCrafterPipeline | None = None
        self.global_step = 0
        self._models: list[torch.nn.Module] = []
        self._parameters: list[torch.nn.Parameter] = []
        self._ema = None
        self._ema_model: torch.nn.Module | None = None
        self._trained: dict[str, torch.nn.Module] = {}  # the trained models by name, as `prepare` got them
        self._clips: list[dict] = []  # validation clips, loaded by `train`

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def _replicates_weights(self) -> bool:
        """Whether every process holds the full weights (not FSDP, not DeepSpeed ZeRO-3)."""
        plugin = self.accelerator.state.deepspeed_plugin
        return plugin is not None and plugin.zero_stage < 3

    # -- models ---------------------------------------------------------------------------------------------------

    def load_pipeline(self) -> NormalCrafterPipeline:
        """The starting pipeline in fp32 (trained parts stay fp32; `freeze` casts the others)."""
        args = self.args
        with self._whole_weights():
            self.pipe = NormalCrafterPipeline.from_pretrained(
                args.pretrained_model_name_or_path,
                base_model=args.base_model,
                revision=args.revision,
                variant=args.variant,
            )
        return self.pipe

    @contextlib.contextmanager
    def _whole_weights(self):
        """A context in which models load with whole weights. Under DeepSpeed ZeRO-3 accelerate registers its
        configuration with transformers (whatever `zero3_init_flag` says), and transformers then partitions the CLIP
        encoder and DINOv2 as they load; but only the models handed to DeepSpeed are gathered for their forward
        passes, and the frozen ones run outside it."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            yield
            return
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            plugin.set_deepspeed_weakref()

    def freeze(self, *modules: torch.nn.Module) -> None:
        """Freeze `modules` (no gradients, eval mode) and move them to the device in the mixed-precision dtype."""
        for module in modules:
            module.requires_grad_(False)
            module.eval()
            module.to(self.device, dtype=self.weight_dtype)

    def create_sfr(self, unet: torch.nn.Module):
        """`(projector, dino)` for Semantic Feature Regularization, or `(None, None)` with `--lambda_reg 0`. DINOv2
        is frozen in the mixed-precision dtype; the projector is new and trains in fp32."""
        args = self.args
        if args.lambda_reg <= 0:
            return None, None
        from .sfr import DinoFeatures, SFRProjector, sfr_feature_channels

        with self._whole_weights():
            dino = DinoFeatures.from_pretrained(args.dino_model).to(self.device, dtype=self.weight_dtype)
        # The same initial weights on every process (their random streams differ, being seeded per process): FSDP
        # and DeepSpeed ZeRO-3 keep each process's shard of its own copy rather than broadcasting one.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            projector = SFRProjector(
                in_channels=sfr_feature_channels(unet, args.sfr_block_index),
                out_channels=dino.hidden_size,
                hidden_dim=args.sfr_hidden_dim,
            )
        return projector, dino

    # -- optimisation -----------------------------------------------------------------------------------------------

    def prepare(
        self, trained: dict[str, torch.nn.Module | None], parameters: Sequence[torch.nn.Parameter], ema_of: str
    ) -> list[torch.nn.Module | None]:
        """Set up the optimisation of `parameters` (of the `trained` models, by checkpoint folder name; a None entry
        is a model this run does without) and return the prepared (device-placed, engine-wrapped) models in the
        order of `trained`, None where the entry was None; under DeepSpeed and FSDP2, which wrap one model, several
        trained models are joined and each comes back as a `PartCall` through the engine.

        Applies `--gradient_checkpointing` to each trained model that supports it (the UNet, the VAE), creates the
        EMA of `trained[ema_of]` (`--use_ema`), the checkpoint hooks, the optimiser, the data loader and the
        learning-rate schedule, and hands them to `accelerator.prepare`."""
        args, accelerator = self.args, self.accelerator
        present = {name: model for name, model in trained.items() if model is not None}
        if args.gradient_checkpointing:
            for model in present.values():
                if getattr(model, "_supports_gradient_checkpointing", False):
                    model.enable_gradient_checkpointing()
        self._trained = present
        self._ema_model = present[ema_of]
        # FSDP shards the parameters in place when the model is prepared: its EMA is made of the shards, after.
        fsdp = _is_fsdp2(accelerator)
        self._ema = None if fsdp else create_ema(args, self._ema_model)
        self._parameters = list(parameters)
        optimizer = create_optimizer(args, self._parameters)
        self._sampler, dataloader = create_dataloader(args, accelerator.num_processes)
        # accelerate steps a prepared scheduler once per process, hence the scaling.
        lr_scheduler = get_warmup_exponential_scheduler(
            optimizer,
            warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
            total_steps=args.max_train_steps * accelerator.num_processes,
            final_ratio=args.lr_final_ratio,
        )
        self._classes = {name: type(model) for name, model in present.items()}
        to_prepare = list(present.values())
        self._prefixes = {name: "" for name in present}
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            # DeepSpeed cannot read the clip count from a batch sampler.
            accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
                args.train_batch_size
            )
        if len(present) > 1 and (accelerator.distributed_type == DistributedType.DEEPSPEED or _is_fsdp2(accelerator)):
            # DeepSpeed and FSDP2 take one model per accelerator: the UNet and the SFR projector become one module.
            to_prepare = [TrainedModules(present)]
            self._prefixes = {name: f"{name}." for name in present}
        *models, self._optimizer, self._dataloader, self._lr_scheduler = accelerator.prepare(
            *to_prepare, optimizer, dataloader, lr_scheduler
        )
        if fsdp:
            self._ema = create_ema(args, self._ema_model, model_cls=self._classes[ema_of])
        if self._ema is not None:
            self._ema.to(accelerator.device)
        register_checkpoint_hooks(accelerator, present, self._ema, f"{ema_of}_ema")
        self._models = models
        if len(models) < len(present):  # the engine of the joined modules: each part is called through it
            self._prepared = {name: models[0] for name in present}
            models = [PartCall(models[0], name) for name in present]
        else:
            self._prepared = dict(zip(present, models))
        # FSDP replaces the parameters by sharded ones: clip the gradients of those.
        trained_ids = {id(p) for p in self._parameters}
        if is_sharded(accelerator):
            self._parameters = [p for model in self._models for p in model.parameters() if p.requires_grad]
        elif not all(id(p) in trained_ids for model in models for p in model.parameters() if p.requires_grad):
            raise RuntimeError("`accelerator.prepare` replaced the trained parameters; report this as a bug.")
        by_name = dict(zip(present, models))
        return [by_name.get(name) for name in trained]

    def train(
        self, compute_loss: Callable[[dict], dict], validate_with: Callable[[NormalCrafterPipeline], Predictor] | None
    ):
        """Start the trackers, resume from `--resume_from_checkpoint`, and run optimiser steps until
        `--max_train_steps`, with accumulation, clipping, EMA, logging, checkpoints and validation (the predictor
        `validate_with(pipeline)` on the validation clips; None for a stage that predicts no normals, whose parser
        has no validation flags). `compute_loss(batch)` returns a dict of fp32 losses with the total under
        `"loss"`. Returns the global step reached."""
        from tqdm.auto import tqdm

        if not self._models:
            raise RuntimeError(
                "`TrainingSession.train` ran before `prepare`; call `prepare(trained, parameters, ...)` first."
            )
        args, accelerator = self.args, self.accelerator
        if accelerator.is_main_process:
            accelerator.init_trackers(args.tracker_project_name, config=tracker_config(args))
        self.global_step, data_state = resume_from_checkpoint(accelerator, args)
        self._clips = load_validation_clips(args)

        total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        logger.info("***** Running training *****")
        logger.info(f"  Clips per device = {args.train_batch_size}, total batch = {total_batch}")
        logger.info(f"  Gradient accumulation steps = {args.gradient_accumulation_steps}")
        logger.info(f"  Optimisation steps = {args.max_train_steps} (starting at {self.global_step})")
        # A resumed run continues the saved epoch of the sampler after the batches it had taken, so it draws what an
        # uninterrupted run would (older checkpoints without a data state draw fresh batches).
        skip = 0
        if data_state is not None:
            self._sampler.epoch, skip = data_state["epoch"], data_state["position"]
        elif self.global_step:
            self._sampler.epoch = self.global_step
        progress = tqdm(
            range(args.max_train_steps),
            initial=self.global_step,
            desc="Steps",
            disable=not accelerator.is_local_main_process,
        )
        ema_parameters = list(self._ema_model.parameters())  # frozen ones included, as the EMA was made
        for model in self._models:
            model.train()
        while self.global_step < args.max_train_steps:
            epoch, position = self._sampler.epoch, skip
            batches = (
                _resumed_batches(accelerator.skip_first_batches(self._dataloader, skip)) if skip else self._dataloader
            )
            skip = 0
            for batch in batches:
                position += 1
                batch = {key: value.to(accelerator.device, non_blocking=True) for key, value in batch.items()}
                with accelerator.accumulate(*self._models):
                    losses = compute_loss(batch)
                    accelerator.backward(losses["loss"])
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(self._parameters, args.max_grad_norm)
                    self._optimizer.step()
                    self._lr_scheduler.step()
                    self._optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                if self._ema is not None:
                    self._ema.step(ema_parameters)
                self.global_step += 1
                progress.update(1)
                logs = {f"train/{name}": value.detach().item() for name, value in losses.items()}
                logs["train/lr"] = self._lr_scheduler.get_last_lr()[0]
                progress.set_postfix(loss=logs["train/loss"])
                accelerator.log(logs, step=self.global_step)
                if self.global_step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, args, self.global_step, {"epoch": epoch, "position": position})
                if self._clips and self.global_step % args.validation_steps == 0:
                    self._validate(validate_with)
                if self.global_step >= args.max_train_steps:
                    break
        progress.close()
        return self.global_step

    # -- the end ----------------------------------------------------------------------------------------------------

    def finish(
        self,
        validate_with: Callable[[NormalCrafterPipeline], Predictor] | None,
        finalize: Callable[[NormalCrafterPipeline], None] | None = None,
        **trained: torch.nn.Module,
    ):
        """Write `--output_dir` as a `NormalCrafterPipeline` folder: the loaded pipeline's components with the
        `trained` ones (the EMA weights with `--use_ema`; fp32, unwrapped, gathered whole under FSDP and ZeRO-3) in
        place of its own, after `finalize(pipeline)` (on the main process: what a stage sets from the final
        weights); validate it on the validation clips (if any) and end the trackers. Returns the final pipeline on
        the main process, else None."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        # Under ZeRO-3 the EMA is whole beside the partitioned weights: the final model is made from it directly.
        deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        ema_whole = self._ema is not None and deepspeed and self._gathers_weights()
        if self._ema is not None and not ema_whole:
            self._ema.copy_to(self._ema_model.parameters())
        whole = {}
        for name, model in trained.items():
            if ema_whole and unwrap_model(model) is self._ema_model:
                whole[name] = self._ema_copy(name) if accelerator.is_main_process else None
            else:
                whole[name] = self._full_model(name, model)
        final = self._assemble(whole, fp32=True)
        if final is not None:
            if finalize is not None:
                finalize(final)
            final.save_pretrained(self.args.output_dir)
            logger.info(f"Saved the trained pipeline to {self.args.output_dir}")
            if self._clips:
                log_validation(accelerator, self._clips, validate_with(final), self.global_step, True)
        accelerator.end_training()
        return final

    def _assemble(
        self, trained: dict[str, torch.nn.Module | None], fp32: bool = False
    ) -> NormalCrafterPipeline | None:
        """On the main process, the loaded pipeline with the `trained` components (whole, plain modules) in place of
        its own; with `fp32`, every model is cast to fp32 in place (the end of training: the frozen ones are done
        with). None on the other processes."""
        if not self.accelerator.is_main_process:
            return None
        components = {name: getattr(self.pipe, name) for name in PIPELINE_COMPONENTS}
        components.update(trained)
        for name, component in components.items():
            if fp32 and isinstance(component, torch.nn.Module) and component.dtype != torch.float32:
                components[name] = component.to(torch.float32)
        return NormalCrafterPipeline(**components)

    def _validate(self, validate_with: Callable[[NormalCrafterPipeline], Predictor]) -> None:
        """Validate the model as it stands on the main process. The loaded pipeline holds the trained modules, but
        under FSDP and ZeRO-3 those hold shards only: every process then takes part in gathering whole copies of the
        trained pipeline components first."""
        accelerator = self.accelerator
        # Validation changes nothing in training (a run resumed from a checkpoint taken before it continues as the
        # uninterrupted one did).
        with untouched_random_streams(accelerator.device):
            pipe = self.pipe
            if self._gathers_weights():
                trained = {name: model for name, model in self._trained.items() if name in PIPELINE_COMPONENTS}
                whole = {name: self._full_model(name, model) for name, model in trained.items()}
                pipe = self._assemble({n: m if m is None else m.to(accelerator.device) for n, m in whole.items()})
            if accelerator.is_main_process:
                log_validation(accelerator, self._clips, validate_with(pipe), self.global_step)
        accelerator.wait_for_everyone()

    def _gathers_weights(self) -> bool:
        """Whether each process holds a shard of the trained weights only (FSDP, DeepSpeed ZeRO-3)."""
        return is_sharded(self.accelerator) and not self._replicates_weights()

    def _ema_copy(self, name: str) -> torch.nn.Module:
        """A plain module of the trained model `name`'s class holding the EMA's (whole) weights."""
        with untouched_random_streams(self.accelerator.device):
            plain = self._classes[name].from_config(self._ema_model.config)
        self._ema.copy_to(plain.parameters())
        return plain

    def _full_model(self, name: str, model: torch.nn.Module) -> torch.nn.Module | None:
        """The plain module of a trained model with its full weights: unwrapped, or under FSDP and DeepSpeed ZeRO-3
        a module of its class holding the state dict gathered from every process (all processes must call this; the
        main process gets the module, on the CPU, the others None)."""
        if not self._gathers_weights():
            return unwrap_model(model)
        state = self.accelerator.get_state_dict(self._prepared[name])
        if not self.accelerator.is_main_process:
            return None
        prefix = self._prefixes[name]
        state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        from accelerate import init_empty_weights

        with init_empty_weights():  # no initialisation (no time, no draw from the random streams): all is loaded
            plain = self._classes[name].from_config(unwrap_model(model).config)
        plain.load_state_dict(state, assign=True)
        return plain
