"""kohya LoRA module names: pure string functions (lora-file-format.md §3).

- SD1/SD2 UNet: `lora_unet_` + the diffusers module path with `.` → `_`.
- SDXL UNet: `lora_unet_` + the SGM/LDM path (`input_blocks`, `middle_block`, `output_blocks`), §3.3.
- Text encoders: a fixed template, `lora_te_` / `lora_te1_` / `lora_te2_` +
  `text_model_encoder_layers_{i}_{self_attn_q_proj|…|mlp_fc2}`, never derived from transformers-5
  module paths (which lost the `text_model.` level).

The reverse direction (`parse_lora_name`) turns a kohya name back into (component, diffusers module
path), accepting the spellings other tools write (§15).

The diffusers ⇄ SGM path mapping itself is `models.sgm` (the single-file writer uses it too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from kohya_lite.models.sgm import diffusers_to_sgm, is_sgm_path, sgm_to_diffusers

UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"
TE1_PREFIX = "lora_te1"
TE2_PREFIX = "lora_te2"
ALL_PREFIXES = (UNET_PREFIX, TE_PREFIX, TE1_PREFIX, TE2_PREFIX)

# Component names, as in a diffusers pipeline.
UNET = "unet"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"

TE_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")

def te_prefixes(family: str) -> tuple[str, ...]:
    """The kohya TE prefixes of a family, one per text encoder."""
    return (TE1_PREFIX, TE2_PREFIX) if family == "sdxl" else (TE_PREFIX,)


def to_kohya(prefix: str, path: str) -> str:
    """`prefix` + "_" + module path with every "." replaced by "_"."""
    return f"{prefix}_{path.replace('.', '_')}" if path else prefix


def unet_lora_name(path: str, family: str, *, layers_per_block: int = 2,
                   up_blocks_with_attention: Iterable[int] | None = None) -> str:
    """kohya name of a UNet module given its diffusers path: diffusers naming for SD1/SD2, SGM for SDXL."""
    if family == "sdxl":
        path = diffusers_to_sgm(path, layers_per_block=layers_per_block,
                                up_blocks_with_attention=up_blocks_with_attention)
    return to_kohya(UNET_PREFIX, path)


# ---- text encoders --------------------------------------------------------------------------------

_TE_PATH = re.compile(r"(?:text_model\.)?encoder\.layers\.(\d+)\.(self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])")


def te_lora_name(layer: int, module: str, prefix: str = TE_PREFIX) -> str:
    """The fixed template: `{prefix}_text_model_encoder_layers_{layer}_{module with _}`."""
    if module not in TE_MODULES:
        raise ValueError(f"not a LoRA-adapted text-encoder module: {module!r}")
    return f"{prefix}_text_model_encoder_layers_{layer}_{module.replace('.', '_')}"


def te_lora_name_from_path(path: str, prefix: str = TE_PREFIX) -> str:
    """Template name from a CLIP module path, with or without the `text_model.` level."""
    m = _TE_PATH.fullmatch(path)
    if not m:
        raise ValueError(f"not a LoRA-adapted text-encoder module path: {path!r}")
    return te_lora_name(int(m[1]), m[2], prefix)


def te_component(prefix: str) -> str:
    return TEXT_ENCODER_2 if prefix == TE2_PREFIX else TEXT_ENCODER


# ---- kohya name → module path ---------------------------------------------------------------------

# Path segments that contain "_" themselves; everything else is split on "_".
_SEGMENTS = sorted({
    "down_blocks", "up_blocks", "mid_block", "input_blocks", "middle_block", "output_blocks",
    "transformer_blocks", "proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out", "time_emb_proj",
    "conv_shortcut", "in_layers", "out_layers", "emb_layers", "skip_connection", "time_embedding",
    "time_embed", "label_emb", "add_embedding", "conv_in", "conv_out", "conv_norm_out", "linear_1", "linear_2",
    "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "final_layer_norm", "layer_norm1",
    "layer_norm2", "token_embedding", "position_embedding", "text_projection", "proj_attn",
}, key=lambda s: -s.count("_"))
_SEGMENT_PARTS = {tuple(s.split("_")) for s in _SEGMENTS}
_MAX_PARTS = max(len(p) for p in _SEGMENT_PARTS)


def underscore_to_path(name: str) -> str:
    """Rebuild a dotted module path from its `_`-joined form, using the known segment vocabulary."""
    parts = name.split("_")
    out, i = [], 0
    while i < len(parts):
        for size in range(min(_MAX_PARTS, len(parts) - i), 1, -1):
            if tuple(parts[i:i + size]) in _SEGMENT_PARTS:
                out.append("_".join(parts[i:i + size]))
                i += size
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


@dataclass(frozen=True)
class LoraTarget:
    """Where a kohya-named LoRA module applies."""

    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    path: str  # diffusers module path; for text encoders relative to the `text_model` level
    prefix: str  # the kohya prefix it was written with


def split_prefix(name: str) -> tuple[str, str]:
    """('lora_te1', 'text_model_encoder_…') for a kohya module name."""
    for prefix in (TE1_PREFIX, TE2_PREFIX, TE_PREFIX, UNET_PREFIX):
        if name.startswith(prefix + "_"):
            return prefix, name[len(prefix) + 1:]
    raise ValueError(f"not a kohya LoRA name (no lora_unet_/lora_te*_ prefix): {name!r}")


def parse_lora_name(name: str, *, layers_per_block: int = 2) -> LoraTarget:
    """kohya module name → (component, diffusers module path). SGM UNet names are mapped back to
    diffusers paths; TE names may lack `text_model_` (normalised); `lora_te1_` means the first TE."""
    prefix, rest = split_prefix(name)
    if prefix == UNET_PREFIX:
        path = underscore_to_path(rest)
        if is_sgm_path(path):
            path = sgm_to_diffusers(path, layers_per_block=layers_per_block)
        return LoraTarget(UNET, path, prefix)
    path = underscore_to_path(rest)
    path = path[len("text_model."):] if path.startswith("text_model.") else path
    return LoraTarget(te_component(prefix), path, prefix)


def normalise_te_name(name: str, *, sd1_like: bool) -> str:
    """§15: insert a missing `text_model_`; on SD1/SD2 treat `lora_te1_` as `lora_te_`."""
    prefix, rest = split_prefix(name)
    if prefix == UNET_PREFIX:
        return name
    if not rest.startswith("text_model_"):
        rest = "text_model_" + rest
    if sd1_like and prefix == TE1_PREFIX:
        prefix = TE_PREFIX
    return f"{prefix}_{rest}"


def kohya_name_for(target: LoraTarget, family: str, *, layers_per_block: int = 2,
                   up_blocks_with_attention: Iterable[int] | None = None) -> str:
    """Canonical kohya name of a target (inverse of parse_lora_name, writing the family's convention)."""
    if target.component == UNET:
        return unet_lora_name(target.path, family, layers_per_block=layers_per_block,
                              up_blocks_with_attention=up_blocks_with_attention)
    if family == "sdxl":
        prefix = TE2_PREFIX if target.component == TEXT_ENCODER_2 else TE1_PREFIX
    else:
        prefix = TE_PREFIX
    return te_lora_name_from_path(target.path, prefix)


# ---- LyCORIS tensor names -------------------------------------------------------------------------------

# Tensor-name segments of LyCORIS / DoRA / OFT adapters (LoHa, LoKr, Tucker, GLoRA, norm, full diff, iA3)
_LYCORIS_PREFIXES = ("hada_", "lokr_", "lora_mid", "dora_scale", "lora_magnitude_vector", "oft_")
_LYCORIS_SEGMENTS = ("diff", "diff_b", "w_norm", "b_norm", "on_input", "rescale", "lambda_layer")
_GLORA_SEGMENTS = ("a1", "a2", "b1", "b2")


def lycoris_markers(keys, *, kohya: bool) -> list[str]:
    """The LyCORIS/DoRA-type tensor names among `keys` (lora-file-format §15), e.g. ['hada_w1_a', 'dora_scale'];
    `kohya`: keys are `<module>.<tensor>`."""
    found = []
    for key in keys:
        segments = (key.partition(".")[2] if kohya else key).split(".")
        for seg in segments:
            if seg.startswith(_LYCORIS_PREFIXES) or seg in _LYCORIS_SEGMENTS:
                found.append(seg)
        if kohya and segments[0] in _GLORA_SEGMENTS:
            found.append(segments[0])
    return sorted(set(found))
