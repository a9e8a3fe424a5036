"""The shipped demo base model (kohya_lite/demo/base): an SD1 diffusers folder that the app's own loader
reads, and that draws the colour a prompt names, through the Generate path."""

import json

import pytest

from kohya_lite.demo import BASE_DIR, shapes
from kohya_lite.demo.evaluate import colour_scores, render
from kohya_lite.models.load import load_model

N = 20


@pytest.fixture(scope="module")
def base():
    return load_model(str(BASE_DIR))


def test_base_is_a_small_sd1_folder_with_fp16_weights(base):
    assert base.family == "sd1" and not base.v_prediction and base.source == "folder"
    index = json.loads((BASE_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    files = [f for f in BASE_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 32e6
    from safetensors import safe_open

    for weights in BASE_DIR.glob("*/*.safetensors"):
        with safe_open(str(weights), "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}, weights
    assert (BASE_DIR / "README.md").is_file()
    # 64 px images are 16×16 latents: the VAE has three levels
    assert 2 ** (len(base.vae.config.block_out_channels) - 1) == 4
    ids = base.tokenizer("a red circle").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407, "the project's CLIP tokenizer (real ids)"


def test_base_draws_the_named_colour(base):
    """For each base colour, ≥ 16 of 20 seeded renders of "a <colour> circle on a grey background" show it."""
    scores = colour_scores(base, shapes.BASE_COLOURS, n=N)
    print({c: f"{hits}/{N} {seen}" for c, (hits, seen) in scores.items()})
    assert {c: hits for c, (hits, _) in scores.items() if hits < 16} == {}, scores


def test_a_render_is_a_shape_on_a_grey_background(base):
    report = shapes.analyse(render(base, "a blue square on a grey background", [7])[0])
    r, g, b = report.background
    assert max(r, g, b) - min(r, g, b) < 20 and 90 < r < 175, report  # grey
    assert 150 < report.foreground_pixels < 0.8 * 64 * 64, report  # one shape, not noise
