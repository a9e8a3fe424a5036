"""`kohya-lite lora info|verify|resize|merge`: inspect LoRA files, change their rank, merge several into one."""

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
    resize = tools.add_parser("resize", help="SVD to a lower (or dynamic) rank, keeping the effective weights")
    resize.add_argument("file")
    resize.add_argument("out")
    resize.add_argument("--rank", type=int, required=True, help="new rank (the cap, with --dynamic)")
    resize.add_argument("--dynamic", choices=["sv_ratio", "sv_fro", "sv_cumulative"], help="per-module rank rule")
    resize.add_argument("--param", type=float, default=0.9, help="the dynamic rule's parameter (sv_ratio: ≥ 2)")
    resize.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "float"])
    resize.set_defaults(func=run_resize)
    merge = tools.add_parser("merge", help="merge LoRAs: FILE:RATIO … (ranks concatenated, or --rank N by SVD)")
    merge.add_argument("inputs", nargs="+", metavar="FILE[:RATIO]")
    merge.add_argument("--out", required=True)
    merge.add_argument("--rank", type=int, help="reduce the merged modules to this rank (SVD)")
    merge.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "float"])
    merge.set_defaults(func=run_merge)


def run_info(args: argparse.Namespace) -> int:
    from kohya_lite.network.io import lora_file_info

    info = lora_file_info(args.file)
    m = info.metadata
    print(f"file          {info.path} ({info.size_bytes / 1024:.1f} KB, {info.dtype}, {info.layout} layout)")
    print(f"base model    {info.base_model_version or info.family} ({info.family_source})")
    if info.lycoris:
        ly = info.lycoris
        extras = [f"{ly['dora']} DoRA" if ly["dora"] else "", f"{ly['tucker']} Tucker" if ly["tucker"] else ""]
        print(f"type          LyCORIS {info.algo} ({m.get('ss_network_module', 'lycoris')})"
              + (f"; {', '.join(e for e in extras if e)} modules" if any(extras) else ""))
        print("note          resize and merge take plain LoRA / LoCon files; Generate, the grid and the library "
              "take this one")
    if info.rank or not info.lycoris:
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
    from kohya_lite.network.io import load_lora

    lf = load_lora(args.file, allow_lycoris=True)
    tensors = lf.tensors
    if lf.is_lycoris:
        return _verify_lycoris(tensors)
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


_ZERO_INIT = {"locon": "lora_up.weight", "ia3": "weight", "full": "diff", "norm": "w_norm"}


def _verify_lycoris(tensors) -> int:
    """Every weight tensor's magnitudes; modules whose zero-initialised tensor (LoCon's lora_up, iA3's weight,
    a full diff, a norm's w_norm) is still zero are reported as untrained."""
    from kohya_lite.network.lycoris import algo_of_tensors, group_modules

    groups = group_modules(tensors)
    print(f"number of LyCORIS modules: {len(groups)}")
    untrained = 0
    for name, group in sorted(groups.items()):
        for suffix, t in sorted(group.items()):
            if suffix in ("alpha", "on_input") or not t.is_floating_point():
                continue
            w = t.float().abs()
            print(f"{name}.{suffix},{'-'.join(map(str, t.shape))},{w.mean().item():.8f},{w.min().item():.8f}")
        zero_init = group.get(_ZERO_INIT.get(algo_of_tensors(group), ""))
        untrained += zero_init is not None and zero_init.float().abs().max().item() < 1e-8
    if untrained:
        print(f"warning: {untrained} of {len(groups)} modules have all-zero trained weights (not trained)")
    return 0


def _report(result) -> None:
    ranks = ", ".join(f"rank {r}: {n}" for r, n in result.ranks.items())
    print(f"wrote {result.path}: {result.modules} modules ({ranks}), alpha {result.alpha:g}")


def run_resize(args: argparse.Namespace) -> int:
    from kohya_lite.lora_tools import resize_lora

    _report(resize_lora(args.file, args.out, args.rank, method=args.dynamic, param=args.param,
                        precision=args.precision))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from kohya_lite.lora_tools import merge_loras, parse_merge_inputs

    files, ratios = parse_merge_inputs(args.inputs)
    _report(merge_loras(files, ratios, args.out, new_rank=args.rank, precision=args.precision))
    return 0
