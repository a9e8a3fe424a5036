"""Training from the page, end to end: `kohya-lite gui --demo` in a subprocess, the real Worker and engine
on the demo's tiny SD1 model. Train model → progress reaches 100 % and the checkpoint is listed; a page
reload reattaches to the running job; Stop on a longer run lists the saved step checkpoint; an engine
failure shows a plain message.
"""

import shutil

import pytest

from browser_helpers import (ROOT, GuiServer, choose, fill, md_text, open_accordion, screenshot, skip_without_browser,
                             wait_text)
from browser_helpers import browser, page  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.browser, skip_without_browser]
RUN_TIMEOUT_MS = 150_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GuiServer(tmp_path_factory.mktemp("gui-train"), "--demo")
    yield srv
    srv.stop()



def progress(pg) -> tuple[int, str]:
    el = pg.locator("#run-progress .kl-progress")
    return int(el.get_attribute("data-percent")), el.get_attribute("data-state")


def run_id(pg) -> str:
    return pg.locator("#run-progress .kl-progress").get_attribute("data-run")


def wait_state(pg, states: tuple[str, ...], timeout: float = RUN_TIMEOUT_MS) -> None:
    pg.wait_for_function(
        "states => states.includes(document.querySelector('#run-progress .kl-progress')?.dataset.state)",
        arg=list(states), timeout=timeout)


def start_run(pg) -> str:
    """Click Train model; wait until the panel shows the new run; its id."""
    before = run_id(pg)
    pg.get_by_role("button", name="Train model").click()
    wait_text(pg, "problems-all", "Training started")
    pg.wait_for_function("old => { const r = document.querySelector('#run-progress .kl-progress')?.dataset.run;"
                         " return r && r !== old; }", arg=before, timeout=10_000)
    return run_id(pg)


def wait_final(pg, timeout: float = RUN_TIMEOUT_MS) -> str:
    """Wait until the run has ended; its final state (done/stopped/error)."""
    wait_state(pg, ("done", "stopped", "error"), timeout)
    return progress(pg)[1]


def wait_idle_worker(pg) -> None:
    """Between tests: the previous run has ended (done/stopped/error) or none ran."""
    wait_state(pg, ("idle", "done", "stopped", "error"))


def test_demo_trains_to_100_percent_and_lists_the_checkpoint(page, server):
    demo = server.workdir / "demo"
    assert (demo / "img" / "5_zkz object").is_dir() and (demo / "tiny-sd1").is_dir()
    assert page.locator("#cfg-path input").input_value() == str(demo / "demo.json")
    wait_text(page, "step-summary", "6 images × 5 repeats × 3 epochs ÷ batch 2 = 45 steps")
    # keep the test short: one epoch of the demo in batches of 6 (5 steps, 2 sample images)
    fill(page, "f-epoch", "1")
    fill(page, "f-train_batch_size", "6")
    wait_text(page, "step-summary", "6 images × 5 repeats × 1 epochs ÷ batch 6 = 5 steps")

    start_run(page)
    wait_state(page, ("running", "done"))
    assert page.get_by_role("button", name="Train model").is_disabled() or progress(page)[1] == "done"

    # a reload reattaches to the run: the state lives in the server's Worker
    page.reload()
    page.get_by_role("button", name="Train model").wait_for()
    wait_state(page, ("running", "done"), timeout=5_000)

    state = wait_final(page)
    assert state == "done", md_text(page, "run-error") + "\n" + page.locator("#run-log textarea").input_value()
    pct, _ = progress(page)
    assert pct == 100
    stats = md_text(page, "run-stats")
    assert "step 5/5" in stats and "epoch 1/1" in stats and "loss" in stats
    final = demo / "model" / "zkz_demo.safetensors"
    assert final.is_file()
    # checkpoints are download links, samples appear in the gallery
    page.locator('#run-checkpoints a[href$="/zkz_demo.safetensors"]').wait_for()
    page.locator("#run-samples").scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#run-samples img')].some(i => i.naturalWidth > 0)")
    assert page.locator("#run-samples img").count() == 2  # before training, then after the epoch
    assert "done" in page.locator("#run-log textarea").input_value()
    assert md_text(page, "run-error") == ""
    assert "slow poll" not in server.log(), "a status poll took more than 1 s"
    screenshot(page, "training-done")
    shot = screenshot(page, "training-done-panel", from_id="sec-samples", to_id="run-log")
    shutil.copyfile(shot, ROOT / "docs" / "screenshot.png")


def test_stop_lists_the_step_checkpoint(page, server):
    wait_idle_worker(page)
    fill(page, "f-epoch", "200")
    fill(page, "f-output_name", "zkz_stop")
    open_accordion(page, "sec-samples")
    fill(page, "f-sample_every_n_epochs", "0")
    start_run(page)
    page.wait_for_function(
        "() => /step ([3-9]|\\d\\d+)[,\\d]*\\//.test(document.querySelector('#run-stats').innerText)",
        timeout=RUN_TIMEOUT_MS)
    page.get_by_role("button", name="Stop").click()
    assert wait_final(page) == "stopped", md_text(page, "run-error")
    page.locator('#run-checkpoints a[href*="/zkz_stop-step"]').wait_for()
    steps = sorted((server.workdir / "demo" / "model").glob("zkz_stop-step*.safetensors"))
    assert steps, "the graceful stop saved a step checkpoint"
    assert "stopped at step" in page.locator("#run-log textarea").input_value()
    assert not page.get_by_role("button", name="Train model").is_disabled()
    screenshot(page, "training-stopped")


def test_engine_failure_is_shown_in_plain_words(page, server):
    wait_idle_worker(page)
    broken = server.workdir / "broken-model"
    (broken / "unet").mkdir(parents=True)
    (broken / "model_index.json").write_text("{}")
    choose(page, "f-model_list", "custom")
    fill(page, "f-pretrained_model_name_or_path", str(broken))
    fill(page, "f-output_name", "zkz_broken")
    start_run(page)
    assert wait_final(page) == "error"
    text = wait_text(page, "run-error", "Training failed")
    assert "Traceback" not in text
    screenshot(page, "training-error")
