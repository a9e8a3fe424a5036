"""`kohya-lite train CONFIG.json [--events FILE] [--resume DIR|last]`.

Ctrl+C or SIGTERM is a graceful stop: the current step finishes, a step checkpoint and the training
state are saved, and the events end with `stopped`. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA from a kohya_ss-style JSON config")
    p.add_argument("config", help="kohya_ss-style JSON config")
    p.add_argument("--events", help="append JSON-line events to this file")
    p.add_argument("--resume", help="a '<name>-…-state' folder, or 'last' for the newest one in output_dir")
    p.add_argument("--no-bar", action="store_true", help="no tqdm progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kohya_lite.config import load_config
    from kohya_lite.engine.events import EventWriter
    from kohya_lite.engine.train import StopFlag, train
    from kohya_lite.errors import UserError

    events = EventWriter(args.events)
    stop = StopFlag()
    signals = {"count": 0}

    def on_signal(signum, frame):
        signals["count"] += 1
        if signals["count"] > 1:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (saving a checkpoint); signal again to stop at once", file=sys.stderr)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):  # Windows: the worker's graceful stop is Ctrl+Break
        signal.signal(signal.SIGBREAK, on_signal)
    try:
        cfg, report = load_config(args.config)
        for line in report.lines():
            events.emit("log", message=line)
            print(f"note: {line}", file=sys.stderr)
        result = train(cfg, events=events, stop=stop, resume=args.resume, progress_bar=not args.no_bar)
        print(f"{result.status}: {result.final_path}" if result.final_path else result.status)
        return 0
    except UserError as exc:
        events.emit("error", message=exc.message, field=exc.field, file=exc.file, hint=exc.fix)
        if args.debug:
            raise
        print(exc.format(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        events.emit("error", message="training was killed before it could save", hint="stop once to save a checkpoint")
        return 130
    except MemoryError:
        events.emit("error", message="out of memory", field="train_batch_size",
                    hint="lower the batch size or resolution, or turn on gradient checkpointing")
        return 1
    except Exception as exc:  # an internal error: full details to the log, a plain message to the page
        text = str(exc)
        hint = "details are in the log"
        field = None
        if "out of memory" in text.lower():
            text, field = "the GPU ran out of memory", "train_batch_size"
            hint = "lower the batch size or resolution, turn on gradient checkpointing, or use a lower rank"
        elif "No space left on device" in text:
            text, field = "the disk is full", "output_dir"
            hint = "free some space or choose another output folder; nothing already saved was lost"
        events.emit("error", message=f"training failed: {text}", field=field, hint=hint)
        traceback.print_exc()
        return 1
    finally:
        events.close()
