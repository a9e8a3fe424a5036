"""Full-size runs on a CUDA GPU (marker `gpu`; skipped without CUDA, and the summary says so).

SD1.5 at 512 px and SDXL at 1024 px, random weights from the shipped configs, in fp16 and bf16 with AdamW8bit,
gradient accumulation 2 and sampling on; a Stop after a few steps, then a resume to the end; Generate with the
trained LoRA on the GPU in half precision (weight 0 equals the base pixel for pixel)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dataset_helpers import make_images, tiny_config
from kohya_lite.config import merge_config
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.train import StopFlag, train

pytestmark = pytest.mark.gpu

SIZES = {"sd1": 512, "sdxl": 1024}


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def full_model(request, tmp_path_factory):
    from gpu_models import build_random_full

    family = request.param
    return family, build_random_full(family, tmp_path_factory.mktemp(f"full-{family}"))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_full_size_train_stop_resume_generate(full_model, precision, tmp_path):
    family, model = full_model
    size = SIZES[family]
    make_images(tmp_path / "img" / "4_zkz object", 2, size=(size, size))
    cfg, _ = merge_config(tiny_config(
        model, tmp_path, sdxl=family == "sdxl", max_resolution=f"{size},{size}", max_bucket_reso=2048,
        min_bucket_reso=256, network_dim=8, network_alpha=8, optimizer="AdamW8bit", mixed_precision=precision,
        gradient_accumulation_steps=2, train_batch_size=1, epoch=2, save_every_n_epochs=1, save_state=True,
        sample_every_n_epochs=1, sample_prompts=f"zkz object --w {size} --h {size} --s 4 --d 1",
        gradient_checkpointing=family == "sdxl", learning_rate="1e-4", unet_lr="1e-4", text_encoder_lr="5e-5",
        num_cpu_threads_per_process=4))
    stop, events = StopFlag(), []

    def listener(e):
        events.append(e)
        if e["type"] == "step" and e["step"] == 3:
            stop.set()

    torch.cuda.reset_peak_memory_stats()
    first = train(cfg, events=EventWriter(listener=listener), stop=stop, progress_bar=False)
    assert first.status == "stopped" and first.steps == 3
    start = next(e for e in events if e["type"] == "start")
    assert start["precision"] == precision and start["device"].startswith("cuda")
    resumed_events = []
    done = train(cfg, events=EventWriter(listener=resumed_events.append), resume="last", progress_bar=False)
    assert done.status == "done" and done.steps == start["total_steps"]
    assert [e["step"] for e in resumed_events if e["type"] == "step"][0] == 4
    assert any(e["type"] == "sample" for e in events + resumed_events)
    tensors = load_file(done.final_path)
    assert all(torch.isfinite(v).all() for v in tensors.values())
    sec = [e["sec_per_step"] for e in resumed_events if e["type"] == "step"][-1]
    print(f"\n[gpu] {family} {size}px {precision}: {sec:.3f} s/step, peak VRAM "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")

    from kohya_lite.generate import GenerateRequest, ModelCache, generate

    cache = ModelCache()
    base = cache.get(model, sdxl=family == "sdxl", device="cuda")
    assert next(base.unet.parameters()).dtype in (torch.float16, torch.bfloat16)
    lora_dir = done.final_path.parent
    request = dict(negative="", steps=4, cfg_scale=5, seed=7, width=size, height=size)
    plain = generate(base, GenerateRequest(prompt="zkz object", **request), lora_dir=lora_dir).image
    zero = generate(base, GenerateRequest(prompt="zkz object <lora:zkz:0>", **request), lora_dir=lora_dir).image
    one = generate(base, GenerateRequest(prompt="zkz object <lora:zkz:1>", **request), lora_dir=lora_dir).image
    assert list(plain.getdata()) == list(zero.getdata())
    assert list(plain.getdata()) != list(one.getdata())


def test_sdxl_unet_only_parks_the_text_encoders_and_fits_in_8_gb(tmp_path):
    """SDXL at 1024 px, batch 1, bf16, gradient checkpointing, cached latents and text-encoder outputs (UNet
    only): the text encoders wait on the CPU between samples, samples still render, peak VRAM ≤ 8 GiB."""
    from gpu_models import build_random_full

    model = build_random_full("sdxl", tmp_path / "sdxl")
    make_images(tmp_path / "img" / "2_zkz object", 2, size=(1024, 1024))
    cfg, _ = merge_config(tiny_config(
        model, tmp_path, sdxl=True, max_resolution="1024,1024", max_bucket_reso=2048, min_bucket_reso=256,
        network_dim=8, network_alpha=8, mixed_precision="bf16", gradient_checkpointing=True, cache_latents=True,
        train_batch_size=1, epoch=1, max_train_steps=4, save_every_n_epochs=0, learning_rate="1e-4",
        unet_lr="1e-4", text_encoder_lr="0", sample_every_n_epochs=1,
        sample_prompts="zkz object --w 1024 --h 1024 --s 4 --d 1"))
    events = []
    torch.cuda.reset_peak_memory_stats()
    result = train(cfg, events=EventWriter(listener=events.append), progress_bar=False)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"\n[gpu] sdxl 1024px bf16 GC cached, UNet only: peak VRAM {peak:.2f} GiB")
    assert result.status == "done"
    assert any("text encoders moved to the CPU" in e.get("message", "") for e in events if e["type"] == "log")
    assert any(e["type"] == "sample" for e in events)
    assert peak <= 8.0
