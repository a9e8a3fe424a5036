"""Training from the page, end to end: `kohya-lite gui --demo` in a subprocess, the real Worker and engine
on the demo's shipped base model. The demo says it is ready and the Generate / library / grid tabs already point
at it; Train model on the demo as it opens → progress reaches 100 %, the checkpoint is listed and the sample
images turn orange (pixel check on the files the gallery shows); a page reload reattaches to the
running job; only files the app wrote are served; Generate shows its image, the library lists the LoRA and
the grid renders, without editing a path; a second run with the same name asks first; Stop says what was
saved and Resume continues; an engine failure shows a plain message.
"""

import io
import json
import time
import urllib.parse

import pytest
from PIL import Image

from browser_helpers import (ARTIFACTS, GuiServer, choose, field_value, fill, in_view, md_text, open_accordion,
                             screenshot, skip_without_browser, wait_text)
from browser_helpers import browser, page  # noqa: F401  (shared fixtures)
from kohya_lite.demo import N_IMAGES, REPEATS, TRIGGER_FOLDER, base_model_path
from kohya_lite.demo.evaluate import CFG
from kohya_lite.demo.shapes import is_orange

pytestmark = [pytest.mark.browser, skip_without_browser]
RUN_TIMEOUT_MS = 300_000  # a generous ceiling for a busy 2-core machine, not a timing assertion


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


def wait_step_at_least(pg, n: int) -> None:
    pg.wait_for_function(
        "n => { const m = /step ([\\d,]+)\\//.exec(document.querySelector('#run-stats').innerText);"
        " return m && parseInt(m[1].replace(/,/g, '')) >= n; }", arg=n, timeout=RUN_TIMEOUT_MS)


def wait_idle_worker(pg) -> None:
    """Between tests: the previous run has ended (done/stopped/error) or none ran."""
    wait_state(pg, ("idle", "done", "stopped", "error"))


def test_the_demo_is_ready_and_the_other_tabs_point_at_it(page, server):
    demo = server.workdir / "demo"
    assert "The demo is ready: click Train model" in md_text(page, "run-status")
    assert in_view(page, "btn-train"), "Train model is in view without scrolling"
    page.get_by_role("tab", name="Generate", exact=True).click()
    assert field_value(page, "f-gen_model") == str(base_model_path())
    assert field_value(page, "f-gen_lora_dir") == str(demo / "model")
    assert (field_value(page, "gen-width"), field_value(page, "gen-height")) == ("64", "64")
    assert field_value(page, "gen-prompt") == "zkz shape <lora:zkz_demo:1>"
    assert float(field_value(page, "gen-cfg")) == CFG, "the demo base's guidance scale"
    page.get_by_role("tab", name="LoRA library", exact=True).click()
    assert field_value(page, "f-lib_lora_dir") == str(demo / "model")
    page.get_by_role("tab", name="Epoch grid", exact=True).click()
    assert field_value(page, "f-grid_output_dir") == str(demo / "model")
    assert field_value(page, "grid-name") == "zkz_demo" and field_value(page, "f-grid_model") == str(base_model_path())
    # they follow the training page: another output folder and resolution there, and the tabs go along
    page.get_by_role("tab", name="LoRA", exact=True).click()
    fill(page, "f-output_dir", str(server.workdir / "elsewhere"))
    fill(page, "f-max_resolution", "128,96")
    page.get_by_role("tab", name="Generate", exact=True).click()
    page.wait_for_function("v => document.querySelector('#f-gen_lora_dir input').value === v",
                           arg=str(server.workdir / "elsewhere"))
    assert (field_value(page, "gen-width"), field_value(page, "gen-height")) == ("128", "96")


def gallery_images(pg) -> list[Image.Image]:
    """The sample images the gallery shows, in order, fetched through the URLs the page uses."""
    imgs = pg.locator("#run-samples img")
    return [Image.open(io.BytesIO(pg.request.get(imgs.nth(i).get_attribute("src")).body())).convert("RGB")
            for i in range(imgs.count())]


def test_the_demo_trains_and_its_samples_turn_orange(page, server):
    """The whole demo as a newcomer runs it (Train model on the preset as it opens): progress to 100 %, the
    checkpoint listed, and the "zkz shape" samples go from the base's colours at step 0 to orange."""
    demo = server.workdir / "demo"
    assert (demo / "img" / TRIGGER_FOLDER).is_dir()
    assert page.locator("#cfg-path input").input_value() == str(demo / "demo.json")
    cfg = json.loads((demo / "demo.json").read_text())
    epochs, batch = cfg["epoch"], cfg["train_batch_size"]
    steps = -(-N_IMAGES * REPEATS // batch) * epochs
    plan = f"{N_IMAGES} images × {REPEATS} repeats × {epochs} epochs ÷ batch {batch} = {steps} steps"
    wait_text(page, "step-summary", plan)
    # a log box two lines high (also after the reload below), so the log overflows it and following the newest
    # line shows
    short_log = ("(() => { const s = document.createElement('style'); "
                 "s.textContent = '#run-log textarea { height: 3em !important; max-height: 3em !important; }'; "
                 "document.head.appendChild(s); })()")
    page.add_init_script(f"document.addEventListener('DOMContentLoaded', () => {short_log})")
    page.evaluate(short_log)

    start_run(page)
    checked = md_text(page, "problems-all")
    assert plan in checked, "the step plan after Train model is the one under Parameters"
    assert "Memory: about " in checked and "GB of RAM" in checked, "the memory estimate before training"
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
    assert f"step {steps}/{steps}" in stats and f"epoch {epochs}/{epochs}" in stats and "loss" in stats
    assert "Finished: zkz_demo.safetensors" in wait_text(page, "run-status", "Finished")
    final = demo / "model" / "zkz_demo.safetensors"
    assert final.is_file()
    # checkpoints are download links, samples appear in the gallery
    link = page.locator('#run-checkpoints a[href$="/zkz_demo.safetensors"]')
    link.wait_for()
    page.locator("#run-samples").scroll_into_view_if_needed()
    prompts = [line for line in cfg["sample_prompts"].splitlines() if line.strip()]
    # the gallery loads off-screen images lazily: count the <img> elements, then fetch each through its URL
    page.wait_for_function("n => document.querySelectorAll('#run-samples img').length >= n",
                           arg=len(prompts) * (epochs + 1))
    # pixel check on the images the gallery shows: step 0 (sample_at_first), then the last epoch's row
    shown = gallery_images(page)
    assert len(shown) == len(prompts) * (epochs + 1)
    zkz = [i for i, line in enumerate(prompts) if line.startswith("zkz shape")]
    before = sum(is_orange(shown[i]) for i in zkz)
    after = sum(is_orange(shown[len(prompts) * epochs + i]) for i in zkz)
    assert before == 0 and after >= len(zkz) - 1, (before, after)
    assert "done" in page.locator("#run-log textarea").input_value()
    assert md_text(page, "run-error") == ""
    # the loss chart: both series in a legend, whole-number step ticks
    chart = page.locator("#run-loss svg.kl-chart")
    assert chart.get_attribute("data-points") == str(steps)
    assert page.locator("#run-loss .kl-legend").all_text_contents() == ["loss", "average"]
    ticks = page.locator("#run-loss .kl-xtick").all_text_contents()
    assert ticks and all(t.isdigit() for t in ticks), ticks
    # the log box shows its newest line
    page.wait_for_function("() => { const t = document.querySelector('#run-log textarea');"
                           " return t.scrollHeight > t.clientHeight && t.scrollTop + t.clientHeight >= t.scrollHeight - 8; }")
    assert page.locator("#run-checkpoints .label-clear-button:visible").count() == 0
    assert "slow poll" not in server.log(), "a status poll took more than 1 s"

    # only what the app wrote is served: the checkpoint's link works, other files of the output folder do not
    assert page.request.get(link.get_attribute("href")).status == 200
    private = demo / "model" / "private-notes.txt"
    private.write_text("not for the browser\n")
    for path in (private, final):
        assert page.request.get(server.url + "gradio_api/file=" + urllib.parse.quote(str(path))).status == 403, path
    screenshot(page, "training-done")
    screenshot(page, "training-done-panel", from_id="sec-samples", to_id="run-log")
    # every row of the gallery at once (the base at step 0 on top, then each epoch), for the README's first run
    page.evaluate("() => { for (const el of document.querySelectorAll('#run-samples, #run-samples *')) {"
                  " const s = getComputedStyle(el); if (s.overflowY === 'auto' || s.overflowY === 'scroll' ||"
                  " el.style.height) { el.style.height = 'auto'; el.style.maxHeight = 'none';"
                  " el.style.overflowY = 'visible'; } } }")
    page.locator("#run-samples").screenshot(path=str(ARTIFACTS / "demo-samples.png"))


def test_generate_library_and_grid_work_on_the_demo_without_editing_a_path(page, server):
    wait_idle_worker(page)
    assert (server.workdir / "demo" / "model" / "zkz_demo.safetensors").is_file(), "needs the run above"
    page.get_by_role("tab", name="Generate", exact=True).click()
    # the tab's own prompt, size and CFG: one click renders the LoRA's orange
    fill(page, "gen-seed", "1")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("() => [...document.querySelectorAll('#gen-image img')].some(i => i.naturalWidth === 64)",
                           timeout=RUN_TIMEOUT_MS)
    assert md_text(page, "gen-message") == "" and "zkz_demo" in page.locator("#gen-used").inner_text()
    src = page.locator("#gen-image img").first.get_attribute("src")
    assert is_orange(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
    assert page.locator(".error, [data-testid=error]").count() == 0 or \
        not page.locator(".error, [data-testid=error]").first.is_visible()
    screenshot(page, "generate-demo")

    page.get_by_role("tab", name="LoRA library", exact=True).click()
    page.get_by_role("button", name="Refresh").click()
    wait_text(page, "lib-table", "zkz_demo")
    # the final file and one per earlier epoch (save_every_n_epochs 1)
    epochs = json.loads((server.workdir / "demo" / "demo.json").read_text())["epoch"]
    assert f"{epochs} LoRAs" in wait_text(page, "lib-message", "LoRA")

    page.get_by_role("tab", name="Epoch grid", exact=True).click()
    page.get_by_role("button", name="Find checkpoints").click()
    wait_text(page, "grid-checkpoints", "zkz_demo")
    assert field_value(page, "grid-prompt") == "zkz shape"
    fill(page, "grid-weights", "0,1")
    fill(page, "grid-steps", "2")
    page.get_by_role("button", name="Render grid").click()
    page.wait_for_function("() => [...document.querySelectorAll('#grid-image img')].some(i => i.naturalWidth > 0)",
                           timeout=RUN_TIMEOUT_MS)
    layout = wait_text(page, "grid-layout", "Rows (checkpoints)")
    assert "final" in layout and "Columns (LoRA weight): 0, 1" in layout and "{" not in layout
    screenshot(page, "grid-demo")


def test_a_second_run_asks_first_then_stop_says_what_was_saved_and_resume_continues(page, server):
    wait_idle_worker(page)
    model = server.workdir / "demo" / "model"
    first = (model / "zkz_demo.safetensors").read_bytes()
    fill(page, "f-epoch", "200")
    open_accordion(page, "sec-samples")
    fill(page, "f-sample_every_n_epochs", "0")
    before = run_id(page)
    page.get_by_role("button", name="Train model").click()
    text = wait_text(page, "overwrite-text", "already holds")
    epochs = json.loads((server.workdir / "demo" / "demo.json").read_text())["epoch"]
    assert f"{epochs} files of 'zkz_demo'" in text and "zkz_demo-000001.safetensors" in text
    time.sleep(1.5)  # a poll or two: nothing started
    assert run_id(page) == before
    screenshot(page, "second-run-asks")
    page.get_by_role("button", name="Train as 'zkz_demo_2'").click()
    wait_text(page, "problems-all", "Training started")
    page.wait_for_function("old => document.querySelector('#run-progress .kl-progress')?.dataset.run !== old",
                           arg=before, timeout=10_000)
    assert field_value(page, "f-output_name") == "zkz_demo_2"
    assert not page.locator("#overwrite-confirm").is_visible()
    wait_step_at_least(page, 3)
    page.get_by_role("button", name="Stop").click()
    assert wait_final(page) == "stopped", md_text(page, "run-error")
    note = wait_text(page, "run-status", "Stopped at step")
    stopped_at = int(note.split("Stopped at step ")[1].split(":")[0].replace(",", ""))
    step_file, state = f"zkz_demo_2-step{stopped_at:08d}.safetensors", f"zkz_demo_2-step{stopped_at:08d}-state"
    assert f"saved {step_file} and the training state {state}/" in note and "Resume continues" in note
    assert (model / step_file).is_file() and (model / state / "train_state.json").is_file()
    page.locator(f'#run-checkpoints a[href$="/{step_file}"]').wait_for()
    screenshot(page, "training-stopped")

    stopped_run = run_id(page)
    page.get_by_role("button", name="Resume").click()
    assert f"Resuming run {stopped_run} at step {stopped_at}" in wait_text(page, "problems-all", "Resuming")
    page.wait_for_function("old => document.querySelector('#run-progress .kl-progress')?.dataset.run !== old",
                           arg=stopped_run, timeout=10_000)
    wait_step_at_least(page, stopped_at + 2)
    assert f"at step {stopped_at}" in page.locator("#run-log textarea").input_value(), "resumed from the state"
    page.get_by_role("button", name="Stop").click()
    assert wait_final(page) == "stopped"
    assert (model / "zkz_demo.safetensors").read_bytes() == first, "the first run's LoRA was kept"
    assert not list(model.glob(".kohya-lite.lock")), "the output folder is unlocked after the run"


def test_an_output_folder_another_training_holds_is_refused(page, server):
    """A `kohya-lite train` from a terminal holds the demo's output folder: the page says so and starts nothing."""
    import json
    import subprocess
    import sys

    import psutil

    wait_idle_worker(page)
    model = server.workdir / "demo" / "model"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (model / ".kohya-lite.lock").write_text(json.dumps({
            "pid": other.pid, "host": __import__("socket").gethostname(), "started": time.time(),
            "process_started": psutil.Process(other.pid).create_time(), "command": "kohya-lite train"}))
        runs = server.home / "runs"
        before = sorted(runs.iterdir())
        fill(page, "f-output_name", "zkz_locked")
        page.get_by_role("button", name="Train model").click()
        text = wait_text(page, "problems-folders", "in use by another training")
        assert f"process {other.pid}" in text and "Fix: wait for that training to finish" in text
        assert "did not start" in md_text(page, "run-status")
        time.sleep(1.5)
        assert sorted(runs.iterdir()) == before, "no run started"
    finally:
        other.kill()
        other.wait()
        (model / ".kohya-lite.lock").unlink(missing_ok=True)


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
