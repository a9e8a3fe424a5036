"""`kohya-lite caption blip|wd14|basic`: in-process through cli.main, and one real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kohya_lite.captioning.tiny import build_sample_images, build_tiny_blip, build_tiny_wd14
from kohya_lite.media import caption_path, read_caption
from kohya_lite.cli import main
from captioning_fixtures import offline  # noqa: F401  (shared fixture: no hub, empty HF cache)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"blip": build_tiny_blip(root / "blip"), "wd14": build_tiny_wd14(root / "wd14")}


@pytest.fixture
def samples(tmp_path):
    good, bad = build_sample_images(tmp_path / "images")
    return tmp_path / "images", good, bad


def test_wd14_command_writes_tags_and_reports(samples, tiny, capsys):
    folder, good, bad = samples
    rc = main(["caption", "wd14", str(folder), "--model-dir", str(tiny["wd14"]), "--batch-size", "4",
               "--prefix", "lisabp,", "--general-threshold", "0.5", "--use-rating-tags"])
    out = capsys.readouterr()
    assert rc == 0
    for image in good:
        assert read_caption(caption_path(image, ".txt")).startswith("lisabp, ")
    assert f"wd14: {len(good)} caption(s) written, {len(bad)} failed of {len(good) + len(bad)} image(s)" in out.out
    assert "Tag frequencies:" in out.out
    for path in bad:
        assert str(path) in out.out
    assert "WD14" in out.err  # the tqdm bar


def test_blip_command(samples, tiny, capsys):
    folder, good, _ = samples
    caption_path(good[0], ".caption").write_text("mine\n", encoding="utf-8")
    rc = main(["caption", "blip", str(folder), "--model-dir", str(tiny["blip"]), "--caption-extension", ".caption",
               "--no-beam-search", "--top-p", "0.8", "--max-length", "20", "--postfix", "photo"])
    out = capsys.readouterr().out
    assert rc == 0 and "1 skipped (caption exists)" in out
    assert read_caption(caption_path(good[0], ".caption")) == "mine"
    assert read_caption(caption_path(good[1], ".caption")).endswith(" photo")


def test_basic_command(samples, capsys):
    folder, good, _ = samples
    rc = main(["caption", "basic", str(folder), "--caption-text", "a photo of a dog", "--overwrite",
               "--prefix", "lisabp,", "--find", "dog", "--replace", "cat"])
    assert rc == 0
    assert caption_path(good[0], ".txt").read_text(encoding="utf-8") == "lisabp, a photo of a cat\n"
    assert "basic:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["caption", "wd14", "{empty}", "--model-dir", "{wd14}"], "No images found"),
    (["caption", "blip", "{images}"], "Salesforce/blip-image-captioning-large"),
    (["caption", "wd14", "{images}", "--model-dir", "{empty}"], "model.onnx"),
    (["caption", "blip", "{images}", "--model-dir", "{blip}", "--batch-size", "0"], "batch_size"),
    (["caption", "wd14", "{images}", "--model-dir", "{wd14}", "--tag-replacement", "a,b,c"], "source,target"),
    (["caption", "basic", "{images}"], "caption text is empty"),
])
def test_bad_input_exits_2_with_a_readable_block(samples, tiny, tmp_path, capsys, argv, needle):
    folder, _, _ = samples
    (tmp_path / "empty").mkdir()
    values = {"images": folder, "empty": tmp_path / "empty", "wd14": tiny["wd14"], "blip": tiny["blip"]}
    rc = main([a.format(**values) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ERROR: ") and needle in err and "Traceback" not in err


def test_missing_folder_exits_2_in_a_real_process(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "kohya_lite", "caption", "wd14", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    assert f"Image folder '{tmp_path / 'missing'}' does not exist" in proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr
