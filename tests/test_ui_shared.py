"""Sharing the page: it browses and writes this machine's folders, so `--listen` on a network address or
`--share` without `--auth` refuses to start (unless `--insecure-no-auth`), and with `--auth` the browser gets
a login form first. Files that merely sit in the working folder are never served, logged in or not."""

import subprocess
import sys
import urllib.parse

import pytest

from browser_helpers import ROOT, GuiServer, free_port, skip_without_browser
from browser_helpers import browser  # noqa: F401  (shared fixture)

ENV_KEYS = ("PATH", "HOME", "LANG", "TMPDIR")


def _gui(tmp_path, *args: str) -> subprocess.CompletedProcess:
    import os

    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    env.update(PYTHONPATH=str(ROOT), KOHYA_LITE_HOME=str(tmp_path / "home"), GRADIO_ANALYTICS_ENABLED="False")
    return subprocess.run([sys.executable, "-m", "kohya_lite", "gui", "--port", str(free_port()), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [("--listen", "0.0.0.0"), ("--share",), ("--listen", "192.168.1.20")])
def test_sharing_without_a_password_refuses_to_start(tmp_path, args):
    done = _gui(tmp_path, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs a password" in done.stderr and "--auth USER:PASS" in done.stderr
    assert "--insecure-no-auth" in done.stderr and "Traceback" not in done.stderr
    assert "Running on" not in done.stdout, "no server was started"


def test_which_addresses_count_as_shared():
    from kohya_lite.commands.gui import check_sharing, exposed

    assert not any(exposed(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert all(exposed(h) for h in ("0.0.0.0", "::", "192.168.1.20", "my-host.lan"))
    check_sharing("0.0.0.0", False, ("u", "p"), False)  # a password: fine
    check_sharing("0.0.0.0", True, None, True)  # said explicitly: fine
    check_sharing("127.0.0.1", False, None, False)  # this machine only: fine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GuiServer(tmp_path_factory.mktemp("gui-shared"), "--listen", "0.0.0.0", "--auth", "kl:s3cret")
    yield srv
    srv.stop()


@pytest.mark.browser
@skip_without_browser
def test_listen_with_auth_asks_for_the_password_first(browser, server):  # noqa: F811
    secret = server.workdir / "notes.txt"
    secret.write_text("private\n")
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    file_url = server.url + "gradio_api/file=" + urllib.parse.quote(str(secret))
    assert pg.request.get(file_url).status in (401, 403)
    pg.goto(server.url)
    pg.get_by_label("username").wait_for()
    assert pg.get_by_role("button", name="Train model").count() == 0, "nothing of the page before logging in"
    pg.get_by_label("username").fill("kl")
    pg.get_by_label("password").fill("s3cret")
    pg.get_by_role("button", name="Login").click()
    pg.get_by_role("button", name="Train model").wait_for(timeout=60_000)
    assert pg.request.get(file_url).status == 403, "a file in the working folder is not served, even logged in"
    ctx.close()
