"""Loss shaping and noise formulas (reference §7)."""

import torch

from kohya_lite.engine.noise import (
    alphas_cumprod, huber_c, offset_noise, per_sample_loss, pyramid_noise, snr, snr_weight,
)


def test_schedule_matches_diffusers():
    from diffusers import DDPMScheduler

    s = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    assert torch.allclose(alphas_cumprod(), s.alphas_cumprod.float(), atol=1e-6)


def test_min_snr_weights():
    ab = alphas_cumprod()
    t = torch.tensor([10, 500, 999])
    s = snr(ab, t)
    w = snr_weight(s, min_snr_gamma=5)
    assert torch.allclose(w, torch.minimum(s, torch.tensor(5.0)) / s)
    assert w[0] < 1 and w[2] == 1, "high-SNR (small t) steps are down-weighted"
    wv = snr_weight(s, min_snr_gamma=5, v_prediction=True)
    assert torch.allclose(wv, torch.minimum(s, torch.tensor(5.0)) / (s + 1))
    assert torch.equal(snr_weight(s), torch.ones(3))
    d = snr_weight(s, debiased=True)
    assert torch.allclose(d, 1 / torch.sqrt(torch.clamp(s, max=1000)))


def test_offset_noise_shapes_and_effect():
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(2, 4, 8, 8)
    n = torch.randn(2, 4, 8, 8)
    assert offset_noise(n, lat, 0.0) is n
    out = offset_noise(n, lat, 0.1, generator=g)
    diff = out - n
    assert torch.allclose(diff, diff[:, :, :1, :1].expand_as(diff)), "offset is constant per sample and channel"
    assert out.shape == n.shape


def test_pyramid_noise_is_unit_std():
    n = torch.randn(1, 4, 32, 32)
    p = pyramid_noise(n, 6, 0.3, generator=torch.Generator().manual_seed(1))
    assert abs(p.std().item() - 1) < 1e-4 and not torch.equal(p, n)


def test_losses():
    p, y = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    assert torch.allclose(per_sample_loss(p, y, "l2"), torch.ones(2))
    assert torch.allclose(per_sample_loss(p, y * 2, "l1"), torch.full((2,), 2.0))
    c = torch.full((2,), 0.1)
    h = per_sample_loss(p, y, "huber", c)
    assert torch.allclose(h, 2 * 0.1 * (torch.sqrt(torch.tensor(1.01)) - 0.1))
    ab = alphas_cumprod()
    hc = huber_c(torch.tensor([0, 999]), ab, "snr", 0.1, 1.0)
    assert hc[0] > hc[1] >= 0.1
