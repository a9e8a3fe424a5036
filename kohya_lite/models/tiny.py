"""Tiny random SD1 / SD2 / SDXL models for tests, demos and CPU smoke runs (offline-models §3, §4, §6).

The layouts keep the real block *ordering* (SD1: cross-attention first; SDXL: three levels with the
attention levels last; both TEs of SDXL with different widths), so a tiny model survives conversion to
an LDM/SGM single file and back bit-identically. All use the project's real CLIP BPE tokenizer with
a 49,408-token, 32-wide text encoder, so token ids are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kohya_lite.models import clip_bpe
from kohya_lite.models.families import FAMILIES

_TE = {
    "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 3,
    "max_position_embeddings": 77, "vocab_size": clip_bpe.VOCAB_SIZE, "layer_norm_eps": 1e-05,
    "bos_token_id": clip_bpe.BOS_ID, "eos_token_id": clip_bpe.EOS_ID, "pad_token_id": clip_bpe.EOS_ID,
}
_VAE = {
    "block_out_channels": [32, 32, 32, 32], "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64,
}
_SCHED = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1,
          "num_train_timesteps": 1000}
_DDIM = dict(_SCHED, clip_sample=False, set_alpha_to_one=False)

TINY_CONFIGS: dict[str, dict] = {
    "sd1": {
        "unet": {
            "sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
            "layers_per_block": 2, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
            "norm_num_groups": 8, "attention_head_dim": 8,
        },
        "vae": dict(_VAE, scaling_factor=0.18215),
        "text_encoder": dict(_TE, hidden_act="quick_gelu", projection_dim=32),
        "scheduler": ("DDIMScheduler", dict(_DDIM, prediction_type="epsilon")),
    },
    "sd2": {
        "unet": {
            "sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
            "layers_per_block": 2, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
            "norm_num_groups": 8, "attention_head_dim": [2, 4], "use_linear_projection": True,
        },
        "vae": dict(_VAE, scaling_factor=0.18215),
        "text_encoder": dict(_TE, hidden_act="gelu", projection_dim=32, pad_token_id=0),
        "scheduler": ("DDIMScheduler", dict(_DDIM, prediction_type="v_prediction")),
    },
    "sdxl": {
        "unet": {
            "sample_size": 16, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 32, 64],
            "layers_per_block": 2,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "attention_head_dim": [2, 4, 8], "transformer_layers_per_block": [1, 1, 2],
            "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 64, "cross_attention_dim": 32 + 64,
            "norm_num_groups": 32,
        },
        "vae": dict(_VAE, scaling_factor=0.13025, sample_size=128),
        "text_encoder": dict(_TE, hidden_act="quick_gelu", projection_dim=32),
        "text_encoder_2": dict(_TE, hidden_size=64, intermediate_size=74, hidden_act="gelu", projection_dim=64,
                               pad_token_id=0),
        "scheduler": ("EulerDiscreteScheduler", dict(_SCHED, prediction_type="epsilon", timestep_spacing="leading")),
    },
}


def tiny_components(family: str, *, seed: int = 0) -> dict:
    """Randomly initialised pipeline components (unet, vae, text_encoder[_2], tokenizer[_2], scheduler)."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    cfg = TINY_CONFIGS[family]
    torch.manual_seed(seed)
    comps = {
        "unet": UNet2DConditionModel(**cfg["unet"]),
        "vae": AutoencoderKL(**cfg["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])),
        "tokenizer": clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for(family, 0)),
    }
    if family == "sdxl":
        comps["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"]))
        comps["tokenizer_2"] = clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for(family, 1))
    sched_cls, sched_cfg = cfg["scheduler"]
    comps["scheduler"] = getattr(diffusers, sched_cls)(**sched_cfg)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in comps:
            comps[name].eval()
    return comps


def tiny_pipeline(family: str, *, seed: int = 0):
    """A tiny StableDiffusion(XL)Pipeline, no safety checker."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    comps = tiny_components(family, seed=seed)
    if family == "sdxl":
        return StableDiffusionXLPipeline(**comps, add_watermarker=False)
    return StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def write_single_file(pipe, family: str, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Save a pipeline's weights as one LDM/SGM `.safetensors` (what A1111/ComfyUI/sd-scripts use)."""
    from safetensors.torch import save_file

    from kohya_lite.models.ldm import to_ldm_state_dict

    tes = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    sd = to_ldm_state_dict(family, pipe.unet, pipe.vae, tes)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"format": "pt"})
    return path


def build_tiny_model(family: str, out_dir: str | Path, *, single_file: str | Path | None = None,
                     seed: int = 0) -> Path:
    """Write a tiny diffusers folder to `out_dir` (loadable with `load_model(out_dir)`), and optionally the
    same weights as a single-file checkpoint. A relative `single_file` goes inside `out_dir`, where
    `load_model` finds the folder's configs for it. Returns `out_dir`."""
    out = Path(out_dir)
    pipe = tiny_pipeline(family, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    if single_file:
        target = Path(single_file)
        write_single_file(pipe, family, target if target.is_absolute() else out / target)
    return out
