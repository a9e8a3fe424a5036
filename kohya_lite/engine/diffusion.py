"""One training step's diffusion maths, as a pure function: timesteps, noise (offset, multires, input
perturbation), the noisy input, the target, and the per-sample loss with its weighting.

It follows sd-scripts (`get_noise_noisy_latents_and_timesteps`, `conditional_loss`, `post_process_loss`)
with one rule of our own: everything is computed in fp32, and only the denoiser's input is cast to the
model's dtype. (In bf16, ᾱ of the first timesteps rounds to 1, so those steps would get no noise at all.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from kohya_lite.engine import noise as nz


@dataclass(frozen=True)
class NoiseSettings:
    offset: float = 0.0
    offset_random_strength: bool = False
    adaptive_scale: float = 0.0
    multires_iterations: int = 0
    multires_discount: float = 0.3
    ip_gamma: float = 0.0
    ip_gamma_random_strength: bool = False
    min_timestep: int = 0
    max_timestep: int = 1000

    @classmethod
    def from_config(cls, cfg) -> "NoiseSettings":
        """kohya_ss passes the offset options only with noise_offset_type 'Original' and the pyramid ones only
        with 'Multires'; a max_timestep of 0 is unset (sd-scripts then uses 1000)."""
        original = cfg.noise_offset_type != "Multires"
        return cls(
            offset=cfg.noise_offset if original else 0.0,
            offset_random_strength=cfg.noise_offset_random_strength and original,
            adaptive_scale=cfg.adaptive_noise_scale if original and cfg.noise_offset else 0.0,
            multires_iterations=0 if original else cfg.multires_noise_iterations,
            multires_discount=cfg.multires_noise_discount,
            ip_gamma=cfg.ip_noise_gamma,
            ip_gamma_random_strength=cfg.ip_noise_gamma_random_strength,
            min_timestep=cfg.min_timestep,
            max_timestep=cfg.max_timestep or 1000,
        )


@dataclass(frozen=True)
class LossSettings:
    loss_type: str = "l2"
    huber_schedule: str = "snr"
    huber_c: float = 0.1
    huber_scale: float = 1.0
    min_snr_gamma: float = 0.0
    v_prediction: bool = False
    debiased: bool = False
    scale_v_like_noise: bool = False
    v_pred_like: float = 0.0

    @classmethod
    def from_config(cls, cfg, *, v_prediction: bool) -> "LossSettings":
        return cls(cfg.loss_type, cfg.huber_schedule, cfg.huber_c, cfg.huber_scale, cfg.min_snr_gamma, v_prediction,
                   cfg.debiased_estimation_loss, cfg.scale_v_pred_loss_like_noise_pred, cfg.v_pred_like_loss)


@dataclass
class NoisyBatch:
    """The forward-diffusion sample of a batch (all fp32)."""

    timesteps: torch.Tensor  # [B] long
    noise: torch.Tensor  # the noise the target is built from (offset/multires applied)
    noisy: torch.Tensor  # √ᾱ·x0 + √(1−ᾱ)·(noise + ip-noise)
    target: torch.Tensor  # noise, or v = √ᾱ·noise − √(1−ᾱ)·x0


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: mean of `per_sample`
    per_sample: torch.Tensor  # [B], weighted
    timesteps: torch.Tensor


def sample_timesteps(batch: int, settings: NoiseSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform on {min … max−1}; a single value when the range is empty (sd-scripts `get_timesteps`)."""
    lo, hi = settings.min_timestep, settings.max_timestep
    if lo < hi:
        return torch.randint(lo, hi, (batch,), generator=generator)
    return torch.full((batch,), hi, dtype=torch.long)


def add_noise(latents: torch.Tensor, alphas_bar: torch.Tensor, settings: NoiseSettings,
              generator: torch.Generator | None, *, v_prediction: bool = False) -> NoisyBatch:
    """Draw noise and timesteps (from `generator`, on the CPU) and build the noisy latents and the target."""
    x0 = latents.float()
    device = x0.device
    noise = torch.randn(x0.shape, generator=generator).to(device)
    noise = nz.offset_noise(noise, x0, settings.offset, random_strength=settings.offset_random_strength,
                            adaptive_scale=settings.adaptive_scale, generator=generator)
    noise = nz.pyramid_noise(noise, settings.multires_iterations, settings.multires_discount, generator=generator)
    t = sample_timesteps(x0.shape[0], settings, generator)
    a = alphas_bar.to(torch.float32)[t].to(device).view(-1, 1, 1, 1)
    input_noise = noise
    if settings.ip_gamma:
        gamma = settings.ip_gamma
        if settings.ip_gamma_random_strength:
            gamma = gamma * torch.rand(1, generator=generator).item()
        input_noise = noise + gamma * torch.randn(x0.shape, generator=generator).to(device)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * input_noise
    target = a.sqrt() * noise - (1 - a).sqrt() * x0 if v_prediction else noise
    return NoisyBatch(t.to(device), noise, noisy, target)


def weigh_loss(per_sample: torch.Tensor, timesteps: torch.Tensor, alphas_bar: torch.Tensor,
               settings: LossSettings) -> torch.Tensor:
    """sd-scripts `post_process_loss`: min-SNR, v-like scaling, v-pred-like loss, debiased estimation."""
    s = nz.snr(alphas_bar.float(), timesteps.cpu()).to(per_sample.device)
    loss = per_sample * nz.snr_weight(s, min_snr_gamma=settings.min_snr_gamma, v_prediction=settings.v_prediction,
                                      debiased=settings.debiased, scale_v_like_noise=settings.scale_v_like_noise)
    if settings.v_pred_like:
        loss = nz.v_pred_like_loss(loss, s, settings.v_pred_like)
    return loss


def diffusion_loss(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], latents: torch.Tensor, *,
                   alphas_bar: torch.Tensor, noise: NoiseSettings, loss: LossSettings,
                   generator: torch.Generator | None, input_dtype: torch.dtype = torch.float32,
                   sample_weights: torch.Tensor | None = None) -> LossOutput:
    """The loss of one batch. `denoise(noisy_input, timesteps)` is the model (UNet with its conditioning
    bound); it gets the noisy latents cast to `input_dtype`, everything else stays fp32.
    `sample_weights` [B] multiplies each sample's loss (prior_loss_weight for regularization images)."""
    nb = add_noise(latents, alphas_bar, noise, generator, v_prediction=loss.v_prediction)
    pred = denoise(nb.noisy.to(input_dtype), nb.timesteps)
    c = None
    if loss.loss_type in ("huber", "smooth_l1"):
        c = nz.huber_c(nb.timesteps.cpu(), alphas_bar.float(), loss.huber_schedule, loss.huber_c,
                       loss.huber_scale).to(nb.target.device)
    per_sample = nz.per_sample_loss(pred.float(), nb.target, loss.loss_type, c)
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(per_sample.device, torch.float32)
    per_sample = weigh_loss(per_sample, nb.timesteps, alphas_bar, loss)
    return LossOutput(per_sample.mean(), per_sample, nb.timesteps)
