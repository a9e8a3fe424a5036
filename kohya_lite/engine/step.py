"""One optimizer step: the loss of each micro-batch, backward, gradient clipping, the optimizer and LR-schedule
step, or a skipped step when the loss or the gradients are not finite."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from kohya_lite.dataset.loader import encode_pixels
from kohya_lite.engine.batches import Batch
from kohya_lite.engine.diffusion import LossSettings, NoiseSettings, diffusion_loss
from kohya_lite.engine.noise import alphas_cumprod
from kohya_lite.errors import UserError


class BatchLoss:
    """A micro-batch → its diffusion loss (graph kept for backward): latents (cached, or encoded now), the text
    conditioning, SDXL's added conditions, the UNet under autocast."""

    def __init__(self, ctx, model, denoiser, conditioner, noise: NoiseSettings, loss: LossSettings):
        self.ctx, self.model, self.denoiser, self.conditioner = ctx, model, denoiser, conditioner
        self.noise, self.loss = noise, loss
        self.alphas_bar = alphas_cumprod()

    def __call__(self, batch: Batch) -> torch.Tensor:
        ctx = self.ctx
        if batch.problem:
            p = batch.problem
            raise UserError(p.message, field=p.field, file=p.file, fix=p.fix)
        if batch.latents is not None:
            latents = batch.latents.to(ctx.device)
        else:
            latents = encode_pixels(self.model.vae, batch.pixels, ctx.noise_generator).float()
        emb, pooled = self.conditioner(batch.captions)
        cond = {}
        if batch.time_ids is not None:
            cond["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": batch.time_ids.to(ctx.device, emb.dtype)}

        def denoise(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with ctx.autocast():
                return self.denoiser(noisy, t, emb, **cond)

        return diffusion_loss(denoise, latents, alphas_bar=self.alphas_bar, noise=self.noise, loss=self.loss,
                              generator=ctx.noise_generator, input_dtype=ctx.weight_dtype,
                              sample_weights=batch.weights).loss


@dataclass
class StepOutcome:
    loss: float  # mean over the micro-batches (and processes)
    stepped: bool  # the optimizer and the LR schedule moved
    bad: bool  # the loss, or (outside fp16) the gradients, were not finite


class OptimizerStep:
    """Backward over a group of micro-batches (DDP syncs on the last one only), each loss divided by
    `accumulation` as accelerate does; clip; then step — or skip: the fp16 grad scaler skips an overflowing step
    itself, other precisions skip a non-finite loss or gradient. The schedule moves only when the optimizer did."""

    def __init__(self, ctx, denoiser, optimizer, scheduler, params, *, batch_loss: BatchLoss, accumulation: int,
                 max_grad_norm: float):
        self.ctx, self.denoiser, self.optimizer, self.scheduler, self.params = ctx, denoiser, optimizer, scheduler, params
        self.batch_loss, self.accumulation, self.max_grad_norm = batch_loss, accumulation, max_grad_norm

    def __call__(self, group: list[Batch]) -> StepOutcome:
        acc = self.ctx.accelerator
        losses = []
        for i, batch in enumerate(group):
            with nullcontext() if i == len(group) - 1 else acc.no_sync(self.denoiser):
                loss = self.batch_loss(batch)
                acc.backward(loss / self.accumulation)
            losses.append(loss.detach())
        loss_value = acc.gather(torch.stack(losses).mean().reshape(1)).mean().item()
        norm = acc.clip_grad_norm_(self.params, self.max_grad_norm or math.inf)
        loss_ok, grads_ok = math.isfinite(loss_value), bool(torch.isfinite(torch.as_tensor(norm)))
        fp16 = self.ctx.precision == "fp16"
        if fp16:
            self.optimizer.step()
            stepped = not acc.optimizer_step_was_skipped
        else:
            stepped = loss_ok and grads_ok
            if stepped:
                self.optimizer.step()
        if stepped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(loss_value, stepped, bad=not loss_ok or (not grads_ok and not fp16))
