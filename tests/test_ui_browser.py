"""The page in a real Chromium: presets, Check beside the field, save → reload → load, dataset
preparation filling the Folders fields, the server path picker, screenshots of each tab; the usual mistakes
(a folder without the repeats prefix, an emptied number box) shown whole beside their fields; the run bar in
view at the top of a long page.

One GUI server per module (`kohya-lite gui` in a subprocess, own home and working folder). Timings (first
paint) are measured by benchmarks/bench_page.py, not asserted here.
"""

import json
import time

import pytest
from PIL import Image

from browser_helpers import (GuiServer, checkbox_value, choose, control, field_value, fill, in_view, md_text,
                             open_accordion, screenshot, skip_without_browser, wait_text)
from browser_helpers import browser, page  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.browser, skip_without_browser]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("gui")
    img = wd / "project" / "img" / "5_zkz object"
    img.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(img / f"{i}.png")
        (img / f"{i}.txt").write_text("zkz object\n")
    cats = wd / "no-prefix" / "img" / "cats"  # the usual mistake: no '<repeats>_' prefix
    cats.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (200, 120, 40 * i)).save(cats / f"c{i}.png")
    photos = wd / "photos"
    photos.mkdir()
    for i in range(7):
        Image.new("RGB", (48, 48), (200, 30 * i, 30)).save(photos / f"p{i}.jpg")
    (photos / "p0.txt").write_text("zkz woman, red\n")
    return wd


@pytest.fixture(scope="module")
def server(workdir):
    srv = GuiServer(workdir)
    yield srv
    srv.stop()



def test_page_order_run_bar_in_view_and_tab_screenshots(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.goto(server.url)
    pg.get_by_role("button", name="Train model").wait_for(timeout=15_000)
    assert pg.title() == "kohya-lite"
    # every section of the training page, in kohya_ss order, then the run bar and the panel (document order)
    order = ["sec-config", "sec-model", "sec-folders", "sec-metadata", "sec-accelerate", "sec-basic",
             "sec-advanced", "sec-samples", "run-bar", "problems-all", "run-panel"]
    assert pg.evaluate("ids => ids.map(i => document.getElementById(i)).every((el, k, all) => k === 0 || "
                       "(all[k - 1].compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING))", order)
    # the buttons and the run's state are in view at the top of the long page (a sticky bar), and stay there
    assert pg.evaluate("() => document.documentElement.scrollHeight") > 3000
    for where in (0, 1500):
        pg.evaluate(f"window.scrollTo(0, {where})")
        for el in ("btn-train", "btn-check", "run-progress"):
            assert in_view(pg, el), f"#{el} is out of view at scroll {where}"
    pg.evaluate("window.scrollTo(0, 0)")
    ids = pg.evaluate("() => [...document.querySelectorAll('[id]')].map(e => e.id).filter(Boolean)")
    assert len(ids) == len(set(ids)), "element ids are unique"
    # kohya_ss's show/hide rules: SDXL options appear with the SDXL box, conv rank with a LoCon type
    assert not pg.locator("#sec-sdxl").is_visible()
    pg.locator("#f-sdxl input").check()
    pg.locator("#sec-sdxl").wait_for(state="visible")
    y = {e: pg.locator(f"#{e}").bounding_box()["y"] for e in ("sec-basic", "sec-sdxl", "sec-advanced")}
    assert y["sec-basic"] < y["sec-sdxl"] < y["sec-advanced"], "SDXL sits between Basic and Advanced"
    pg.locator("#f-sdxl input").uncheck()
    pg.locator("#sec-sdxl").wait_for(state="hidden")
    assert not pg.locator("#f-conv_dim").is_visible()
    choose(pg, "f-LoRA_type", "Kohya LoCon")
    pg.locator("#f-conv_dim").wait_for(state="visible")
    choose(pg, "f-LoRA_type", "Standard")
    pg.locator("#f-conv_dim").wait_for(state="hidden")
    screenshot(pg, "tab-lora")

    pg.get_by_role("tab", name="Utilities", exact=True).click()
    pg.get_by_role("tab", name="Captioning", exact=True).click()
    pg.get_by_role("button", name="Caption images (Basic Captioning)").wait_for()
    screenshot(pg, "tab-utilities-captioning")
    pg.get_by_role("tab", name="Dataset preparation", exact=True).click()
    pg.get_by_role("button", name="Prepare training data").wait_for()
    screenshot(pg, "tab-utilities-dataset-preparation")
    ctx.close()


def test_preset_then_check_shows_the_error_beside_the_field(page, server, workdir):
    choose(page, "cfg-open", "preset: CPU demo (tiny model)")
    wait_text(page, "cfg-status", "Applied preset")
    assert field_value(page, "f-learning_rate") == "0.003"
    assert field_value(page, "f-max_resolution") == "64,64"
    assert field_value(page, "f-optimizer") == "AdamW"
    assert field_value(page, "cfg-path") == "", "a preset does not change the config path"
    assert "unsaved" in page.locator("#cfg-dirty").inner_text()

    fill(page, "f-train_data_dir", str(workdir / "project" / "img"))
    plan = "3 images × 5 repeats × 6 epochs ÷ batch 4 = 24 steps"
    wait_text(page, "step-summary", plan)
    page.get_by_role("button", name="Check").click()  # the same step-plan text after Check
    assert plan in wait_text(page, "problems-all", "Not ready")

    missing = workdir / "no_such_folder"
    fill(page, "f-train_data_dir", str(missing))
    fill(page, "f-output_dir", str(workdir / "project" / "model"))
    page.get_by_role("button", name="Check").click()
    text = wait_text(page, "problems-folders", "does not exist")
    assert "Image folder" in text and str(missing) in text and "Fix" in text
    assert "(train_data_dir)" not in text, "the field's label, not its key"
    assert "Not ready" in page.locator("#problems-all").inner_text()
    assert page.locator("#problems-model").inner_text().strip(), "the model problem shows under Source model"
    screenshot(page, "check-problems")
    # nothing started
    assert md_text(page, "run-stats") == "No training run yet."
    runs = server.home / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]

    # Train model runs the same pre-flight and refuses to start
    page.get_by_role("button", name="Train model").click()
    wait_text(page, "problems-all", "Not ready")
    time.sleep(1.5)  # a poll or two
    assert md_text(page, "run-stats") == "No training run yet."


def test_a_folder_without_the_repeats_prefix_shows_the_whole_message(page, workdir):
    fill(page, "f-train_data_dir", str(workdir / "no-prefix" / "img"))
    summary = wait_text(page, "step-summary", "No images")
    assert "No images in '<repeats>_<trigger> <class>' subfolders of the image folder yet." in summary
    page.get_by_role("button", name="Check").click()
    text = wait_text(page, "problems-folders", "prefix")
    assert "folder 'cats' has no '<repeats>_' prefix and is skipped" in text
    assert "Fix: rename it to e.g. '10_cats' (10 repeats)" in text
    screenshot(page, "check-no-prefix-folder")


def test_an_emptied_number_box_blocks_train_beside_the_field(page, server, workdir):
    choose(page, "cfg-open", "preset: CPU demo (tiny model)")
    wait_text(page, "cfg-status", "Applied preset")
    box = control(page, "f-learning_rate")
    box.fill("")
    box.press("Tab")
    # beside the field at once: the emptied box says "enter a number", in red
    assert box.evaluate("el => el.matches(':placeholder-shown') && el.placeholder") == "enter a number"
    red = "rgb(198, 40, 40)"
    assert box.evaluate("el => getComputedStyle(el).borderTopColor") == red
    assert control(page, "f-unet_lr").evaluate("el => getComputedStyle(el).borderTopColor") != red, "only empty ones"
    page.get_by_role("button", name="Train model").click()
    text = wait_text(page, "problems-basic", "Learning rate: the box is empty")
    assert "Fix: enter a number, e.g. 0.0001 (the default)" in text
    assert "empty number box" in md_text(page, "run-status"), "the run bar says why nothing started"
    screenshot(page, "blank-learning-rate", from_id="sec-basic", to_id="problems-basic")
    time.sleep(1.5)  # a poll or two: nothing started
    assert md_text(page, "run-stats") == "No training run yet."
    runs = server.home / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]
    fill(page, "f-train_data_dir", str(workdir / "project" / "img"))
    wait_text(page, "step-summary", "3 images × 5 repeats")
    fill(page, "f-epoch", "")
    wait_text(page, "step-summary", "Epoch is empty: enter a number to see the steps.")


def test_save_reload_load_restores_fields(page, workdir):
    target = workdir / "configs" / "saved.json"
    fill(page, "f-output_name", "roundtrip_lora")
    fill(page, "f-network_dim", "24")
    fill(page, "f-learning_rate", "0.0003")
    choose(page, "f-optimizer", "Prodigy")
    open_accordion(page, "sec-advanced")
    page.locator("#f-flip_aug input[type=checkbox]").check()
    open_accordion(page, "sec-samples")
    control(page, "f-sample_prompts").fill("zkz object --w 64 --h 64\nzkz object, blue --d 3")
    assert "unsaved" in wait_text(page, "cfg-dirty", "unsaved")

    fill(page, "cfg-path", str(target))
    page.get_by_role("button", name="💾 Save").click()
    wait_text(page, "cfg-status", "Saved")
    assert md_text(page, "cfg-dirty") == ""
    saved = json.loads(target.read_text())
    assert saved["output_name"] == "roundtrip_lora" and saved["network_dim"] == 24
    assert saved["optimizer"] == "Prodigy" and saved["flip_aug"] is True and saved["learning_rate"] == 0.0003
    assert saved["sample_prompts"] == "zkz object --w 64 --h 64\nzkz object, blue --d 3"

    page.reload()
    page.get_by_role("button", name="Train model").wait_for()
    assert field_value(page, "f-output_name") == "last"
    fill(page, "cfg-path", str(target))
    page.get_by_role("button", name="↩️ Load").click()
    wait_text(page, "cfg-status", "Loaded")
    assert field_value(page, "f-output_name") == "roundtrip_lora"
    assert field_value(page, "f-network_dim") == "24"
    assert field_value(page, "f-learning_rate") == "0.0003"
    assert field_value(page, "f-optimizer") == "Prodigy"
    open_accordion(page, "sec-advanced")
    assert checkbox_value(page, "f-flip_aug")
    open_accordion(page, "sec-samples")
    assert field_value(page, "f-sample_prompts") == "zkz object --w 64 --h 64\nzkz object, blue --d 3"

    # the recent file is offered by Open after a reload
    page.reload()
    choose(page, "cfg-open", f"recent: {target.resolve()}")
    wait_text(page, "cfg-status", "Loaded")
    assert field_value(page, "cfg-path") == str(target.resolve())
    assert field_value(page, "f-output_name") == "roundtrip_lora"


def test_dataset_preparation_fills_the_folders(page, workdir):
    dest = workdir / "prepared"
    page.get_by_role("tab", name="Utilities", exact=True).click()
    page.get_by_role("tab", name="Dataset preparation", exact=True).click()
    fill(page, "prep-instance", "zkz")
    fill(page, "prep-class", "woman")
    fill(page, "f-prep-images", str(workdir / "photos"))
    wait_text(page, "prep-hint", "7 images")
    assert field_value(page, "prep-repeats") == "43"  # suggest_repeats(7)
    fill(page, "f-prep-dest", str(workdir / "photos" / "inside"))
    page.get_by_role("button", name="Prepare training data").click()
    assert "overlap" in wait_text(page, "prep-result", "overlap")

    fill(page, "f-prep-dest", str(dest))
    page.get_by_role("button", name="Prepare training data").click()
    wait_text(page, "prep-result", "✅")
    screenshot(page, "dataset-preparation-done")
    folder = dest / "img" / "43_zkz woman"
    assert len(list(folder.glob("*.jpg"))) == 7 and (folder / "p0.txt").read_text() == "zkz woman, red\n"
    assert len(list((workdir / "photos").glob("*.jpg"))) == 7, "copied, not moved"

    page.get_by_role("tab", name="LoRA", exact=True).click()
    assert field_value(page, "f-train_data_dir") == str(dest / "img")
    assert field_value(page, "f-output_dir") == str(dest / "model")
    assert field_value(page, "f-logging_dir") == str(dest / "log")
    assert field_value(page, "f-reg_data_dir") == ""
    assert "unsaved" in page.locator("#cfg-dirty").inner_text()
    wait_text(page, "step-summary", "7 images × 43 repeats")


def test_server_path_picker(page, workdir):
    fill(page, "f-train_data_dir", str(workdir / "project"))
    choose(page, "b-train_data_dir", "📁 img/")
    page.wait_for_function(
        "([id, v]) => document.querySelector(`#${id} input`).value === v",
        arg=["f-train_data_dir", str(workdir / "project" / "img")])
    wait_text(page, "step-summary", "3 images × 5 repeats")
    # the model picker lists checkpoints and detects the family from the file's keys
    from safetensors.numpy import save_file
    import numpy as np

    models = workdir / "models"
    models.mkdir(exist_ok=True)
    save_file({"conditioner.embedders.0.x": np.zeros(1, np.float32)}, str(models / "xl.safetensors"))
    fill(page, "f-pretrained_model_name_or_path", str(models))
    choose(page, "b-pretrained_model_name_or_path", "📄 xl.safetensors")
    wait_text(page, "model-note", "SDXL")
    assert checkbox_value(page, "f-sdxl") and not checkbox_value(page, "f-v2")
    assert field_value(page, "f-model_list") == "custom"

    choose(page, "f-model_list", "SD2.1 768-v")
    wait_text(page, "model-note", "v-prediction")
    assert field_value(page, "f-pretrained_model_name_or_path") == "stabilityai/stable-diffusion-2-1"
    assert checkbox_value(page, "f-v2") and checkbox_value(page, "f-v_parameterization")
    assert not checkbox_value(page, "f-sdxl")


def test_print_command(page, workdir):
    fill(page, "cfg-path", str(workdir / "print.json"))
    page.get_by_role("button", name="Print command").click()
    cmd = page.locator("#print-command textarea, #print-command input").first
    page.wait_for_function("el => el.value.includes('kohya-lite train')", arg=cmd.element_handle())
    assert "Save first" in cmd.input_value() and str(workdir / "print.json") in cmd.input_value()
    assert '"LoRA_type": "Standard"' in page.locator("#print-json").inner_text()


def test_basic_captioning_tab(page, workdir):
    folder = workdir / "to-caption"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32)).save(folder / f"c{i}.png")
    (folder / "c1.txt").write_text("already captioned\n")
    page.get_by_role("tab", name="Utilities", exact=True).click()
    page.get_by_role("tab", name="Captioning", exact=True).click()
    fill(page, "f-basic-folder", str(folder))
    fill(page, "basic-caption_text", "zkz object")
    page.get_by_role("button", name="Caption images (Basic Captioning)").click()
    text = wait_text(page, "basic-result", "written")
    assert "1 caption(s) written" in text and "1 skipped" in text
    assert (folder / "c0.txt").read_text().strip() == "zkz object"
    assert (folder / "c1.txt").read_text() == "already captioned\n"

    fill(page, "f-basic-folder", str(workdir / "missing-folder"))
    page.get_by_role("button", name="Caption images (Basic Captioning)").click()
    assert "does not exist" in wait_text(page, "basic-result", "does not exist")


def test_wd14_captioning_tab_with_a_tiny_tagger(page, workdir):
    """The WD14 sub-tab runs the real onnxruntime tagger (a tiny one with known scores) from the page."""
    from kohya_lite.captioning.tiny import TINY_WD14_TAGS, build_tiny_wd14

    scores = [0.9, 0.1, 0.0, 0.0] + [0.0] * (len(TINY_WD14_TAGS) - 4)
    names = [n for n, _ in TINY_WD14_TAGS]
    scores[names.index("1girl")] = 0.8
    scores[names.index("long_hair")] = 0.5
    scores[names.index("smile")] = 0.3  # below the 0.35 general threshold
    scores[names.index("hatsune_miku")] = 0.6  # above 0.35 but below a 0.7 character threshold
    model = build_tiny_wd14(workdir / "wd14-tiny", scores=scores)
    folder = workdir / "anime"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 60), (200, 30 * i, 90)).save(folder / f"a{i}.png")
    page.get_by_role("tab", name="Utilities", exact=True).click()
    page.get_by_role("tab", name="Captioning", exact=True).click()
    page.get_by_role("tab", name="WD14 Captioning", exact=True).click()
    fill(page, "f-wd14-folder", str(folder))
    fill(page, "wd14-model_dir", str(model))
    fill(page, "wd14-character_threshold", "0.7")
    fill(page, "wd14-prefix", "zkz,")
    page.get_by_role("button", name="Caption images (WD14 Captioning)").click()
    text = wait_text(page, "wd14-result", "written", timeout=60_000)
    assert "2 caption(s) written" in text
    for i in range(2):
        assert (folder / f"a{i}.txt").read_text() == "zkz, 1girl, long hair\n"
    screenshot(page, "tab-utilities-captioning-wd14")


def test_manual_caption_editor(page, workdir):
    folder = workdir / "manual"
    folder.mkdir()
    for i in range(10):  # two pages of 8
        Image.new("RGB", (32, 32), (20 * i, 0, 0)).save(folder / f"m{i:02d}.png")
    (folder / "m00.txt").write_text("zkz, red\n")
    page.get_by_role("tab", name="Utilities", exact=True).click()
    page.get_by_role("tab", name="Captioning", exact=True).click()
    page.get_by_role("tab", name="Manual Captioning", exact=True).click()
    fill(page, "f-manual-folder", str(folder))
    page.locator("#manual-load").click()
    wait_text(page, "manual-status", "Page 1 of 2 · 10 images")
    assert control(page, "manual-cap-0").input_value() == "zkz, red"
    assert "zkz (1)" in md_text(page, "manual-freq")
    box = control(page, "manual-cap-1")
    box.fill("zkz, blue")
    page.locator("#manual-status").click()  # leave the box: it saves
    wait_text(page, "manual-status", "Saved")
    assert (folder / "m01.txt").read_text() == "zkz, blue\n"
    fill(page, "manual-quick", "solo")
    page.locator("#manual-add").click()
    wait_text(page, "manual-status", "Added to 10 caption(s)")
    assert (folder / "m00.txt").read_text() == "solo, zkz, red\n" and (folder / "m09.txt").read_text() == "solo\n"
    fill(page, "manual-find", "zkz")
    fill(page, "manual-replace", "lisabp")
    page.locator("#manual-replace-run").click()
    wait_text(page, "manual-status", "Replaced in 2 caption(s)")
    assert (folder / "m01.txt").read_text() == "solo, lisabp, blue\n"
    page.locator("#manual-next").click()
    wait_text(page, "manual-status", "Page 2 of 2")
    assert control(page, "manual-cap-1").input_value() == "solo"
    assert not page.locator("#manual-cap-2").is_visible()
    screenshot(page, "tab-utilities-captioning-manual")


def test_lora_tools_resize_from_the_page(page, workdir, tiny_sd1_dir):
    import torch

    from kohya_lite.models.load import load_model
    from kohya_lite.network.io import read_lora_file, save_lora_file
    from kohya_lite.network.lora import LoRANetwork

    net = LoRANetwork.create(load_model(tiny_sd1_dir), 4, 4)
    with torch.no_grad():  # a "trained" network: non-zero up weights
        for p in net.parameters():
            p.normal_(0, 0.1)
    src = workdir / "tools-in.safetensors"
    save_lora_file(src, net.kohya_state_dict(), {"ss_base_model_version": "sd_v1", "ss_v2": "False"})
    out = workdir / "tools-out.safetensors"
    page.get_by_role("tab", name="Utilities", exact=True).click()
    page.get_by_role("tab", name="LoRA tools", exact=True).click()
    page.get_by_role("tab", name="Resize", exact=True).click()
    fill(page, "f-tools-resize-file", str(src))
    fill(page, "tools-resize-out", str(out))
    fill(page, "tools-resize-rank", "2")
    page.locator("#tools-resize-run").click()
    assert "rank 2:" in wait_text(page, "tools-resize-result", "wrote")
    tensors, _ = read_lora_file(out)
    assert {v.shape[0] for k, v in tensors.items() if k.endswith("lora_down.weight")} == {2}
    fill(page, "tools-resize-out", "")
    page.locator("#tools-resize-run").click()
    assert "no output file" in wait_text(page, "tools-resize-result", "no output file")


def test_lora_tools_download_from_the_page(page, workdir, tiny_sd1_dir):
    """Utilities → LoRA tools → Download from a local HTTP server: the result names the file and its trigger words."""
    from download_helpers import start_server, stop_server
    from kohya_lite.models.load import load_model
    from lora_helpers import write_lora

    src = write_lora(load_model(tiny_sd1_dir), workdir / "dl-src.safetensors", seed=3,
                     metadata={"ss_base_model_version": "sd_v1", "modelspec.trigger_phrase": "zkz style"})
    srv = start_server({"zkz-style.safetensors": src.read_bytes()})
    try:
        page.get_by_role("tab", name="Utilities", exact=True).click()
        page.get_by_role("tab", name="LoRA tools", exact=True).click()
        page.get_by_role("tab", name="Download", exact=True).click()
        fill(page, "tools-dl-url", f"{srv.url}/files/zkz-style.safetensors")
        fill(page, "tools-dl-dir", str(workdir / "Lora-dl"))
        page.locator("#tools-dl-run").click()
        text = wait_text(page, "tools-dl-result", "Trigger words")
        assert "zkz style" in text and "<lora:zkz-style:1>" in text
        assert (workdir / "Lora-dl" / "zkz-style.safetensors").read_bytes() == src.read_bytes()
        screenshot(page, "tab-utilities-lora-download")
    finally:
        stop_server(srv)
