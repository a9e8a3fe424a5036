"""`kohya-lite make-model --family sd1|sd2|sdxl OUT_DIR [--single-file FILE] [--seed N]`.

Writes a tiny random model (a diffusers folder, optionally also an LDM/SGM single file) for demos and
CPU smoke runs; it trains and samples in seconds and loads with the same code paths as real models.
"""

from __future__ import annotations

from pathlib import Path

from kohya_lite.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-model", help="write a tiny random SD1/SD2/SDXL model for demos and tests",
        description="Write a tiny random model as a diffusers folder (and optionally a single .safetensors "
                    "checkpoint). A relative --single-file is placed inside OUT_DIR, whose configs it uses.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if missing)")
    parser.add_argument("--family", choices=("sd1", "sd2", "sdxl"), default="sd1", help="model family (default sd1)")
    parser.add_argument("--single-file", metavar="FILE", default=None,
                        help="also write the weights as one LDM/SGM .safetensors file")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from kohya_lite.models.tiny import build_tiny_model

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' exists and is not a folder", file=str(out), fix="choose a new folder name")
    single = args.single_file
    if single and not single.lower().endswith(".safetensors"):
        raise UserError(f"--single-file '{single}' must end in .safetensors", file=single,
                        fix="e.g. --single-file tiny.safetensors")
    try:
        build_tiny_model(args.family, out, single_file=single, seed=args.seed)
    except OSError as exc:
        raise UserError(f"cannot write the model to '{out}': {exc.strerror or exc}", file=str(out),
                        fix="choose a folder you can write to, and check the disk has space") from None
    print(f"wrote a tiny {args.family} model to {out}")
    if single:
        path = Path(single) if Path(single).is_absolute() else out / single
        print(f"wrote its single-file checkpoint to {path}")
    return 0
