"""Dataset conventions and step math as pure functions, against hand-worked examples."""

from pathlib import Path

import pytest
from PIL import Image

from kohya_lite.dataset.folders import (
    caption_or_tokens, parse_folder_name, scan_dataset, suggest_repeats, tag_frequency,
)
from kohya_lite.dataset.steps import gui_total_steps, plan_steps


@pytest.mark.parametrize("name, expected", [
    ("6_lisabp woman", (6, "lisabp woman", "lisabp", "woman")),
    ("10_sks dog", (10, "sks dog", "sks", "dog")),
    ("1_woman", (1, "woman", "woman", "")),
    ("3_a_b c", (3, "a_b c", "a_b", "c")),
])
def test_parse_folder_name(name, expected):
    f = parse_folder_name(name)
    assert (f.repeats, f.tokens, f.trigger, f.class_name) == expected


@pytest.mark.parametrize("name", ["lisabp woman", "x_lisabp", "_5", "10 sks dog", "10_"])
def test_parse_folder_name_rejects(name):
    assert parse_folder_name(name) is None


def _img(path: Path, size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def test_scan_counts_images_any_case_and_captions(tmp_path):
    d = tmp_path / "img" / "5_zkz object"
    for i, ext in enumerate([".png", ".JPG", ".jpeg", ".webp", ".BMP"]):
        _img(d / f"im{i}{ext}")
    (d / "notes.md").write_text("not an image")
    (d / "im0.txt").write_text("zkz object, red\nsecond line ignored\n")
    (d / "im1.txt").write_text("\n\n")  # empty: falls back to the folder tokens
    _img(tmp_path / "img" / "no_prefix" / "a.png")
    reg = tmp_path / "reg" / "1_object"
    _img(reg / "r.png")
    s = scan_dataset(str(tmp_path / "img"), str(tmp_path / "reg"), ".txt")
    (train,) = s.train
    assert len(train.images) == 5 and train.repeats == 5 and train.tokens == "zkz object"
    assert train.captioned == 2 and s.num_train_images == 25 and s.num_reg_images == 1
    assert [p.name for p in s.skipped_folders] == ["no_prefix"]
    assert caption_or_tokens(train.images[0], ".txt", train.tokens) == ("zkz object, red", True)
    assert caption_or_tokens(train.images[1], ".txt", train.tokens) == ("zkz object", False)
    assert caption_or_tokens(train.images[2], ".txt", train.tokens) == ("zkz object", False)
    assert tag_frequency(train, ".txt") == {"zkz object": 5, "red": 1}


def test_missing_roots_give_empty_summary(tmp_path):
    s = scan_dataset(str(tmp_path / "nope"), "", ".txt")
    assert s.subsets == [] and s.num_train_images == 0


def test_steps_hand_worked_examples():
    # 34 images × 6 repeats × 10 epochs ÷ batch 1 = 2040
    p = plan_steps(num_images=34, num_train_samples=34 * 6, batch_size=1, epoch=10)
    assert p.total_steps == 2040 and p.steps_per_epoch == 204
    assert p.summary(" × 6 repeats") == "34 images × 6 repeats × 10 epochs ÷ batch 1 = 2,040 steps"
    assert gui_total_steps(34 * 6, 10, 1) == 2040
    # with reg images: doubled
    p = plan_steps(num_images=34, num_train_samples=204, batch_size=1, epoch=10, with_reg=True)
    assert p.total_steps == 4080 and gui_total_steps(204, 10, 1, with_reg=True) == 4080
    # batch 3: 204 / 3 = 68 per epoch → 680
    assert plan_steps(num_images=34, num_train_samples=204, batch_size=3, epoch=10).total_steps == 680
    assert gui_total_steps(204, 10, 3) == 680
    # rounding up: 25 samples, batch 2 → 13 per epoch; GUI estimate ceil(25/2*10) = 125
    assert plan_steps(num_images=5, num_train_samples=25, batch_size=2, epoch=10).total_steps == 130
    assert gui_total_steps(25, 10, 2) == 125
    # reference: 20 × 10 repeats, reg, batch 2, 10 epochs = 2000
    assert plan_steps(num_images=20, num_train_samples=200, batch_size=2, epoch=10, with_reg=True).total_steps == 2000
    # grad accumulation divides
    assert plan_steps(num_images=34, num_train_samples=204, batch_size=1, epoch=10, grad_accum=4).total_steps == 510


def test_overrides():
    # max_train_steps 1600 with 200 steps/epoch → 8 epochs, whatever `epoch` says
    p = plan_steps(num_images=20, num_train_samples=200, batch_size=1, epoch=3, max_train_steps=1600)
    assert (p.total_steps, p.epochs, p.decided_by) == (1600, 8, "max_train_steps")
    # max_train_epochs overrides both
    p = plan_steps(num_images=20, num_train_samples=200, batch_size=1, epoch=3, max_train_steps=1600, max_train_epochs=2)
    assert (p.total_steps, p.epochs, p.decided_by) == (400, 2, "max_train_epochs")
    # buckets: counts 7, 5, 4 at batch 4 → 5 batches per epoch, not 4
    p = plan_steps(num_images=16, num_train_samples=16, batch_size=4, epoch=1, batches_per_epoch=2 + 2 + 1)
    assert p.total_steps == 5


@pytest.mark.parametrize("n, expected", [(1, 300), (10, 30), (34, 9), (150, 2), (1000, 1), (0, 1)])
def test_suggest_repeats(n, expected):
    assert suggest_repeats(n) == expected
    if 0 < n <= 150:
        assert 200 <= n * suggest_repeats(n) <= 400
