"""Noise, timesteps and loss shaping (reference §7), as pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alphas_cumprod(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """scaled_linear DDPM schedule: β = linspace(√β0, √β1)², ᾱ = Π(1 − β)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def snr(alphas_bar: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    a = alphas_bar.to(timesteps.device)[timesteps]
    return a / (1.0 - a)


def offset_noise(noise: torch.Tensor, latents: torch.Tensor, offset: float, *, random_strength: bool = False,
                 adaptive_scale: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """`noise + o·randn(B, C, 1, 1)` (sd-scripts `apply_noise_offset`). With `random_strength` o is scaled by
    one U(0, 1) draw for the whole batch; `adaptive_scale` adds `scale·|mean(latents)|` per sample and channel.
    Random numbers come from `generator` on the CPU, so a run is reproducible on any device."""
    if not offset:
        return noise
    b, c = latents.shape[:2]
    strength: torch.Tensor | float = offset
    if random_strength:
        strength = offset * torch.rand(1, generator=generator).item()
    if adaptive_scale:
        mean = latents.float().mean(dim=(2, 3), keepdim=True).abs()
        strength = torch.clamp(strength + adaptive_scale * mean, min=0.0)
    shift = torch.randn(b, c, 1, 1, generator=generator).to(noise.device, noise.dtype)
    return noise + strength * shift


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Multires noise (sd-scripts `pyramid_noise_like`): for i = 0 … iterations−1 add noise drawn at
    1/r^i of the size (r ~ U(2, 4)), upsampled bilinearly, weighted discount^i; stop at 1 pixel; renormalise."""
    if iterations <= 0:
        return noise
    b, c, h, w = noise.shape
    out = noise.clone()
    for i in range(iterations):
        r = torch.rand(1, generator=generator).item() * 2 + 2
        sh, sw = max(1, int(h / r**i)), max(1, int(w / r**i))
        coarse = torch.randn(b, c, sh, sw, generator=generator).to(noise.device, noise.dtype)
        out = out + F.interpolate(coarse, size=(h, w), mode="bilinear") * discount**i
        if sh == 1 or sw == 1:
            break
    return out / out.std()


def snr_weight(snr_t: torch.Tensor, *, min_snr_gamma: float = 0.0, v_prediction: bool = False,
               debiased: bool = False, scale_v_like_noise: bool = False) -> torch.Tensor:
    """Per-sample loss weights from the SNR options; ones when none is set."""
    w = torch.ones_like(snr_t)
    if min_snr_gamma:
        gamma = torch.minimum(snr_t, torch.full_like(snr_t, min_snr_gamma))
        w = w * (gamma / (snr_t + 1) if v_prediction else gamma / snr_t)
    s = torch.clamp(snr_t, max=1000)
    if scale_v_like_noise:
        w = w * (s / (s + 1))
    if debiased:
        w = w * (1 / (s + 1) if v_prediction else 1 / torch.sqrt(s))
    return w


def huber_c(timesteps: torch.Tensor, alphas_bar: torch.Tensor, schedule: str, c: float, scale: float) -> torch.Tensor:
    t = timesteps.float()
    if schedule == "constant":
        return torch.full_like(t, c * scale)
    if schedule == "exponential":
        alpha = -torch.log(torch.tensor(c)) / 1000
        return torch.exp(-alpha * t) * scale
    a = alphas_bar.to(timesteps.device)[timesteps]
    sigma = ((1 - a) / a).sqrt()
    return (1 - c) / (1 + sigma) ** 2 + c


def per_sample_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str = "l2",
                    c: torch.Tensor | None = None) -> torch.Tensor:
    """Elementwise loss reduced over C, H, W → shape [B]."""
    pred, target = pred.float(), target.float()
    if loss_type == "l1":
        loss = (pred - target).abs()
    elif loss_type in ("huber", "smooth_l1"):
        cc = c.view(-1, 1, 1, 1) if c is not None else torch.tensor(0.1)
        root = torch.sqrt((pred - target) ** 2 + cc**2) - cc
        loss = 2 * cc * root if loss_type == "huber" else 2 * root
    else:
        loss = (pred - target) ** 2
    return loss.mean(dim=(1, 2, 3))


def v_pred_like_loss(loss: torch.Tensor, snr_t: torch.Tensor, weight: float) -> torch.Tensor:
    s = torch.clamp(snr_t, max=1000)
    return loss + weight * loss / (s / (s + 1))
