"""The engine's stages on their own: diffusion maths, noise options, captions, reg balancing, SDXL crop ids,
batches, checkpoints and state files, run context, image loading and the latent cache key."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from kohya_lite.config import TrainingConfig
from kohya_lite.dataset.buckets import conditioning_crop_ltrb, sdxl_crop_top_left
from kohya_lite.dataset.captions import CaptionSettings, process_caption
from kohya_lite.dataset.loader import balance_reg
from kohya_lite.engine import checkpoints as ckpt
from kohya_lite.engine import statefile
from kohya_lite.engine.context import resolve_precision
from kohya_lite.engine.diffusion import LossSettings, NoiseSettings, add_noise, diffusion_loss
from kohya_lite.engine.noise import alphas_cumprod, offset_noise, pyramid_noise
from kohya_lite.engine.train import micro_batch_groups
from kohya_lite.media import load_rgb

AB = alphas_cumprod()


# ---- diffusion maths ---------------------------------------------------------------------------------------------

class Recorder:
    """A stand-in denoiser that returns zeros and keeps what it was given (the maths under test is around it)."""

    def __init__(self):
        self.inputs = []

    def __call__(self, noisy, t):
        self.inputs.append((noisy, t))
        return torch.zeros_like(noisy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_timestep_gets_its_noise_in_every_precision(dtype):
    """ᾱ, the noisy latents and the target are fp32; only the denoiser's input is cast. In bf16 the old code
    rounded ᾱ of the first timesteps to 1 (no noise at t=0–1) and missed σ by >5% at a dozen timesteps."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1000, 4, 8, 8, generator=g)
    rec = Recorder()
    for t in (0, 1, 2, 10, 100, 500, 999):
        s = NoiseSettings(min_timestep=t, max_timestep=t + 1)
        out = diffusion_loss(rec, x0[:64], alphas_bar=AB, noise=s, loss=LossSettings(), generator=g, input_dtype=dtype)
        noisy, ts = rec.inputs[-1]
        assert noisy.dtype == dtype and int(ts[0]) == t and out.loss.dtype == torch.float32
        a = AB[t]
        residual = noisy.float() - a.sqrt() * x0[:64]
        sigma = residual.std().item()
        assert sigma == pytest.approx((1 - a).sqrt().item(), rel=0.05), (t, dtype)


def test_target_is_fp32_epsilon_or_v():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 8, 8)
    nb = add_noise(x0.to(torch.bfloat16), AB, NoiseSettings(), g, v_prediction=True)
    a = AB[nb.timesteps].view(-1, 1, 1, 1)
    x0_used = x0.to(torch.bfloat16).float()
    assert nb.target.dtype == torch.float32 and nb.noisy.dtype == torch.float32
    torch.testing.assert_close(nb.target, a.sqrt() * nb.noise - (1 - a).sqrt() * x0_used)
    eps = add_noise(x0, AB, NoiseSettings(), torch.Generator().manual_seed(1))
    assert torch.equal(eps.target, eps.noise)


def test_loss_weighting_order_and_prior_weights():
    x0 = torch.randn(4, 4, 8, 8)
    weights = torch.tensor([1.0, 1.0, 0.5, 0.5])
    plain = diffusion_loss(Recorder(), x0, alphas_bar=AB, noise=NoiseSettings(), loss=LossSettings(),
                           generator=torch.Generator().manual_seed(2), sample_weights=weights)
    snr = diffusion_loss(Recorder(), x0, alphas_bar=AB, noise=NoiseSettings(), loss=LossSettings(min_snr_gamma=5),
                         generator=torch.Generator().manual_seed(2), sample_weights=weights)
    assert torch.equal(plain.timesteps, snr.timesteps)
    s = AB[plain.timesteps] / (1 - AB[plain.timesteps])
    torch.testing.assert_close(snr.per_sample, plain.per_sample * torch.clamp(s, max=5) / s)
    # zeros predicted: the l2 loss is the target's mean square, weighted per sample
    unweighted = diffusion_loss(Recorder(), x0, alphas_bar=AB, noise=NoiseSettings(), loss=LossSettings(),
                                generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(plain.per_sample, unweighted.per_sample * weights)


def test_noise_options_follow_noise_offset_type():
    """kohya_ss passes offset options only for 'Original' and pyramid options only for 'Multires'."""
    cfg = TrainingConfig(noise_offset=0.1, adaptive_noise_scale=0.02, noise_offset_random_strength=True,
                         multires_noise_iterations=6, multires_noise_discount=0.3, max_timestep=0)
    orig = NoiseSettings.from_config(cfg.replace(noise_offset_type="Original"))
    assert orig.offset == 0.1 and orig.adaptive_scale == 0.02 and orig.offset_random_strength
    assert orig.multires_iterations == 0 and orig.max_timestep == 1000, "max_timestep 0 means 1000"
    multi = NoiseSettings.from_config(cfg.replace(noise_offset_type="Multires"))
    assert multi.multires_iterations == 6 and multi.offset == 0 and multi.adaptive_scale == 0
    assert not multi.offset_random_strength


def test_random_offset_strength_is_one_draw_per_batch():
    noise, lat = torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)
    out = offset_noise(noise, lat, 0.1, random_strength=True, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    strength = 0.1 * torch.rand(1, generator=g).item()
    expected = strength * torch.randn(3, 4, 1, 1, generator=g)
    torch.testing.assert_close(out, expected.expand(3, 4, 2, 2))


def test_pyramid_noise_starts_at_full_resolution():
    """sd-scripts iterates i = 0 … n−1: even one iteration adds a full-size layer (the old loop started at 1)."""
    n = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    one = pyramid_noise(n, 1, 0.3, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(one, n / n.std(), atol=1e-3)
    g = torch.Generator().manual_seed(1)
    torch.rand(1, generator=g)
    extra = torch.randn(1, 4, 16, 16, generator=g)
    torch.testing.assert_close(one, (n + extra) / (n + extra).std())


# ---- captions, reg balancing, SDXL crop ids ----------------------------------------------------------------------

def test_caption_tags_as_sd_scripts():
    rng = random.Random(0)
    keep = CaptionSettings(shuffle=True, keep_tokens=1)
    out = process_caption("zkz, a,, b", keep, rng=rng)
    assert out.startswith("zkz, ") and sorted(out.split(", ")) == sorted(["zkz", "a", "", "b"]), "empty tags kept"
    sep = CaptionSettings(shuffle=True, keep_tokens_separator="|||")
    for _ in range(5):
        out = process_caption("zkz, woman ||| red, hat, , smile ||| best quality", sep, rng=rng)
        parts = out.split(", ")
        assert parts[:2] == ["zkz", "woman"] and parts[-1] == "best quality" and sorted(parts[2:-1]) == ["hat", "red", "smile"]
    drop = CaptionSettings(tag_dropout_rate=0.5, keep_tokens=1)
    kept = [len(process_caption("zkz, a, b, c, d, e, f, g", drop, rng=rng).split(", ")) - 1 for _ in range(200)]
    assert 2.5 < np.mean(kept) < 4.5 and all(
        process_caption("zkz, a, b", drop, rng=rng).startswith("zkz") for _ in range(20))
    assert process_caption("x, y", CaptionSettings(dropout_every_n_epochs=2), rng=rng, epoch=4) == ""
    assert not drop.static and CaptionSettings().static


def test_reg_balancing_takes_whole_folders_first():
    # first pass: each image with its folder's repeats, even past the target (sd-scripts registers them whole)
    assert sorted(balance_reg([(0, 3), (1, 3), (2, 3), (3, 3)], 10)) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # then one repeat at a time, round-robin
    assert sorted(balance_reg([(0, 1), (1, 1)], 5)) == [0, 0, 0, 1, 1]
    assert balance_reg([(0, 2), (1, 2)], 2) == [0, 0], "images the first pass does not reach stay unused"
    assert balance_reg([], 5) == []


def test_sdxl_crop_conditioning_as_get_crop_ltrb():
    # a wide image in a square bucket: fitted inside, centred vertically
    assert conditioning_crop_ltrb((64, 64), (128, 64)) == (0.0, 16.0, 64.0, 48.0)
    assert sdxl_crop_top_left((64, 64), (128, 64), flipped=False) == (16, 0)
    # a tall image in a wide bucket: centred horizontally; flipped, left is measured from the right edge
    left, top, right, bottom = conditioning_crop_ltrb((128, 64), (50, 100))
    assert (left, top) == (48.0, 0.0) and right == 80.0
    assert sdxl_crop_top_left((128, 64), (50, 100), flipped=True) == (0, 48)
    assert sdxl_crop_top_left((128, 64), (40, 100), flipped=True) == (0, int(128 - (51.0 + 25.6)))


def test_micro_batches_group_within_an_epoch():
    assert [len(g) for g in micro_batch_groups(iter(range(5)), 2)] == [2, 2, 1]
    assert [g for g in micro_batch_groups(iter(range(4)), 1)] == [[0], [1], [2], [3]]


# ---- precision ---------------------------------------------------------------------------------------------------

def test_precision_on_cpu_and_gpu():
    assert resolve_precision("bf16", cuda=False) == ("bf16", None), "CPU autocast runs bf16"
    p, warning = resolve_precision("fp16", cuda=False)
    assert p == "no" and "fp16" in warning
    p, warning = resolve_precision("fp16", cuda=False, cpu_bf16=True)
    assert p == "bf16" and "bf16" in warning
    assert resolve_precision("bf16", cuda=True, cuda_bf16=False)[0] == "fp16"
    assert resolve_precision("fp16", cuda=True) == ("fp16", None)
    assert resolve_precision("no", cuda=True) == ("no", None)


# ---- checkpoints and state ---------------------------------------------------------------------------------------

def test_state_tree_round_trip_without_pickle(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 3))], lr=1e-3)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 3)
    opt.step()
    tree = {"opt": opt.state_dict(), "rng": ckpt.capture_rng(torch.Generator().manual_seed(3)), "t": (1, 2.5, None),
            "inf": float("inf"), 7: "int key"}
    statefile.save_tree(tmp_path, "x", tree)
    back = statefile.load_tree(tmp_path, "x")
    assert back[7] == "int key" and back["t"] == (1, 2.5, None) and back["inf"] == float("inf")
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 3))], lr=1e-3)
    fresh.load_state_dict(back["opt"])
    torch.testing.assert_close(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.bin"))


def test_rng_capture_restores_every_generator():
    gen = torch.Generator().manual_seed(9)
    state = ckpt.capture_rng(gen)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1), gen.manual_seed(1)
    ckpt.restore_rng(state, gen)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())


def test_crafted_state_folder_does_not_execute_code(tmp_path):
    """kohya-lite 0.1 loaded optimizer.bin with torch.load(weights_only=False): a pickle that runs code. Such a
    folder is refused now, and the current format has nothing that could run."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = tmp_path / "zkz-000001-state"
    state.mkdir()
    for name in ("optimizer.bin", "scheduler.bin", "random_states.pkl"):
        (state / name).write_bytes(pickle.dumps(Evil()))
    (state / ckpt.TRAIN_STATE).write_text('{"current_epoch": 1, "current_step": 2}')
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(state / "network.safetensors"))
    from kohya_lite.errors import UserError

    with pytest.raises(UserError) as e:
        ckpt.load_state(state)
    assert "pickle" in e.value.message and e.value.field == "resume" and not marker.exists()
    # a current-format folder whose JSON names a Python object is just data
    (state / "optimizer.json").write_text('{"__reduce__": ["os.system", ["touch pwned"]]}')
    for name in ("optimizer", "scheduler", "rng"):
        save_file({}, str(state / f"{name}.safetensors"))
    (state / "scheduler.json").write_text("{}")
    (state / "rng.json").write_text("{}")
    loaded = ckpt.load_state(state)
    assert loaded.optimizer_state == {"__reduce__": ["os.system", ["touch pwned"]]} and not marker.exists()


class _Net(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((2,), value))

    def kohya_state_dict(self):
        return {"lora_unet_x.lora_down.weight": self.w.detach().view(2, 1),
                "lora_unet_x.lora_up.weight": self.w.detach().view(1, 2), "lora_unet_x.alpha": torch.tensor(1.0)}


def test_checkpoint_writer_never_writes_non_finite_weights(tmp_path):
    events = []

    class Ev:
        def emit(self, type, **kw):
            events.append((type, kw))

    good = ckpt.CheckpointWriter(tmp_path, "zkz", network=_Net(0.5), save_precision="fp16", metadata=lambda e, s: {},
                                 events=Ev(), state_parts=dict)
    path = good.save(ckpt.epoch_file("zkz", 1), epoch=1, step=3, with_state=False)
    assert good.last_good == path and path.is_file()
    good.network = _Net(1e6)  # finite in fp32, inf once saved as fp16
    with pytest.raises(ckpt.NonFiniteWeights):
        good.save(ckpt.epoch_file("zkz", 2), epoch=2, step=6, with_state=False)
    assert good.last_good == path and not (tmp_path / ckpt.epoch_file("zkz", 2)).exists()
    assert [t for t, _ in events] == ["checkpoint"]


def test_pruning_epochs_steps_and_states(tmp_path):
    for e in range(1, 6):
        (tmp_path / ckpt.epoch_file("zkz", e)).write_bytes(b"x")
        (tmp_path / ckpt.state_dir_for(ckpt.epoch_file("zkz", e))).mkdir()
    for s in (10, 20, 30, 40, 50):
        (tmp_path / ckpt.step_file("zkz", s)).write_bytes(b"x")
        (tmp_path / ckpt.state_dir_for(ckpt.step_file("zkz", s))).mkdir()
    ckpt.prune(tmp_path, "zkz", keep_epochs=2, keep_epoch_states=0)  # states fall back to keep_epochs
    assert sorted(p.name for p in tmp_path.glob("zkz-0*")) == [
        "zkz-000004-state", "zkz-000004.safetensors", "zkz-000005-state", "zkz-000005.safetensors"]
    ckpt.prune_steps(tmp_path, "zkz", 50, keep_steps=30, keep_step_states=10)  # sd-scripts: the last 30 *steps*
    assert sorted(p.name for p in tmp_path.glob("zkz-step*.safetensors")) == [
        ckpt.step_file("zkz", s) for s in (20, 30, 40, 50)]
    assert sorted(p.name for p in tmp_path.glob("zkz-step*-state")) == [
        ckpt.state_dir_for(ckpt.step_file("zkz", s)) for s in (40, 50)]


# ---- images and the latent cache key -----------------------------------------------------------------------------

def test_sixteen_bit_images_keep_their_tones(tmp_path):
    import cv2

    gray16 = np.full((16, 16), 32768, dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    rgb16 = np.zeros((16, 16, 3), dtype=np.uint16)
    rgb16[..., 2] = 65535  # BGR: red
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16)
    g = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert g.shape == (16, 16, 3) and abs(int(g[0, 0, 0]) - 128) <= 1, "16-bit gray stays mid-gray, not white"
    assert tuple(np.asarray(load_rgb(tmp_path / "rgb16.png"))[0, 0]) == (255, 0, 0)
    Image.fromarray(np.full((8, 8), 0.25, dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    assert abs(int(np.asarray(load_rgb(tmp_path / "f.tif"))[0, 0, 0]) - 64) <= 1


def test_latent_cache_key_follows_the_image_and_the_vae(tmp_path, tiny_sd1_dir):
    import os

    from diffusers import AutoencoderKL

    from kohya_lite.dataset.buckets import BucketSettings
    from kohya_lite.dataset.loader import Item, cache_file, vae_fingerprint

    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(img)
    item = Item(img, "c", "1_x", False, (64, 64), BucketSettings((64, 64)).assign((64, 64)))
    vae = AutoencoderKL.from_pretrained(tiny_sd1_dir / "vae")
    first = cache_file(tmp_path, item, vae_fingerprint(vae))
    assert cache_file(tmp_path, item, vae_fingerprint(vae)) == first
    Image.new("RGB", (64, 64), (200, 20, 30)).save(img)
    os.utime(img, ns=(1, 1_000_000_000))
    edited = cache_file(tmp_path, item, vae_fingerprint(vae))
    assert edited != first, "an edited image gets a new cache file"
    with torch.no_grad():
        vae.decoder.conv_out.weight.add_(1.0)
        vae.encoder.conv_in.weight.add_(1.0)
    assert cache_file(tmp_path, item, vae_fingerprint(vae)) != edited, "another VAE gets a new cache file"
