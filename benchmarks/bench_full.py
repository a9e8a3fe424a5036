"""Speed and memory at full size: kohya-lite's `train` against the bare loop (benchmarks/bare_loop.py), the
same job in the same run, alternating, several rounds.

The model is the full-size SD1.5 (or SDXL) architecture from the shipped configs with random weights (no
download), built once into --model-dir. Each run is a fresh process; printed per run: time to first step
(process start → first step), median s/step over steps 2..N, peak RSS (and the memory estimate `check` prints);
then each kohya-lite mode's ratios to the bare loop.

    python benchmarks/bench_full.py [--family sd1|sdxl] [--res 256] [--batch 1] [--rank 8] [--steps 8]
        [--rounds 2] [--modes bare,uncached,defaults] [--checkpointing] [--model-dir DIR]

Modes: `bare` the floor (fp32, nothing cached); `uncached` kohya-lite fp32 with nothing cached (text-encoder
outputs kept fresh through caption_dropout_every_n_epochs); `defaults` kohya-lite as a kohya_ss config runs it
(mixed_precision fp16, which is bf16 on a CPU that has it; latents and text-encoder outputs cached);
`channels_last` and `uncached_channels_last` the same two with the UNet in channels-last memory format.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def run_child(cmd: list[str], env: dict, events: Path | None = None) -> dict:
    """Run one training process; its step times, time to first step and peak RSS (from wait4)."""
    import subprocess

    t_launch = time.time()
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    if events is not None:
        lines = [json.loads(line) for line in events.read_text().splitlines()]
        times = [e["time"] for e in lines if e["type"] == "step"]
        caching = [e for e in lines if e["type"] == "progress"]
    else:
        times = [json.loads(line)["time"] for line in text.splitlines() if line.startswith("{")]
        caching = []
    deltas = [b - a for a, b in zip(times, times[1:])]
    return {"first_step_s": round(times[0] - t_launch, 2), "sec_per_step": round(statistics.median(deltas), 3),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "caching_events": len(caching)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="sd1", choices=["sd1", "sdxl"])
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="bare,uncached,defaults")
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "kohya-lite-bench-full")
    args = ap.parse_args()

    import torch

    from dataset_helpers import make_images, tiny_config, write_config
    from gpu_models import build_random_full
    from kohya_lite.check import run_check
    from kohya_lite.config import merge_config
    from kohya_lite.models.memory import estimate_memory

    model = args.model_dir / args.family
    if not (model / "model_index.json").is_file():
        print(f"building the full-size {args.family} architecture with random weights in {model} ...", flush=True)
        build_random_full(args.family, model, device="cpu", dtype=torch.float16)
    work = Path(tempfile.mkdtemp(prefix="bench-full-"))
    make_images(work / "img" / "1_zkz object", max(4, args.batch * 2), size=(args.res, args.res))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    common = dict(sdxl=args.family == "sdxl", max_resolution=f"{args.res},{args.res}", min_bucket_reso=64,
                  max_bucket_reso=2048, network_dim=args.rank, network_alpha=args.rank, text_encoder_lr="0",
                  unet_lr="1e-4", learning_rate="1e-4", optimizer="AdamW", train_batch_size=args.batch,
                  max_train_steps=args.steps, save_every_n_epochs=0, lr_scheduler="constant", save_precision="fp16",
                  gradient_checkpointing=args.checkpointing, num_cpu_threads_per_process=args.threads)
    modes = {
        "uncached": dict(common, mixed_precision="no", cache_latents=False, caption_dropout_every_n_epochs=1000),
        "defaults": dict(common, mixed_precision="fp16", cache_latents=True),
        "channels_last": dict(common, mixed_precision="fp16", cache_latents=True, channels_last=True),
        "uncached_channels_last": dict(common, mixed_precision="no", cache_latents=False,
                                       caption_dropout_every_n_epochs=1000, channels_last=True),
    }
    wanted = args.modes.split(",")
    results: dict[str, list[dict]] = {m: [] for m in wanted}
    for rnd in range(args.rounds):
        for mode in wanted:
            out = work / f"{mode}-{rnd}"
            if mode == "bare":
                cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_loop.py"), str(model), str(work / "img" / "1_zkz object"),
                       "--res", str(args.res), "--batch", str(args.batch), "--rank", str(args.rank),
                       "--steps", str(args.steps), "--threads", str(args.threads)]
                if args.checkpointing:
                    cmd.append("--checkpointing")
                r = run_child(cmd, env)
                cfg = None
            else:
                cfg_dict = tiny_config(model, work, output_dir=str(out), **modes[mode])
                config = write_config(work / f"{mode}.json", cfg_dict)
                events = out / "events.jsonl"
                out.mkdir(parents=True, exist_ok=True)
                r = run_child([sys.executable, "-m", "kohya_lite", "train", str(config), "--events", str(events),
                               "--no-bar"], env, events)
                cfg, _ = merge_config(cfg_dict)
            est_cfg = cfg or merge_config(tiny_config(model, work, **modes["uncached"]))[0]
            est = estimate_memory(est_cfg, run_check(est_cfg).plan, device="cpu")
            r["estimate_gb"] = round(est.total_gb, 2)
            results[mode].append(r)
            print(f"round {rnd + 1} {mode:13} first step {r['first_step_s']:6.1f} s  {r['sec_per_step']:7.3f} s/step  "
                  f"peak RSS {r['peak_rss_gb']:5.2f} GB (estimate {r['estimate_gb']:.2f} GB)", flush=True)

    def best(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print(f"\n{args.family} {args.res}px batch {args.batch} rank {args.rank}, {args.steps} steps, "
          f"{args.rounds} rounds, {args.threads} threads{', gradient checkpointing' if args.checkpointing else ''}")
    print(f"{'mode':14} {'first step s':>12} {'s/step':>8} {'peak RSS GB':>11} {'estimate GB':>11}")
    for mode in wanted:
        print(f"{mode:14} {best(mode, 'first_step_s'):12.1f} {best(mode, 'sec_per_step'):8.3f} "
              f"{best(mode, 'peak_rss_gb'):11.2f} {best(mode, 'estimate_gb'):11.2f}")
    if "bare" in wanted:
        for mode in wanted:
            if mode == "bare":
                continue
            print(f"{mode} / bare: s/step {best(mode, 'sec_per_step') / best('bare', 'sec_per_step'):.2f}×, "
                  f"first step {best(mode, 'first_step_s') / best('bare', 'first_step_s'):.2f}×, "
                  f"peak RSS {best(mode, 'peak_rss_gb') / best('bare', 'peak_rss_gb'):.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
