"""Full-size SD1.5 / SDXL pipelines with random weights, built from the shipped configs (no download), for the
GPU tests and benchmarks/bench_gpu.py. Built on the target device, so even SDXL takes seconds on a GPU."""

from __future__ import annotations

from pathlib import Path

import torch


def build_random_full(family: str, out: Path, *, device: str = "cuda", dtype: torch.dtype = torch.float16,
                      seed: int = 0) -> Path:
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from kohya_lite.models import clip_bpe
    from kohya_lite.models.families import config_dir

    folder = config_dir(family)
    torch.manual_seed(seed)
    with torch.device(device):
        comps = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet"))),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae"))),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder"))),
        }
        if family == "sdxl":
            comps["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2")))
    comps = {k: v.to(dtype) for k, v in comps.items()}
    comps["tokenizer"] = clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for(family, 0))
    sched_cfg = diffusers.DDIMScheduler.load_config(str(folder / "scheduler"))
    comps["scheduler"] = diffusers.EulerDiscreteScheduler.from_config(sched_cfg)
    if family == "sdxl":
        comps["tokenizer_2"] = clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for(family, 1))
        pipe = diffusers.StableDiffusionXLPipeline(**comps, add_watermarker=False)
    else:
        pipe = diffusers.StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out
