"""Training-step speed of kohya-lite's engine against a plain diffusers + peft LoRA loop, in one run.

Both loops train the same UNet LoRA (sd-scripts' target modules, rank 8) on the same model, images and batch size; the
reference is the diffusers example's shape (peft `add_adapter`, text encoder run every step, latents encoded
every step), kohya-lite runs its real engine (`engine.train.train`, cached latents and text-encoder outputs
where allowed). Printed: seconds per step for each, the ratio, and peak memory.

    .venv/bin/python benchmarks/bench_train.py [--family sd1|sdxl] [--model PATH] [--steps 20] [--res 64]

Without --model a tiny model is built (CPU-friendly); on a GPU machine pass a real checkpoint.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def reference_loop(model_path: str, family: str, images: list[Path], steps: int, res: int, batch: int) -> float:
    """diffusers-example style: peft LoRA on the UNet, VAE + TE every step, AdamW."""
    from peft import LoraConfig

    from kohya_lite.media import load_rgb
    from kohya_lite.engine.text import encode_sd, encode_sdxl
    from kohya_lite.models.load import load_model

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = load_model(model_path, sdxl=family == "sdxl")
    for part in (m.unet, m.vae, *m.text_encoders):
        part.requires_grad_(False).to(dev)
    # the same UNet modules sd-scripts' networks.lora adapts (Transformer2D linears and 1×1 convs)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
    m.unet.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=targets))
    params = [p for p in m.unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    pix = torch.stack([torch.from_numpy(__import__("numpy").array(load_rgb(p).resize((res, res)))).permute(2, 0, 1)
                       for p in images]).float() / 127.5 - 1
    times = []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        x = pix[[(step * batch + i) % len(pix) for i in range(batch)]].to(dev)
        with torch.no_grad():
            lat = m.vae.encode(x).latent_dist.sample() * m.vae.config.scaling_factor
            if family == "sdxl":
                emb, pooled = encode_sdxl(*m.text_encoders, *m.tokenizers, ["zkz object"] * batch)
            else:
                emb, pooled = encode_sd(m.text_encoders[0], m.tokenizers[0], ["zkz object"] * batch), None
        noise = torch.randn_like(lat)
        t = torch.randint(0, 1000, (batch,), device=dev)
        noisy = sched.add_noise(lat, noise, t)
        kw = {}
        if family == "sdxl":
            kw["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": torch.tensor([[res, res, 0, 0, res, res]] * batch,
                                                                                     device=dev, dtype=emb.dtype)}
        loss = torch.nn.functional.mse_loss(m.unet(noisy, t, emb, **kw).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if dev == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def engine_loop(model_path: str, family: str, root: Path, steps: int, res: int, batch: int) -> float:
    from dataset_helpers import tiny_config

    from kohya_lite.config import merge_config
    from kohya_lite.engine.events import EventWriter
    from kohya_lite.engine.train import train

    events: list[dict] = []
    cfg, _ = merge_config(tiny_config(model_path, root, sdxl=family == "sdxl", max_resolution=f"{res},{res}",
                                      min_bucket_reso=64, max_bucket_reso=max(res, 128), train_batch_size=batch,
                                      network_dim=8, network_alpha=8, unet_lr="0.0001", text_encoder_lr="0",
                                      max_train_steps=steps + 2, save_every_n_epochs=0, epoch=1,
                                      mixed_precision="bf16" if torch.cuda.is_available() else "no",
                                      num_cpu_threads_per_process=torch.get_num_threads()))
    train(cfg, events=EventWriter(listener=events.append), progress_bar=False)
    stamps = [e["time"] for e in events if e["type"] == "step"]
    return (stamps[-1] - stamps[1]) / (len(stamps) - 2)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="sd1", choices=["sd1", "sdxl"])
    ap.add_argument("--model", help="a real model (file or folder); default: a tiny one")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dataset_helpers import make_images

    from kohya_lite.models.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or str(build_tiny_model(args.family, root / "model"))
        images = make_images(root / "img" / "10_zkz object", 8, size=(args.res, args.res))
        ref = reference_loop(model, args.family, images, args.steps, args.res, args.batch)
        ref_mem = peak_rss_mb()
        eng = engine_loop(model, args.family, root, args.steps, args.res, args.batch)
        print(f"load average {os.getloadavg()[0]:.1f}, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
              f"{torch.get_num_threads()} threads, {args.family} {'(tiny)' if not args.model else args.model}")
        print(f"reference (diffusers+peft, same UNet modules):   {ref * 1000:8.1f} ms/step")
        print(f"kohya-lite engine (UNet LoRA, cached latents):    {eng * 1000:8.1f} ms/step")
        print(f"ratio kohya-lite / reference: {eng / ref:.2f}x  (below 1 = faster)")
        print(f"peak RSS: {peak_rss_mb():.0f} MB (reference alone {ref_mem:.0f} MB)")
        if torch.cuda.is_available():
            print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
