"""Pre-flight: each problem the foundation issue lists is found, named by field/file, with a fix; no file changes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from kohya_lite.check import run_check
from kohya_lite.config import TrainingConfig, save_config

ROOT = Path(__file__).parent.parent


@pytest.fixture
def project(tmp_path):
    """A valid project: a model folder (config only is enough for the check), 3 captioned images."""
    model = tmp_path / "model_dir"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    img = tmp_path / "img" / "5_zkz object"
    img.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 40, 10, 10)).save(img / f"{i}.png")
        (img / f"{i}.txt").write_text("zkz object")
    cfg = TrainingConfig(pretrained_model_name_or_path=str(model), train_data_dir=str(tmp_path / "img"),
                         output_dir=str(tmp_path / "out"), output_name="zkz", optimizer="AdamW", epoch=2)
    return tmp_path, cfg


def fields(result, severity="error"):
    return {(p.field, p.severity) for p in result.problems if p.severity == severity}


def only_problem(result, field):
    hits = [p for p in result.problems if p.field == field and p.is_error]
    assert hits, f"no error on {field}: {[p.format() for p in result.problems]}"
    assert hits[0].fix, "every problem carries a fix"
    return hits[0]


def test_valid_project_is_ok(project):
    _, cfg = project
    r = run_check(cfg)
    assert r.ok, [p.format() for p in r.problems]
    assert r.plan.total_steps == 3 * 5 * 2
    assert r.dataset.train[0].captioned == 3


def test_image_folder_instead_of_parent(project):
    tmp, cfg = project
    r = run_check(cfg.replace(train_data_dir=str(tmp / "img" / "5_zkz object")))
    p = only_problem(r, "train_data_dir")
    assert "parent" in p.message and "<repeats>_<trigger> <class>" in p.fix


def test_folder_without_prefix(project):
    tmp, cfg = project
    (tmp / "img2" / "zkz object").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp / "img2" / "zkz object" / "a.png")
    r = run_check(cfg.replace(train_data_dir=str(tmp / "img2")))
    p = only_problem(r, "train_data_dir")
    assert "prefix" in p.message and "10_zkz object" in p.fix
    # alongside a valid folder it is only a warning
    r = run_check(cfg)
    (tmp / "img" / "stray").mkdir()
    r = run_check(cfg)
    assert r.ok and any("stray" in w.message for w in r.warnings)


def test_no_images(project):
    tmp, cfg = project
    (tmp / "empty" / "3_x y").mkdir(parents=True)
    r = run_check(cfg.replace(train_data_dir=str(tmp / "empty")))
    assert not r.ok
    assert any("no images" in p.message for p in r.problems)
    assert any(p.is_error and p.field == "train_data_dir" and "no usable images" in p.message for p in r.problems)


def test_missing_captions_warn(project):
    tmp, cfg = project
    (tmp / "img" / "5_zkz object" / "0.txt").unlink()
    r = run_check(cfg)
    assert r.ok
    w = [p for p in r.warnings if p.field == "caption_extension"]
    assert w and "1 of 3" in w[0].message and "zkz object" in w[0].message


def test_corrupt_image(project):
    tmp, cfg = project
    (tmp / "img" / "5_zkz object" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = run_check(cfg)
    assert r.ok, "a corrupt image is skipped with a warning"
    w = [p for p in r.warnings if p.file and p.file.endswith("broken.jpg")]
    assert w and "skipped" in w[0].message
    assert r.dataset.train[0].images and all(im.name != "broken.jpg" for im in r.dataset.train[0].images)


@pytest.mark.parametrize("changes, field", [
    ({"lr_scheduler": "constant", "lr_warmup": 10}, "lr_warmup"),
    ({"learning_rate": 0, "unet_lr": 0, "text_encoder_lr": 0}, "learning_rate"),
    ({"max_resolution": "512,abc"}, "max_resolution"),
    ({"max_resolution": "500,500"}, "max_resolution"),
    ({"bucket_reso_steps": 48}, "bucket_reso_steps"),
    ({"sdxl": True, "bucket_reso_steps": 48}, "bucket_reso_steps"),
    ({"pretrained_model_name_or_path": "/nowhere/model.safetensors"}, "pretrained_model_name_or_path"),
    ({"pretrained_model_name_or_path": "someone/not-cached-model"}, "pretrained_model_name_or_path"),
    ({"optimizer": "SuperAdam"}, "optimizer"),
    ({"optimizer_args": "weight_decay"}, "optimizer_args"),
    ({"LoRA_type": "LyCORIS/LoHa"}, "LoRA_type"),
    ({"output_name": "a/b"}, "output_name"),
    ({"full_fp16": True, "mixed_precision": "bf16"}, "full_fp16"),
    ({"train_batch_size": 0}, "train_batch_size"),
    ({"noise_offset": 2.0}, "noise_offset"),
    ({"scale_v_pred_loss_like_noise_pred": True}, "scale_v_pred_loss_like_noise_pred"),
])
def test_config_problems(project, changes, field):
    _, cfg = project
    r = run_check(cfg.replace(**changes))
    only_problem(r, field)


def test_sdxl_bucket_step_32_is_fine(project):
    _, cfg = project
    assert run_check(cfg.replace(sdxl=True, bucket_reso_steps=32)).ok


def test_unwritable_output(project, unwritable_dir):
    tmp, cfg = project
    blocker = tmp / "file_not_folder"
    blocker.write_text("x")
    only_problem(run_check(cfg.replace(output_dir=str(blocker))), "output_dir")
    problem = only_problem(run_check(cfg.replace(output_dir=str(unwritable_dir / "out"))), "output_dir")
    assert "cannot be written" in problem.message


def test_overrides_are_explained(project):
    _, cfg = project
    r = run_check(cfg.replace(max_train_steps=100))
    assert r.plan.total_steps == 100 and r.plan.decided_by == "max_train_steps"
    assert any(p.field == "max_train_steps" for p in r.warnings)


def test_reg_doubles_steps(project):
    tmp, cfg = project
    reg = tmp / "reg" / "1_object"
    reg.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(reg / "r.png")
    r = run_check(cfg.replace(reg_data_dir=str(tmp / "reg")))
    assert r.ok and r.plan.total_steps == 3 * 5 * 2 * 2


def _tree(path: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


def test_cli_check_exit_codes_and_no_changes(project):
    tmp, cfg = project
    good = tmp / "good.json"
    save_config(cfg, good)
    before = _tree(tmp)
    run = lambda p: subprocess.run([sys.executable, "-m", "kohya_lite", "check", str(p)], capture_output=True, text=True,
                                   cwd=ROOT, timeout=120)
    res = run(good)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 repeats" in res.stdout and "= 30 steps" in res.stdout and "Ready to train" in res.stdout
    assert _tree(tmp) == before, "check changes no file"
    assert not (tmp / "out").exists()

    bad = tmp / "bad.json"
    data = json.loads(good.read_text())
    data.update(train_data_dir=str(tmp / "img" / "5_zkz object"), optimizer="Nope", lr_scheduler="constant", lr_warmup=5)
    bad.write_text(json.dumps(data))
    res = run(bad)
    assert res.returncode == 2
    assert "Traceback" not in res.stdout + res.stderr
    for needle in ("field 'train_data_dir'", "field 'optimizer'", "field 'lr_warmup'", "fix:"):
        assert needle in res.stdout, needle

    broken = tmp / "broken.json"
    broken.write_text("{nope")
    res = run(broken)
    assert res.returncode == 2 and "not valid JSON" in res.stderr and "Traceback" not in res.stderr


def test_options_kohya_lite_ignores_are_named(project):
    """Fields kept for the round trip but not acted on get a warning when set; HANDLED_OTHERWISE ones never do."""
    _, cfg = project
    assert not {p.field for p in run_check(cfg).warnings} & {"masked_loss", "fp8_base", "xformers"}
    r = run_check(cfg.replace(masked_loss=True, fp8_base=True, weighted_captions=True, log_with="wandb",
                              additional_parameters="--network_train_unet_only", xformers="none", mem_eff_attn=True))
    warned = {p.field for p in r.warnings if "ignored" in p.message}
    assert warned == {"masked_loss", "fp8_base", "weighted_captions", "log_with", "additional_parameters"}
    assert r.ok


def test_network_alpha_zero_is_explained(project):
    _, cfg = project
    w = [p for p in run_check(cfg.replace(network_alpha=0)).warnings if p.field == "network_alpha"]
    assert w and "alpha 1" in w[0].message
