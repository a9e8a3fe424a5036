"""The stages before the loop, in the order `train()` runs them: pre-flight, resume state, models (load, freeze,
place, cast), data (items, buckets, reg balancing), latent caching, the run's length, the network, the optimizer
and LR schedule, restoring a saved state, the sampler."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kohya_lite.check import CheckResult, run_check
from kohya_lite.config import TrainingConfig, parse_resolution, te_lr_of, unet_lr_of, vae_batch_of
from kohya_lite.dataset.buckets import BucketSettings
from kohya_lite.dataset.loader import TrainingSet, build_training_set, cache_latents
from kohya_lite.dataset.steps import StepPlan, plan_steps
from kohya_lite.engine import checkpoints as ckpt
from kohya_lite.engine.context import RunContext
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.optim import build_optimizer, build_scheduler, warmup_steps
from kohya_lite.errors import UserError


def preflight(cfg: TrainingConfig, events: EventWriter) -> CheckResult:
    """The pre-flight check: warnings become events, errors one UserError."""
    check = run_check(cfg)
    for p in check.warnings:
        events.emit("warning", message=p.message, field=p.field, file=p.file, hint=p.fix)
    if check.errors:
        first = check.errors[0]
        more = f" (and {len(check.errors) - 1} more problems: run Check)" if len(check.errors) > 1 else ""
        raise UserError(first.message + more, field=first.field, file=first.file, fix=first.fix)
    return check


def find_resume_state(cfg: TrainingConfig, resume: str | None) -> ckpt.LoadedState | None:
    where = resume or cfg.resume
    if not where:
        return None
    out_dir = Path(cfg.output_dir).expanduser()
    folder = ckpt.find_last_state(out_dir, cfg.output_name) if where == "last" else Path(where)
    if folder is None:
        raise UserError(f"no saved training state for '{cfg.output_name}' in '{out_dir}'", field="resume",
                        fix="train with save_state on first, or clear resume")
    return ckpt.load_state(folder)


def load_models(cfg: TrainingConfig, ctx: RunContext, events: EventWriter):
    """Load the base model, freeze it, and place it: UNet and text encoders in the weight dtype, the VAE in fp32
    for SDXL with 'no half VAE', else in the weight dtype too."""
    from kohya_lite.models.load import load_model

    model = load_model(cfg.pretrained_model_name_or_path, v2=cfg.v2, v_parameterization=cfg.v_parameterization,
                       sdxl=cfg.sdxl, vae_path=cfg.vae, dtype=ctx.weight_dtype)  # straight to the dtype: one copy
    events.emit("log", message=f"model: {model.detected}")
    for m in (model.unet, model.vae, *model.text_encoders):
        m.requires_grad_(False)
        m.eval()
    vae_dtype = torch.float32 if (model.family == "sdxl" and cfg.sdxl_no_half_vae) else ctx.weight_dtype
    place(model.vae, ctx.device, vae_dtype)
    place(model.unet, ctx.device, ctx.weight_dtype)
    if cfg.channels_last:
        model.unet.to(memory_format=torch.channels_last)
    for te in model.text_encoders:
        place(te, ctx.device, ctx.weight_dtype)
    return model


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a frozen model; cast only when its dtype differs (diffusers warns on every cast)."""
    if next(module.parameters()).dtype == dtype:
        module.to(device)
    else:
        module.to(device, dtype=dtype)


def build_data(cfg: TrainingConfig, check: CheckResult) -> TrainingSet:
    w, h = parse_resolution(cfg.max_resolution)
    buckets = BucketSettings((w, h), cfg.enable_bucket, cfg.min_bucket_reso, cfg.max_bucket_reso,
                             cfg.bucket_reso_steps, cfg.bucket_no_upscale)
    data = build_training_set(check.dataset, buckets, cfg.caption_extension)
    if not data.samples:
        raise UserError("no usable training images", field="train_data_dir", fix="add readable images to the N_name folders")
    return data


def encode_all_latents(cfg: TrainingConfig, ctx: RunContext, model, data: TrainingSet, events: EventWriter,
                       stop, *, show_bar: bool = False) -> bool:
    """Cache every item's latents (in memory, or on disk with cache_latents_to_disk) as a phase of its own:
    `progress` events and a bar, its seconds in the log. False if stopped meanwhile. The VAE then leaves the
    accelerator. The VAE batch (`config.vae_batch_of`) is 1 image on a CPU, and on a GPU 4 up to 512 px and fewer
    above, so caching costs no more per image than the per-step encode it replaces and its transient stays
    bounded."""
    from tqdm import tqdm

    started = time.time()
    bar = tqdm(total=len(data.items), desc="caching latents", disable=not show_bar, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        events.emit("progress", phase="caching latents", done=done, total=total)
        events.emit("log", message=f"caching latents {done}/{total}")
        if stop.requested:
            raise _StopCaching()

    cache_dir = ctx.out_dir / ".latent_cache" if cfg.cache_latents_to_disk else None
    try:
        cache_latents(data.items, model.vae, flip_aug=cfg.flip_aug, batch_size=vae_batch_of(cfg, ctx.device.type),
                      cache_dir=cache_dir, generator=ctx.noise_generator, progress=progress)
    except _StopCaching:
        return False
    finally:
        bar.close()
    events.emit("log", message=f"cached the latents of {len(data.items)} images in {time.time() - started:.1f} s")
    model.vae.to("cpu")
    return True


def cache_text_outputs(conditioner, data: TrainingSet, captions, ctx: RunContext, model, events: EventWriter) -> None:
    """Encode every caption of the run once, before training (the captions are static: the conditioner caches).
    On an accelerator the frozen text encoders then move to the CPU, as sd-scripts' cache_text_encoder_outputs
    does; the sampler brings them back for each round of samples."""
    import random as _random

    from kohya_lite.dataset.captions import process_caption

    rng = _random.Random(0)  # static captions do not draw from it
    texts = [process_caption(it.caption, captions, rng=rng, epoch=0) for it in data.items]
    started = time.time()
    n = conditioner.precompute(texts)
    events.emit("log", message=f"cached the text-encoder outputs of {n} captions in {time.time() - started:.1f} s")
    if ctx.device.type != "cpu":
        conditioner.output_device = ctx.device
        for te in model.text_encoders:
            te.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        events.emit("log", message="text encoders moved to the CPU until the next samples (their outputs are cached)")


def plan_run(cfg: TrainingConfig, data: TrainingSet, num_processes: int) -> StepPlan:
    """Epochs and optimizer steps from the real buckets: each process runs ceil(batches / processes) batches an
    epoch, `gradient_accumulation_steps` of them per optimizer step (the last group of an epoch may be short)."""
    batches = data.batches_per_epoch(cfg.train_batch_size)
    return plan_steps(num_images=len(data.items), num_train_samples=data.num_train_samples,
                      batch_size=cfg.train_batch_size, epoch=cfg.epoch, max_train_epochs=cfg.max_train_epochs,
                      max_train_steps=cfg.max_train_steps, grad_accum=cfg.gradient_accumulation_steps,
                      batches_per_epoch=math.ceil(batches / num_processes))


def attach_network(cfg: TrainingConfig, ctx: RunContext, model, events: EventWriter):
    """Create the network, hook it into the models, and set up gradient checkpointing."""
    from kohya_lite.network.factory import build_network

    built = build_network(cfg, model)
    for note in built.notes:
        events.emit("log", message=note)
    network = built.network
    network.apply()
    network.to(ctx.device, dtype=ctx.network_dtype)
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        model.unet.train()
        if te_lr_of(cfg) > 0:
            for te in model.text_encoders:
                te.gradient_checkpointing_enable()
                te.train()
    return network


def restore(resumed: ckpt.LoadedState, ctx: RunContext, network, optimizer, scheduler, events: EventWriter) -> tuple[int, int]:
    network.load_kohya_state_dict(resumed.network_state)
    try:
        optimizer.load_state_dict(resumed.optimizer_state)
        scheduler.load_state_dict(resumed.scheduler_state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"the training state in '{resumed.folder}' does not fit this config ({exc})", field="resume",
                        file=str(resumed.folder), fix="resume with the config the state was saved with") from None
    ckpt.restore_rng(resumed.rng, ctx.noise_generator)
    events.emit("log", message=f"resumed from {resumed.folder} at step {resumed.state.step}, epoch {resumed.state.epoch}")
    return resumed.state.step, resumed.state.epoch


def make_sampler(cfg: TrainingConfig, ctx: RunContext, model, network, events: EventWriter):
    if not cfg.sample_prompts.strip() or not (cfg.sample_every_n_steps > 0 or cfg.sample_every_n_epochs > 0
                                               or cfg.sample_at_first):
        return None
    from kohya_lite.engine.sampling import TrainingSampler

    return TrainingSampler(cfg, model, network, ctx.out_dir, events, device=ctx.device, dtype=ctx.weight_dtype)


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: object
    warmup: int
    group_names: list[str]  # textencoder, unet (+ "_plus" groups with LoRA+)


def make_optimizer(cfg: TrainingConfig, network, plan: StepPlan) -> Optimization:
    groups = network.optimizer_param_groups(unet_lr_of(cfg), te_lr_of(cfg), loraplus_lr_ratio=cfg.loraplus_lr_ratio,
                                            loraplus_unet_lr_ratio=cfg.loraplus_unet_lr_ratio,
                                            loraplus_text_encoder_lr_ratio=cfg.loraplus_text_encoder_lr_ratio)
    optimizer = build_optimizer(cfg.optimizer, groups, cfg.learning_rate, cfg.optimizer_args)
    warmup = warmup_steps(plan.total_steps, cfg.lr_warmup, cfg.lr_warmup_steps)
    scheduler = build_scheduler(optimizer, cfg.lr_scheduler, plan.total_steps, warmup, cfg.lr_scheduler_num_cycles,
                                cfg.lr_scheduler_power, cfg.lr_scheduler_args, cfg.lr_scheduler_type)
    return Optimization(optimizer, scheduler, warmup, [g["name"] for g in optimizer.param_groups])


class _StopCaching(Exception):
    pass
