"""Full-size training speed and memory on a CUDA GPU: seconds per step and peak VRAM for SD1.5 at 512 px and SDXL
at 1024 px (random weights from the shipped configs, no download), through the real engine.

    python benchmarks/bench_gpu.py [--steps 12] [--only sd1|sdxl] [--json FILE]

Each row is one run: cached latents, batch 1, rank 8 (UNet and text encoders), AdamW8bit; SDXL also with
gradient checkpointing. s/step is the median over steps 3..N; peak VRAM is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RUNS = [  # (family, px, precision, gradient checkpointing)
    ("sd1", 512, "bf16", False),
    ("sd1", 512, "fp16", False),
    ("sdxl", 1024, "bf16", True),
    ("sdxl", 1024, "fp16", True),
]


def one_run(model: Path, family: str, px: int, precision: str, checkpointing: bool, steps: int, root: Path) -> dict:
    from dataset_helpers import make_images, tiny_config
    from kohya_lite.config import merge_config
    from kohya_lite.engine.events import EventWriter
    from kohya_lite.engine.train import train

    work = Path(tempfile.mkdtemp(dir=root))
    make_images(work / "img" / "1_zkz object", 4, size=(px, px))
    cfg, _ = merge_config(tiny_config(
        model, work, sdxl=family == "sdxl", max_resolution=f"{px},{px}", max_bucket_reso=2048, min_bucket_reso=256,
        network_dim=8, network_alpha=8, optimizer="AdamW8bit", mixed_precision=precision, train_batch_size=1,
        max_train_steps=steps, save_every_n_epochs=0, gradient_checkpointing=checkpointing,
        num_cpu_threads_per_process=8))
    events: list[dict] = []
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    train(cfg, events=EventWriter(listener=events.append), progress_bar=False)
    times = [e["time"] for e in events if e["type"] == "step"]
    deltas = [b - a for a, b in zip(times, times[1:])][2:]
    return {"family": family, "px": px, "precision": precision, "checkpointing": checkpointing,
            "sec_per_step": round(statistics.median(deltas), 4) if deltas else None,
            "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--only", choices=["sd1", "sdxl"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device; nothing to measure")
        return 0
    from gpu_models import build_random_full

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for family in ("sd1", "sdxl"):
            if args.only and family != args.only:
                continue
            model = build_random_full(family, root / f"full-{family}")
            for fam, px, precision, ckpt in RUNS:
                if fam == family:
                    rows.append(one_run(model, fam, px, precision, ckpt, args.steps, root))
                    print(json.dumps(rows[-1]), flush=True)
    print(f"\n{torch.cuda.get_device_name()}  (torch {torch.__version__})")
    print(f"{'model':6} {'px':>5} {'prec':>5} {'ckpt':>5} {'s/step':>8} {'peak VRAM':>10}")
    for r in rows:
        print(f"{r['family']:6} {r['px']:>5} {r['precision']:>5} {str(r['checkpointing']):>5} "
              f"{r['sec_per_step']:>8} {r['peak_vram_gib']:>8} GiB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
