"""`kohya-lite lora info|verify|resize|merge|merge-to-model|extract|convert|download`: inspect LoRA files,
change their rank, merge several into one or into a base model, extract one from two models, convert between
the kohya and diffusers layouts, and download one into the library. The work is in `kohya_lite.lora_tools`
and `kohya_lite.tools`; this module parses, draws progress bars and prints."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator

PRECISIONS = ["fp16", "bf16", "float"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lora", help="LoRA tools: inspect, verify, resize, merge, merge into a model, extract, "
                                    "convert, download")
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True)
    info = tools.add_parser("info", help="family, rank/alpha, modules, trigger words, training metadata")
    info.add_argument("file")
    info.add_argument("--metadata", action="store_true", help="also print every metadata field")
    info.set_defaults(func=run_info)
    verify = tools.add_parser("verify", help="per-tensor magnitudes (kohya's check_lora_weights); flags NaN/Inf tensors "
                                             "(exit 1) and all-zero (untrained) modules")
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

    mtm = tools.add_parser("merge-to-model", help="merge LoRAs into a base model and save a checkpoint",
                           description="W += ratio · alpha/rank · up@down for every module of every LoRA (LoRA and "
                                       "LoCon; LyCORIS types merge their own ΔW), saved as one .safetensors "
                                       "checkpoint in the original SD1/SD2/SDXL layout, or as a diffusers folder.")
    mtm.add_argument("model", help="base model: a diffusers folder, a .safetensors/.ckpt file or a cached Hub id")
    mtm.add_argument("loras", nargs="+", metavar="LORA[:RATIO]", help="LoRA files, each with an optional ratio")
    mtm.add_argument("--out", required=True, help="a .safetensors file, or a folder name for a diffusers model")
    mtm.add_argument("--format", choices=["auto", "single_file", "diffusers"], default="auto",
                     help="default: from --out (.safetensors → single file, else diffusers folder)")
    mtm.add_argument("--precision", default="fp16", choices=PRECISIONS, help="save precision (default fp16)")
    mtm.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    _model_flags(mtm)
    mtm.set_defaults(func=run_merge_to_model)

    ext = tools.add_parser("extract", help="extract a LoRA from a fine-tuned model and its base (SVD of the difference)",
                           description="sd-scripts extract_lora_from_models: per module SVD of tuned − base.")
    ext.add_argument("--base", required=True, help="the original model (folder, .safetensors/.ckpt or Hub id)")
    ext.add_argument("--tuned", required=True, help="the fine-tuned model")
    ext.add_argument("--out", required=True, help="the LoRA file to write (.safetensors)")
    ext.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    ext.add_argument("--conv-rank", type=int, default=0, help="rank for 3×3 convs (LoCon); 0 = none (default)")
    ext.add_argument("--clamp-quantile", type=float, default=0.99, help="clamp at this quantile (default 0.99; 1 = off)")
    ext.add_argument("--min-diff", type=float, default=0.01,
                     help="text encoders count only when a weight differs by more (default 0.01)")
    ext.add_argument("--precision", default="fp16", choices=PRECISIONS, help="save precision (default fp16)")
    ext.add_argument("--load-precision", default="float", choices=PRECISIONS,
                     help="precision the two models are held in (default float; fp16 halves the memory)")
    _model_flags(ext)
    ext.set_defaults(func=run_extract)

    conv = tools.add_parser("convert", help="convert between kohya and diffusers/peft LoRA files",
                            description="diffusers/peft → kohya (canonical names, one alpha, ss_* metadata) or "
                                        "kohya → diffusers (save_lora_weights keys, alphas in lora_adapter_metadata).")
    conv.add_argument("file", help="the LoRA file (or a folder holding pytorch_lora_weights/adapter_model.safetensors)")
    conv.add_argument("out", help="the file to write (.safetensors; for diffusers also a folder)")
    conv.add_argument("--to", choices=["auto", "kohya", "diffusers"], default="auto",
                      help="target layout (default: the other one)")
    conv.add_argument("--family", choices=["sd1", "sd2", "sdxl"], help="model family, when the file cannot tell")
    conv.add_argument("--precision", default="keep", choices=["keep", *PRECISIONS],
                      help="save precision (default: keep the source's)")
    conv.set_defaults(func=run_convert)

    dl = tools.add_parser("download", help="download a LoRA by URL into the library folder",
                          description="Download a LoRA (a model site's download link or a Hugging Face …/resolve/… "
                                      "link) into the LoRA folder: resumes an interrupted transfer, checks the "
                                      "SHA-256 and the safetensors header. API tokens come from the environment: "
                                      "HF_TOKEN for Hugging Face, CIVITAI_API_TOKEN for Civitai, or --token-env.")
    dl.add_argument("url")
    dl.add_argument("--sha256", metavar="HEX", help="expected SHA-256: a mismatch deletes the download")
    dl.add_argument("--lora-dir", metavar="DIR", help="the LoRA library folder (default models/Lora)")
    dl.add_argument("--name", help="file name in the library (default: the server's name)")
    dl.add_argument("--allow-pickle", action="store_true",
                    help="accept a .ckpt/.pt pickle file: read as plain weights only and saved as .safetensors")
    dl.add_argument("--overwrite", action="store_true", help="replace a different file of the same name")
    dl.add_argument("--token-env", metavar="VAR", help="environment variable holding a token for the link's host")
    dl.set_defaults(func=run_download)


def run_info(args: argparse.Namespace) -> int:
    from kohya_lite.library import lora_file_info

    info = lora_file_info(args.file)
    m = info.metadata
    print(f"file          {info.path} ({info.size_bytes / 1024:.1f} KB, {info.dtype}, {info.layout} layout)")
    print(f"base model    {info.base_model_version or info.family} ({info.family_source})")
    if info.lycoris:
        ly = info.lycoris
        extras = [f"{ly['dora']} DoRA" if ly["dora"] else "", f"{ly['tucker']} Tucker" if ly["tucker"] else ""]
        print(f"type          LyCORIS {info.algo} ({m.get('ss_network_module', 'lycoris')})"
              + (f"; {', '.join(e for e in extras if e)} modules" if any(extras) else ""))
        print("note          Generate, the grid and the library take this file; resize, merge, merge-to-model and "
              "convert take plain LoRA / LoCon files")
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
    from kohya_lite.tools.verify import verify_lora

    result = verify_lora(args.file)
    print(f"number of LoRA modules: {result.modules}")
    for stat in result.tensors:
        print(stat.csv())
    for line in result.problems():
        print(f"warning: {line}")
    return 1 if result.nonfinite else 0


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


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--v2", action="store_true", help="SD2 single file that cannot be detected")
    parser.add_argument("--sdxl", action="store_true", help="SDXL single file that cannot be detected")
    parser.add_argument("--v-parameterization", action="store_true", help="v-prediction model (SD2 768-v)")


@contextmanager
def _progress_bar(unit: str = "it") -> Iterator:
    """A tqdm bar on stderr fed by the tools' progress(done, total, what) callback."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit=unit, unit_scale=unit == "B", file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: int, total: int, what: str) -> None:
        if total and bar.total != total:
            bar.reset(total=total)
        if what and bar.desc != what:
            bar.set_description(what, refresh=False)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def run_merge_to_model(args: argparse.Namespace) -> int:
    from kohya_lite.lora_tools import parse_merge_inputs
    from kohya_lite.tools.merge_to_model import merge_to_model

    files, ratios = parse_merge_inputs(args.loras)
    with _progress_bar() as progress:
        res = merge_to_model(args.model, list(zip(files, ratios)), args.out, fmt=args.format, precision=args.precision,
                             v2=args.v2, sdxl=args.sdxl, v_parameterization=args.v_parameterization,
                             overwrite=args.overwrite, progress=progress)
    for w in res.warnings:
        print(f"warning: {w}")
    print(res.summary())
    return 0


def run_extract(args: argparse.Namespace) -> int:
    from kohya_lite.tools.extract import extract_lora

    with _progress_bar() as progress:
        res = extract_lora(args.base, args.tuned, args.out, rank=args.rank, conv_rank=args.conv_rank,
                           clamp_quantile=args.clamp_quantile, min_diff=args.min_diff, precision=args.precision,
                           load_precision=args.load_precision, v2=args.v2, sdxl=args.sdxl,
                           v_parameterization=args.v_parameterization, progress=progress)
    for w in res.warnings:
        print(f"note: {w}")
    print(res.summary())
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from kohya_lite.tools.convert import convert_lora

    res = convert_lora(args.file, args.out, to=args.to, family=args.family, precision=args.precision)
    for n in res.notes:
        print(f"note: {n}")
    print(res.summary())
    return 0


def run_download(args: argparse.Namespace) -> int:
    from kohya_lite.tools.download import download_lora

    try:
        with _progress_bar("B") as progress:
            res = download_lora(args.url, args.lora_dir, sha256=args.sha256, filename=args.name,
                                allow_pickle=args.allow_pickle, overwrite=args.overwrite, token_env=args.token_env,
                                progress=progress)
    except KeyboardInterrupt:
        print("interrupted: the partial download is kept; run the same command again to resume it", file=sys.stderr)
        return 130
    for w in res.warnings:
        print(f"note: {w}")
    print(f"saved {res.path}: {res.summary()}")
    entry = res.entry
    if entry is not None and not entry.error:
        print(f"  {entry.base_model_version} · rank {entry.rank} / alpha {entry.alpha:g} · use it as "
              f"<lora:{entry.name}:1>")
        print(f"  trigger words: {', '.join(entry.trigger_words) or '-'}")
    return 0
