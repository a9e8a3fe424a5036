"""LoRA files → weight changes, merged into a model and restored exactly (A1111's merge).

For every adapted module W' = W + Σᵢ wᵢ·(αᵢ/rᵢ)·upᵢ@downᵢ (wᵢ = the TE or UNet weight of tag i), summed in fp32
and added once; the touched weights are backed up (in CPU memory, as A1111 does) and copied back bit for bit
afterwards, also on errors. Weight 0 contributes nothing. LyCORIS files (LoHa, LoKr, iA3, DoRA, …) go the same
way with ΔWᵢ = merged(wᵢ) − W from the lycoris library's own modules (`network.lycoris.lycoris_deltas`; norm
layers and native fine-tuning change biases too). A LoRA of another family (SDXL on SD1, SD2 on SD1 …) is a
UserError before anything is touched. NAME is resolved in the LoRA library folder (`library.find_lora`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from kohya_lite.errors import UserError
from kohya_lite.generate.tags import LoraTag
from kohya_lite.library import find_lora
from kohya_lite.models import families
from kohya_lite.network import naming
from kohya_lite.network.io import LoraFile, load_lora
from kohya_lite.network.lora import ModuleIndex, delta_weight


@dataclass
class LoraUse:
    """One LoRA file at its weights, ready to merge."""

    name: str
    path: Path
    file: LoraFile
    te_weight: float = 1.0
    unet_weight: float = 1.0


@dataclass
class UsedLora:
    name: str
    path: str
    te_weight: float
    unet_weight: float
    family: str
    modules: int  # modules merged into the model (0 when both weights are 0)
    skipped: list[str] = field(default_factory=list)  # file modules this model lacks

    def weight_text(self) -> str:
        return LoraTag(self.name, self.te_weight, self.unet_weight).weight_text()

    def row(self) -> list:
        return [self.name, self.te_weight, self.unet_weight, self.modules, self.path]


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> LoraFile:
    return load_lora(path, field_name="prompt", allow_lycoris=True)


def read_lora(path: str | Path) -> LoraFile:
    """`network.io.load_lora`, cached by (path, mtime, size): repeated generations do not re-read files."""
    p = Path(path)
    st = p.stat()
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def check_family(lora: LoraFile, model_family: str, name: str, path: str | Path = "") -> None:
    """A LoRA for another family is refused. Metadata is trusted; from keys, SDXL and SD2 (wide TE or
    deep TE) are reliable, while 'sd1' is only the default guess, so an SD2 model then relies on the shapes."""
    if lora.family == model_family:
        return
    weak = lora.family_source == "keys" and lora.family == "sd1" and model_family == "sd2"
    if weak:
        return
    want, have = families.info(lora.family).label, families.info(model_family).label
    how = "its metadata" if lora.family_source == "metadata" else "its tensor names and shapes"
    raise UserError(f"the LoRA '{name}' was made for {want} (from {how}), but the model is {have}",
                    field="prompt", file=str(path),
                    fix=f"use a LoRA trained on a {have} model, or load a {want} base model for this one")


def resolve_loras(tags: Sequence[LoraTag], lora_dir: str | Path | None, family: str) -> list[LoraUse]:
    """Find, read and family-check the file of every tag (nothing is applied yet)."""
    uses = []
    for tag in tags:
        path = find_lora(tag.name, lora_dir)
        lf = read_lora(path)
        check_family(lf, family, tag.name, path)
        uses.append(LoraUse(tag.name, path, lf, tag.te_weight, tag.unet_weight))
    return uses


def _fit(delta: torch.Tensor, weight: torch.Tensor, name: str, lora: LoraUse, family: str) -> torch.Tensor:
    if delta.shape == weight.shape:
        return delta
    # a Linear LoRA on a 1×1 conv (or the reverse): same numbers, other view
    if delta.numel() == weight.numel() and delta.shape[:2] == weight.shape[:2]:
        return delta.reshape(weight.shape)
    raise UserError(
        f"the LoRA '{lora.name}' does not fit this {families.info(family).label} model: module {name} has shape "
        f"{tuple(delta.shape)}, the model's weight is {tuple(weight.shape)}", field="prompt", file=str(lora.path),
        fix="use a LoRA trained on the same base model family (SD1.x, SD2.x or SDXL)")


# (module whose .weight (and .bias) change, fp32 ΔW shaped like the weight, fp32 Δbias or None)
Delta = tuple[torch.nn.Module, torch.Tensor, "torch.Tensor | None"]


def _add(total: dict[int, Delta], module: torch.nn.Module, dw: torch.Tensor, db: torch.Tensor | None) -> None:
    key = id(module)
    if key in total:
        _, pw, pb = total[key]
        dw = pw + dw
        db = pb if db is None else (db if pb is None else pb + db)
    total[key] = (module, dw, db)


def _lycoris_use(model: Any, use: LoraUse, total: dict[int, Delta]) -> UsedLora:
    from kohya_lite.network.lycoris import lycoris_deltas

    names = use.file.module_names()
    try:
        deltas, skipped = lycoris_deltas(model, use.file.tensors, unet_multiplier=use.unet_weight,
                                         te_multiplier=use.te_weight)
    except UserError as exc:
        raise UserError(f"the LoRA '{use.name}': {exc.message}", field="prompt", file=str(use.path),
                        fix=exc.fix) from None
    if names and len(skipped) == len(names):
        raise UserError(f"none of the {len(names)} modules of the LoRA '{use.name}' exist in this "
                        f"{families.info(model.family).label} model (first: {names[0]})",
                        field="prompt", file=str(use.path),
                        fix="use a LoRA trained on the same base model family (SD1.x, SD2.x or SDXL)")
    for d in deltas:
        _add(total, d.module, d.weight, d.bias)
    return UsedLora(use.name, str(use.path), use.te_weight, use.unet_weight, use.file.family, len(deltas), skipped)


def lora_deltas(model: Any, uses: Sequence[LoraUse]) -> tuple[list[Delta], list[UsedLora]]:
    """Σ wᵢ·(αᵢ/rᵢ)·upᵢ@downᵢ per model module (fp32, CPU), and what each LoRA contributed."""
    index = ModuleIndex(model)
    total: dict[int, Delta] = {}
    used: list[UsedLora] = []
    for use in uses:
        if use.file.is_lycoris:
            used.append(_lycoris_use(model, use, total))
            continue
        names = use.file.module_names()
        skipped = [n for n in names if index.get(n) is None]
        if len(skipped) == len(names):
            raise UserError(f"none of the {len(names)} modules of the LoRA '{use.name}' exist in this "
                            f"{families.info(model.family).label} model (first: {names[0] if names else '-'})",
                            field="prompt", file=str(use.path),
                            fix="use a LoRA trained on the same base model family (SD1.x, SD2.x or SDXL)")
        merged = 0
        for name in names:
            module = index.get(name)
            if module is None:
                continue
            w = use.unet_weight if name.startswith(naming.UNET_PREFIX + "_") else use.te_weight
            t = use.file.tensors
            down, up = t[f"{name}.lora_down.weight"], t[f"{name}.lora_up.weight"]
            scale = float(t[f"{name}.alpha"].float()) / down.shape[0]
            delta = _fit(delta_weight(down, up, scale), module.weight, name, use, model.family)
            if w == 0:
                continue
            _add(total, module, w * delta, None)
            merged += 1
        used.append(UsedLora(use.name, str(use.path), use.te_weight, use.unet_weight, use.file.family, merged, skipped))
    return list(total.values()), used


@contextlib.contextmanager
def merged_loras(model: Any, uses: Sequence[LoraUse]) -> Iterator[list[UsedLora]]:
    """Merge the LoRAs into the model's weights for the `with` block; the exact weights come back after."""
    deltas, used = lora_deltas(model, uses)  # every check happens before the model is touched
    backup: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for module, delta, bias_delta in deltas:
                for param, d in ((module.weight, delta), (getattr(module, "bias", None), bias_delta)):
                    if d is None or param is None:
                        continue
                    backup.append((param, param.detach().to("cpu", copy=True)))  # on the CPU, as A1111
                    param.copy_((param.float() + d.to(param.device)).to(param.dtype))
        yield used
    finally:
        with torch.no_grad():
            for w, original in backup:
                w.copy_(original)
