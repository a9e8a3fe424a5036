"""Latent caching against the per-step encode it replaces: the same VAE, the same images, in one run.

Per image: `cache_latents` (what the engine runs once before training, VAE batches from `config.vae_batch_of`)
against `encode_pixels` on a training batch, as an uncached run does every step. Prints seconds per image and
the ratio caching / per-step (below 1: caching costs less per image than encoding it each step).

    .venv/bin/python benchmarks/bench_caching.py MODEL [--res 256] [--images 8] [--batch 1] [--dtype fp32|bf16] [--vae-batch N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1, help="the training batch an uncached step encodes")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vae-batch", type=int, default=0, help="vae_batch_size (0: automatic, as the engine)")
    args = ap.parse_args()

    import torch

    from dataset_helpers import make_images, tiny_config
    from kohya_lite.check import run_check
    from kohya_lite.config import merge_config, vae_batch_of
    from kohya_lite.dataset.loader import cache_latents, encode_pixels, load_pixels
    from kohya_lite.engine.setup import build_data
    from kohya_lite.models.load import load_model

    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    work = Path(tempfile.mkdtemp(prefix="bench-caching-"))
    make_images(work / "img" / "1_zkz object", args.images, size=(args.res, args.res))
    cfg, _ = merge_config(tiny_config(args.model, work, max_resolution=f"{args.res},{args.res}", max_bucket_reso=2048,
                                       vae_batch_size=args.vae_batch))
    data = build_data(cfg, run_check(cfg))
    vae = load_model(args.model, dtype=dtype).vae.requires_grad_(False).eval()
    vae_batch = vae_batch_of(cfg, "cpu")

    def caching() -> float:
        for it in data.items:
            it.latents = None
        start = time.perf_counter()
        cache_latents(data.items, vae, flip_aug=False, batch_size=vae_batch)
        return (time.perf_counter() - start) / len(data.items)

    def per_step() -> float:
        start = time.perf_counter()
        for k in range(0, len(data.items), args.batch):
            pixels = torch.stack([load_pixels(it) for it in data.items[k:k + args.batch]])
            encode_pixels(vae, pixels)
        return (time.perf_counter() - start) / len(data.items)

    cached, stepped = [], []
    for _ in range(args.rounds):  # alternating
        cached.append(caching())
        stepped.append(per_step())
    c, s = statistics.median(cached), statistics.median(stepped)
    print(f"{args.res} px, {args.images} images, {args.dtype}, {args.threads} threads, {args.rounds} rounds")
    print(f"caching (VAE batch {vae_batch}): {c:.3f} s/image   per-step encode (batch {args.batch}): {s:.3f} s/image   "
          f"ratio {c / s:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
