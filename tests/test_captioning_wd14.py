"""WD14 tagger on tiny ONNX stand-ins: preprocessing, exact tag filtering, writing modes, model lookup."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter

import cv2
import numpy as np
import pytest
from PIL import Image

from kohya_lite.captioning import WD14Options, WD14Tagger, caption_wd14, format_tag_frequency, preprocess_wd14
from kohya_lite.captioning.tiny import TINY_WD14_TAGS, build_tiny_wd14
from kohya_lite.captioning.wd14_tags import TagRules, TagTable, parse_tag_replacement
from kohya_lite.media import caption_path, read_caption
from kohya_lite.errors import UserError
from captioning_fixtures import offline, sample_source, samples  # noqa: F401  (shared fixtures)

# One score per row of TINY_WD14_TAGS (4 ratings, 10 general, 2 characters).
SCORES = {
    "general": 0.10, "sensitive": 0.70, "questionable": 0.20, "explicit": 0.05,
    "1girl": 0.99, "solo": 0.35, "long_hair": 0.3499, "smile": 0.50, "blue_sky": 0.20, "^_^": 0.90,
    "outdoors": 0.36, "red_eyes": 0.34, "short_hair": 0.80, "tree": 0.0,
    "hatsune_miku": 0.60, "saber_(fate)": 0.34,
}
SCORE_VECTOR = np.array([SCORES[name] for name, _ in TINY_WD14_TAGS], dtype=np.float32)
DEFAULT_TAGS = ["1girl", "solo", "smile", "^_^", "outdoors", "short hair", "hatsune miku"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("wd14")
    return {
        "colour": build_tiny_wd14(root / "colour"),
        "fixed4": build_tiny_wd14(root / "fixed4", fixed_batch=4),
        "const": build_tiny_wd14(root / "const", scores=SCORE_VECTOR),
        "small": build_tiny_wd14(root / "small", image_size=64),
    }


def _rules(**kw) -> TagRules:
    table = TagTable(tuple(n for n, _ in TINY_WD14_TAGS), tuple(c for _, c in TINY_WD14_TAGS))
    return TagRules.build(table, **kw)


# ---------------------------------------------------------------------------------- tag filtering

@pytest.mark.parametrize("options, expected", [
    ({}, DEFAULT_TAGS),
    ({"remove_underscore": False}, ["1girl", "solo", "smile", "^_^", "outdoors", "short_hair", "hatsune_miku"]),
    ({"undesired_tags": "short hair, ^_^"}, ["1girl", "solo", "smile", "outdoors", "hatsune miku"]),
    ({"undesired_tags": "short_hair"}, ["1girl", "solo", "smile", "^_^", "outdoors", "hatsune miku"]),
    ({"general_threshold": 0.5}, ["1girl", "smile", "^_^", "short hair", "hatsune miku"]),
    ({"general_threshold": 1.5}, ["hatsune miku"]),  # > 1 disables general tags
    ({"character_threshold": 2.0}, ["1girl", "solo", "smile", "^_^", "outdoors", "short hair"]),
    ({"character_threshold": 0.3, "character_tags_first": True},  # kohya inserts each at the front
     ["saber (fate)", "hatsune miku", "1girl", "solo", "smile", "^_^", "outdoors", "short hair"]),
    ({"character_threshold": 0.3, "character_tag_expand": True},
     DEFAULT_TAGS + ["saber, fate"]),
    ({"use_rating_tags": True}, ["sensitive"] + DEFAULT_TAGS),
    ({"use_rating_tags_as_last_tag": True}, DEFAULT_TAGS + ["sensitive"]),
    ({"always_first_tags": "smile, outdoors, not_found"}, ["outdoors", "smile", "1girl", "solo", "^_^", "short hair",
                                                            "hatsune miku"]),
    ({"tag_replacement": "1girl,1woman;short hair,bob cut"},
     ["1woman", "solo", "smile", "^_^", "outdoors", "bob cut", "hatsune miku"]),
])
def test_select_follows_kohya_exactly(options, expected):
    assert _rules(**options).select(SCORE_VECTOR) == expected


def test_threshold_is_inclusive_in_float32():
    scores = np.zeros(len(TINY_WD14_TAGS), np.float32)
    scores[4] = np.float32(0.35)  # 1girl exactly at the threshold (as the model would output it)
    scores[5] = np.nextafter(np.float32(0.35), np.float32(0))  # solo just below
    assert _rules().select(scores) == ["1girl"]


def test_tag_replacement_escapes_and_errors():
    assert parse_tag_replacement(r"a\,b,c;d,e\;f") == [("a,b", "c"), ("d", "e;f")]
    with pytest.raises(UserError) as err:
        parse_tag_replacement("just_one_tag")
    assert err.value.field == "tag_replacement"


# ---------------------------------------------------------------------------------- preprocessing

def test_preprocess_pads_centred_white_and_converts_to_bgr():
    img = Image.new("RGB", (101, 50), (255, 0, 0))  # pad_y = 51: 25 rows on top, 26 below
    arr = preprocess_wd14(img, size=101)  # same size: no resampling
    assert arr.shape == (101, 101, 3) and arr.dtype == np.float32
    assert (arr[:25] == 255).all() and (arr[75:] == 255).all()
    assert (arr[25:75] == [0, 0, 255]).all()  # red in BGR
    tall = preprocess_wd14(Image.new("RGB", (10, 31), (0, 0, 0)), size=31)  # pad_x = 21: 10 left, 11 right
    assert (tall[:, :10] == 255).all() and (tall[:, 10:20] == 0).all() and (tall[:, 20:] == 255).all()


def test_preprocess_downscale_uses_inter_area_upscale_lanczos4():
    stripes = np.zeros((1344, 1344, 3), np.uint8)
    stripes[:, 2::3] = 255  # period-3 columns: area average = 85, a point sample would give 0 or 255
    arr = preprocess_wd14(Image.fromarray(stripes), size=448)
    assert arr.shape == (448, 448, 3) and np.allclose(arr, 85, atol=1)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    expected = cv2.resize(np.ascontiguousarray(small[:, :, ::-1]), (448, 448), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(preprocess_wd14(Image.fromarray(small), size=448), expected.astype(np.float32))


# ------------------------------------------------------------------------------------- captioning

def test_every_good_image_tagged_corrupt_listed_images_untouched(samples, models):
    folder, good, bad = samples
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in good + bad}
    calls = []
    result = caption_wd14(folder, WD14Options(model_dir=str(models["colour"]), batch_size=3),
                          progress=lambda d, t: calls.append((d, t)))
    assert sorted(result.written) == good
    assert sorted(p for p, _ in result.failed) == bad
    assert all("cannot read image" in reason for _, reason in result.failed)
    assert result.total_images == len(good) + len(bad)
    for image in good:
        text = caption_path(image, ".txt").read_text(encoding="utf-8")
        assert text.endswith("\n") and text.rstrip("\n") == result.captions[image]
    assert not any(caption_path(p, ".txt").exists() for p in bad)
    assert calls[0] == (0, len(good) + len(bad)) and calls[-1] == (len(good) + len(bad),) * 2
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in good + bad} == before
    assert result.tag_counts == Counter(t for c in result.captions.values() for t in c.split(", "))
    assert len({result.captions[p] for p in good}) > 1  # scores really depend on the image


def test_constant_model_end_to_end_with_prefix_postfix(samples, models):
    folder, good, _ = samples
    options = WD14Options(model_dir=str(models["const"]), prefix="lisabp,", postfix=", masterpiece",
                          caption_extension=".wd14.txt", batch_size=4)
    result = caption_wd14(folder, options)
    expected = "lisabp, " + ", ".join(DEFAULT_TAGS) + ", masterpiece\n"
    for image in good:
        assert caption_path(image, ".wd14.txt").read_text(encoding="utf-8") == expected
    assert result.tag_counts == Counter({t: len(good) for t in DEFAULT_TAGS})
    report = format_tag_frequency(result.tag_counts)
    assert report.splitlines()[0] == "Tag frequencies:" and f"1girl: {len(good)}" in report


def test_existing_kept_unless_overwrite_and_append_merges(samples, models):
    folder, good, _ = samples
    target = caption_path(good[0], ".txt")
    target.write_text("lisabp, my own words, smile\n", encoding="utf-8")
    const = str(models["const"])
    kept = caption_wd14(folder, WD14Options(model_dir=const))
    assert kept.skipped_existing == [good[0]] and good[0] not in kept.written
    assert target.read_text(encoding="utf-8") == "lisabp, my own words, smile\n"

    appended = caption_wd14(folder, WD14Options(model_dir=const, append_tags=True, prefix="lisabp,"))
    assert good[0] in appended.written
    assert read_caption(target) == "lisabp, my own words, smile, 1girl, solo, ^_^, outdoors, short hair, hatsune miku"
    assert read_caption(caption_path(good[1], ".txt")) == "lisabp, " + ", ".join(DEFAULT_TAGS)
    again = caption_wd14(folder, WD14Options(model_dir=const, append_tags=True, prefix="lisabp,"))
    assert read_caption(target) == appended.captions[good[0]] == again.captions[good[0]]  # idempotent

    caption_wd14(folder, WD14Options(model_dir=const, overwrite=True))
    assert read_caption(target) == ", ".join(DEFAULT_TAGS)


def test_batch_size_and_fixed_batch_give_same_tags(samples, models):
    folder, good, _ = samples
    one = caption_wd14(folder, WD14Options(model_dir=str(models["colour"]), batch_size=1, overwrite=True))
    eight = caption_wd14(folder, WD14Options(model_dir=str(models["colour"]), batch_size=8, overwrite=True))
    fixed = caption_wd14(folder, WD14Options(model_dir=str(models["fixed4"]), batch_size=1, overwrite=True))
    assert one.captions == eight.captions == fixed.captions
    assert any("fixed batch" in n for n in fixed.notes)
    tagger = WD14Tagger.load(model_dir=str(models["fixed4"]))
    assert tagger.fixed_batch == 4 and tagger.batch_size_for(1) == 4 and tagger.input_name == "input_1"


def test_input_size_comes_from_the_model(samples, models):
    folder, good, _ = samples
    tagger = WD14Tagger.load(model_dir=str(models["small"]))
    assert tagger.image_size == 64 and tagger.fixed_batch is None
    result = caption_wd14(folder, WD14Options(batch_size=2), tagger=tagger)
    assert sorted(result.written) == good


def test_no_tags_means_no_file_and_a_reason(samples, models):
    folder, good, _ = samples
    result = caption_wd14(folder, WD14Options(model_dir=str(models["const"]), general_threshold=2,
                                              character_threshold=2))
    assert result.written == [] and not caption_path(good[0], ".txt").exists()
    assert any("no tag scored above" in reason for _, reason in result.failed)


# ---------------------------------------------------------------------------------- model lookup

def test_missing_model_names_model_place_and_command(samples, tmp_path):
    folder, _, _ = samples
    with pytest.raises(UserError) as err:
        caption_wd14(folder, WD14Options())
    e = err.value
    assert "SmilingWolf/wd-v1-4-convnextv2-tagger-v2" in e.message
    assert str(tmp_path / "hf-cache" / "models--SmilingWolf--wd-v1-4-convnextv2-tagger-v2") in e.message
    assert "hf download SmilingWolf/wd-v1-4-convnextv2-tagger-v2 model.onnx selected_tags.csv" in e.fix
    assert "--model-dir" in e.fix and "Traceback" not in e.format()

    with pytest.raises(UserError) as empty_dir:
        caption_wd14(folder, WD14Options(model_dir=str(tmp_path)))
    assert "model.onnx" in empty_dir.value.message and str(tmp_path) in empty_dir.value.message


def test_model_found_in_hf_cache_and_kohya_layout(samples, models, tmp_path):
    folder, good, _ = samples
    snapshot = tmp_path / "hf-cache" / "models--someone--tiny-tagger" / "snapshots" / "0123abcd"
    shutil.copytree(models["const"], snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    result = caption_wd14(folder, WD14Options(model="someone/tiny-tagger"))
    assert sorted(result.written) == good

    kohya_dir = tmp_path / "wd14_tagger_model"
    shutil.copytree(models["const"], kohya_dir / "SmilingWolf_wd-v1-4-convnextv2-tagger-v2")
    tagger = WD14Tagger.load(model_dir=str(kohya_dir))
    assert tagger.folder.name == "SmilingWolf_wd-v1-4-convnextv2-tagger-v2"


def test_tag_list_not_matching_model_is_a_user_error(models, tmp_path):
    broken = shutil.copytree(models["const"], tmp_path / "broken")
    (broken / "selected_tags.csv").write_text("tag_id,name,category,count\n1,solo,0,5\n", encoding="utf-8")
    with pytest.raises(UserError, match="outputs 16 scores"):
        WD14Tagger.load(model_dir=str(broken))
