"""The training loop, top to bottom: config → data → model → network → optimizer → steps → files.

Device, mixed precision, gradient accumulation and multi-process (DDP) are accelerate's job. Everything
the loop reports goes through `EventWriter` (JSON lines) and a tqdm bar; everything it writes is atomic.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kohya_lite.check import run_check
from kohya_lite.config import TrainingConfig, parse_resolution, te_lr_of, unet_lr_of
from kohya_lite.dataset.buckets import BucketSettings
from kohya_lite.dataset.captions import captions_are_static, process_caption
from kohya_lite.dataset.loader import TrainingSet, build_training_set, cache_latents, encode_pixels, load_pixels
from kohya_lite.engine import checkpoints as ckpt
from kohya_lite.engine import noise as nz
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.optim import (
    build_optimizer, build_scheduler, current_lrs, describe_optimizer, warmup_steps,
)
from kohya_lite.engine.text import encode_sd, encode_sdxl, sdxl_time_ids
from kohya_lite.errors import UserError


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


@dataclass
class Batch:
    latents: torch.Tensor | None
    pixels: torch.Tensor | None
    captions: list[str]
    weights: torch.Tensor  # per-sample loss weight (prior_loss_weight for reg)
    time_ids: torch.Tensor | None  # SDXL


def _precision(cfg: TrainingConfig, events: EventWriter) -> str:
    if cfg.mixed_precision == "no":
        return "no"
    if not torch.cuda.is_available():
        events.emit("warning", message=f"mixed_precision {cfg.mixed_precision} needs a GPU; training in fp32 on the CPU",
                    field="mixed_precision")
        return "no"
    if cfg.mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
        events.emit("warning", message="this GPU has no bf16; using fp16", field="mixed_precision")
        return "fp16"
    return cfg.mixed_precision


def train(cfg: TrainingConfig, *, events: EventWriter | None = None, stop: StopFlag | None = None,
          resume: str | None = None, progress_bar: bool = True, fixed_noise: bool = False) -> TrainResult:
    """Train `cfg` to completion or until `stop` is set.

    `fixed_noise` gives every sample the same noise and timestep in every epoch (an overfitting check that
    shows the loss falling); normal runs draw fresh noise each step.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    events = events or EventWriter()
    stop = stop or StopFlag()

    # ---- pre-flight ------------------------------------------------------------------------------
    check = run_check(cfg)
    for p in check.warnings:
        events.emit("warning", message=p.message, field=p.field, file=p.file, hint=p.fix)
    if check.errors:
        first = check.errors[0]
        raise UserError(first.message if len(check.errors) == 1 else
                        f"{first.message} (and {len(check.errors) - 1} more problems: run Check)",
                        field=first.field, file=first.file, fix=first.fix)

    precision = _precision(cfg, events)
    from accelerate.utils import DistributedDataParallelKwargs

    # module_dropout skips whole LoRA modules in some steps: DDP must then allow unused parameters
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.module_dropout > 0)
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                              kwargs_handlers=[ddp])
    main = accelerator.is_main_process
    events.enabled = events.enabled and main
    device = accelerator.device
    if device.type == "cpu" and accelerator.num_processes == 1:
        torch.set_num_threads(max(1, cfg.num_cpu_threads_per_process))
    seed = cfg.seed or random.randint(1, 2**31 - 1)
    set_seed(seed)
    noise_gen = torch.Generator(device="cpu").manual_seed(seed + accelerator.process_index)
    out_dir = Path(cfg.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.output_name

    # ---- model -----------------------------------------------------------------------------------
    from kohya_lite.models.load import load_model

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    model = load_model(cfg.pretrained_model_name_or_path, v2=cfg.v2, v_parameterization=cfg.v_parameterization,
                       sdxl=cfg.sdxl, vae_path=cfg.vae)
    events.emit("log", message=f"model: {model.detected}")
    v_pred = model.v_prediction
    family = model.family
    unet, vae, tes = model.unet, model.vae, model.text_encoders
    for m in (unet, vae, *tes):
        m.requires_grad_(False)
        m.eval()
    vae_dtype = torch.float32 if (family == "sdxl" and cfg.sdxl_no_half_vae) else weight_dtype
    vae.to(device, dtype=vae_dtype)

    # ---- data ------------------------------------------------------------------------------------
    w, h = parse_resolution(cfg.max_resolution)
    buckets = BucketSettings((w, h), cfg.enable_bucket, cfg.min_bucket_reso, cfg.max_bucket_reso,
                             cfg.bucket_reso_steps, cfg.bucket_no_upscale)
    data: TrainingSet = build_training_set(check.dataset, buckets, cfg.caption_extension)
    if not data.samples:
        raise UserError("no usable training images", field="train_data_dir", fix="add readable images to the N_name folders")
    use_cache = (cfg.cache_latents or cfg.cache_latents_to_disk) and not (cfg.color_aug or cfg.random_crop)
    if use_cache:
        def caching_progress(done: int, total: int) -> None:
            events.emit("log", message=f"caching latents {done}/{total}")
            if stop.requested:  # Stop while caching: nothing trained yet, nothing to save
                raise _Stop()

        cache_dir = out_dir / ".latent_cache" if cfg.cache_latents_to_disk else None
        try:
            cache_latents(data.items, vae, flip_aug=cfg.flip_aug, family=family, batch_size=max(1, cfg.vae_batch_size),
                          cache_dir=cache_dir, generator=noise_gen, progress=caching_progress)
        except _Stop:
            events.emit("stopped", path=None, step=0, epoch=0, message="stopped while caching latents")
            return TrainResult("stopped", None, 0, 0, [])
        vae.to("cpu")  # free the accelerator for training
    bs = cfg.train_batch_size
    batches_per_epoch = data.batches_per_epoch(bs)
    steps_per_epoch = math.ceil(math.ceil(batches_per_epoch / accelerator.num_processes) / cfg.gradient_accumulation_steps)
    if cfg.max_train_epochs > 0:
        epochs = cfg.max_train_epochs
        total_steps = epochs * steps_per_epoch
    elif cfg.max_train_steps > 0:
        total_steps = cfg.max_train_steps
        epochs = math.ceil(total_steps / steps_per_epoch)
    else:
        epochs = max(1, cfg.epoch)
        total_steps = epochs * steps_per_epoch

    # ---- network ---------------------------------------------------------------------------------
    from kohya_lite.network.lora import LoRANetwork

    train_unet, train_te = unet_lr_of(cfg) > 0, te_lr_of(cfg) > 0
    conv = cfg.conv_dim if cfg.LoRA_type == "Kohya LoCon" else 0
    network = LoRANetwork.create(model, cfg.network_dim, cfg.network_alpha, conv_rank=conv, conv_alpha=cfg.conv_alpha,
                                 train_unet=train_unet, train_text_encoder=train_te, dropout=cfg.network_dropout,
                                 rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout)
    if cfg.network_weights:
        from kohya_lite.network.io import read_lora_file

        tensors, _ = read_lora_file(cfg.network_weights)
        network.load_kohya_state_dict(tensors, strict=False)
        events.emit("log", message=f"initialised the network from {cfg.network_weights}")
    network.apply()
    unet.to(device, dtype=weight_dtype)
    for te in tes:
        te.to(device, dtype=weight_dtype)
    network.to(device)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()
        if train_te:
            for te in tes:
                te.gradient_checkpointing_enable()
                te.train()

    groups = network.optimizer_param_groups(unet_lr_of(cfg), te_lr_of(cfg), loraplus_lr_ratio=cfg.loraplus_lr_ratio,
                                            loraplus_unet_lr_ratio=cfg.loraplus_unet_lr_ratio,
                                            loraplus_text_encoder_lr_ratio=cfg.loraplus_text_encoder_lr_ratio)
    group_names = [g["name"] for g in groups]  # textencoder, unet (+ "_plus" groups with LoRA+)
    optimizer = build_optimizer(cfg.optimizer, groups, cfg.learning_rate, cfg.optimizer_args)
    warm = warmup_steps(total_steps, cfg.lr_warmup, cfg.lr_warmup_steps)
    scheduler = build_scheduler(optimizer, cfg.lr_scheduler, total_steps, warm, cfg.lr_scheduler_num_cycles,
                                cfg.lr_scheduler_power)
    denoiser, optimizer = accelerator.prepare(Denoiser(unet, network), optimizer)
    raw_network = network

    # ---- text conditioning -------------------------------------------------------------------------
    static_captions = captions_are_static(shuffle=cfg.shuffle_caption, dropout_rate=cfg.caption_dropout_rate,
                                          dropout_every_n_epochs=cfg.caption_dropout_every_n_epochs)
    te_cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def encode(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if family == "sdxl":
            return encode_sdxl(tes[0], tes[1], model.tokenizers[0], model.tokenizers[1], captions,
                               max_token_length=cfg.max_token_length)
        return encode_sd(tes[0], model.tokenizers[0], captions, clip_skip=cfg.clip_skip,
                         max_token_length=cfg.max_token_length), None

    def conditioning(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if train_te or not static_captions:
            return encode(captions)
        missing = [c for c in dict.fromkeys(captions) if c not in te_cache]
        if missing:
            with torch.no_grad(), accelerator.autocast():
                emb, pooled = encode(missing)
            for i, c in enumerate(missing):
                te_cache[c] = (emb[i:i + 1], pooled[i:i + 1] if pooled is not None else None)
        emb = torch.cat([te_cache[c][0] for c in captions])
        pooled = torch.cat([te_cache[c][1] for c in captions]) if family == "sdxl" else None
        return emb, pooled

    alphas_bar = nz.alphas_cumprod()

    def make_batch(positions: list[int], epoch: int) -> Batch:
        items = [data.items[data.samples[p]] for p in positions]
        rng = random.Random(hash((seed, epoch, positions[0])))
        flips = [cfg.flip_aug and rng.random() < 0.5 for _ in items]
        latents = pixels = None
        crops = [(0, 0)] * len(items)
        if use_cache:
            latents = torch.stack([it.latents_flipped if f else it.latents for it, f in zip(items, flips)])
        else:
            loaded = [load_pixels(it, random_crop=cfg.random_crop, flip=f, rng=rng) for it, f in zip(items, flips)]
            pixels = torch.stack([p for p, _ in loaded])
            crops = [c for _, c in loaded]
        captions = [process_caption(it.caption, rng=rng, shuffle=cfg.shuffle_caption, keep_tokens=cfg.keep_tokens,
                                    dropout_rate=cfg.caption_dropout_rate,
                                    dropout_every_n_epochs=cfg.caption_dropout_every_n_epochs, epoch=epoch)
                    for it in items]
        weights = torch.tensor([cfg.prior_loss_weight if it.is_reg else 1.0 for it in items])
        time_ids = None
        if family == "sdxl":
            time_ids = torch.stack([sdxl_time_ids((it.size[1], it.size[0]), crop if not use_cache else
                                                  (it.assignment.crop_ltrb[1], it.assignment.crop_ltrb[0]),
                                                  (it.bucket[1], it.bucket[0])) for it, crop in zip(items, crops)])
        return Batch(latents, pixels, captions, weights, time_ids)

    # ---- resume ----------------------------------------------------------------------------------
    global_step, start_epoch = 0, 0
    if resume or cfg.resume:
        where = resume or cfg.resume
        folder = ckpt.find_last_state(out_dir, name) if where == "last" else Path(where)
        if folder is None:
            raise UserError(f"no saved training state for '{name}' in '{out_dir}'", field="resume",
                            fix="train with save_state on first, or clear resume")
        st = ckpt.load_state(folder)
        raw_network.load_kohya_state_dict(st.network_state)
        optimizer.load_state_dict(st.optimizer_state)
        scheduler.load_state_dict(st.scheduler_state)
        ckpt.restore_rng(st.rng)
        if "noise_generator" in st.extra:
            noise_gen.set_state(torch.tensor(st.extra["noise_generator"], dtype=torch.uint8))
        global_step, start_epoch = st.state.step, st.state.epoch
        events.emit("log", message=f"resumed from {folder} at step {global_step}, epoch {start_epoch}")

    # ---- saving ----------------------------------------------------------------------------------
    from kohya_lite.network.io import save_lora_file
    from kohya_lite.network.metadata import training_metadata

    started_at = time.time()
    session_id = random.randint(0, 2**32 - 1)
    trigger = check.dataset.train[0].tokens.split(" ")[0] if check.dataset.train else ""
    saved: list[Path] = []

    def save(filename: str, epoch: int, *, with_state: bool) -> Path:
        path = out_dir / filename
        meta = training_metadata(cfg, model=model, data=data, session_id=session_id, started_at=started_at,
                                 steps=global_step, epoch=epoch, num_epochs=epochs, total_steps=total_steps,
                                 batches_per_epoch=batches_per_epoch, warmup=warm, seed=seed, precision=precision,
                                 optimizer_desc=describe_optimizer(optimizer, cfg.optimizer_args), trigger_phrase=trigger)
        save_lora_file(path, raw_network.kohya_state_dict(), meta, precision=cfg.save_precision)
        saved.append(path)
        events.emit("checkpoint", path=path, epoch=epoch, step=global_step)
        if with_state:
            ckpt.save_state(out_dir / ckpt.state_dir_for(filename), network_state=raw_network.kohya_state_dict(),
                            optimizer=optimizer, scheduler=scheduler, state=ckpt.TrainState(epoch, global_step),
                            extra={"noise_generator": noise_gen.get_state().tolist()})
        return path

    sampler = None
    if cfg.sample_prompts.strip() and (cfg.sample_every_n_steps > 0 or cfg.sample_every_n_epochs > 0):
        from kohya_lite.engine.sampling import TrainingSampler

        sampler = TrainingSampler(cfg, model, raw_network, out_dir, events, device=device, dtype=weight_dtype)

    events.emit("start", total_steps=total_steps, epochs=epochs, steps_per_epoch=steps_per_epoch,
                images=len(data.items), samples_per_epoch=len(data.samples), batches_per_epoch=batches_per_epoch,
                buckets={f"{b[0]}x{b[1]}": c for b, c in data.bucket_counts().items()}, device=str(device),
                precision=precision, family=family, seed=seed, resumed_at=global_step,
                modules=len(raw_network.kohya_state_dict()) // 3)
    if sampler and main and global_step == 0:
        sampler.sample(step=0, epoch=0)
    if stop.requested:  # stopped during set-up: the network is unchanged since the last save
        events.emit("stopped", path=None, step=global_step, epoch=start_epoch, message="stopped before training")
        return TrainResult("stopped", None, global_step, start_epoch, [])

    # ---- loop ------------------------------------------------------------------------------------
    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=global_step, disable=not (progress_bar and main), desc="steps",
               dynamic_ncols=True)
    board = _tensorboard(cfg, name) if main else None
    loss_window: list[float] = []
    step_times: list[float] = []
    last_time = time.time()
    last_good: Path | None = None
    epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            order = data.epoch_batches(epoch, bs, seed)
            shard = order[accelerator.process_index::accelerator.num_processes]
            per_proc = math.ceil(len(order) / accelerator.num_processes)
            shard += order[:per_proc - len(shard)]  # even out the last round, as accelerate does
            skip = (global_step - (epoch - 1) * steps_per_epoch) * cfg.gradient_accumulation_steps
            epoch_losses: list[float] = []
            raw_network.train()
            for bi, positions in enumerate(shard):
                if bi < skip:
                    continue
                if global_step >= total_steps:
                    break
                batch = make_batch(positions, epoch)
                with accelerator.accumulate(denoiser):
                    if batch.latents is not None:
                        latents = batch.latents.to(device, weight_dtype)
                    else:
                        vae.to(device)
                        latents = encode_pixels(vae, batch.pixels).to(weight_dtype)
                    with accelerator.autocast():
                        emb, pooled = conditioning(batch.captions)
                    b = latents.shape[0]
                    gen = noise_gen
                    if fixed_noise:
                        gen = torch.Generator().manual_seed(seed + 7919 * data.samples[positions[0]])
                    noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)
                    noise = nz.offset_noise(noise, latents, cfg.noise_offset,
                                            random_strength=cfg.noise_offset_random_strength,
                                            adaptive_scale=cfg.adaptive_noise_scale, generator=None)
                    if cfg.multires_noise_iterations:
                        noise = nz.pyramid_noise(noise, cfg.multires_noise_iterations, cfg.multires_noise_discount)
                    t = torch.randint(cfg.min_timestep, cfg.max_timestep, (b,), generator=gen).to(device)
                    a = alphas_bar.to(device)[t].view(-1, 1, 1, 1).to(latents.dtype)
                    in_noise = noise
                    if cfg.ip_noise_gamma:
                        gamma = cfg.ip_noise_gamma * (torch.rand(1, generator=noise_gen).item()
                                                      if cfg.ip_noise_gamma_random_strength else 1.0)
                        in_noise = noise + gamma * torch.randn(latents.shape, generator=noise_gen).to(device, latents.dtype)
                    noisy = a.sqrt() * latents + (1 - a).sqrt() * in_noise
                    target = a.sqrt() * noise - (1 - a).sqrt() * latents if v_pred else noise
                    kwargs = {}
                    if family == "sdxl":
                        kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(device),
                                                       "time_ids": batch.time_ids.to(device, emb.dtype)}
                    with accelerator.autocast():
                        pred = denoiser(noisy, t, emb.to(device), **kwargs)
                    c = nz.huber_c(t, alphas_bar, cfg.huber_schedule, cfg.huber_c, cfg.huber_scale) \
                        if cfg.loss_type in ("huber", "smooth_l1") else None
                    loss = nz.per_sample_loss(pred, target, cfg.loss_type, c) * batch.weights.to(device)
                    s = nz.snr(alphas_bar, t)
                    loss = loss * nz.snr_weight(s, min_snr_gamma=cfg.min_snr_gamma, v_prediction=v_pred,
                                                debiased=cfg.debiased_estimation_loss,
                                                scale_v_like_noise=cfg.scale_v_pred_loss_like_noise_pred)
                    if cfg.v_pred_like_loss:
                        loss = nz.v_pred_like_loss(loss, s, cfg.v_pred_like_loss)
                    loss = loss.mean()
                    if not torch.isfinite(loss):
                        raise _NaNLoss(global_step + 1)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(raw_network.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)

                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                if cfg.scale_weight_norms:
                    raw_network.apply_max_norm(cfg.scale_weight_norms)
                value = accelerator.gather(loss.detach().reshape(1)).mean().item()
                epoch_losses.append(value)
                loss_window = (loss_window + [value])[-100:]
                now = time.time()
                step_times = (step_times + [now - last_time])[-20:]
                last_time = now
                sec = sum(step_times) / len(step_times)
                lrs = dict(zip(group_names, current_lrs(optimizer)))
                lr_shown = lrs.get("unet", next(iter(lrs.values())))
                avg = sum(loss_window) / len(loss_window)
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{value:.4f}", avr_loss=f"{avg:.4f}", lr=f"{lr_shown:.2e}")
                if board:
                    board.add_scalar("loss/current", value, global_step)
                    board.add_scalar("loss/average", avg, global_step)
                    for part, lr_value in lrs.items():
                        board.add_scalar(f"lr/{part}", lr_value, global_step)
                events.emit("step", step=global_step, total_steps=total_steps, epoch=epoch, epochs=epochs, loss=value,
                            avg_loss=avg, lr=lr_shown, lrs=lrs, sec_per_step=sec, eta_sec=sec * (total_steps - global_step))
                if sampler and cfg.sample_every_n_epochs <= 0 and cfg.sample_every_n_steps > 0 \
                        and global_step % cfg.sample_every_n_steps == 0 and main:
                    sampler.sample(step=global_step, epoch=epoch)
                if cfg.save_every_n_steps and global_step % cfg.save_every_n_steps == 0 and global_step < total_steps and main:
                    last_good = save(ckpt.step_file(name, global_step), epoch - 1, with_state=cfg.save_state)
                if stop.requested:
                    raise _Stop()

            avg_epoch = sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan")
            events.emit("epoch", epoch=epoch, epochs=epochs, avg_loss=avg_epoch, step=global_step)
            if board and epoch_losses:
                board.add_scalar("loss/epoch_average", avg_epoch, epoch)
            if main and cfg.save_every_n_epochs and epoch % cfg.save_every_n_epochs == 0 and epoch < epochs:
                last_good = save(ckpt.epoch_file(name, epoch), epoch, with_state=cfg.save_state)
                ckpt.prune(out_dir, name, keep_epochs=cfg.save_last_n_epochs, keep_epoch_states=cfg.save_last_n_epochs_state)
            if sampler and main and cfg.sample_every_n_epochs > 0 and epoch % cfg.sample_every_n_epochs == 0:
                sampler.sample(step=global_step, epoch=epoch)
            if global_step >= total_steps:
                break
        accelerator.wait_for_everyone()
        final = None
        if main:
            final = save(ckpt.final_file(name), epoch, with_state=cfg.save_state_on_train_end or cfg.save_state)
            events.emit("done", path=final, step=global_step, epoch=epoch, seconds=round(time.time() - started_at, 1))
        return TrainResult("done", final, global_step, epoch, saved)
    except _Stop:
        path = save(ckpt.step_file(name, global_step), epoch - 1, with_state=True) if main else None
        events.emit("stopped", path=path, step=global_step, epoch=epoch,
                    state=str(out_dir / ckpt.state_dir_for(ckpt.step_file(name, global_step))))
        return TrainResult("stopped", path, global_step, epoch, saved)
    except _NaNLoss as nan:
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint had been saved yet"
        raise UserError(
            f"the loss became NaN/inf at step {nan.step}; training stopped ({where})", field="learning_rate",
            fix="lower the learning rate; with fp16 use bf16 or fp32 (an fp16 VAE or base often overflows, "
                "for SDXL keep 'No half VAE' on); check the images are not corrupt") from None
    finally:
        bar.close()
        if board:
            board.close()
        if sampler:
            sampler.close()


def _tensorboard(cfg: TrainingConfig, name: str):
    """A TensorBoard writer under `<logging_dir>/<name>YYYYmmddHHMMSS/network_train` (sd-scripts' layout), or None."""
    if not cfg.logging_dir.strip():
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(cfg.logging_dir).expanduser() / f"{name}{time.strftime('%Y%m%d%H%M%S')}" / "network_train"
    return SummaryWriter(str(folder))


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


class _NaNLoss(Exception):
    def __init__(self, step: int):
        super().__init__(step)
        self.step = step
