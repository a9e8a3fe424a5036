"""The training loop, top to bottom: pre-flight → run context → models → data → network → optimizer → steps → files.

Each stage is a small object or function of its own module (context, conditioning, batches, diffusion,
checkpoints, reporting, sampling); `train()` wires them in the order the data flows. Device, mixed precision
and multi-process (DDP) are accelerate's job; gradient accumulation is explicit here, so that it ends with
each epoch and the LR schedule advances once per optimizer step.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kohya_lite.check import CheckResult, run_check
from kohya_lite.config import TrainingConfig, parse_resolution, te_lr_of, unet_lr_of
from kohya_lite.dataset.buckets import BucketSettings
from kohya_lite.dataset.captions import CaptionSettings
from kohya_lite.dataset.loader import TrainingSet, build_training_set, cache_latents, encode_pixels
from kohya_lite.dataset.steps import StepPlan, plan_steps
from kohya_lite.engine import checkpoints as ckpt
from kohya_lite.engine.batches import AugmentSettings, Batch, BatchMaker, EpochSampler, make_loader
from kohya_lite.engine.conditioning import TextConditioner
from kohya_lite.engine.context import RunContext
from kohya_lite.engine.diffusion import LossSettings, NoiseSettings, diffusion_loss
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.noise import alphas_cumprod
from kohya_lite.engine.optim import build_optimizer, build_scheduler, current_lrs, describe_optimizer, warmup_steps
from kohya_lite.engine.reporting import StepReporter
from kohya_lite.errors import UserError
from kohya_lite.output_folder import run_lock

MAX_BAD_STEPS_IN_A_ROW = 5  # non-finite loss or gradients this many optimizer steps running: the run has diverged
NAN_FIX = ("lower the learning rate; with fp16 use bf16 or fp32 (an fp16 VAE or base often overflows, for SDXL keep "
           "'No half VAE' on); check the images are not corrupt")


class StopFlag:
    """Set by a signal handler or the worker; the loop checks it after every optimizer step."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True


@dataclass
class TrainResult:
    status: str  # "done" | "stopped"
    final_path: Path | None
    steps: int
    epochs: int
    checkpoints: list[Path] = field(default_factory=list)


def train(cfg: TrainingConfig, *, events: EventWriter | None = None, stop: StopFlag | None = None,
          resume: str | None = None, progress_bar: bool = True) -> TrainResult:
    """Train `cfg` to completion or until `stop` is set; raises UserError for anything the user can fix.
    The output folder is locked for the whole run: a second run on it is refused (`output_folder`)."""
    with run_lock(cfg.output_dir):
        return _train(cfg, events=events or EventWriter(), stop=stop or StopFlag(), resume=resume,
                      progress_bar=progress_bar)


def _train(cfg: TrainingConfig, *, events: EventWriter, stop: StopFlag, resume: str | None,
           progress_bar: bool) -> TrainResult:
    check = preflight(cfg.replace(resume=resume) if resume else cfg, events)  # a resumed run's files are expected
    resumed = find_resume_state(cfg, resume)
    ctx = RunContext.create(cfg, seed=resumed.state.seed if resumed else None,
                            warn=lambda message, field: events.emit("warning", message=message, field=field))
    events.enabled = events.enabled and ctx.is_main

    model = load_models(cfg, ctx, events)
    data = build_data(cfg, check)
    cached = (cfg.cache_latents or cfg.cache_latents_to_disk) and not (cfg.color_aug or cfg.random_crop)
    if cached and not encode_all_latents(cfg, ctx, model, data, events, stop):
        events.emit("stopped", path=None, step=0, epoch=0, message="stopped while caching latents")
        return TrainResult("stopped", None, 0, 0)
    plan = plan_run(cfg, data, ctx.num_processes)

    network = attach_network(cfg, ctx, model, events)
    optimizer = build_optimizer(cfg.optimizer, network.optimizer_param_groups(
        unet_lr_of(cfg), te_lr_of(cfg), loraplus_lr_ratio=cfg.loraplus_lr_ratio,
        loraplus_unet_lr_ratio=cfg.loraplus_unet_lr_ratio,
        loraplus_text_encoder_lr_ratio=cfg.loraplus_text_encoder_lr_ratio), cfg.learning_rate, cfg.optimizer_args)
    group_names = [g["name"] for g in optimizer.param_groups]  # textencoder, unet (+ "_plus" groups with LoRA+)
    warmup = warmup_steps(plan.total_steps, cfg.lr_warmup, cfg.lr_warmup_steps)
    scheduler = build_scheduler(optimizer, cfg.lr_scheduler, plan.total_steps, warmup, cfg.lr_scheduler_num_cycles,
                                cfg.lr_scheduler_power, cfg.lr_scheduler_args, cfg.lr_scheduler_type)
    denoiser, optimizer = ctx.accelerator.prepare(Denoiser(model.unet, network), optimizer)

    global_step, start_epoch = 0, 0
    if resumed:
        global_step, start_epoch = restore(resumed, ctx, network, optimizer, scheduler, events)

    caption_settings = CaptionSettings.from_config(cfg)
    conditioner = TextConditioner(model, clip_skip=cfg.clip_skip, max_token_length=cfg.max_token_length,
                                  cache=not te_lr_of(cfg) and caption_settings.static, autocast=ctx.autocast)
    sampler_batches = EpochSampler(data, cfg.train_batch_size, ctx.seed, ctx.process_index, ctx.num_processes)
    loader = make_loader(
        BatchMaker(data, seed=ctx.seed, cached=cached, captions=caption_settings, prior_loss_weight=cfg.prior_loss_weight,
                   augment=AugmentSettings(cfg.flip_aug, cfg.random_crop, cfg.color_aug), sdxl=model.family == "sdxl"),
        sampler_batches, workers=cfg.max_data_loader_n_workers, persistent=cfg.persistent_data_loader_workers)
    alphas_bar = alphas_cumprod()
    noise_settings = NoiseSettings.from_config(cfg)
    loss_settings = LossSettings.from_config(cfg, v_prediction=model.v_prediction)

    def batch_loss(batch: Batch) -> torch.Tensor:
        """The diffusion loss of one micro-batch (its graph kept for backward)."""
        if batch.latents is not None:
            latents = batch.latents.to(ctx.device)
        else:
            latents = encode_pixels(model.vae, batch.pixels, ctx.noise_generator).float()
        emb, pooled = conditioner(batch.captions)
        cond = {}
        if batch.time_ids is not None:
            cond["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": batch.time_ids.to(ctx.device, emb.dtype)}

        def denoise(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with ctx.autocast():
                return denoiser(noisy, t, emb, **cond)

        return diffusion_loss(denoise, latents, alphas_bar=alphas_bar, noise=noise_settings, loss=loss_settings,
                              generator=ctx.noise_generator, input_dtype=ctx.weight_dtype,
                              sample_weights=batch.weights).loss

    started_at = time.time()
    session_id = random.randint(0, 2**32 - 1)
    trigger = check.dataset.train[0].tokens.split(" ")[0] if check.dataset.train else ""

    def metadata(epoch: int, step: int) -> dict:
        from kohya_lite.network.metadata import training_metadata

        return training_metadata(cfg, model=model, data=data, session_id=session_id, started_at=started_at, steps=step,
                                 epoch=epoch, num_epochs=plan.epochs, total_steps=plan.total_steps,
                                 batches_per_epoch=plan.batches_per_epoch, warmup=warmup, seed=ctx.seed,
                                 precision=ctx.precision, optimizer_desc=describe_optimizer(optimizer, cfg.optimizer_args),
                                 trigger_phrase=trigger)

    writer = ckpt.CheckpointWriter(ctx.out_dir, ctx.name, network=network, save_precision=cfg.save_precision,
                                   metadata=metadata, events=events,
                                   state_parts=lambda: {"optimizer": optimizer, "scheduler": scheduler, "seed": ctx.seed,
                                                        "rng": ckpt.capture_rng(ctx.noise_generator)})
    sampler = make_sampler(cfg, ctx, model, network, events)
    events.emit("start", total_steps=plan.total_steps, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
                images=len(data.items), samples_per_epoch=len(data.samples), batches_per_epoch=plan.batches_per_epoch,
                buckets={f"{b[0]}x{b[1]}": c for b, c in data.bucket_counts().items()}, device=str(ctx.device),
                precision=ctx.precision, family=model.family, seed=ctx.seed, resumed_at=global_step,
                modules=len(network.kohya_state_dict()) // 3, accumulation=cfg.gradient_accumulation_steps,
                cached_latents=cached, network_dtype=str(ctx.network_dtype).removeprefix("torch."))
    if sampler and ctx.is_main and global_step == 0 and sampler.due(step=0):
        sampler.sample(step=0, epoch=0)
    if stop.requested:  # stopped during set-up: the network is unchanged since the last save
        events.emit("stopped", path=None, step=global_step, epoch=start_epoch, message="stopped before training")
        return TrainResult("stopped", None, global_step, start_epoch)

    # ---- the loop: one optimizer step per group of `accum` micro-batches; a group never spans epochs ----------
    accum = cfg.gradient_accumulation_steps
    params = [p for p in network.parameters() if p.requires_grad]
    report = StepReporter(events, total_steps=plan.total_steps, epochs=plan.epochs, initial_step=global_step,
                          show_bar=progress_bar and ctx.is_main, logging_dir=cfg.logging_dir if ctx.is_main else "",
                          run_name=ctx.name)
    bad_in_a_row = 0
    epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, plan.epochs + 1):
            done_this_epoch = global_step - (epoch - 1) * plan.steps_per_epoch
            sampler_batches.set_epoch(epoch, skip=max(0, done_this_epoch) * accum)
            network.train()
            report.start_epoch()
            for group in micro_batch_groups(loader, accum):
                if global_step >= plan.total_steps:
                    break
                losses = []
                for i, batch in enumerate(group):
                    last = i == len(group) - 1
                    with nullcontext() if last else ctx.accelerator.no_sync(denoiser):
                        loss = batch_loss(batch)
                        ctx.accelerator.backward(loss / accum)
                    losses.append(loss.detach())
                loss_value = ctx.accelerator.gather(torch.stack(losses).mean().reshape(1)).mean().item()
                norm = ctx.accelerator.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
                loss_ok, grads_ok = math.isfinite(loss_value), bool(torch.isfinite(torch.as_tensor(norm)))
                if ctx.precision == "fp16":  # the grad scaler skips an overflowing step itself (and rescales)
                    optimizer.step()
                    stepped = not ctx.accelerator.optimizer_step_was_skipped
                else:
                    stepped = loss_ok and grads_ok
                    if stepped:
                        optimizer.step()
                if stepped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                global_step += 1
                bad = not loss_ok or (not grads_ok and ctx.precision != "fp16")
                bad_in_a_row = bad_in_a_row + 1 if bad else 0
                if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                    raise _Diverged(global_step, f"the loss or its gradients were NaN/inf for {bad_in_a_row} steps in a row")
                if cfg.scale_weight_norms and stepped:
                    network.apply_max_norm(cfg.scale_weight_norms)
                report.step(step=global_step, epoch=epoch, loss=loss_value, skipped=not stepped,
                            lrs=dict(zip(group_names, current_lrs(optimizer))))
                if ctx.is_main:
                    if sampler and sampler.due(step=global_step):
                        sampler.sample(step=global_step, epoch=epoch)
                    if cfg.save_every_n_steps and global_step % cfg.save_every_n_steps == 0 \
                            and global_step < plan.total_steps:
                        writer.save(ckpt.step_file(ctx.name, global_step), epoch=epoch - 1, step=global_step,
                                    with_state=cfg.save_state)
                        ckpt.prune_steps(ctx.out_dir, ctx.name, global_step, keep_steps=cfg.save_last_n_steps,
                                         keep_step_states=cfg.save_last_n_steps_state)
                if stop.requested:
                    raise _Stop()

            report.end_epoch(epoch=epoch, step=global_step)
            if ctx.is_main:
                if cfg.save_every_n_epochs and epoch % cfg.save_every_n_epochs == 0 and epoch < plan.epochs:
                    writer.save(ckpt.epoch_file(ctx.name, epoch), epoch=epoch, step=global_step, with_state=cfg.save_state)
                    ckpt.prune(ctx.out_dir, ctx.name, keep_epochs=cfg.save_last_n_epochs,
                               keep_epoch_states=cfg.save_last_n_epochs_state)
                if sampler and sampler.due(step=global_step, epoch_end=epoch):
                    sampler.sample(step=global_step, epoch=epoch)
            if global_step >= plan.total_steps:
                break

        ctx.accelerator.wait_for_everyone()
        final = None
        if ctx.is_main:
            final = writer.save(ckpt.final_file(ctx.name), epoch=epoch, step=global_step,
                                with_state=cfg.save_state_on_train_end or cfg.save_state)
            events.emit("done", path=final, step=global_step, epoch=epoch, seconds=round(time.time() - started_at, 1))
        return TrainResult("done", final, global_step, epoch, writer.saved)
    except _Stop:
        path = None
        if ctx.is_main:
            filename = ckpt.step_file(ctx.name, global_step)
            path = writer.save(filename, epoch=epoch - 1, step=global_step, with_state=True)
            events.emit("stopped", path=path, step=global_step, epoch=epoch,
                        state=str(ctx.out_dir / ckpt.state_dir_for(filename)))
        return TrainResult("stopped", path, global_step, epoch, writer.saved)
    except ckpt.NonFiniteWeights as exc:
        raise diverged_error(_Diverged(global_step, f"the LoRA weights became NaN/inf ({exc})"), writer.last_good) from None
    except _Diverged as exc:
        raise diverged_error(exc, writer.last_good) from None
    finally:
        report.close()


# ---- stages --------------------------------------------------------------------------------------------------

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
                       sdxl=cfg.sdxl, vae_path=cfg.vae)
    events.emit("log", message=f"model: {model.detected}")
    for m in (model.unet, model.vae, *model.text_encoders):
        m.requires_grad_(False)
        m.eval()
    vae_dtype = torch.float32 if (model.family == "sdxl" and cfg.sdxl_no_half_vae) else ctx.weight_dtype
    place(model.vae, ctx.device, vae_dtype)
    place(model.unet, ctx.device, ctx.weight_dtype)
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
                       stop: StopFlag) -> bool:
    """Cache every item's latents (in memory, or on disk with cache_latents_to_disk); False if stopped meanwhile.
    The VAE then leaves the accelerator."""
    def progress(done: int, total: int) -> None:
        events.emit("log", message=f"caching latents {done}/{total}", phase="caching", done=done, total=total)
        if stop.requested:
            raise _Stop()

    cache_dir = ctx.out_dir / ".latent_cache" if cfg.cache_latents_to_disk else None
    try:
        cache_latents(data.items, model.vae, flip_aug=cfg.flip_aug, batch_size=max(1, cfg.vae_batch_size),
                      cache_dir=cache_dir, generator=ctx.noise_generator, progress=progress)
    except _Stop:
        return False
    model.vae.to("cpu")
    return True


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


def micro_batch_groups(loader, accum: int):
    """The epoch's batches in groups of `accum` (the last group holds what is left)."""
    group: list[Batch] = []
    for batch in loader:
        group.append(batch)
        if len(group) == accum:
            yield group
            group = []
    if group:
        yield group


def diverged_error(exc: "_Diverged", last_good: Path | None) -> UserError:
    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint had been saved yet"
    return UserError(f"training diverged at step {exc.step}: {exc.reason}; training stopped ({where})",
                     field="learning_rate", fix=NAN_FIX)


class Denoiser(torch.nn.Module):
    """UNet and LoRA network as one module, so accelerate (and DDP) see the trainable parameters in forward."""

    def __init__(self, unet: torch.nn.Module, network: torch.nn.Module):
        super().__init__()
        self.unet = unet
        self.network = network

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.unet(noisy, t, emb, **kwargs).sample


class _Stop(Exception):
    pass


class _Diverged(Exception):
    def __init__(self, step: int, reason: str):
        super().__init__(reason)
        self.step, self.reason = step, reason
