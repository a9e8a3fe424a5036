"""`kohya-lite check CONFIG.json`: the pre-flight. Exit 0 when training can start, 2 when not."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a training config and its dataset without training")
    p.add_argument("config", help="kohya_ss-style JSON config")
    p.add_argument("--json", action="store_true", help="print the problems as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kohya_lite.check import format_report, run_check
    from kohya_lite.config import load_config

    cfg, report = load_config(args.config)
    result = run_check(cfg)
    if args.json:
        print(json.dumps({"ok": result.ok, "problems": [p.to_dict() for p in result.problems],
                          "total_steps": result.plan.total_steps if result.plan else None}, indent=2))
    else:
        for line in report.lines():
            print(f"note: {line}")
        print(format_report(cfg, result))
    return 0 if result.ok else 2
