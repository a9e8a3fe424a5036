"""The demo's procedural shapes and the colour analysis the demo tests rely on."""

import importlib.util
import random

import numpy as np
import pytest
from PIL import Image

from kohya_lite.demo import shapes

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("colour", shapes.BASE_COLOURS + (shapes.DEMO_COLOUR, "yellow"))
def test_each_drawn_colour_is_recognised(colour):
    rng = random.Random(1)
    for shape in shapes.SHAPES:
        item = shapes.random_shape_image(rng, colour, shape)
        report = shapes.analyse(item.image)
        assert report.dominant == colour, (shape, report)
        assert report.is_orange == (colour == shapes.DEMO_COLOUR), (shape, report)
        assert item.caption == f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape} on a grey background"
        r, g, b = report.background
        assert r == g == b, "a plain grey background"


def test_orange_needs_most_foreground_pixels_in_the_orange_band():
    grey = (128, 128, 128)
    half = shapes.draw_shape("square", (255, 140, 0), grey, center=(32, 32), radius=20)
    arr = np.asarray(half).copy()
    assert shapes.is_orange(arr)
    arr[:32][np.any(arr[:32] != 128, axis=-1)] = (200, 20, 20)  # the top half of the square turns red
    report = shapes.analyse(arr)
    assert 0.3 < report.orange_share < 0.7
    arr[32:40][np.any(arr[32:40] != 128, axis=-1)] = (200, 20, 20)
    assert not shapes.is_orange(arr), "most pixels must be orange"
    dull = shapes.draw_shape("circle", (150, 120, 90), grey, center=(32, 32), radius=20)  # hue 30°, saturation 0.4
    assert not shapes.is_orange(dull)
    assert shapes.analyse(Image.new("RGB", (64, 64), grey)).dominant is None, "nothing drawn"


def test_hues_and_names():
    hue, sat, val = shapes.rgb_to_hsv(np.array([[255, 0, 0], [255, 128, 0], [0, 255, 0], [0, 0, 255], [20, 20, 20]],
                                               np.uint8))
    assert np.allclose(hue[:4], [0, 30.1, 120, 240], atol=0.5) and sat[4] == 0 and val[0] == 1
    names = shapes.colour_names(np.array([[255, 0, 0], [255, 128, 0], [250, 250, 250], [10, 10, 10], [128, 0, 255]],
                                         np.uint8))
    assert list(names) == ["red", "orange", "white", "black", "purple"]


def test_the_base_models_captions_never_name_orange_yellow_or_zkz():
    spec = importlib.util.spec_from_file_location("pretrain", ROOT / "scripts" / "pretrain_demo_base.py")
    pretrain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain)
    pixels, captions = pretrain.make_unet_data(240, seed=3)
    words = {w for c in captions for w in c.split()}
    assert not words & {"orange", "yellow", "zkz"}
    assert {c for c in shapes.BASE_COLOURS} <= words and "shape" in words
    orange = sum(shapes.is_orange(im) for im in pretrain.to_images(pixels))
    assert orange == 0
