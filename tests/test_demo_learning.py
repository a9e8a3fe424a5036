"""The demo LoRA visibly learns: trained from the "CPU demo (tiny model)" preset on the shipped base, it turns
"zkz shape" orange, a colour the base never draws; at weight 0 the output is the base's, pixel for pixel.

The same training done by a bare loop (diffusers + torch + peft, none of kohya-lite's code: the same LoRA
placement, seed, data order and random draws) reaches the same loss and also makes orange shapes, so the
engine's loss and LoRA are the textbook ones.
"""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kohya_lite.demo import BASE_DIR, REPEATS, TRIGGER_FOLDER, ensure_demo
from kohya_lite.demo.evaluate import render
from kohya_lite.demo.shapes import analyse
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.train import train
from kohya_lite.models.load import load_model

N = 20
PROMPT = "zkz shape"


def orange(images) -> int:
    return sum(analyse(im).is_orange for im in images)


def bare_reference_loop(cfg, image_dir):
    """kohya's training maths written out with diffusers, torch and peft; returns (losses, unet, te, tok)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig, inject_adapter_in_model
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    base, seed = str(BASE_DIR), cfg.seed
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # one stream: latent sampling, then noise and timesteps per step
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", dtype=torch.float32)
    tok = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    files = sorted(image_dir.glob("*.png"))
    captions = [f.with_suffix(".txt").read_text(encoding="utf-8").strip() for f in files]
    with torch.no_grad():
        latents = [vae.encode(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)[None]
                              .float() / 127.5 - 1).latent_dist.sample(generator=gen)[0] * vae.config.scaling_factor
                   for f in files]
    for m in (vae, unet, te):
        m.requires_grad_(False)
    # sd-scripts' LoRA placement: Transformer2D linears and 1×1 convs; CLIP attention and MLP linears
    unet_targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
    te_targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    inject_adapter_in_model(LoraConfig(r=cfg.network_dim, lora_alpha=cfg.network_alpha, target_modules=unet_targets), unet)
    inject_adapter_in_model(LoraConfig(r=cfg.network_dim, lora_alpha=cfg.network_alpha, target_modules=te_targets), te)
    te_params = [p for n, p in te.named_parameters() if "lora_" in n]
    unet_params = [p for n, p in unet.named_parameters() if "lora_" in n]
    params = te_params + unet_params
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": te_params, "lr": cfg.text_encoder_lr},
                             {"params": unet_params, "lr": cfg.unet_lr}], lr=cfg.learning_rate)
    samples = [i for i in range(len(files)) for _ in range(REPEATS)]
    steps_per_epoch = -(-len(samples) // cfg.train_batch_size)
    lr_schedule = get_scheduler(cfg.lr_scheduler, opt, num_warmup_steps=0,
                                num_training_steps=cfg.epoch * steps_per_epoch)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    snr_all = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    losses = []
    for epoch in range(1, cfg.epoch + 1):
        order = random.Random(seed + epoch)  # kohya's epoch order: shuffle samples, cut batches, shuffle batches
        positions = list(range(len(samples)))
        order.shuffle(positions)
        batches = [positions[k:k + cfg.train_batch_size] for k in range(0, len(positions), cfg.train_batch_size)]
        order.shuffle(batches)
        for batch in batches:
            x0 = torch.stack([latents[samples[p]] for p in batch])
            ids = tok([captions[samples[p]] for p in batch], padding="max_length", max_length=77, truncation=True,
                      return_tensors="pt").input_ids
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, 1000, (len(batch),), generator=gen)
            pred = unet(sched.add_noise(x0, noise, t), t, te(ids)[0]).sample
            snr = snr_all[t]
            weight = torch.clamp(snr, max=cfg.min_snr_gamma) / snr  # min-SNR-γ, ε-prediction
            loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3)).mul(weight).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            lr_schedule.step()
            opt.zero_grad()
            losses.append(loss.item())
    return losses, unet.eval(), te.eval(), tok, len(unet_params) // 2 + len(te_params) // 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo project trained by the engine as `kohya-lite train demo.json` would (samples off: they do not
    change the training, the browser test checks them)."""
    cfg, _ = ensure_demo(tmp_path_factory.mktemp("demo-learning") / "demo")
    cfg = cfg.replace(sample_every_n_epochs=0, sample_prompts="")
    events = []
    threads = torch.get_num_threads()
    try:
        result = train(cfg, events=EventWriter(listener=events.append), progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    assert result.status == "done"
    return cfg, result, [e["loss"] for e in events if e["type"] == "step"]


def test_demo_lora_turns_zkz_shapes_orange(trained):
    cfg, result, _ = trained
    model = load_model(cfg.pretrained_model_name_or_path)
    seeds = range(N)
    base = render(model, PROMPT, seeds)
    with_lora = render(model, f"{PROMPT} <lora:{cfg.output_name}:1>", seeds, lora_dir=cfg.output_dir)
    at_zero = render(model, f"{PROMPT} <lora:{cfg.output_name}:0>", seeds, lora_dir=cfg.output_dir)
    counts = {"lora": orange(with_lora), "base": orange(base)}
    print(f"orange of {N}: {counts}")
    assert counts["lora"] >= 16, counts
    assert counts["base"] <= 2, counts
    for a, b in zip(at_zero, base):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "weight 0 must render the base model exactly"


def test_a_bare_reference_loop_reaches_the_same_loss_and_colour(trained):
    cfg, result, losses = trained
    ref_losses, unet, te, tok, modules = bare_reference_loop(cfg, Path(cfg.train_data_dir) / TRIGGER_FOLDER)
    assert len(ref_losses) == len(losses)
    from safetensors import safe_open

    with safe_open(str(result.final_path), "pt") as f:
        assert modules == sum(1 for k in f.keys() if k.endswith(".alpha")), "the same modules carry a LoRA"
    ours, ref = float(np.mean(losses[-20:])), float(np.mean(ref_losses[-20:]))
    gap = max(abs(a - b) for a, b in zip(losses, ref_losses))
    print(f"mean loss of the last 20 steps: kohya-lite {ours:.5f}, reference {ref:.5f} ({ours / ref - 1:+.2%}); "
          f"largest per-step difference {gap:.2e} over {len(losses)} steps")
    assert abs(ours - ref) <= 0.05 * ref

    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    vae = AutoencoderKL.from_pretrained(str(BASE_DIR), subfolder="vae", torch_dtype=torch.float32)
    sched = EulerAncestralDiscreteScheduler.from_pretrained(str(BASE_DIR), subfolder="scheduler")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    n = 10
    with torch.no_grad():
        images = pipe([PROMPT] * n, height=64, width=64, num_inference_steps=20, guidance_scale=7.0,
                      generator=[torch.Generator().manual_seed(s) for s in range(n)]).images
    print(f"reference LoRA: {orange(images)} of {n} orange")
    assert orange(images) >= 8, f"{orange(images)} of {n} orange from the reference LoRA"
