"""Shared bits for the browser tests: a GUI server in a subprocess, Chromium through Playwright, and
small helpers to read/fill gradio widgets by their `elem_id` (`#f-<kohya key>` for config fields).

Chromium is Debian's /usr/bin/chromium (never `playwright install`), launched with the flags from
docs/testing notes so it does not try to reach outside hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SERVER_START_TIMEOUT = 60


def browser_available() -> str | None:
    """None when the browser tests can run, else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (./setup.sh --dev)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; ./setup.sh --dev does it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GuiServer:
    """`kohya-lite gui` in a subprocess with its own home and working folder."""

    def __init__(self, workdir: Path, *args: str):
        self.workdir = workdir
        self.home = workdir / ".kohya-lite-home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = workdir / "gui-server.log"
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", KOHYA_LITE_HOME=str(self.home),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "kohya_lite", "gui", "--port", str(self.port), *args],
                                     cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.ready_after = self._wait_ready()

    def _wait_ready(self) -> float:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"GUI server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"GUI server did not answer within {SERVER_START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        self._kill_training_child()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group: the server and its training child
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


    def _kill_training_child(self) -> None:
        """A run this server started lives in its own process group (the Worker's choice): end it too,
        so a failed test never leaves a training behind."""
        try:
            run = json.loads((self.home / "runs" / "current.json").read_text())
        except (OSError, ValueError):
            return
        pid = run.get("pid")
        if run.get("state") not in ("running", "stopping") or not isinstance(pid, int):
            return
        try:  # only our own run's process (its command line names this run's config), never a recycled pid
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return
        if str(run.get("config_path")) in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def start_browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return pw, browser


def screenshot(page, name: str, *, from_id: str | None = None, to_id: str | None = None) -> Path:
    """Full-page PNG under test-artifacts/; with from_id/to_id only the band between those elements."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    clip = None
    if from_id and to_id:
        top, bottom = page.locator(f"#{from_id}").first.bounding_box(), page.locator(f"#{to_id}").first.bounding_box()
        scroll = page.evaluate("() => window.scrollY")
        y0 = max(0, top["y"] + scroll - 16)
        clip = {"x": 0, "y": y0, "width": page.viewport_size["width"], "height": bottom["y"] + scroll + bottom["height"] + 16 - y0}
    page.screenshot(path=str(path), full_page=True, clip=clip)
    return path


# ---- widget helpers (gradio 6 DOM: the elem_id is on the wrapper; the control is inside) ----------
def control(page, elem_id: str):
    return page.locator(f"#{elem_id}").locator("input, textarea").first


def field_value(page, elem_id: str) -> str:
    return control(page, elem_id).input_value()


def checkbox_value(page, elem_id: str) -> bool:
    return page.locator(f"#{elem_id} input[type=checkbox]").is_checked()


def fill(page, elem_id: str, value: str) -> None:
    box = control(page, elem_id)
    box.fill(value)
    box.press("Tab")  # blur: gradio commits the value


def choose(page, elem_id: str, option_text: str) -> None:
    """Pick an option of a gradio Dropdown by (part of) its label."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option_text).first.click()


def open_accordion(page, elem_id: str) -> None:
    """Open a gr.Accordion (no-op when already open)."""
    button = page.locator(f"#{elem_id} > button.label-wrap")
    if "open" not in (button.get_attribute("class") or "").split():
        button.click()


def wait_text(page, elem_id: str, text: str, timeout: float = 15_000) -> str:
    loc = page.locator(f"#{elem_id}")
    loc.filter(has_text=text).first.wait_for(timeout=timeout)
    return loc.inner_text()


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# Outside CI a machine without Chromium skips the browser tests; in CI (setup.sh --dev installs it) they must run.
skip_without_browser = pytest.mark.skipif(browser_available() is not None and not os.environ.get("CI"),
                                          reason=str(browser_available()))


def in_view(page, elem_id: str) -> bool:
    """Is the element inside the window (not scrolled away)?"""
    return page.evaluate("id => { const r = document.getElementById(id).getBoundingClientRect();"
                         " return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }", elem_id)


def md_text(page, elem_id: str) -> str:
    """The text of a gr.Markdown, without gradio's status tracker."""
    loc = page.locator(f"#{elem_id} [data-testid=markdown]")
    return loc.first.inner_text().strip() if loc.count() else ""


# Shared fixtures: a test module that imports them provides its own `server` (a GuiServer).
@pytest.fixture(scope="module")
def browser():
    pw, br = start_browser()
    yield br
    br.close()
    pw.stop()


@pytest.fixture
def page(browser, server):
    """A fresh browser context on the module's server, with the page loaded."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    pg.goto(server.url)
    pg.get_by_role("button", name="Train model").wait_for()
    yield pg
    ctx.close()
