"""Merge LoRAs into a base model and save the result as a checkpoint (sd-scripts `merge_lora.py --sd_model`).

For every module of every LoRA: W ← W + ratio · (alpha / rank) · up @ down (lora-file-format §5; 3×3 LoCon
convs by the conv rule), computed in fp32 one weight at a time and stored in the save precision. LoRA and
LoCon files in kohya or diffusers/peft layout are accepted (`network.io.load_lora`); kohya-named LyCORIS files
(LoHa, LoKr, iA3, DoRA, native fine-tuning, …) merge their ΔW from the lycoris library's own modules
(`network.lycoris.lycoris_deltas`, the same as Generate), biases and norm layers included.

Outputs:
- a single `.safetensors` checkpoint in the original layout of the family (SD1/SD2 LDM, SDXL SGM; the
  same writer as `models.ldm`), which loads with our single-file loader and diffusers `from_single_file`;
- or a diffusers folder (`save_pretrained`), when the output has no `.safetensors` suffix or `fmt="diffusers"`.
Both are written atomically (a temp file or folder beside the target, then a rename).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from kohya_lite.errors import UserError
from kohya_lite.fileio import replace
from kohya_lite.models import families
from kohya_lite.network.io import PRECISIONS, LoraFile, load_lora
from kohya_lite.network.lora import ModuleIndex, delta_weight
from kohya_lite.tools import Progress, report

FORMATS = ("single_file", "diffusers")
SAVE_PRECISIONS = ("fp16", "bf16", "float")
FIELD = "loras"


@dataclass
class MergedLora:
    path: str
    ratio: float
    family: str
    modules: int  # modules merged into the model
    skipped: list[str] = field(default_factory=list)  # modules of the file this model lacks


@dataclass
class MergeToModelResult:
    path: Path
    format: str  # 'single_file' | 'diffusers'
    family: str
    precision: str
    loras: list[MergedLora]
    weights_changed: int  # distinct model weights that changed
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{Path(m.path).name} × {m.ratio:g} ({m.modules} modules)" for m in self.loras)
        kind = "checkpoint" if self.format == "single_file" else "diffusers folder"
        return (f"wrote {kind} {self.path} ({families.info(self.family).label}, {self.precision}): "
                f"{parts}; {self.weights_changed} weights changed")


def output_format(out: str | Path, fmt: str | None = None) -> str:
    """'single_file' for `*.safetensors`, 'diffusers' for a folder name; an explicit `fmt` must agree."""
    p = Path(out)
    suffix = p.suffix.lower()
    if fmt in (None, "", "auto"):
        if suffix == ".safetensors":
            return "single_file"
        if suffix in (".ckpt", ".pt", ".pth", ".bin"):
            raise UserError(f"'{p.name}': kohya-lite writes checkpoints only as .safetensors", field="save_to",
                            file=str(p), fix="end the name in .safetensors (or give a folder name for diffusers)")
        return "diffusers"
    if fmt not in FORMATS:
        raise UserError(f"unknown output format '{fmt}'", field="format", fix=f"use one of {', '.join(FORMATS)}")
    if fmt == "single_file" and suffix != ".safetensors":
        raise UserError(f"a single-file checkpoint needs a .safetensors name, not '{p.name}'", field="save_to",
                        file=str(p), fix="end the name in .safetensors")
    if fmt == "diffusers" and suffix == ".safetensors":
        raise UserError(f"a diffusers model is a folder, not '{p.name}'", field="save_to", file=str(p),
                        fix="give a folder name (no .safetensors), or choose the single-file format")
    return fmt


def _read_lora(path: str | Path) -> LoraFile:
    """`load_lora`; kohya-named LyCORIS files come back as layout 'lycoris'."""
    return load_lora(Path(path), field_name=FIELD, allow_lycoris=True)


def _merge_lora(index: ModuleIndex, lf: LoraFile, ratio: float, path: Path, changed: set[int], tick) -> int:
    """Add a LoRA/LoCon file's ratio · alpha/rank · up@down to each module it names; the number merged.
    `tick(k)` after the k-th module."""
    count = 0
    for k, name in enumerate(lf.module_names(), 1):
        tick(k)
        module = index.get(name)
        if module is None:
            continue
        t = lf.tensors
        down, up = t[f"{name}.lora_down.weight"], t[f"{name}.lora_up.weight"]
        scale = float(t[f"{name}.alpha"].float()) / down.shape[0]
        w = module.weight
        delta = _fit(delta_weight(down, up, scale), w, name, path)
        if ratio != 0:
            w.copy_((w.float() + ratio * delta.to(w.device)).to(w.dtype))
            changed.add(id(w))
        count += 1
    return count


def _merge_lycoris(model, lf: LoraFile, ratio: float, path: Path, changed: set[int]) -> int:
    """Add a LyCORIS file's ΔW (and bias changes) at `ratio`; the number of modules merged."""
    from kohya_lite.network.lycoris import lycoris_deltas

    try:
        deltas, _ = lycoris_deltas(model, lf.tensors, unet_multiplier=ratio, te_multiplier=ratio)
    except UserError as exc:
        raise UserError(f"'{path.name}': {exc.message}", field=FIELD, file=str(path), fix=exc.fix) from None
    for d in deltas:
        for param, delta in ((d.module.weight, d.weight), (getattr(d.module, "bias", None), d.bias)):
            if param is not None and delta is not None:
                param.copy_((param.float() + delta.to(param.device, torch.float32)).to(param.dtype))
                changed.add(id(param))
    return len(deltas)


def _check_family(lf: LoraFile, family: str, path: Path) -> None:
    if lf.family == family:
        return
    if lf.family_source == "keys" and lf.family == "sd1" and family == "sd2":
        return  # 'sd1' from keys is only the default guess; the shapes decide below
    raise UserError(f"'{path.name}' was made for {families.info(lf.family).label}, but the model is "
                    f"{families.info(family).label}", field=FIELD, file=str(path),
                    fix="merge LoRAs trained on this base model family only")


def _fit(delta: torch.Tensor, weight: torch.Tensor, name: str, path: Path) -> torch.Tensor:
    if delta.shape == weight.shape:
        return delta
    if delta.numel() == weight.numel() and delta.shape[:2] == weight.shape[:2]:  # Linear LoRA on a 1×1 conv
        return delta.reshape(weight.shape)
    raise UserError(f"'{path.name}' does not fit this model: module {name} has shape {tuple(delta.shape)}, the "
                    f"model's weight is {tuple(weight.shape)}", field=FIELD, file=str(path),
                    fix="use LoRAs trained on this base model (same family and size)")


def _check_output(out: Path, fmt: str, model_path: str, overwrite: bool) -> None:
    src = Path(model_path).expanduser()
    if src.exists() and out.resolve() == src.resolve():
        raise UserError("the output would replace the base model", field="save_to", file=str(out),
                        fix="save the merged model under a new name")
    if fmt == "diffusers" and out.exists():
        if not out.is_dir():
            raise UserError(f"'{out}' is a file, not a folder", field="save_to", file=str(out),
                            fix="give a new folder name for the diffusers model")
        if any(out.iterdir()) and not overwrite:
            raise UserError(f"the folder '{out}' is not empty", field="save_to", file=str(out),
                            fix="choose a new folder name, or allow overwriting")
        if src.exists() and (src.resolve() == out.resolve() or out.resolve() in src.resolve().parents):
            raise UserError("the output folder holds the base model", field="save_to", file=str(out),
                            fix="save the merged model in another folder")
    if fmt == "single_file" and out.is_dir():
        raise UserError(f"'{out}' is a folder", field="save_to", file=str(out), fix="give a .safetensors file name")


def checkpoint_metadata(family: str, v_prediction: bool, title: str, merged_from: Sequence[str]) -> dict[str, str]:
    """SAI ModelSpec keys for a full checkpoint (no `/lora`), as sd-scripts writes for a merged model."""
    from kohya_lite.network.metadata import modelspec_metadata

    meta = modelspec_metadata(family=family, v_prediction=v_prediction, title=title, lora=False)
    if merged_from:
        meta["modelspec.merged_from"] = ", ".join(merged_from)
    meta["format"] = "pt"
    return meta


def _save_single_file(model, out: Path, dtype: torch.dtype, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from kohya_lite.fileio import atomic_path
    from kohya_lite.models.ldm import to_ldm_state_dict

    sd = to_ldm_state_dict(model.family, model.unet, model.vae, model.text_encoders)
    sd = {k: (v.to("cpu", dtype) if v.is_floating_point() else v.to("cpu")).contiguous() for k, v in sd.items()}
    with atomic_path(out) as tmp:
        save_file(sd, str(tmp), metadata=metadata)


def _save_diffusers(model, out: Path, overwrite: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        model.make_pipeline().save_pretrained(str(tmp), safe_serialization=True)
        if out.exists():
            if not overwrite and any(out.iterdir()):
                raise UserError(f"the folder '{out}' is not empty", field="save_to", file=str(out),
                                fix="choose a new folder name, or allow overwriting")
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            replace(out, old)
            replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_to_model(model_path: str | Path, loras: Sequence[tuple[str | Path, float]], out: str | Path, *,
                   fmt: str | None = None, precision: str = "fp16", v2: bool = False, sdxl: bool = False,
                   v_parameterization: bool = False, overwrite: bool = False,
                   progress: Progress = None) -> MergeToModelResult:
    """Merge `loras` ([(file, ratio)]) into the model at `model_path` and save it to `out` (see module doc).

    The model is held in the save precision; each weight is updated in fp32 and stored back once per LoRA.
    """
    from kohya_lite.models.load import load_model

    if not loras:
        raise UserError("no LoRA to merge", field=FIELD, fix="add at least one LoRA file (file.safetensors:ratio)")
    if not str(out or "").strip():
        raise UserError("no output given", field="save_to",
                        fix="type where the merged model goes: a .safetensors file or a new folder")
    if precision not in SAVE_PRECISIONS:
        raise UserError(f"unknown save precision '{precision}'", field="save_precision",
                        fix="use fp16 (half the size), bf16 or float")
    out_p = Path(out).expanduser()
    kind = output_format(out_p, fmt)
    _check_output(out_p, kind, str(model_path), overwrite)
    for path, ratio in loras:
        if not math.isfinite(float(ratio)):
            raise UserError(f"the ratio of '{Path(path).name}' is not a number", field="ratios",
                            fix="use a number such as 1, 0.8 or -0.5")

    files = [(Path(p).expanduser(), float(r), _read_lora(Path(p).expanduser())) for p, r in loras]
    dtype = PRECISIONS[precision]
    model = load_model(model_path, v2=v2, sdxl=sdxl, v_parameterization=v_parameterization, dtype=dtype)
    for path, _, lf in files:
        _check_family(lf, model.family, path)

    index = ModuleIndex(model)
    total = sum(len(lf.module_names()) for _, _, lf in files) + 1
    done = 0
    changed: set[int] = set()
    merged: list[MergedLora] = []
    warnings: list[str] = list(model.warnings)
    with torch.no_grad():
        for path, ratio, lf in files:
            names = lf.module_names()
            skipped = [n for n in names if index.get(n, norms=lf.is_lycoris) is None]
            if len(skipped) == len(names):
                raise UserError(f"none of the {len(names)} modules of '{path.name}' exist in this "
                                f"{families.info(model.family).label} model (first: {names[0] if names else '-'})",
                                field=FIELD, file=str(path), fix="use LoRAs trained on this base model family")
            if lf.is_lycoris:
                count = _merge_lycoris(model, lf, ratio, path, changed)
                done += len(names)
                report(progress, done, total, f"merged {path.name}")
            else:
                count = _merge_lora(index, lf, ratio, path, changed,
                                    lambda k: report(progress, done + k, total, f"merging {path.name}"))
                done += len(names)
            merged.append(MergedLora(str(path), ratio, lf.family, count, skipped))
            if skipped:
                warnings.append(f"{path.name}: {len(skipped)} of its modules are not in this model and were skipped "
                                f"(first: {skipped[0]})")

    report(progress, total - 1, total, f"saving {out_p.name}")
    if kind == "single_file":
        meta = checkpoint_metadata(model.family, model.v_prediction, out_p.stem, [p.name for p, _, _ in files])
        _save_single_file(model, out_p, dtype, meta)
    else:
        _save_diffusers(model, out_p, overwrite)
    report(progress, total, total, "done")
    return MergeToModelResult(out_p, kind, model.family, precision, merged, len(changed), warnings)
