"""The training loop, top to bottom: pre-flight → run context → models → data → network → optimizer → steps → files.

Each stage is a small object or function of its own module: setup (everything before the loop), context, batches,
conditioning, step (loss and optimizer step), hooks (samples and checkpoints), reporting (events, bar, TensorBoard),
checkpoints. `train()` wires them in the order the data flows. Device, mixed precision and multi-process (DDP)
are accelerate's job; gradient accumulation is explicit, so that it ends with each epoch and the LR schedule
advances once per optimizer step.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kohya_lite.config import TrainingConfig, latents_cached
from kohya_lite.dataset.captions import CaptionSettings, text_outputs_cached
from kohya_lite.engine import checkpoints as ckpt
from kohya_lite.engine import setup
from kohya_lite.engine.batches import AugmentSettings, Batch, BatchMaker, EpochSampler, make_loader
from kohya_lite.engine.conditioning import TextConditioner
from kohya_lite.engine.context import RunContext
from kohya_lite.engine.diffusion import LossSettings, NoiseSettings
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.hooks import RunHooks
from kohya_lite.engine.optim import current_lrs, describe_optimizer
from kohya_lite.engine.reporting import StepReporter
from kohya_lite.engine.step import BatchLoss, OptimizerStep
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
    started_at = time.time()
    check = setup.preflight(cfg.replace(resume=resume) if resume else cfg, events)  # a resumed run's files are expected
    resumed = setup.find_resume_state(cfg, resume)
    ctx = RunContext.create(cfg, seed=resumed.state.seed if resumed else None,
                            warn=lambda message, field: events.emit("warning", message=message, field=field))
    events.enabled = events.enabled and ctx.is_main

    # ---- models and data ------------------------------------------------------------------------------------
    model = setup.load_models(cfg, ctx, events)
    data = setup.build_data(cfg, check)
    cached = latents_cached(cfg)
    show_bar = progress_bar and ctx.is_main
    if cached and not setup.encode_all_latents(cfg, ctx, model, data, events, stop, show_bar=show_bar):
        events.emit("stopped", path=None, step=0, epoch=0, message="stopped while caching latents")
        return TrainResult("stopped", None, 0, 0)
    plan = setup.plan_run(cfg, data, ctx.num_processes)
    captions = CaptionSettings.from_config(cfg)
    batches = EpochSampler(data, cfg.train_batch_size, ctx.seed, ctx.process_index, ctx.num_processes)
    loader = make_loader(
        BatchMaker(data, seed=ctx.seed, cached=cached, captions=captions, prior_loss_weight=cfg.prior_loss_weight,
                   augment=AugmentSettings(cfg.flip_aug, cfg.random_crop, cfg.color_aug), sdxl=model.family == "sdxl"),
        batches, workers=cfg.max_data_loader_n_workers, persistent=cfg.persistent_data_loader_workers)

    # ---- network, optimizer, state ---------------------------------------------------------------------------
    network = setup.attach_network(cfg, ctx, model, events)
    opt = setup.make_optimizer(cfg, network, plan)
    denoiser, optimizer = ctx.accelerator.prepare(Denoiser(model.unet, network), opt.optimizer)
    global_step, start_epoch = setup.restore(resumed, ctx, network, optimizer, opt.scheduler, events) if resumed else (0, 0)
    conditioner = TextConditioner(model, clip_skip=cfg.clip_skip, max_token_length=cfg.max_token_length,
                                  cache=text_outputs_cached(cfg), autocast=ctx.autocast)
    if conditioner.cache_enabled:
        setup.cache_text_outputs(conditioner, data, captions, ctx, model, events)
    step = OptimizerStep(ctx, denoiser, optimizer, opt.scheduler, [p for p in network.parameters() if p.requires_grad],
                         batch_loss=BatchLoss(ctx, model, denoiser, conditioner, NoiseSettings.from_config(cfg),
                                              LossSettings.from_config(cfg, v_prediction=model.v_prediction)),
                         accumulation=cfg.gradient_accumulation_steps, max_grad_norm=cfg.max_grad_norm)

    # ---- files, samples, reporting ---------------------------------------------------------------------------
    session_id = random.randint(0, 2**32 - 1)
    trigger = check.dataset.train[0].tokens.split(" ")[0] if check.dataset.train else ""

    def metadata(epoch: int, steps: int) -> dict:
        from kohya_lite.network.metadata import training_metadata

        return training_metadata(cfg, model=model, data=data, session_id=session_id, started_at=started_at, steps=steps,
                                 epoch=epoch, num_epochs=plan.epochs, total_steps=plan.total_steps,
                                 batches_per_epoch=plan.batches_per_epoch, warmup=opt.warmup, seed=ctx.seed,
                                 precision=ctx.precision, optimizer_desc=describe_optimizer(optimizer, cfg.optimizer_args),
                                 trigger_phrase=trigger)

    writer = ckpt.CheckpointWriter(ctx.out_dir, ctx.name, network=network, save_precision=cfg.save_precision,
                                   metadata=metadata, events=events,
                                   state_parts=lambda: {"optimizer": optimizer, "scheduler": opt.scheduler,
                                                        "seed": ctx.seed, "rng": ckpt.capture_rng(ctx.noise_generator)})
    hooks = RunHooks(cfg, writer=writer, sampler=setup.make_sampler(cfg, ctx, model, network, events),
                     total_steps=plan.total_steps, epochs=plan.epochs, is_main=ctx.is_main)
    events.emit("start", total_steps=plan.total_steps, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
                images=len(data.items), samples_per_epoch=len(data.samples), batches_per_epoch=plan.batches_per_epoch,
                buckets={f"{b[0]}x{b[1]}": c for b, c in data.bucket_counts().items()}, device=str(ctx.device),
                precision=ctx.precision, family=model.family, seed=ctx.seed, resumed_at=global_step,
                modules=sum(network.module_counts().values()), accumulation=cfg.gradient_accumulation_steps,
                cached_latents=cached, network_dtype=str(ctx.network_dtype).removeprefix("torch."))
    hooks.before_training(global_step)
    if stop.requested:  # stopped during set-up: the network is unchanged since the last save
        events.emit("stopped", path=None, step=global_step, epoch=start_epoch, message="stopped before training")
        return TrainResult("stopped", None, global_step, start_epoch)

    # ---- the loop: one optimizer step per group of micro-batches; a group never spans epochs ---------------------
    accum = cfg.gradient_accumulation_steps
    report = StepReporter(events, total_steps=plan.total_steps, epochs=plan.epochs, initial_step=global_step,
                          show_bar=show_bar, logging_dir=cfg.logging_dir if ctx.is_main else "",
                          run_name=ctx.name)
    bad_in_a_row, epoch = 0, start_epoch
    try:
        for epoch in range(start_epoch + 1, plan.epochs + 1):
            done_this_epoch = max(0, global_step - (epoch - 1) * plan.steps_per_epoch)
            batches.set_epoch(epoch, skip=done_this_epoch * accum)  # resume: skip what this epoch already did
            network.train()
            report.start_epoch()
            for group in micro_batch_groups(loader, accum):
                if global_step >= plan.total_steps:
                    break
                outcome = step(group)
                global_step += 1
                bad_in_a_row = bad_in_a_row + 1 if outcome.bad else 0
                if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                    raise _Diverged(global_step, f"the loss or its gradients were NaN/inf for {bad_in_a_row} steps in a row")
                if cfg.scale_weight_norms and outcome.stepped:
                    network.apply_max_norm(cfg.scale_weight_norms)
                report.step(step=global_step, epoch=epoch, loss=outcome.loss, skipped=not outcome.stepped,
                            lrs=dict(zip(opt.group_names, current_lrs(optimizer))))
                hooks.after_step(global_step, epoch)
                if stop.requested:
                    raise _Stop()
            report.end_epoch(epoch=epoch, step=global_step)
            hooks.after_epoch(epoch, global_step)
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
