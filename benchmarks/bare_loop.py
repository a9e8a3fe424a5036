"""The floor for benchmarks/bench_full.py: the same per-step work as a kohya-lite run with nothing cached, and no
trainer around it. The same loader, the same LoRA modules (kohya-lite's network on the UNet's sd-scripts targets),
AdamW; each step encodes the batch with the VAE and the text encoder, draws noise and a timestep, runs the UNet
forward and backward, and steps the optimizer. Prints one JSON line per step with the wall time.

    python benchmarks/bare_loop.py MODEL IMAGES_DIR --res 256 --batch 1 --rank 8 --steps 8 [--precision no|bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.time()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images", type=Path)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--precision", default="no", choices=["no", "bf16"])
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from kohya_lite.engine.text import encode_sd, encode_sdxl
    from kohya_lite.media import list_images, load_rgb
    from kohya_lite.models.load import load_model
    from kohya_lite.network.lora import LoRANetwork

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    m = load_model(args.model)
    for part in (m.unet, m.vae, *m.text_encoders):
        part.requires_grad_(False).eval().to(dtype)
    net = LoRANetwork.create(m, args.rank, args.rank, train_text_encoder=False).apply()
    if args.checkpointing:
        m.unet.enable_gradient_checkpointing()
        m.unet.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    paths = list_images(args.images)
    pixels = torch.stack([torch.from_numpy(np.array(load_rgb(p).resize((args.res, args.res)))).permute(2, 0, 1)
                          for p in paths]).float() / 127.5 - 1
    ab = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64).pow(2)
    ab = torch.cumprod(1 - ab, 0).float()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    for step in range(args.steps):
        x = pixels[[(step * args.batch + i) % len(pixels) for i in range(args.batch)]]
        with torch.no_grad():
            lat = m.vae.encode(x.to(dtype)).latent_dist.sample().float() * m.vae.config.scaling_factor
            with autocast:
                if m.family == "sdxl":
                    emb, pooled = encode_sdxl(*m.text_encoders, *m.tokenizers, ["zkz object"] * args.batch)
                else:
                    emb, pooled = encode_sd(m.text_encoders[0], m.tokenizers[0], ["zkz object"] * args.batch), None
        noise = torch.randn_like(lat)
        t = torch.randint(0, 1000, (args.batch,))
        a = ab[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * lat + (1 - a).sqrt() * noise
        extra = {}
        if pooled is not None:
            ids = torch.tensor([[args.res, args.res, 0, 0, args.res, args.res]] * args.batch, dtype=emb.dtype)
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": ids}
        with autocast:
            pred = m.unet(noisy.to(dtype), t, emb, **extra).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(json.dumps({"step": step + 1, "time": time.time(), "start": T0, "loss": loss.item()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
