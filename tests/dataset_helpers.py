"""Small real datasets and kohya_ss-style configs for end-to-end tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, size=(64, 64), seed: int = 0, caption: str | None = "zkz object, red") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = size
        base = rng.integers(0, 255, size=3)
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(base[c] + (xx * (c + 1) + yy * (3 - c)) * 2) % 256 for c in range(3)], -1).astype(np.uint8)
        p = folder / f"img{i:02d}.png"
        Image.fromarray(img).save(p)
        if caption is not None:
            (folder / f"img{i:02d}.txt").write_text(f"{caption}, variant {i}\n")
        paths.append(p)
    return paths


def tiny_config(model: Path | str, root: Path, **overrides) -> dict:
    """A kohya_ss-style config dict for a tiny model at 64 px (string numbers, as presets write them)."""
    cfg = {
        "pretrained_model_name_or_path": str(model), "train_data_dir": str(root / "img"), "output_dir": str(root / "model"),
        "logging_dir": "", "output_name": "zkz", "LoRA_type": "Standard", "network_dim": 4, "network_alpha": 2,
        "learning_rate": "0.001", "unet_lr": "0.001", "text_encoder_lr": "0.0005", "lr_scheduler": "constant",
        "lr_warmup": 0, "optimizer": "AdamW", "optimizer_args": "", "train_batch_size": 2, "epoch": 2,
        "max_train_steps": 0, "save_every_n_epochs": 1, "mixed_precision": "no", "save_precision": "fp16",
        "max_resolution": "64,64", "enable_bucket": True, "min_bucket_reso": 64, "max_bucket_reso": 128,
        "bucket_reso_steps": 64, "bucket_no_upscale": True, "cache_latents": True, "caption_extension": ".txt",
        "seed": "42", "clip_skip": 1, "max_grad_norm": 1.0, "xformers": True, "num_cpu_threads_per_process": 1,
    }
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg, indent=2))
    return path
