"""`kohya-lite gui`: the browser GUI on http://127.0.0.1:7860 (same as `python app.py`)."""

from __future__ import annotations

import argparse
import logging
import os

from kohya_lite.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="start the browser GUI")
    p.add_argument("--listen", default="127.0.0.1", metavar="HOST",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to your network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", metavar="USER:PASS", help="require this user name and password")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--demo", action="store_true",
                   help="open the built-in CPU demo project (created under ./demo/ on first use)")
    p.add_argument("--inbrowser", action="store_true", help="open the page in the default browser")
    p.add_argument("--config", metavar="FILE", help="open this kohya_ss-style config file")
    p.set_defaults(func=run)


def _auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth must be USER:PASS", field="auth", fix="e.g. --auth alice:s3cret")
    return user, password


def _setup_logging() -> None:
    from kohya_lite.paths import home

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    try:
        home().mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(home() / "gui.log", encoding="utf-8"))
    except OSError:
        pass
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers)
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    auth = _auth(args.auth)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    _setup_logging()
    from kohya_lite.config import TrainingConfig, load_config

    cfg, path, status = TrainingConfig(), "", ""
    if args.demo:
        from kohya_lite.demo import ensure_demo

        print("preparing the demo project under ./demo ...", flush=True)
        cfg, demo_path = ensure_demo("demo")
        path, status = str(demo_path), f"Demo project: **{demo_path.name}** ({demo_path.parent})"
    if args.config:
        cfg, report = load_config(args.config, cfg)
        path, status = args.config, f"Loaded **{os.path.basename(args.config)}**"

    from kohya_lite.ui.app import build_app, launch, load_worker

    app = build_app(cfg, config_path=path, config_status=status, worker=load_worker())
    print(f"kohya-lite GUI on http://{args.listen}:{args.port}", flush=True)
    launch(app, host=args.listen, port=args.port, auth=auth, share=args.share, inbrowser=args.inbrowser)
    return 0
