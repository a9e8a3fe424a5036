"""Config: kohya_ss JSON load (merge, coercion, legacy renames), save round trips, presets."""

import json
from pathlib import Path

import pytest

from kohya_lite.config import (
    TrainingConfig, config_json, load_config, merge_config, parse_kv_args, parse_resolution, save_config, te_lr_of,
    unet_lr_of,
)
from kohya_lite.errors import UserError

DATA = Path(__file__).parent / "data" / "kohya_ss-configs"
PRESETS = Path(__file__).parent.parent / "presets"


def test_real_kohya_files_load():
    files = sorted(DATA.glob("*.json"))
    assert len(files) == 4
    loaded = {f.name: load_config(f) for f in files}

    ai_now, rep = loaded["SDXL - LoRA AI_Now ADamW v1.0.json"]
    assert ai_now.sdxl and ai_now.family == "sdxl"
    assert ai_now.clip_skip == 1 and ai_now.seed == 12345 and ai_now.max_train_steps == 320
    assert ai_now.lr_scheduler_power == 1.0  # "" → kohya's bad-value default
    assert ai_now.caption_extension == ".txt-no" and ai_now.min_timestep == 100 and ai_now.max_timestep == 900
    assert ai_now.adaptive_noise_scale == pytest.approx(0.00375)
    assert "block_dims" in rep.unknown_keys

    kudou, rep = loaded["SDXL - LoRA kudou-reira prodigy v4.0.json"]
    assert kudou.optimizer == "Prodigy" and kudou.xformers == "xformers"
    assert parse_kv_args(kudou.optimizer_args, "optimizer_args") == {
        "decouple": True, "weight_decay": 0.45, "d_coef": 2, "use_bias_correction": True, "safeguard_warmup": True}
    assert kudou.gradient_accumulation_steps == 1 and kudou.lr_scheduler_num_cycles == 1
    assert kudou.max_token_length == 225 and kudou.keep_tokens == 2 and kudou.log_with == "wandb"
    assert any("stop_text_encoder_training_pct" in r for r in rep.renamed)

    edg, _ = loaded["sd15 - EDG_LoraOptiSettings.json"]
    assert edg.text_encoder_lr == pytest.approx(5e-5) and edg.bucket_reso_steps == 64
    assert edg.enable_bucket is False and edg.max_resolution == "512,650" and not edg.sdxl
    assert edg.xformers == "xformers" and edg.noise_offset == pytest.approx(0.05)

    full, rep = loaded["full-saved-config_test_locon-AdamW8bit.json"]
    assert full.LoRA_type == "Kohya LoCon" and full.conv_dim == 16 and full.conv_alpha == 8
    assert full.sample_every_n_steps == 25 and full.caption_extension == ""
    assert full.network_dropout == pytest.approx(0.1) and full.scale_weight_norms == 1
    assert full.model_list == "runwayml/stable-diffusion-v1-5"
    assert "save_as_bool" in rep.unknown_keys


@pytest.mark.parametrize("path", sorted(DATA.glob("*.json")), ids=lambda p: p.stem)
def test_kohya_file_round_trips_with_unknown_keys(path, tmp_path):
    original = json.loads(path.read_text())
    cfg, _ = load_config(path)
    out = tmp_path / "saved.json"
    save_config(cfg, out)
    text = out.read_text()
    saved = json.loads(text)
    assert list(saved) == sorted(saved), "keys are sorted, as kohya_ss writes them"
    assert text.startswith('{\n  "'), "indent 2"
    for key in original:  # every key survives (legacy ones under their new names)
        if key in ("lora_network_weights", "stop_text_encoder_training_pct", "conv_dims", "conv_alphas", "use_wandb"):
            continue
        assert key in saved, key
    again, _ = load_config(out)
    assert again == cfg and again.extra == cfg.extra


def test_merge_keeps_current_values_for_null_and_absent_keys():
    base = TrainingConfig(network_dim=32, output_name="mine")
    cfg, _ = merge_config({"network_dim": None, "learning_rate": "5e-5"}, base)
    assert cfg.network_dim == 32 and cfg.output_name == "mine" and cfg.learning_rate == 5e-5
    assert base.learning_rate == 1e-4, "base is not modified"


@pytest.mark.parametrize("data, field, expected", [
    ({"use_8bit_adam": True}, "optimizer", "AdamW8bit"),
    ({"use_8bit_adam": False}, "optimizer", "AdamW"),
    ({"lora_network_weights": "/x/a.safetensors"}, "network_weights", "/x/a.safetensors"),
    ({"LoRA_type": "LoCon"}, "LoRA_type", "LyCORIS/LoCon"),
    ({"xformers": True}, "xformers", "xformers"),
    ({"xformers": False}, "xformers", "none"),
    ({"use_wandb": "True"}, "log_with", "wandb"),
    ({"save_model_as": "pt"}, "save_model_as", "safetensors"),
    ({"model_list": "my/own-model"}, "model_list", "custom"),
    ({"conv_dims": 8}, "conv_dim", 8),
    ({"epoch": "12"}, "epoch", 12),
    ({"epoch": ""}, "epoch", 0),
    ({"network_dim": 64.0}, "network_dim", 64),
    ({"lr_scheduler_num_cycles": ""}, "lr_scheduler_num_cycles", 1),
    ({"max_token_length": ""}, "max_token_length", 75),
    ({"learning_rate": ""}, "learning_rate", 0.0),
    ({"learning_rate": " 5e-05 "}, "learning_rate", 5e-5),
    ({"network_dim": "64.0"}, "network_dim", 64),
    ({"shuffle_caption": "true"}, "shuffle_caption", True),
    ({"cache_latents": 0}, "cache_latents", False),
])
def test_legacy_and_coercions(data, field, expected):
    cfg, _ = merge_config(data)
    assert getattr(cfg, field) == expected
    assert "use_wandb" not in cfg.extra and "use_8bit_adam" not in cfg.extra


@pytest.mark.parametrize("data, field", [
    ({"learning_rate": "1e-4abc"}, "learning_rate"),
    ({"max_token_length": "abc"}, "max_token_length"),
    ({"network_dim": 8.5}, "network_dim"),
    ({"unet_lr": "nan"}, "unet_lr"),
    ({"epoch": [1]}, "epoch"),
    ({"shuffle_caption": "maybe"}, "shuffle_caption"),
])
def test_a_value_that_does_not_parse_is_an_error_naming_the_field(data, field):
    with pytest.raises(UserError) as e:
        merge_config(data)
    assert e.value.field == field and field in e.value.message and e.value.fix


def test_every_unparsable_value_is_named_at_once():
    with pytest.raises(UserError) as e:
        merge_config({"learning_rate": "1e-4abc", "save_every_n_steps": "ten"})
    assert "learning_rate" in e.value.message and "save_every_n_steps" in e.value.message


def test_unknown_keys_are_reported_not_fatal():
    cfg, rep = merge_config({"some_future_key": [1, 2], "network_dim": 4})
    assert cfg.network_dim == 4 and cfg.extra == {"some_future_key": [1, 2]}
    assert rep.unknown_keys == ["some_future_key"]
    assert "some_future_key" in json.loads(config_json(cfg))


def test_broken_json_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"network_dim": 8,, }')
    with pytest.raises(UserError) as e:
        load_config(bad)
    assert "line 1" in e.value.message and e.value.file == str(bad)
    with pytest.raises(UserError):
        load_config(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(UserError):
        load_config(tmp_path / "list.json")


def test_learning_rate_rules():
    assert unet_lr_of(TrainingConfig(unet_lr=1e-4, text_encoder_lr=0)) == 1e-4
    assert te_lr_of(TrainingConfig(unet_lr=1e-4, text_encoder_lr=0)) == 0, "TE LR 0 ⇒ UNet only"
    assert unet_lr_of(TrainingConfig(unet_lr=0, text_encoder_lr=5e-5)) == 0, "UNet LR 0 ⇒ TE only"
    both_unset = TrainingConfig(learning_rate=3e-4, unet_lr=0, text_encoder_lr=0)
    assert unet_lr_of(both_unset) == 3e-4 and te_lr_of(both_unset) == 3e-4


def test_resolution_parsing():
    assert parse_resolution("512,768") == (512, 768)
    assert parse_resolution("1024") == (1024, 1024)
    assert parse_resolution("640x512") == (640, 512)
    for bad in ("", "abc", "0,512", "512,512,512"):
        with pytest.raises(UserError) as e:
            parse_resolution(bad)
        assert e.value.field == "max_resolution"


def test_kv_args_bad_token():
    with pytest.raises(UserError) as e:
        parse_kv_args("weight_decay=0.1 oops", "optimizer_args")
    assert e.value.field == "optimizer_args" and "oops" in e.value.message
    assert parse_kv_args("betas=0.9,0.999", "optimizer_args") == {"betas": (0.9, 0.999)}


def test_presets_load():
    files = sorted(PRESETS.glob("*.json"))
    assert len(files) >= 5
    for f in files:
        cfg, rep = load_config(f)
        assert not rep.unknown_keys, f"{f.name}: {rep.unknown_keys}"
        data = json.loads(f.read_text())
        assert not any(k in data for k in ("output_dir", "train_data_dir", "pretrained_model_name_or_path")), "presets carry no paths"
    names = " ".join(f.stem for f in files)
    for needle in ("SD15 - character", "SD15 - style", "SDXL - character", "SDXL - low memory", "CPU demo"):
        assert needle in names
