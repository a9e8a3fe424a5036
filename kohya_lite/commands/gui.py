"""`kohya-lite gui`: the browser GUI on http://127.0.0.1:7860 (same as `python app.py`).

The page browses this machine's folders and writes files, so it is only reachable from other machines with a
password: `--listen` on a non-loopback address or `--share` without `--auth` refuses to start, unless
`--insecure-no-auth` says it is meant.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from kohya_lite.errors import UserError

DEMO_INTRO = "▶ **The demo is ready: click *Train model*** (a tiny model and 6 images; about a minute on a CPU)."
# Harmless notices libraries print at start-up (logger → text it contains). transformers: without torchvision
# it uses its PIL image processors, which is what kohya-lite wants. bitsandbytes: an optional downloadable CPU
# kernel for 4-bit layers, which kohya-lite does not use (and never downloads).
KNOWN_NOTICES = {
    "transformers.utils.import_utils": ("requires torchvision",),
    "bitsandbytes.backends.cpu.ops": ("kernels-community",),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="start the browser GUI")
    p.add_argument("--listen", default="127.0.0.1", metavar="HOST",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to your network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", metavar="USER:PASS", help="require this user name and password")
    p.add_argument("--share", action="store_true", help="also open a public share link (needs --auth)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow --listen/--share without --auth (anyone who can reach the port can read and write "
                        "this machine's folders through the page)")
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


def exposed(host: str) -> bool:
    """Can other machines reach a server bound to `host`? Only loopback addresses are private."""
    h = (host or "").strip().strip("[]").lower()
    if h in ("localhost", ""):
        return h == ""
    try:
        return not ipaddress.ip_address(h).is_loopback
    except ValueError:
        return True  # a host name: assume it resolves to a reachable address


def check_sharing(listen: str, share: bool, auth: tuple[str, str] | None, insecure: bool) -> None:
    """Refuse to serve the page to other machines without a password."""
    if auth or insecure or not (share or exposed(listen)):
        return
    how = "--share publishes the page on a public link" if share else \
        f"--listen {listen} makes the page reachable from other machines"
    raise UserError(f"{how}, and the page browses and writes this machine's folders: it needs a password",
                    field="auth", fix="add --auth USER:PASS (or --insecure-no-auth to share it without one, only on a "
                                      "network you trust)")


class _KnownNotices(logging.Filter):
    def __init__(self, needles: tuple[str, ...]):
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.needles)


def quiet_known_notices() -> None:
    """Drop the start-up notices of KNOWN_NOTICES (set on the emitting loggers, before the libraries load)."""
    for name, needles in KNOWN_NOTICES.items():
        logging.getLogger(name).addFilter(_KnownNotices(needles))


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
    check_sharing(args.listen, args.share, auth, args.insecure_no_auth)
    if args.insecure_no_auth and not auth and (args.share or exposed(args.listen)):
        print("warning: serving the page without a password (--insecure-no-auth): anyone who reaches it can read "
              "and write this machine's folders", flush=True)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    _setup_logging()
    quiet_known_notices()
    from kohya_lite.config import TrainingConfig, load_config

    cfg, path, status, intro, prompts = TrainingConfig(), "", "", "", None
    if args.demo:
        from kohya_lite.demo import ensure_demo, tab_prompts

        print("preparing the demo project under ./demo ...", flush=True)
        cfg, demo_path = ensure_demo("demo")
        path, status = str(demo_path), f"Demo project: **{demo_path.name}** ({demo_path.parent})"
        intro, prompts = DEMO_INTRO, tab_prompts(cfg)
    if args.config:
        cfg, report = load_config(args.config, cfg)
        path, status = args.config, f"Loaded **{os.path.basename(args.config)}**"

    from kohya_lite.ui.app import build_app, launch, load_worker

    app = build_app(cfg, config_path=path, config_status=status, worker=load_worker(), intro=intro, prompts=prompts)
    print(f"kohya-lite GUI on http://{args.listen}:{args.port}", flush=True)
    launch(app, host=args.listen, port=args.port, auth=auth, share=args.share, inbrowser=args.inbrowser)
    return 0
