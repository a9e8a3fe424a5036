"""`kohya-lite demo DIR`: write the built-in demo project (orange shapes captioned "zkz shape", the
"CPU demo (tiny model)" config on the shipped base model, output folders) and print the config's path,
so `kohya-lite train DIR/demo.json` trains exactly what the page's Train model does."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="write the built-in CPU demo project and print its config path",
                       description="Write the demo project (dataset, config, output folders) into DIR; what "
                                   "exists is kept. Then: kohya-lite train DIR/demo.json")
    p.add_argument("dir", metavar="DIR", nargs="?", default="demo", help="project folder (default ./demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kohya_lite.demo import ensure_demo

    cfg, path = ensure_demo(args.dir)
    print(f"demo project in {path.parent}: {cfg.train_data_dir} → {cfg.output_dir}")
    print(f"train it with: kohya-lite train \"{path}\"")
    print(path)
    return 0
