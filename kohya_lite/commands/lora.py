"""`kohya-lite lora info|verify FILE`: what a LoRA file holds, and whether it was trained."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lora", help="inspect LoRA files")
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True)
    info = tools.add_parser("info", help="family, rank/alpha, modules, trigger words, training metadata")
    info.add_argument("file")
    info.add_argument("--metadata", action="store_true", help="also print every metadata field")
    info.set_defaults(func=run_info)
    verify = tools.add_parser("verify", help="per-tensor magnitudes (kohya's check_lora_weights); untrained up weights are ~0")
    verify.add_argument("file")
    verify.set_defaults(func=run_verify)


def run_info(args: argparse.Namespace) -> int:
    from kohya_lite.network.io import lora_file_info

    info = lora_file_info(args.file)
    m = info.metadata
    print(f"file          {info.path} ({info.size_bytes / 1024:.1f} KB, {info.dtype}, {info.layout} layout)")
    print(f"base model    {info.base_model_version or info.family} ({info.family_source})")
    print(f"rank / alpha  {info.rank} / {info.alpha:g} (scale {info.scale:g})"
          + (f", ranks {dict(info.ranks)}" if len(info.ranks) > 1 else ""))
    print("modules       " + ", ".join(f"{k} {v}" for k, v in info.modules.items())
          + (f" ({info.conv_modules} LoCon conv)" if info.conv_modules else ""))
    print(f"trigger words {', '.join(info.trigger_words) or '-'}")
    for key, label in (("ss_output_name", "output name"), ("ss_steps", "steps"), ("ss_epoch", "epoch"),
                       ("ss_sd_model_name", "trained on"), ("ss_training_comment", "comment"),
                       ("sshs_model_hash", "hash")):
        if m.get(key) and m.get(key) != "None":
            print(f"{label:<13} {m[key]}")
    if args.metadata:
        for k in sorted(m):
            print(f"  {k} = {m[k][:200]}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from kohya_lite.network.io import read_lora_file

    tensors, _ = read_lora_file(args.file)
    names = sorted({k.rsplit(".", 2)[0] for k in tensors if k.endswith(".lora_down.weight")})
    print(f"number of LoRA modules: {len(names)}")
    untrained = 0
    for key in sorted(k for k in tensors if "lora_up" in k or "lora_down" in k):
        w = tensors[key].float().abs()
        print(f"{key},{'-'.join(map(str, tensors[key].shape))},{w.mean().item():.8f},{w.min().item():.8f}")
        if "lora_up" in key and w.mean().item() < 1e-8:
            untrained += 1
    if untrained:
        print(f"warning: {untrained} of {len(names)} modules have all-zero up weights (not trained)")
    return 0
