"""Diffusers ⇄ SGM/LDM UNet paths (lora-file-format §3.3): the mapping diffusers' single-file loader applies to
whole UNet state dicts. The single-file checkpoint writer (`models.ldm`) and kohya's SDXL LoRA names
(`network.naming`) both use it. Pure string functions."""

from __future__ import annotations

import re
from typing import Iterable

# ResNet children: diffusers name ⇄ LDM name.
RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
RESNET_FROM_LDM = {v: k for k, v in RESNET_TO_LDM.items()}

# Top-level UNet modules outside the blocks.
_UNET_TOP_TO_LDM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_TOP_FROM_LDM = {v: k for k, v in _UNET_TOP_TO_LDM.items() if not k.startswith("class_embedding")}



def _resnet_child_to_ldm(rest: str) -> str:
    if not rest:
        return rest
    head, _, tail = rest.partition(".")
    mapped = RESNET_TO_LDM.get(head, head)
    return f"{mapped}.{tail}" if tail else mapped


def _resnet_child_from_ldm(rest: str) -> str:
    for ldm, diffusers in RESNET_FROM_LDM.items():
        if rest == ldm or rest.startswith(ldm + "."):
            return diffusers + rest[len(ldm):]
    return rest


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def diffusers_to_sgm(path: str, *, layers_per_block: int = 2,
                     up_blocks_with_attention: Iterable[int] | None = None) -> str:
    """A diffusers UNet module (or parameter) path → its SGM/LDM path (lora-file-format §3.3).

    `up_blocks_with_attention` says which up blocks hold attentions (it decides whether an upsampler
    sits in slot 1 or 2); the default assumes every up block with an upsampler has attentions, as in SDXL.
    """
    n = layers_per_block + 1  # SGM slots per level
    for top, ldm in _UNET_TOP_TO_LDM.items():
        if path == top or path.startswith(top + "."):
            return ldm + path[len(top):]
    m = re.fullmatch(r"down_blocks\.(\d+)\.(attentions|resnets|downsamplers)\.(\d+)(?:\.(.*))?", path)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4] or ""
        if kind == "downsamplers":
            rest = "op" + rest[len("conv"):] if rest.startswith("conv") else rest
            return _join(f"input_blocks.{n * (b + 1)}.0", rest)
        if kind == "attentions":
            return _join(f"input_blocks.{1 + n * b + j}.1", rest)
        return _join(f"input_blocks.{1 + n * b + j}.0", _resnet_child_to_ldm(rest))
    m = re.fullmatch(r"mid_block\.(attentions|resnets)\.(\d+)(?:\.(.*))?", path)
    if m:
        kind, i, rest = m[1], int(m[2]), m[3] or ""
        if kind == "attentions":
            return _join("middle_block.1", rest)
        return _join(f"middle_block.{2 * i}", _resnet_child_to_ldm(rest))
    m = re.fullmatch(r"up_blocks\.(\d+)\.(attentions|resnets|upsamplers)\.(\d+)(?:\.(.*))?", path)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4] or ""
        if kind == "upsamplers":
            with_attn = True if up_blocks_with_attention is None else b in set(up_blocks_with_attention)
            return _join(f"output_blocks.{n * b + layers_per_block}.{2 if with_attn else 1}", rest)
        if kind == "attentions":
            return _join(f"output_blocks.{n * b + j}.1", rest)
        return _join(f"output_blocks.{n * b + j}.0", _resnet_child_to_ldm(rest))
    return path


def sgm_to_diffusers(path: str, *, layers_per_block: int = 2) -> str:
    """An SGM/LDM UNet module (or parameter) path → its diffusers path; other paths pass through."""
    n = layers_per_block + 1
    for ldm, top in _UNET_TOP_FROM_LDM.items():
        if path == ldm or path.startswith(ldm + "."):
            return top + path[len(ldm):]
    m = re.fullmatch(r"input_blocks\.(\d+)\.(\d+)(?:\.(.*))?", path)
    if m:
        i, slot, rest = int(m[1]), int(m[2]), m[3] or ""
        b, j = divmod(i - 1, n)
        if j == layers_per_block:  # the downsampler slot
            rest = "conv" + rest[len("op"):] if rest.startswith("op") else rest
            return _join(f"down_blocks.{b}.downsamplers.0", rest)
        if slot == 1:
            return _join(f"down_blocks.{b}.attentions.{j}", rest)
        return _join(f"down_blocks.{b}.resnets.{j}", _resnet_child_from_ldm(rest))
    m = re.fullmatch(r"middle_block\.(\d+)(?:\.(.*))?", path)
    if m:
        slot, rest = int(m[1]), m[2] or ""
        if slot == 1:
            return _join("mid_block.attentions.0", rest)
        return _join(f"mid_block.resnets.{slot // 2}", _resnet_child_from_ldm(rest))
    m = re.fullmatch(r"output_blocks\.(\d+)\.(\d+)(?:\.(.*))?", path)
    if m:
        i, slot, rest = int(m[1]), int(m[2]), m[3] or ""
        b, j = divmod(i, n)
        if slot == 2 or (slot == 1 and (rest == "conv" or rest.startswith("conv."))):
            return _join(f"up_blocks.{b}.upsamplers.0", rest)
        if slot == 1:
            return _join(f"up_blocks.{b}.attentions.{j}", rest)
        return _join(f"up_blocks.{b}.resnets.{j}", _resnet_child_from_ldm(rest))
    return path


def is_sgm_path(path: str) -> bool:
    return path.startswith(("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.", "out."))
