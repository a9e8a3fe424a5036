"""`kohya-lite` command line: one subcommand per library entry point.

Each subcommand lives beside the code it drives, in a module exposing `register(subparsers)`;
`register` adds a parser and sets `func(args) -> int`. This file only assembles them and turns
a `UserError` into one readable block and exit code 2 (tracebacks only with --debug).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kohya_lite import __version__
from kohya_lite.errors import UserError

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = [
    "kohya_lite.commands.check",
    "kohya_lite.commands.train",
    "kohya_lite.commands.caption",
    "kohya_lite.commands.lora",
    "kohya_lite.commands.generate",
    "kohya_lite.commands.make_model",
    "kohya_lite.commands.demo",
    "kohya_lite.commands.gui",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kohya-lite", description="Train Stable Diffusion LoRA adapters locally.")
    parser.add_argument("--version", action="version", version=f"kohya-lite {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # subcommand not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(exc.format(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
