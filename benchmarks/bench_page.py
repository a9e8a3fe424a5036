"""How fast the page answers: server start, first paint (Train model visible) and a graceful Stop (click →
'stopped'), on `kohya-lite gui --demo` in a subprocess driven by Debian's Chromium (as the browser tests do).

The browser tests assert what the page shows, never how long it took; these timings live here.

    .venv/bin/python benchmarks/bench_page.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser_helpers import GuiServer, fill, open_accordion, start_browser  # noqa: E402


def first_paint(browser, url: str) -> float:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    t0 = time.monotonic()
    page.goto(url)
    page.get_by_role("button", name="Train model").wait_for(timeout=60_000)
    elapsed = time.monotonic() - t0
    ctx.close()
    return elapsed


def stop_time(browser, url: str, name: str) -> float:
    """Start a long demo run, wait for step 3, click Stop; seconds until the page shows 'stopped'."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(300_000)
    page.goto(url)
    page.get_by_role("button", name="Train model").wait_for()
    fill(page, "f-epoch", "200")
    fill(page, "f-output_name", name)
    open_accordion(page, "sec-samples")
    fill(page, "f-sample_every_n_epochs", "0")
    page.get_by_role("button", name="Train model").click()
    page.wait_for_function("() => /step ([3-9]|\\d\\d+)[,\\d]*\\//.test(document.querySelector('#run-stats').innerText)")
    t0 = time.monotonic()
    page.get_by_role("button", name="Stop").click()
    page.wait_for_function("() => document.querySelector('#run-progress .kl-progress')?.dataset.state === 'stopped'")
    elapsed = time.monotonic() - t0
    ctx.close()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        server = GuiServer(Path(tmp), "--demo")
        pw, browser = start_browser()
        try:
            paints = [first_paint(browser, server.url) for _ in range(args.repeats)]
            stops = [stop_time(browser, server.url, f"bench_stop_{i}") for i in range(args.repeats)]
        finally:
            browser.close()
            pw.stop()
            server.stop()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f}")
    print(f"server ready (demo built) {server.ready_after:.1f} s")
    print(f"first paint   median {statistics.median(paints):.2f} s  (min {min(paints):.2f}, max {max(paints):.2f})")
    print(f"stop → stopped median {statistics.median(stops):.2f} s  (min {min(stops):.2f}, max {max(stops):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
