"""Samples during training: when they fire, their names, and that they do not change training."""

import re
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from dataset_helpers import make_images, tiny_config
from kohya_lite.config import merge_config
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.train import train

PROMPTS = "# samples\nzkz object --w 64 --h 64 --d 1 --s 2 --l 5\n\nzkz object, red --n blurry --w 64 --h 64 --s 2 --ss ddim\n"


def _run(cfg_dict):
    cfg, _ = merge_config(cfg_dict)
    events = []
    result = train(cfg, events=EventWriter(listener=events.append), progress_bar=False)
    return result, events


def test_step_samples_names_and_baseline(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 3)  # 6 samples, batch 2 → 3 steps/epoch
    cfg = tiny_config(tiny_sd1_dir, tmp_path, epoch=2, sample_every_n_steps=2, sample_prompts=PROMPTS,
                      sample_at_first=True)
    result, events = _run(cfg)
    samples = [e for e in events if e["type"] == "sample"]
    # a baseline before the first step (sample_at_first), then steps 2 and 4 and 6 (2 prompts each)
    assert [(e["step"], e["index"]) for e in samples] == [(s, i) for s in (0, 2, 4, 6) for i in (0, 1)]
    for e in samples:
        name = Path(e["path"]).name
        assert re.fullmatch(rf"zkz_{e['step']:06d}_{e['index']:02d}_\d{{14}}(_1)?\.png", name), name
        assert Path(e["path"]).parent == tmp_path / "model" / "sample"
        with Image.open(e["path"]) as im:
            assert im.size == (64, 64)
    assert samples[0]["seed"] == 1 and samples[1]["prompt"] == "zkz object, red"
    assert (tmp_path / "model" / "sample" / "prompt.txt").read_text().startswith("# samples")


def test_epoch_sampling_wins_over_steps(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 2)
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("zkz object --w 64 --h 64 --d 3 --s 2\n")
    cfg = tiny_config(tiny_sd1_dir, tmp_path, epoch=2, sample_every_n_steps=1, sample_every_n_epochs=1,
                      sample_prompts=str(prompt_file))
    _, events = _run(cfg)
    samples = [e for e in events if e["type"] == "sample"]
    assert [(e["step"], e["epoch"]) for e in samples] == [(2, 1), (4, 2)], "no baseline without sample_at_first"
    names = [Path(e["path"]).name for e in samples]
    assert re.fullmatch(r"zkz_e000001_00_\d{14}_3\.png", names[0]) and names[1].startswith("zkz_e000002_00_")


def test_sampling_does_not_change_the_trained_weights(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 3)
    common = dict(epoch=2, save_every_n_epochs=0, save_precision="float", network_dropout=0.1, flip_aug=True)
    _run(tiny_config(tiny_sd1_dir, tmp_path, output_dir=str(tmp_path / "a"), **common))
    _, events = _run(tiny_config(tiny_sd1_dir, tmp_path, output_dir=str(tmp_path / "b"), sample_every_n_steps=1,
                                 sample_at_first=True, sample_prompts="zkz object --w 64 --h 64 --s 2", **common))
    assert sum(e["type"] == "sample" for e in events) == 7
    a, b = load_file(tmp_path / "a" / "zkz.safetensors"), load_file(tmp_path / "b" / "zkz.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_prompt_line_is_reported_before_training(tiny_sd1_dir, tmp_path):
    import pytest

    from kohya_lite.errors import UserError

    make_images(tmp_path / "img" / "1_zkz object", 1)
    cfg = tiny_config(tiny_sd1_dir, tmp_path, sample_every_n_steps=1, sample_prompts="ok\nbad --w wide")
    with pytest.raises(UserError) as e:
        _run(cfg)
    assert "line 2" in e.value.message and e.value.field == "sample_prompts"
