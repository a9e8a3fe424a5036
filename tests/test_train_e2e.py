"""End to end on tiny models: `kohya-lite train` from a kohya_ss-style JSON writes the documented files."""

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from engine_helpers import train_collect
from dataset_helpers import make_images, tiny_config, write_config
from kohya_lite.config import merge_config
from kohya_lite.engine.events import EventWriter, read_events
from kohya_lite.engine.train import train
from kohya_lite.errors import UserError

ROOT = Path(__file__).parent.parent


def metadata(path: Path) -> dict:
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        return json.loads(fh.read(n))["__metadata__"]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "kohya_lite", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_train_cli_writes_epoch_and_final_files(family, tmp_path, request):
    model = request.getfixturevalue(f"tiny_{family}_dir")
    make_images(tmp_path / "img" / "5_zkz object", 6)
    cfg = tiny_config(model, tmp_path, sdxl=family == "sdxl", max_resolution="64,64" if family == "sd1" else "128,128",
                      max_bucket_reso=256, training_comment="trigger: zkz")
    config = write_config(tmp_path / "cfg.json", cfg)
    events_file = tmp_path / "events.jsonl"
    res = run_cli("train", config, "--events", events_file)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "model"
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["zkz-000001.safetensors", "zkz.safetensors"]
    events = read_events(events_file)
    types = [e["type"] for e in events]
    assert types.count("start") == 1 and types[-1] == "done"
    start = next(e for e in events if e["type"] == "start")
    # 6 images × 5 repeats = 30 samples, batch 2 → 15 steps/epoch × 2 epochs
    assert start["total_steps"] == 30 and start["steps_per_epoch"] == 15 and start["epochs"] == 2
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 31))
    assert all(np.isfinite(e["loss"]) for e in steps) and steps[-1]["eta_sec"] == 0
    ck = [e for e in events if e["type"] == "checkpoint"]
    assert [Path(e["path"]).name for e in ck] == ["zkz-000001.safetensors", "zkz.safetensors"]
    assert [e["epoch"] for e in ck] == [1, 2] and [e["step"] for e in ck] == [15, 30]

    meta = metadata(out / "zkz.safetensors")
    assert all(isinstance(v, str) for v in meta.values())
    expected_version = "sdxl_base_v1-0" if family == "sdxl" else "sd_v1"
    assert meta["ss_base_model_version"] == expected_version and meta["ss_v2"] == "False"
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "4"
    assert float(meta["ss_network_alpha"]) == 2.0
    assert meta["ss_output_name"] == "zkz" and meta["ss_steps"] == "30" and meta["ss_epoch"] == "2"
    assert meta["ss_training_comment"] == "trigger: zkz"
    assert json.loads(meta["ss_dataset_dirs"]) == {"5_zkz object": {"n_repeats": 5, "img_count": 6}}
    assert json.loads(meta["ss_tag_frequency"])["5_zkz object"]["zkz object"] == 6
    assert "buckets" in json.loads(meta["ss_bucket_info"])
    for key in ("ss_training_started_at", "ss_sd_model_name", "ss_clip_skip", "ss_resolution", "sshs_model_hash",
                "sshs_legacy_hash", "modelspec.architecture", "modelspec.title", "ss_num_train_images", "ss_seed"):
        assert key in meta, key
    assert metadata(out / "zkz-000001.safetensors")["ss_epoch"] == "1"
    with safe_open(str(out / "zkz.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys), "save_precision fp16"
    prefixes = {k.split("_")[1] for k in keys}
    if family == "sdxl":
        assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
        assert any(k.startswith("lora_te1_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    else:
        assert any(k.startswith("lora_unet_down_blocks_") for k in keys) and any(k.startswith("lora_te_text_model_") for k in keys)
    assert prefixes <= {"unet", "te", "te1", "te2"}


def test_loss_falls_when_overfitting_one_image(tiny_sd1_dir, tmp_path):
    """One image at one timestep: the LoRA learns to predict the (fresh, random) noise better than the base."""
    make_images(tmp_path / "img" / "50_zkz object", 1)
    cfg = tiny_config(tiny_sd1_dir, tmp_path, network_dim=4, network_alpha=4, learning_rate="0.01", unet_lr="0.01",
                      text_encoder_lr="0.01", train_batch_size=1, epoch=1, save_every_n_epochs=0,
                      min_timestep=400, max_timestep=401)
    result, events = train_collect(cfg)
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 50 and result.status == "done"
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.9 * first, (first, last)


def test_single_file_and_folder_give_identical_first_loss(tiny_sd1_dir, tiny_sd1_single_file, tmp_path):
    make_images(tmp_path / "img" / "1_zkz object", 2)
    losses = []
    for i, model in enumerate([tiny_sd1_dir, tiny_sd1_single_file]):
        cfg = tiny_config(model, tmp_path, output_dir=str(tmp_path / f"out{i}"), max_train_steps=1, save_every_n_epochs=0)
        _, events = train_collect(cfg)
        losses.append(next(e["loss"] for e in events if e["type"] == "step"))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-7)


def test_odd_images_are_handled(tiny_sd1_dir, tmp_path):
    folder = tmp_path / "img" / "2_zkz object"
    make_images(folder, 2)
    rgba = Image.new("RGBA", (80, 64), (255, 0, 0, 0))
    rgba.paste((0, 255, 0, 255), (10, 10, 40, 40))
    rgba.save(folder / "alpha.webp")
    Image.new("L", (64, 96), 128).save(folder / "gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: stored 96×64, shown 64×96
    Image.new("RGB", (96, 64), (0, 0, 255)).save(folder / "rotated.jpg", exif=exif)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    cfg = tiny_config(tiny_sd1_dir, tmp_path, epoch=1, max_bucket_reso=128)
    result, events = train_collect(cfg)
    assert result.status == "done"
    start = next(e for e in events if e["type"] == "start")
    assert start["images"] == 5, "the corrupt image is skipped, the odd ones are converted"
    assert any(e["type"] == "warning" and "corrupt.png" in e["message"] for e in events)
    # at 64 px without upscaling every image ends in the one 64×64 bucket (the 80×64 WebP and the 64×96 ones are
    # centre-cropped): 5 images × 2 repeats
    assert start["buckets"] == {"64x64": 10}


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "1_zkz object", 1)
    cfg = tiny_config(tiny_sd1_dir, tmp_path, train_batch_size=1, epoch=8, learning_rate="1e38", unet_lr="1e38",
                      text_encoder_lr="1e38", lr_scheduler="constant_with_warmup", lr_warmup_steps=4)
    with pytest.raises(UserError) as e:
        train_collect(cfg)
    msg = e.value.message + (e.value.fix or "")
    assert "NaN" in msg and "learning rate" in msg and "fp16" in msg and "VAE" in msg
    assert (tmp_path / "model" / "zkz-000001.safetensors").is_file(), "the last good checkpoint is kept"
    named = re.search(r"last good checkpoint is (\S+\.safetensors)", e.value.message)
    assert named and Path(named.group(1)).is_file()
    assert not (tmp_path / "model" / "zkz.safetensors").exists()


def test_missing_model_is_an_error_event(tmp_path):
    make_images(tmp_path / "img" / "1_zkz object", 1)
    config = write_config(tmp_path / "cfg.json", tiny_config(tmp_path / "nope", tmp_path))
    res = run_cli("train", config, "--events", tmp_path / "ev.jsonl")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    err = [e for e in read_events(tmp_path / "ev.jsonl") if e["type"] == "error"]
    assert err and err[0]["field"] == "pretrained_model_name_or_path" and err[0]["hint"]


def test_sd2_v_prediction_trains_and_is_labelled(tiny_sd2_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 2)
    cfg = tiny_config(tiny_sd2_dir, tmp_path, v2=True, v_parameterization=True, epoch=1)
    result, events = train_collect(cfg)
    assert result.status == "done"
    meta = metadata(result.final_path)
    assert meta["ss_v2"] == "True" and meta["ss_base_model_version"] == "sd_v2_v"
    assert meta["modelspec.prediction_type"] == "v"
    with safe_open(str(result.final_path), "pt") as f:
        assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in f.keys())


def test_locon_and_many_options_together(tiny_sd1_dir, tmp_path):
    """Every data/loss option at once on a small run: it trains, and the options reach the file."""
    make_images(tmp_path / "img" / "3_zkz object", 3, size=(96, 64))
    make_images(tmp_path / "reg" / "1_object", 2, caption=None)
    cfg = tiny_config(
        tiny_sd1_dir, tmp_path, reg_data_dir=str(tmp_path / "reg"), LoRA_type="Kohya LoCon", conv_dim=2, conv_alpha=1,
        epoch=1, flip_aug=True, shuffle_caption=True, keep_tokens=1, caption_dropout_rate=0.1, clip_skip=2,
        max_token_length=150, noise_offset=0.05, adaptive_noise_scale=0.01, multires_noise_iterations=3,
        min_snr_gamma=5, gradient_checkpointing=True, loss_type="huber", prior_loss_weight=0.5,
        cache_latents_to_disk=True, ip_noise_gamma=0.05, scale_weight_norms=1.0, lr_scheduler="cosine_with_restarts",
        lr_warmup=20, optimizer="AdamW8bit", network_dropout=0.1, rank_dropout=0.1, module_dropout=0.1,
        max_bucket_reso=128, logging_dir=str(tmp_path / "log"))
    result, events = train_collect(cfg)
    start = next(e for e in events if e["type"] == "start")
    assert start["samples_per_epoch"] == 18, "9 training samples and 9 balanced reg samples"
    meta = metadata(result.final_path)
    args = json.loads(meta["ss_network_args"])
    assert args["conv_dim"] == "2" and float(args["conv_alpha"]) == 1 and float(args["rank_dropout"]) == 0.1
    assert meta["ss_num_reg_images"] == "9" and meta["ss_min_snr_gamma"] == "5.0" and meta["ss_clip_skip"] == "2"
    with safe_open(str(result.final_path), "pt") as f:
        convs = [k for k in f.keys() if "resnets" in k and k.endswith("lora_down.weight")]
        assert convs and f.get_tensor(convs[0]).shape[-1] == 3
    assert list((tmp_path / "model" / ".latent_cache").glob("*.npz")), "latents cached to disk"
    assert list((tmp_path / "log").rglob("events.out.tfevents.*")), "TensorBoard scalars under logging_dir"


def test_network_weights_continue_training(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 2)
    first, _ = train_collect(tiny_config(tiny_sd1_dir, tmp_path, epoch=1, save_precision="float"))
    before = load_file(first.final_path)
    cfg = tiny_config(tiny_sd1_dir, tmp_path, epoch=1, learning_rate="1e-12", unet_lr="1e-12", text_encoder_lr="1e-12",
                      output_dir=str(tmp_path / "again"), network_weights=str(first.final_path), save_precision="float")
    second, events = train_collect(cfg)
    assert any("initialised the network" in e.get("message", "") for e in events)
    after = load_file(second.final_path)
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=1e-6, rtol=1e-4)


def test_stop_during_caching_saves_nothing_and_says_stopped(tiny_sd1_dir, tmp_path):
    from kohya_lite.engine.train import StopFlag

    make_images(tmp_path / "img" / "1_zkz object", 3)
    cfg, _ = merge_config(tiny_config(tiny_sd1_dir, tmp_path, epoch=1, vae_batch_size=1))  # one image per report
    stop = StopFlag()
    events = []

    def listener(e):
        events.append(e)
        if e.get("message", "").startswith("caching latents 1/"):
            stop.set()

    result = train(cfg, events=EventWriter(listener=listener), stop=stop, progress_bar=False)
    assert result.status == "stopped" and result.final_path is None
    assert events[-1]["type"] == "stopped" and "caching" in events[-1]["message"]
    assert not any(e["type"] == "step" for e in events)
    assert not list((tmp_path / "model").glob("*.safetensors"))


def test_loraplus_and_separate_learning_rates(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "1_zkz object", 2)
    cfg = tiny_config(tiny_sd1_dir, tmp_path, max_train_steps=1, unet_lr="0.001", text_encoder_lr="0.0002",
                      loraplus_unet_lr_ratio=16, save_every_n_epochs=0)
    _, events = train_collect(cfg)
    step = next(e for e in events if e["type"] == "step")
    assert step["lrs"] == pytest.approx({"textencoder": 0.0002, "unet": 0.001, "unet_plus": 0.016})
    assert step["lr"] == pytest.approx(0.001)
    # text_encoder_lr 0 ⇒ UNet only: no TE group, and the file has no lora_te keys
    cfg = tiny_config(tiny_sd1_dir, tmp_path, max_train_steps=1, text_encoder_lr="0", output_dir=str(tmp_path / "u"))
    result, events = train_collect(cfg)
    assert set(next(e for e in events if e["type"] == "step")["lrs"]) == {"unet"}
    with safe_open(str(result.final_path), "pt") as f:
        assert not any(k.startswith("lora_te") for k in f.keys())
