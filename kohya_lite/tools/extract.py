"""Extract a LoRA from a fine-tuned model and its base (sd-scripts `networks/extract_lora_from_models.py`).

For every module a LoRA network adapts (LoCon's 3×3 convs too when `conv_rank` > 0): ΔW = tuned − base in
fp32, a truncated SVD to `rank` (3×3 convs: `conv_rank`; never more than the matrix allows), U·S → up and
Vh → down, both clamped to the `clamp_quantile` quantile of their absolute values. The text encoders count
only when some TE weight differs by more than `min_diff` (otherwise only the UNet is extracted, as
sd-scripts does); modules whose weights are exactly equal are left out.

The file follows lora-file-format §6: alpha = rank for the whole file (scale 1, as sd-scripts writes), and a
module whose rank had to be smaller, or a conv module at `conv_rank`, has that scale folded into `up`.
Differences from sd-scripts, on purpose: the clamp is symmetric around the quantile of |values| (so 1.0
keeps everything; sd-scripts takes the quantile of signed values), and untouched modules are not written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kohya_lite.errors import UserError
from kohya_lite.models import families
from kohya_lite.network.io import PRECISIONS, save_lora_file
from kohya_lite.network.lora import find_targets
from kohya_lite.network.metadata import NETWORK_MODULE, modelspec_metadata
from kohya_lite.tools import Progress, report

_QUANTILE_SAMPLE = 1 << 24  # torch.quantile's input limit


@dataclass
class ExtractResult:
    path: Path
    family: str
    rank: int
    conv_rank: int
    modules: dict[str, int]  # per component: unet / text_encoder / text_encoder_2
    text_encoder_extracted: bool
    text_encoder_max_diff: float
    unchanged: int  # modules left out because tuned == base
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mods = ", ".join(f"{k} {v}" for k, v in self.modules.items()) or "none"
        te = "" if self.text_encoder_extracted else " (text encoder unchanged: UNet only)"
        return f"wrote {self.path}: rank {self.rank}" + (f", conv rank {self.conv_rank}" if self.conv_rank else "") + \
            f", modules {mods}{te}"


def clamp_value(up: torch.Tensor, down: torch.Tensor, quantile: float) -> float | None:
    """The clamp bound: the `quantile` of |up ∪ down| (None for quantile ≥ 1: nothing is clamped)."""
    if quantile >= 1:
        return None
    values = torch.cat([up.flatten(), down.flatten()]).abs()
    if values.numel() > _QUANTILE_SAMPLE:
        k = max(1, int(round(quantile * values.numel())))
        return float(values.kthvalue(k).values)
    return float(torch.quantile(values, quantile))


def svd_factor(delta: torch.Tensor, rank: int, alpha: float, quantile: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(down, up, kept rank) of ΔW: U·S → up, Vh → down, clamped, with (alpha / kept) folded so that
    (alpha / kept) · up @ down ≈ ΔW. Conv weights come back as [k, in, kh, kw] / [out, k, 1, 1]."""
    shape = delta.shape
    mat = delta.reshape(shape[0], -1).float()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    k = max(1, min(rank, s.numel()))
    up, down = u[:, :k] * s[:k], vh[:k]
    bound = clamp_value(up, down, quantile)
    if bound is not None:
        up, down = up.clamp(-bound, bound), down.clamp(-bound, bound)
    up = up * (k / alpha)
    if len(shape) == 4:
        down = down.reshape(k, shape[1], shape[2], shape[3])
        up = up.reshape(shape[0], k, 1, 1)
    return down.contiguous(), up.contiguous(), k


def _load(path: Any, what: str, dtype: torch.dtype, flags: dict):
    from kohya_lite.models.load import load_model

    if hasattr(path, "unet") and hasattr(path, "text_encoders"):
        return path  # an already loaded model (LoadedModel): used as it is
    try:
        return load_model(path, dtype=dtype, **flags)
    except UserError as exc:
        raise UserError(f"{what} model: {exc.message}", field=f"{what}_model", file=exc.file, fix=exc.fix) from None


def extract_lora(base: Any, tuned: Any, out: str | Path, *, rank: int = 4, conv_rank: int = 0,
                 clamp_quantile: float = 0.99, min_diff: float = 0.01, precision: str = "fp16",
                 load_precision: str = "float", v2: bool = False, sdxl: bool = False,
                 v_parameterization: bool = False, progress: Progress = None) -> ExtractResult:
    """The LoRA that turns `base` into (approximately) `tuned`; see the module doc. Both models may be a
    diffusers folder, a single .safetensors/.ckpt file or a cached Hub id (loaded offline), or an already
    loaded `LoadedModel` (read only)."""
    if rank < 1:
        raise UserError("the rank must be at least 1", field="rank", fix="use e.g. 8, 32 or 128")
    if conv_rank < 0:
        raise UserError("the conv rank cannot be negative", field="conv_rank", fix="0 extracts no 3×3 convs")
    if not 0 < clamp_quantile <= 1:
        raise UserError(f"clamp quantile {clamp_quantile} is outside (0, 1]", field="clamp_quantile",
                        fix="0.99 is the kohya default; 1 keeps every value")
    if min_diff < 0:
        raise UserError("the minimum difference cannot be negative", field="min_diff", fix="0.01 is the default")
    if precision not in ("fp16", "bf16", "float"):
        raise UserError(f"unknown save precision '{precision}'", field="save_precision", fix="use fp16, bf16 or float")
    if load_precision not in ("fp16", "bf16", "float"):
        raise UserError(f"unknown load precision '{load_precision}'", field="load_precision",
                        fix="float is exact; fp16 halves the memory")
    out_p = Path(out).expanduser()
    if out_p.suffix.lower() != ".safetensors":
        raise UserError(f"'{out_p.name}' is not a .safetensors file name", field="save_to", file=str(out_p),
                        fix="end the name in .safetensors")
    if base is tuned or (isinstance(base, (str, Path)) and isinstance(tuned, (str, Path))
                         and Path(base).expanduser().resolve() == Path(tuned).expanduser().resolve()):
        raise UserError("the base and the tuned model are the same", field="tuned_model",
                        fix="choose the fine-tuned model and the model it was trained from")

    flags = {"v2": v2, "sdxl": sdxl, "v_parameterization": v_parameterization}
    dtype = PRECISIONS[load_precision]
    report(progress, 0, 0, "loading the base model")
    model_b = _load(base, "base", dtype, flags)
    report(progress, 0, 0, "loading the tuned model")
    model_t = _load(tuned, "tuned", dtype, flags)
    if model_b.family != model_t.family:
        raise UserError(f"the base model is {families.info(model_b.family).label} but the tuned one is "
                        f"{families.info(model_t.family).label}", field="tuned_model",
                        fix="extract from two models of the same family")
    family = model_b.family
    conv = conv_rank > 0
    targets_b = find_targets(model_b.unet, model_b.text_encoders, family, conv=conv)
    targets_t = {t.name: t for t in find_targets(model_t.unet, model_t.text_encoders, family, conv=conv)}
    if set(targets_t) != {t.name for t in targets_b}:
        raise UserError("the two models do not have the same layers", field="tuned_model",
                        fix="extract from a model and its own fine-tune (same family and size)")

    def diff(tb) -> torch.Tensor:
        wb, wt = tb.module.weight, targets_t[tb.name].module.weight
        if wb.shape != wt.shape:
            raise UserError(f"the models differ in shape at {tb.name}: {tuple(wb.shape)} vs {tuple(wt.shape)}",
                            field="tuned_model", fix="extract from a model and its own fine-tune (same size)")
        return wt.detach().float() - wb.detach().float()

    # one weight at a time (ΔW of a whole SDXL UNet in fp32 would not fit beside two models)
    te_targets = [t for t in targets_b if not t.is_unet]
    te_max = max((float(diff(t).abs().max()) for t in te_targets), default=0.0)
    te_extracted = te_max > min_diff
    warnings: list[str] = []
    if te_targets and not te_extracted:
        warnings.append(f"the text encoder is the same (largest difference {te_max:.3g} ≤ {min_diff:g}): "
                        "only the UNet is extracted")
    todo = [t for t in targets_b if t.is_unet or te_extracted]

    alpha = float(rank)
    tensors: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    unchanged = 0
    for i, tb in enumerate(todo, start=1):
        report(progress, i, len(todo), "extracting")
        d = diff(tb)
        if not bool(d.any()):
            unchanged += 1
            continue
        down, up, _ = svd_factor(d, conv_rank if tb.conv3x3 else rank, alpha, clamp_quantile)
        tensors[f"{tb.name}.lora_down.weight"], tensors[f"{tb.name}.lora_up.weight"] = down, up
        tensors[f"{tb.name}.alpha"] = torch.tensor(alpha)
        counts[tb.component] = counts.get(tb.component, 0) + 1
    if not tensors:
        raise UserError("the two models are identical where a LoRA applies: nothing to extract",
                        field="tuned_model", fix="choose the fine-tuned model, not a copy of the base")

    v_pred = model_b.v_prediction or model_t.v_prediction
    meta: dict[str, str] = {
        "ss_v2": str(family == "sd2"),
        "ss_base_model_version": families.base_model_version(family, v_pred),
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_output_name": out_p.stem,
        "ss_sd_model_name": model_b.name,
        "ss_training_comment": f"extracted from {model_t.name} minus {model_b.name} (rank {rank}"
                               + (f", conv rank {conv_rank}" if conv else "") + f", clamp {clamp_quantile:g})",
    }
    if conv:
        meta["ss_network_args"] = json.dumps({"conv_dim": str(conv_rank), "conv_alpha": str(alpha)})
    meta.update(modelspec_metadata(family=family, v_prediction=v_pred, title=out_p.stem))
    report(progress, len(todo), len(todo), f"saving {out_p.name}")
    save_lora_file(out_p, tensors, meta, precision=precision)
    return ExtractResult(out_p, family, rank, conv_rank, counts, te_extracted, te_max, unchanged, warnings)
