"""Whole training runs on tiny models for the engine's sd-scripts semantics: accumulation and the LR schedule,
half precision on the CPU (SDXL with the fp32 VAE and sampling), Adafactor's defaults, alpha 0, resume with a
drawn seed, skipped non-finite steps, data-loader workers, dim_from_weights, full_bf16, save_last_n_steps."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine_helpers import train_collect
from dataset_helpers import make_images, tiny_config
from kohya_lite.errors import UserError


def _of(events, kind):
    return [e for e in events if e["type"] == kind]


def test_accumulation_steps_the_schedule_once_per_optimizer_step(tiny_sd1_dir, tmp_path):
    """5 batches an epoch with accumulation 2 → groups of 2, 2, 1: 3 optimizer steps an epoch, 6 in 2 epochs;
    a linear schedule falls by 1/6 per step and reaches 0 at the last."""
    make_images(tmp_path / "img" / "5_zkz object", 2)  # 10 samples, batch 2 → 5 batches
    cfg = tiny_config(tiny_sd1_dir, tmp_path, gradient_accumulation_steps=2, lr_scheduler="linear", learning_rate="0.006",
                      unet_lr="0.006", text_encoder_lr="0.006", save_every_n_epochs=0)
    result, events = train_collect(cfg)
    start = _of(events, "start")[0]
    steps = _of(events, "step")
    assert start["steps_per_epoch"] == 3 and start["total_steps"] == 6 and start["accumulation"] == 2
    assert [e["step"] for e in steps] == list(range(1, 7)) and result.steps == 6
    assert [e["epoch"] for e in steps] == [1, 1, 1, 2, 2, 2]
    lrs = [e["lr"] for e in steps]  # the LR after each step
    assert lrs == pytest.approx([0.006 * (1 - k / 6) for k in range(1, 7)], abs=1e-12)
    assert lrs[-1] == 0


def test_sdxl_bf16_on_cpu_trains_and_samples(tiny_sdxl_dir, tmp_path):
    """The half-precision path on the CPU: bf16 autocast, bf16 base weights, the fp32 'no half' VAE decoding
    samples made by a bf16 UNet, fp32 LoRA weights."""
    make_images(tmp_path / "img" / "2_zkz object", 2, size=(128, 128))
    cfg = tiny_config(tiny_sdxl_dir, tmp_path, sdxl=True, max_resolution="128,128", max_bucket_reso=256, epoch=1,
                      mixed_precision="bf16", sdxl_no_half_vae=True, sample_every_n_epochs=1, sample_at_first=True,
                      sample_prompts="zkz object --w 128 --h 128 --s 2 --d 3", save_precision="float")
    result, events = train_collect(cfg)
    start = _of(events, "start")[0]
    assert start["precision"] == "bf16" and start["network_dtype"] == "float32"
    assert [e["step"] for e in _of(events, "sample")] == [0, 2]
    assert not [e for e in events if e["type"] == "warning" and e.get("field") == "mixed_precision"]
    meta = _metadata(result.final_path)
    assert meta["ss_mixed_precision"] == "bf16"
    tensors = load_file(result.final_path)
    assert all(torch.isfinite(v).all() for v in tensors.values())
    assert any(v.abs().sum() > 0 for k, v in tensors.items() if k.endswith("lora_up.weight")), "it trained"


def test_fp16_on_cpu_warns_and_trains_in_bf16_or_fp32(tiny_sd1_dir, tmp_path):
    from kohya_lite.engine.context import cpu_has_bf16

    make_images(tmp_path / "img" / "1_zkz object", 2)
    _, events = train_collect(tiny_config(tiny_sd1_dir, tmp_path, mixed_precision="fp16", max_train_steps=1,
                                   save_every_n_epochs=0))
    assert _of(events, "start")[0]["precision"] == ("bf16" if cpu_has_bf16() else "no")
    assert any(e["type"] == "warning" and e["field"] == "mixed_precision" for e in events)


def test_full_bf16_keeps_the_lora_in_bf16(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 2)
    result, events = train_collect(tiny_config(tiny_sd1_dir, tmp_path, mixed_precision="bf16", full_bf16=True, epoch=1,
                                        save_every_n_epochs=0))
    assert _of(events, "start")[0]["network_dtype"] == "bfloat16" and result.status == "done"


def test_adafactor_with_its_defaults_trains(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 2)
    result, events = train_collect(tiny_config(tiny_sd1_dir, tmp_path, optimizer="Adafactor", optimizer_args="",
                                        lr_scheduler="cosine", lr_warmup=0, epoch=1, save_every_n_epochs=0))
    assert result.status == "done"
    assert all(e["lr"] > 0 for e in _of(events, "step"))
    assert "Adafactor" in _metadata(result.final_path)["ss_optimizer"]


def test_network_alpha_zero_trains_at_alpha_one(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "1_zkz object", 2)
    result, events = train_collect(tiny_config(tiny_sd1_dir, tmp_path, network_dim=8, network_alpha=0, max_train_steps=1,
                                        save_every_n_epochs=0, save_precision="float"))
    alphas = {k: v.item() for k, v in load_file(result.final_path).items() if k.endswith(".alpha")}
    assert alphas and set(alphas.values()) == {1.0}
    assert any(e["type"] == "warning" and e["field"] == "network_alpha" for e in events)


def test_resume_reuses_a_drawn_seed(tiny_sd1_dir, tmp_path):
    """seed 0 draws a seed; resuming from a state reuses it, so the resumed run ends exactly where the
    uninterrupted one did."""
    make_images(tmp_path / "img" / "3_zkz object", 2)
    common = dict(seed=0, epoch=3, save_every_n_epochs=1, save_state=True, save_precision="float", flip_aug=True,
                  network_dropout=0.1, caption_dropout_rate=0.2, shuffle_caption=True)
    full, events = train_collect(tiny_config(tiny_sd1_dir, tmp_path, **common))
    seed = _of(events, "start")[0]["seed"]
    state = tmp_path / "model" / "zkz-000001-state"
    assert json.loads((state / "train_state.json").read_text())["seed"] == seed
    resumed, events2 = train_collect(tiny_config(tiny_sd1_dir, tmp_path, output_dir=str(tmp_path / "again"), **common),
                              resume=str(state))
    start = _of(events2, "start")[0]
    assert start["seed"] == seed and start["resumed_at"] == 3
    assert [e["step"] for e in _of(events2, "step")] == [4, 5, 6, 7, 8, 9]
    a, b = load_file(full.final_path), load_file(resumed.final_path)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)


def test_a_non_finite_step_is_skipped_and_counted(tiny_sd1_dir, tmp_path, monkeypatch):
    """Fault injection: the loss of the third micro-batch is NaN. That step is skipped (no optimizer or scheduler
    step), counted, and training goes on to a finite file."""
    import kohya_lite.engine.step as engine

    real, calls = engine.diffusion_loss, {"n": 0}

    def sometimes_nan(*args, **kw):
        out = real(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(engine, "diffusion_loss", sometimes_nan)
    make_images(tmp_path / "img" / "3_zkz object", 2)
    result, events = train_collect(tiny_config(tiny_sd1_dir, tmp_path, epoch=1, lr_scheduler="linear", save_precision="float"))
    steps = _of(events, "step")
    assert [e["skipped"] for e in steps] == [False, False, True]
    assert steps[-1]["skipped_total"] == 1 and steps[1]["lr"] == steps[2]["lr"], "no scheduler step when skipped"
    assert all(torch.isfinite(v).all() for v in load_file(result.final_path).values())


def test_workers_give_the_same_run(tiny_sd1_dir, tmp_path):
    """Batches are seeded per batch, so decoding images in two worker processes changes nothing."""
    make_images(tmp_path / "img" / "2_zkz object", 3)
    common = dict(cache_latents=False, flip_aug=True, color_aug=True, epoch=2, save_every_n_epochs=0,
                  save_precision="float", shuffle_caption=True)
    a, _ = train_collect(tiny_config(tiny_sd1_dir, tmp_path, output_dir=str(tmp_path / "w0"), **common))
    b, ev = train_collect(tiny_config(tiny_sd1_dir, tmp_path, output_dir=str(tmp_path / "w2"), max_data_loader_n_workers=2,
                               persistent_data_loader_workers=True, **common))
    assert _of(ev, "start")[0]["cached_latents"] is False
    ta, tb = load_file(a.final_path), load_file(b.final_path)
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], rtol=0, atol=0)


def test_dim_from_weights_and_save_last_n_steps(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "2_zkz object", 2)
    first, _ = train_collect(tiny_config(tiny_sd1_dir, tmp_path, network_dim=2, network_alpha=1, epoch=1,
                                  save_every_n_epochs=0, save_precision="float"))
    cfg = tiny_config(tiny_sd1_dir, tmp_path, output_dir=str(tmp_path / "next"), network_dim=8,
                      network_weights=str(first.final_path), epoch=2, save_every_n_epochs=0, save_every_n_steps=1,
                      save_last_n_steps=1, save_precision="float")
    with pytest.raises(UserError) as e:
        train_collect(cfg)
    assert "dim_from_weights" in e.value.fix
    result, events = train_collect(dict(cfg, dim_from_weights=True))
    with safe_open(str(result.final_path), "pt") as f:
        downs = [f.get_tensor(k) for k in f.keys() if k.endswith("lora_down.weight")]
    assert downs and all(d.shape[0] == 2 for d in downs), "rank from the file, not network_dim 8"
    assert any("built the network from" in e.get("message", "") for e in events)
    # 4 steps, a step file after steps 1–3, keep the last 1 step's: steps 2 and 3 survive (numbered ≥ step − 1)
    names = sorted(p.name for p in (tmp_path / "next").glob("zkz-step*.safetensors"))
    assert names == ["zkz-step00000002.safetensors", "zkz-step00000003.safetensors"]


def _metadata(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_damaged_after_check_is_named(tiny_sd1_dir, tmp_path, workers, monkeypatch):
    """check reads headers only; an image whose pixel data is damaged is named, with the fix, when training
    reaches it (also from a data-loader worker), instead of a traceback."""
    import kohya_lite.engine.setup as setup

    paths = make_images(tmp_path / "img" / "1_zkz object", 2)
    real = setup.run_check

    def check_then_damage(cfg, **kw):  # the file changes between the check and the training (as on a flaky disk)
        result = real(cfg, **kw)
        data = bytearray(paths[1].read_bytes())
        data[60:-20] = bytes(len(data) - 80)
        paths[1].write_bytes(bytes(data))
        return result

    monkeypatch.setattr(setup, "run_check", check_then_damage)
    with pytest.raises(UserError) as e:
        train_collect(tiny_config(tiny_sd1_dir, tmp_path, cache_latents=False, epoch=1, max_data_loader_n_workers=workers))
    assert e.value.file == str(paths[1]) and "cannot be decoded" in e.value.message and "re-save" in e.value.fix


def test_channels_last_trains_the_same_lora(tiny_sd1_dir, tmp_path, monkeypatch):
    """`channels_last` puts the UNet's convolutions in channels-last memory format; the LoRA it
    trains matches the one trained in the default layout up to rounding."""
    from diffusers import UNet2DConditionModel

    layouts = []
    forward = UNet2DConditionModel.forward

    def spy(self, *args, **kwargs):
        layouts.append(self.conv_in.weight.is_contiguous(memory_format=torch.channels_last))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", spy)
    trained = {}
    for channels_last in (False, True):
        root = tmp_path / str(channels_last)
        make_images(root / "img" / "2_zkz object", 2)
        cfg = tiny_config(tiny_sd1_dir, root, channels_last=channels_last, epoch=1, save_every_n_epochs=0,
                          save_precision="float")
        layouts.clear()
        result, _ = train_collect(cfg)
        assert layouts and set(layouts) == {channels_last}
        trained[channels_last] = load_file(result.final_path)
    assert trained[True].keys() == trained[False].keys()
    for key, value in trained[False].items():
        torch.testing.assert_close(trained[True][key], value, rtol=1e-3, atol=1e-5, msg=key)
    assert any(v.abs().sum() > 0 for k, v in trained[True].items() if k.endswith("lora_up.weight")), "it trained"


def test_text_encoder_outputs_are_cached_before_the_first_step(tiny_sd1_dir, tmp_path, monkeypatch):
    """UNet only with static captions: every caption is encoded once, before training (so on a GPU the text
    encoders can leave it); no step encodes text. With the text encoder trained, every step encodes."""
    from kohya_lite.engine.conditioning import TextConditioner

    timeline = []
    encode = TextConditioner.encode

    def spy(self, captions):
        timeline.append(("encode", tuple(captions)))
        return encode(self, captions)

    monkeypatch.setattr(TextConditioner, "encode", spy)
    make_images(tmp_path / "img" / "3_zkz object", 3)
    for i, p in enumerate(sorted((tmp_path / "img" / "3_zkz object").glob("*.txt"))):
        p.write_text(f"zkz object, take {i}", encoding="utf-8")
    cfg = tiny_config(tiny_sd1_dir, tmp_path, text_encoder_lr="0", epoch=2, save_every_n_epochs=0)
    result, events = train_collect(cfg)
    assert result.status == "done"
    first_step = next(i for i, e in enumerate(events) if e["type"] == "step")
    encodes = [t for t in timeline if t[0] == "encode"]
    assert len(encodes) == 1 and sorted(encodes[0][1]) == [f"zkz object, take {i}" for i in range(3)]
    log = [e["message"] for e in events[:first_step] if e["type"] == "log"]
    assert any("cached the text-encoder outputs of 3 captions" in m for m in log)

    timeline.clear()
    trained, _ = train_collect(tiny_config(tiny_sd1_dir, tmp_path / "te", text_encoder_lr="0.0005", epoch=2,
                                           save_every_n_epochs=0, train_data_dir=str(tmp_path / "img")))
    assert len([t for t in timeline if t[0] == "encode"]) == trained.steps
