"""Generate, LoRA library and grid tabs: each builds inside a gr.Blocks, and their handlers work (no browser)."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio.helpers import special_args
from PIL import Image

from kohya_lite.generate import ModelCache
from kohya_lite.models.load import load_model
from kohya_lite.ui import generate_tab, grid_tab, library_tab
from lora_helpers import write_lora


@pytest.fixture(scope="module")
def setup(tiny_sd1_dir, tmp_path_factory):
    model = load_model(tiny_sd1_dir)
    root = tmp_path_factory.mktemp("ui")
    write_lora(model, root / "Lora" / "zkz.safetensors", seed=1,
               metadata={"ss_base_model_version": "sd_v1", "modelspec.trigger_phrase": "zkz dog"})
    write_lora(model, root / "run" / "zkz-000001.safetensors", seed=2)
    write_lora(model, root / "run" / "zkz.safetensors", seed=3)
    return root


def test_tabs_build_and_run(setup, tiny_sd1_dir, tmp_path):
    cache = ModelCache()
    with gr.Blocks() as demo:
        with gr.Tab("Generate"):
            gen = generate_tab.build(model_path=str(tiny_sd1_dir), lora_dir=str(setup / "Lora"), output_dir=tmp_path,
                                     cache=cache)
        with gr.Tab("LoRA library"):
            lib = library_tab.build(lora_dir=str(setup / "Lora"), prompt=gen.prompt)
        with gr.Tab("Grid"):
            grid = grid_tab.build(output_dir=str(setup / "run"), model_path=str(tiny_sd1_dir), cache=cache)
    assert isinstance(demo, gr.Blocks)
    assert isinstance(gen.prompt, gr.Textbox) and isinstance(gen.image, gr.Image) and isinstance(lib.table, gr.Dataframe)
    assert isinstance(grid.layout, gr.Markdown) and len(gen.inputs) == 11 and len(grid.inputs) == 14

    # library: list, then select row 0 → the insert text; the prompt link appends it
    out = lib.on_refresh(str(setup / "Lora"))
    assert out[lib.message] == "1 LoRA" and out[lib.table][0][0] == "zkz"
    state = out[lib.entries]
    evt = gr.SelectData(lib.table, {"index": [0, 1], "value": "sd_v1", "row_value": out[lib.table][0]})
    args, *_ = special_args(lib.on_select, [state, 0.8], None, evt)  # gradio injects the event like this
    assert lib.on_select(*args) == {lib.insert: "<lora:zkz:0.8> zkz dog"}
    assert library_tab.text_for(state, 0, 1.0) == "<lora:zkz:1> zkz dog" and library_tab.text_for(state, 5, 1) == ""
    bad = lib.on_refresh(str(setup / "nope"))
    assert "does not exist" in bad[lib.message] and "Traceback" not in bad[lib.message]

    # generate: an image file with its parameters, and the LoRA list
    values = [str(tiny_sd1_dir), False, str(setup / "Lora"), "a cat <lora:zkz:0.7>", "blurry", "euler_a", 2, 7, 4, 64, 64]
    res = gen.on_generate(*values)
    assert res[gen.message] == "" and res[gen.used][0][:3] == ["zkz", 0.7, 0.7]
    with Image.open(res[gen.image]) as img:
        assert img.size == (64, 64) and "Seed: 4" in img.text["parameters"]
    assert "Seed: 4" in res[gen.info]
    # the browser gets a copy in the app's own served folder, never a path into the output folder
    assert res[gen.image] != str(next(tmp_path.glob("*.png"))) and "kohya-lite-served-" in res[gen.image]
    err = gen.on_generate(*values[:3], "a cat <lora:zkx:1>", *values[4:])
    assert list(err) == [gen.message] and "close matches: zkz" in err[gen.message]
    assert err[gen.message].startswith("- ❌ **Prompt**: "), "the tab's label, not the key"
    assert "Traceback" not in err[gen.message]
    assert "no base model" in gen.on_generate("", *values[1:])[gen.message]

    # grid: find the checkpoints, render
    found = grid.on_find(str(setup / "run"), None)
    assert "epoch 1" in found[grid.checkpoints] and "final" in found[grid.checkpoints]
    result, path = grid_tab.run(str(setup / "run"), "zkz", str(tiny_sd1_dir), False, str(setup / "Lora"), "a cat", "",
                                "0,1", "euler_a", 1, 7, 2, 64, 64, cache=cache, save_to=tmp_path / "grids")
    assert path.is_file() and len(result.layout.cells) == 4 and result.layout.row_labels == ["epoch 1", "final"]
    assert "Rows (checkpoints): epoch 1, final" in grid_tab.layout_text(result)
    bad = grid.on_render(str(setup / "run"), "zkz", str(tiny_sd1_dir), False, "", "a cat", "", "0,x", "euler_a",
                         1, 7, 2, 64, 64)
    assert "not numbers" in bad[grid.message]
