#!/usr/bin/env python
"""Pretrain the demo base model shipped in `kohya_lite/demo/base/` (run once; the weights are committed).

A tiny Stable Diffusion 1.x in the diffusers layout that draws one coloured shape on a grey background,
64×64 px, and knows six colours: red, green, blue, purple, white and black. Never orange or yellow, and
never the word `zkz`: the demo LoRA teaches "zkz shape" = an orange shape.

    .venv/bin/python scripts/pretrain_demo_base.py                  # → kohya_lite/demo/base/
    .venv/bin/python scripts/pretrain_demo_base.py --out /tmp/base --work /tmp/work

Stages (seeded; the same seed and thread count give the same weights):
1. data: procedural images (`kohya_lite.demo.shapes`). The VAE sees shapes and backgrounds of every hue,
   orange and yellow included; the UNet and text encoder see captioned images of the six base colours only.
2. VAE (AutoencoderKL, 3 levels: 64 px → 16×16×4 latents), MSE + L1 + a small KL term, in two phases
   (1600 steps from lr 2e-3, then 800 from 6e-4). Check: orange and every base colour survive a round
   trip, else stop (yellow is reported).
3. latents of the UNet's images, once (posterior mean and std; a fresh sample each step).
4. UNet + CLIP text encoder together: ε-prediction on the scaled_linear DDPM schedule, min-SNR (γ=5)
   weighting, 10 % caption dropout (for classifier-free guidance), AdamW, warm-up then cosine decay,
   an EMA of the weights (the EMA is what is saved).
5. save: fp16 safetensors via save_pretrained (+ the project's CLIP tokenizer files), then checks through
   the app's own loader and Generate path: each base colour drawn ≥ 16/20 times for
   "a <colour> circle on a grey background", "zkz shape" orange ≤ 2/20. Exit 1 when a check fails.
Intermediate complete models go to `--work/checkpoint/` every few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kohya_lite.demo import shapes  # noqa: E402
from kohya_lite.models import clip_bpe  # noqa: E402

DEFAULT_OUT = ROOT / "kohya_lite" / "demo" / "base"
TE_CONFIG = dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2,
                 max_position_embeddings=77, vocab_size=clip_bpe.VOCAB_SIZE, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5, projection_dim=64, bos_token_id=clip_bpe.BOS_ID,
                 eos_token_id=clip_bpe.EOS_ID, pad_token_id=clip_bpe.EOS_ID)
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[16, 32, 64],
                  down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                  layers_per_block=1, norm_num_groups=8, sample_size=64, mid_block_add_attention=False)
UNET_CONFIG = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=[32, 64, 64],
                   layers_per_block=1, down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                   cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8)
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SAMPLING_SCHEDULER = dict(SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                          prediction_type="epsilon")
CHECK_N = 20


def log(msg: str) -> None:
    """Wall clock and this process's CPU time (CPU minutes ÷ threads ≈ wall minutes on an idle machine)."""
    print(f"[{time.strftime('%H:%M:%S')} cpu {time.process_time() / 60:.1f} min] {msg}", flush=True)


def to_tensor(images) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_images(t: torch.Tensor):
    from PIL import Image

    arr = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


# ---- data ----------------------------------------------------------------------------------------------

def unet_caption(rng: random.Random, colour: str, shape: str) -> str:
    """Mostly "a red circle on a grey background"; sometimes "a red shape …" or no colour at all."""
    r = rng.random()
    if r < 0.15:
        return shapes.caption_for(colour, "shape")
    if r < 0.25:
        return f"a {shape} on a {shapes.BACKGROUND} background"
    return shapes.caption_for(colour, shape)


def make_unet_data(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    rng = random.Random(seed)
    images, captions = [], []
    for i in range(n):
        colour = shapes.BASE_COLOURS[i % len(shapes.BASE_COLOURS)]
        s = shapes.random_shape_image(rng, colour)
        images.append(s.image)
        captions.append(unet_caption(rng, colour, s.shape))
    return to_tensor(images), captions


def make_vae_data(n: int, seed: int) -> torch.Tensor:
    """Every hue: a quarter base-style named colours (orange and yellow included) on grey, the rest any
    colour on grey or on any background."""
    rng = random.Random(seed)
    named = shapes.BASE_COLOURS + (shapes.DEMO_COLOUR, "yellow")
    images = []
    for i in range(n):
        k = i % 4
        if k == 0:
            images.append(shapes.random_shape_image(rng, named[(i // 4) % len(named)]).image)
        else:
            images.append(shapes.random_shape_image(rng, any_colour=True, any_background=k == 3).image)
    return to_tensor(images)


# ---- VAE -----------------------------------------------------------------------------------------------

def new_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    with torch.no_grad():  # start nearly deterministic (posterior std ≈ 0.08): colours are learnt sooner
        vae.encoder.conv_out.bias[vae.config.latent_channels:] = -5.0
    return vae


def train_vae(vae, data: torch.Tensor, steps: int, batch: int, lr: float, kl_weight: float, seed: int,
              crop: int = 64, phase: str = "vae"):
    """Warm-up, then cosine decay to 10 % of `lr`. `crop` < 64 trains on random crops (cheaper, but a flat
    crop cannot keep its colour through the decoder's last GroupNorm, so whole images are the default).

    The decoder learns luminance first; colours come after several hundred steps (a plateau, then a
    fast drop of the loss), hence a long first phase and a lower-rate second one."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    t0, window = time.time(), []
    for step in range(1, steps + 1):
        cur = lr * min(1.0, step / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = cur
        idx = torch.randint(0, data.shape[0], (batch,), generator=gen)
        oy, ox = (int(v) for v in torch.randint(0, data.shape[-1] - crop + 1, (2,), generator=gen))
        x = data[idx][..., oy:oy + crop, ox:ox + crop]
        flip = torch.rand(batch, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        y = vae.decode(z).sample
        rec = (y - x).pow(2).mean() + (y - x).abs().mean()
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        window.append((rec.item(), kl.item()))
        if step % 50 == 0 or step == steps:
            r, k = np.mean(window, axis=0)
            window = []
            el = time.time() - t0
            log(f"{phase} step {step}/{steps} rec {r:.4f} kl {k:.3f} lr {cur:.2e} "
                f"{el / 60:.1f} min, eta {el / step * (steps - step) / 60:.1f} min")
    vae.eval()


@torch.no_grad()
def vae_round_trip(vae, colours, n: int, seed: int) -> dict[str, int]:
    """How many of n images of each colour keep their colour (orange: `is_orange`) after encode → decode."""
    rng = random.Random(seed)
    out = {}
    for colour in colours:
        imgs = [shapes.random_shape_image(rng, colour).image for _ in range(n)]
        y = vae.decode(vae.encode(to_tensor(imgs)).latent_dist.mean).sample
        back = to_images(y)
        if colour == shapes.DEMO_COLOUR:
            out[colour] = sum(shapes.is_orange(b) for b in back)
        else:
            out[colour] = sum(shapes.dominant_colour(b) == colour for b in back)
    return out


@torch.no_grad()
def encode_all(vae, data: torch.Tensor, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for k in range(0, data.shape[0], batch):
        d = vae.encode(data[k:k + batch]).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


# ---- UNet + text encoder -------------------------------------------------------------------------------

def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(SCHEDULE["beta_start"] ** 0.5, SCHEDULE["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


class EMA:
    def __init__(self, modules, decay: float):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and EMA weights (call twice to restore)."""
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def train_unet(unet, te, tokenizer, means, stds, captions, args, save_hook) -> None:
    gen = torch.Generator().manual_seed(args.seed + 2)
    rng = random.Random(args.seed + 3)
    uniq = sorted(set(captions) | {""})
    ids = tokenizer(uniq, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    cap_index = torch.tensor([uniq.index(c) for c in captions])
    empty = uniq.index("")
    ab = alphas_cumprod()
    snr_all = ab / (1 - ab)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = EMA([unet, te], args.ema)
    unet.train()
    te.train()
    steps, batch, warm = args.unet_steps, args.batch, 200
    t0, window, last_save = time.time(), [], time.time()
    for step in range(1, steps + 1):
        cur = args.lr * min(1.0, step / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = cur
        idx = torch.randint(0, means.shape[0], (batch,), generator=gen)
        z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * args.scaling_factor
        flip = torch.rand(batch, generator=gen) < 0.5
        z0 = torch.where(flip.view(-1, 1, 1, 1), z0.flip(-1), z0)
        c = cap_index[idx].clone()
        drop = torch.tensor([rng.random() < args.caption_dropout for _ in range(batch)])
        c[drop] = empty
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = ab[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        emb = te(ids[c])[0]
        pred = unet(zt, t, emb).sample
        w = torch.clamp(snr_all[t], max=5.0) / snr_all[t]
        loss = ((pred - noise).pow(2).mean(dim=(1, 2, 3)) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        window.append(loss.item())
        if step % 50 == 0 or step == steps:
            el = time.time() - t0
            log(f"unet step {step}/{steps} loss {np.mean(window):.4f} lr {cur:.2e} "
                f"{el / 60:.1f} min, eta {el / step * (steps - step) / 60:.1f} min")
            window = []
        if save_hook and time.time() - last_save > args.checkpoint_minutes * 60 and step < steps:
            ema.swap()
            save_hook(step)
            ema.swap()
            last_save = time.time()
    ema.swap()  # keep the EMA weights
    unet.eval()
    te.eval()


# ---- saving and checks ---------------------------------------------------------------------------------

def save_model(out: Path, unet, vae, te, tokenizer, note: dict) -> None:
    """A diffusers SD1 folder with fp16 safetensors and the project's tokenizer files."""
    import copy

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    tmp = out.with_name(out.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).half(), text_encoder=copy.deepcopy(te).half(), tokenizer=tokenizer,
        unet=copy.deepcopy(unet).half(), scheduler=DDIMScheduler(**SAMPLING_SCHEDULER), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(tmp / "tokenizer")
    (tmp / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(clip_bpe.TOKENIZER_DIR / name, tmp / "tokenizer" / name)
    (tmp / "training.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    readme = out / "README.md"
    if readme.is_file():
        shutil.copyfile(readme, tmp / "README.md")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def run_checks(out: Path) -> bool:
    from kohya_lite.demo.evaluate import colour_scores, orange_count
    from kohya_lite.models.load import load_model

    model = load_model(str(out))
    ok = True
    scores = colour_scores(model, shapes.BASE_COLOURS, n=CHECK_N)  # the demo's sampler, steps and CFG
    for colour, (hits, seen) in scores.items():
        good = hits >= 16
        ok &= good
        log(f"check: 'a {colour} circle on a grey background' → {colour} in {hits}/{CHECK_N} "
            f"{'ok' if good else 'FAIL'} (drawn: {seen})")
    orange = orange_count(model, "zkz shape", n=CHECK_N)
    log(f"check: 'zkz shape' orange {orange}/{CHECK_N} {'ok' if orange <= 2 else 'FAIL'}")
    ok &= orange <= 2
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--work", type=Path, default=Path("pretrain-work"), help="intermediate checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: these small models gain little from 2, and one thread is "
                        "several times faster on a busy machine; results depend on it)")
    p.add_argument("--vae-images", type=int, default=8000)
    p.add_argument("--vae-steps", type=int, default=1600)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-crop", type=int, default=64)
    p.add_argument("--vae-polish-steps", type=int, default=800)
    p.add_argument("--vae-polish-lr", type=float, default=6e-4)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--unet-images", type=int, default=18000)
    p.add_argument("--unet-steps", type=int, default=3200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--checkpoint-minutes", type=float, default=8.0)
    p.add_argument("--vae-from", type=Path, default=None, help="reuse a trained VAE folder (skip stage 2)")
    p.add_argument("--vae-phase1-from", type=Path, default=None,
                   help="reuse the VAE after phase 1 (work/vae-phase1) and run phase 2 only")
    p.add_argument("--no-checks", action="store_true", help="report the checks' figures but never fail (probes)")
    p.add_argument("--vae-only", action="store_true", help="stop after the VAE and its round-trip check")
    args = p.parse_args(argv)

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for("sd1", 0))

    log(f"data: {args.vae_images} VAE images (every hue), {args.unet_images} captioned images (base colours)")
    vae_data = make_vae_data(args.vae_images, args.seed + 10)
    unet_data, captions = make_unet_data(args.unet_images, args.seed + 11)
    log(f"data ready ({time.time() - started:.0f} s); e.g. '{captions[0]}', '{captions[1]}'")

    vae_train_data = torch.cat([vae_data, unet_data[:4000]])
    if args.vae_from:
        vae = AutoencoderKL.from_pretrained(str(args.vae_from), torch_dtype=torch.float32)
        log(f"VAE from {args.vae_from}")
    else:
        if args.vae_phase1_from:  # the saved result of phase 1 (deterministic): continue with phase 2
            vae = AutoencoderKL.from_pretrained(str(args.vae_phase1_from), torch_dtype=torch.float32)
            log(f"VAE phase 1 from {args.vae_phase1_from}")
        else:
            vae = new_vae(args.seed + 1)
            log(f"VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters")
            train_vae(vae, vae_train_data, args.vae_steps, args.vae_batch, args.vae_lr, args.kl_weight,
                      args.seed + 1, crop=args.vae_crop, phase="vae phase 1")
            vae.save_pretrained(str(args.work / "vae-phase1"))
        vae.train()
        train_vae(vae, vae_train_data, args.vae_polish_steps, args.vae_batch, args.vae_polish_lr, args.kl_weight,
                  args.seed + 101, crop=args.vae_crop, phase="vae phase 2")
        vae.save_pretrained(str(args.work / "vae"))
    del vae_train_data
    must_survive = shapes.BASE_COLOURS + (shapes.DEMO_COLOUR,)
    trip = vae_round_trip(vae, must_survive + ("yellow",), 16, args.seed + 20)
    log(f"VAE round trip (of 16): {trip}")
    if min(trip[c] for c in must_survive) < 15 and not args.no_checks:
        log("FAIL: a colour does not survive the VAE round trip (orange must, or no LoRA can draw it)")
        return 1
    if args.vae_only:
        return 0

    means, stds = encode_all(vae, unet_data)
    scaling = float(1.0 / means.std())
    args.scaling_factor = scaling
    vae.register_to_config(scaling_factor=scaling)
    log(f"latents {tuple(means.shape)}; std {means.std():.3f} (scaling_factor {scaling:.4f}); "
        f"posterior std mean {stds.mean():.4f}")
    del vae_data

    torch.manual_seed(args.seed + 4)
    te = CLIPTextModel(CLIPTextConfig(**TE_CONFIG))
    unet = UNet2DConditionModel(**UNET_CONFIG)
    log(f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, text encoder "
        f"{sum(p.numel() for p in te.parameters()) / 1e6:.2f} M parameters")
    import diffusers
    import transformers

    skip = {"out", "work", "checkpoint_minutes", "no_checks", "vae_only", "vae_from", "vae_phase1_from"}
    note = {"script": "scripts/pretrain_demo_base.py",
            "settings": {k: v for k, v in vars(args).items() if k not in skip},
            "reused": {k: str(getattr(args, k)) for k in ("vae_from", "vae_phase1_from") if getattr(args, k)},
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__}}

    def checkpoint(step: int) -> None:
        save_model(args.work / "checkpoint", unet, vae, te, tokenizer, dict(note, step=step))
        log(f"intermediate model at step {step} → {args.work / 'checkpoint'}")

    train_unet(unet, te, tokenizer, means, stds, captions, args, checkpoint)
    note["minutes"] = round((time.time() - started) / 60, 1)
    note["cpu_minutes"] = round(time.process_time() / 60, 1)
    save_model(args.out, unet, vae, te, tokenizer, note)
    log(f"saved {args.out} ({sum(f.stat().st_size for f in args.out.rglob('*') if f.is_file()) / 1e6:.1f} MB) "
        f"after {note['minutes']} min")
    if args.no_checks:
        return 0
    ok = run_checks(args.out)
    log(f"total {(time.time() - started) / 60:.1f} min; checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
