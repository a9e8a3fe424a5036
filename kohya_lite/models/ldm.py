"""diffusers → original (LDM / SGM) single-file state dicts.

The inverse of what diffusers' `from_single_file` reads, so that a checkpoint written here reloads
bit-identically with `from_single_file(..., config=<a diffusers folder of the same architecture>)`:

| part | SD1 | SD2 | SDXL |
|---|---|---|---|
| UNet | `model.diffusion_model.` + SGM paths | same | same |
| VAE | `first_stage_model.` + LDM VAE names | same | same |
| TE | `cond_stage_model.transformer.text_model.` (HF CLIP) | `cond_stage_model.model.` (OpenCLIP) | `conditioner.embedders.0.transformer.text_model.` + `conditioner.embedders.1.model.` (OpenCLIP) |

The block numbering follows the UNet's config (`layers_per_block`), so real and tiny layouts both work
(tiny ones must keep the real block *ordering*, see offline-models §6).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from kohya_lite.models.sgm import diffusers_to_sgm

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = {"sd1": "cond_stage_model.transformer.text_model.", "sdxl": "conditioner.embedders.0.transformer.text_model."}
OPENCLIP_PREFIX = {"sd2": "cond_stage_model.model.", "sdxl": "conditioner.embedders.1.model."}


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def unet_to_ldm(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel state dict → `model.diffusion_model.*` keys."""
    lpb = int(config["layers_per_block"])
    with_attn = [i for i, t in enumerate(config["up_block_types"]) if "CrossAttn" in t]
    out = {}
    for key, value in state_dict.items():
        module, param = _split_param(key)
        path = diffusers_to_sgm(module, layers_per_block=lpb, up_blocks_with_attention=with_attn)
        out[f"{UNET_PREFIX}{path}.{param}"] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_key(key: str, num_blocks: int) -> str:
    side, _, rest = key.partition(".")  # encoder | decoder | quant_conv | post_quant_conv
    if side not in ("encoder", "decoder"):
        return key
    rest = rest.replace("conv_norm_out", "norm_out")
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if m:
        kind, i, sub, j, tail = m[1], int(m[2]), m[3], int(m[4]), m[5]
        level = i if kind == "down" else num_blocks - 1 - i
        if sub == "resnets":
            tail = tail.replace("conv_shortcut", "nin_shortcut")
            return f"{side}.{kind}.{level}.block.{j}.{tail}"
        return f"{side}.{kind}.{level}.{'downsample' if kind == 'down' else 'upsample'}.{tail}"
    m = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", rest)
    if m:
        return f"{side}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)", rest)
    if m:
        return f"{side}.mid.attn_1.{_VAE_ATTN[m[1]]}.{m[2]}"
    return f"{side}.{rest}"


def vae_to_ldm(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict → `first_stage_model.*` (mid-attention projections as 1×1 convs)."""
    n = len(config["down_block_types"])
    out = {}
    for key, value in state_dict.items():
        new = _vae_key(key, n)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.dim() == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + new] = value
    return out


def _te_state(text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The CLIP state dict relative to the `text_model` level (works with and without it)."""
    sd = {}
    for key, value in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        sd[key[len("text_model."):] if key.startswith("text_model.") else key] = value
    return sd


def clip_to_ldm(text_encoder: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """HF CLIPTextModel → `<prefix>embeddings…`, `<prefix>encoder.layers…` (prefix ends in `text_model.`)."""
    return {prefix + k: v for k, v in _te_state(text_encoder).items() if not k.startswith("text_projection")}


_OPENCLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def openclip_to_ldm(text_encoder: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """HF CLIP(WithProjection) → OpenCLIP layout: fused attn in_proj, `resblocks`, `ln_final`, and
    `text_projection` as [hidden, proj] (for a model without projection, the identity)."""
    sd = _te_state(text_encoder)
    out = {
        prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["final_layer_norm.bias"],
    }
    full = text_encoder.state_dict()
    if "text_projection.weight" in full:
        out[prefix + "text_projection"] = full["text_projection.weight"].T.contiguous()
    else:
        hidden = sd["final_layer_norm.weight"].shape[0]
        out[prefix + "text_projection"] = torch.eye(hidden, dtype=sd["final_layer_norm.weight"].dtype)
    layers = sorted({int(m[1]) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
            for hf, oc in _OPENCLIP_LAYER.items():
                out[f"{dst}{oc}.{kind}"] = sd[f"{src}{hf}.{kind}"]
    return out


def to_ldm_state_dict(family: str, unet: nn.Module, vae: nn.Module, text_encoders: list[nn.Module]) -> dict:
    """The whole single-file checkpoint of a family, as sd-scripts / A1111 / ComfyUI expect it."""
    sd = unet_to_ldm(unet.state_dict(), unet.config)
    sd.update(vae_to_ldm(vae.state_dict(), vae.config))
    if family == "sd1":
        sd.update(clip_to_ldm(text_encoders[0], CLIP_PREFIX["sd1"]))
    elif family == "sd2":
        sd.update(openclip_to_ldm(text_encoders[0], OPENCLIP_PREFIX["sd2"]))
    elif family == "sdxl":
        sd.update(clip_to_ldm(text_encoders[0], CLIP_PREFIX["sdxl"]))
        sd.update(openclip_to_ldm(text_encoders[1], OPENCLIP_PREFIX["sdxl"]))
    else:
        raise ValueError(f"unknown family {family!r}")
    return {k: v.detach().contiguous() for k, v in sd.items()}
