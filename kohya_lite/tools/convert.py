"""Convert LoRA files between the kohya layout and the diffusers/peft layout.

- **→ kohya**: any file `network.io.load_lora` reads (diffusers' `save_lora_weights` output, old
  `…processor.to_q_lora.down` files, PEFT `adapter_model.safetensors` with its `adapter_config.json`,
  other kohya spellings) becomes a canonical kohya file (lora-file-format §3) with one alpha for the file
  (other modules' scales folded into `lora_up`, §6) and the minimum `ss_*` / `modelspec.*` metadata.
- **→ diffusers**: the keys diffusers' own `save_lora_weights` writes (`unet.<path>.lora_A.weight` = down,
  `.lora_B.weight` = up, `text_encoder[_2].text_model.<path>…`), with the alphas in diffusers'
  `lora_adapter_metadata` (one peft LoraConfig per component, majority rank/alpha plus patterns). The
  `ss_*` / `modelspec.*` metadata travels along, so kohya → diffusers → kohya gives the same file.
  Tools that ignore `lora_adapter_metadata` (as for diffusers' own files) assume alpha = rank.

Tensors keep their dtype unless a precision is asked for. Writes are atomic.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from kohya_lite.errors import UserError
from kohya_lite.models import families
from kohya_lite.network import naming
from kohya_lite.network.io import LoraFile, load_lora, save_lora_file
from kohya_lite.network.metadata import NETWORK_MODULE, modelspec_metadata
from kohya_lite.tools import Progress, report

TARGETS = ("kohya", "diffusers")
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
_WEIGHT_NAMES = (DIFFUSERS_WEIGHT_NAME, "adapter_model.safetensors")
_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "float"}
_DROP_ON_KOHYA = ("lora_adapter_metadata", "format")


@dataclass
class ConvertResult:
    path: Path
    to: str  # 'kohya' | 'diffusers'
    source_layout: str  # 'kohya' | 'peft'
    family: str
    modules: dict[str, int]  # per component
    precision: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mods = ", ".join(f"{k} {v}" for k, v in self.modules.items())
        return f"wrote {self.path} ({self.to} layout, {families.info(self.family).label}, {self.precision}): {mods}"


def source_file(src: str | Path) -> Path:
    """The weights file of `src`: the file itself, or inside a folder diffusers' or PEFT's weights file
    (else the folder's only .safetensors)."""
    p = Path(src).expanduser()
    if p.is_dir():
        for name in _WEIGHT_NAMES:
            if (p / name).is_file():
                return p / name
        found = sorted(p.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        raise UserError(f"the folder '{p}' holds {len(found)} .safetensors files", field="source", file=str(p),
                        fix="choose the LoRA file itself")
    return p


def _precision_of(tensors: Mapping[str, torch.Tensor]) -> str:
    dtypes = Counter(v.dtype for k, v in tensors.items() if not k.endswith(".alpha"))
    return _DTYPE_NAMES.get(dtypes.most_common(1)[0][0], "float") if dtypes else "float"


def _components(names: list[str]) -> dict[str, int]:
    return dict(Counter(naming.parse_lora_name(n).component for n in names))


def one_alpha(lf: LoraFile) -> tuple[dict[str, torch.Tensor], float, bool]:
    """(tensors, file alpha, changed): the most common alpha for every module, other scales folded into up."""
    names = lf.module_names()
    alphas = {n: float(lf.tensors[f"{n}.alpha"].float()) for n in names}
    alpha = Counter(alphas.values()).most_common(1)[0][0] if alphas else 1.0
    out = dict(lf.tensors)
    changed = False
    for n in names:
        if alphas[n] != alpha:
            up = lf.tensors[f"{n}.lora_up.weight"]
            out[f"{n}.lora_up.weight"] = (up.float() * (alphas[n] / alpha)).to(up.dtype)
            out[f"{n}.alpha"] = torch.tensor(alpha, dtype=lf.tensors[f"{n}.alpha"].dtype)
            changed = True
    return out, alpha, changed


def kohya_metadata(lf: LoraFile, out: Path, alpha: float, folded: bool) -> dict[str, str]:
    """The source's metadata (diffusers-only keys dropped) completed with the minimum kohya set."""
    meta = {k: v for k, v in lf.metadata.items() if k not in _DROP_ON_KOHYA and not k.startswith("sshs_")}
    ranks = Counter(int(lf.tensors[f"{n}.lora_down.weight"].shape[0]) for n in lf.module_names())
    v_pred = meta.get("modelspec.prediction_type") == "v" or meta.get("ss_base_model_version") == "sd_v2_v"
    meta.setdefault("ss_network_module", NETWORK_MODULE)
    meta.setdefault("ss_network_dim", str(ranks.most_common(1)[0][0]) if len(ranks) == 1 else "Dynamic")
    if folded or "ss_network_alpha" not in meta:
        meta["ss_network_alpha"] = str(alpha)
    meta.setdefault("ss_base_model_version", families.base_model_version(lf.family, v_pred))
    meta.setdefault("ss_v2", str(lf.family == "sd2"))
    meta.setdefault("ss_output_name", out.stem)
    if not any(k.startswith("modelspec.") for k in meta):
        meta.update(modelspec_metadata(family=lf.family, v_prediction=v_pred, title=out.stem))
    return meta


def kohya_to_diffusers(tensors: Mapping[str, torch.Tensor], family: str, *,
                       layers_per_block: int = 2) -> tuple[dict[str, torch.Tensor], dict]:
    """(diffusers state dict, `lora_adapter_metadata` dict) of canonical kohya tensors."""
    state: dict[str, torch.Tensor] = {}
    per: dict[str, dict[str, tuple[int, float]]] = {}  # component → {module path: (rank, alpha)}
    for name in sorted(k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight")):
        target = naming.parse_lora_name(name, layers_per_block=layers_per_block)
        down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
        rank = int(down.shape[0])
        alpha = float(tensors[f"{name}.alpha"].float()) if f"{name}.alpha" in tensors else float(rank)
        key = target.path if target.component == naming.UNET else f"text_model.{target.path}"
        state[f"{target.component}.{key}.lora_A.weight"] = down
        state[f"{target.component}.{key}.lora_B.weight"] = up
        per.setdefault(target.component, {})[target.path] = (rank, alpha)
    meta: dict = {}
    for component, modules in per.items():
        r = Counter(v[0] for v in modules.values()).most_common(1)[0][0]
        a = Counter(v[1] for v in modules.values()).most_common(1)[0][0]
        config = {
            "r": r, "lora_alpha": a, "target_modules": sorted(modules),
            "rank_pattern": {p: v[0] for p, v in modules.items() if v[0] != r},
            "alpha_pattern": {p: v[1] for p, v in modules.items() if v[1] != a},
            "use_dora": False, "lora_bias": False, "init_lora_weights": True,
        }
        meta.update({f"{component}.{k}": v for k, v in config.items()})
    return state, meta


def _out_path(out: Path, to: str) -> Path:
    if out.suffix.lower() == ".safetensors":
        return out
    if to == "diffusers":
        if out.exists() and not out.is_dir():
            raise UserError(f"'{out}' is not a folder", field="save_to", file=str(out),
                            fix="give a .safetensors file name or a folder")
        return out / DIFFUSERS_WEIGHT_NAME  # a folder, as diffusers' save_lora_weights makes
    raise UserError(f"'{out.name}' is not a .safetensors file name", field="save_to", file=str(out),
                    fix="end the name in .safetensors")


def convert_lora(src: str | Path, out: str | Path, *, to: str = "auto", family: str | None = None,
                 precision: str = "keep", progress: Progress = None) -> ConvertResult:
    """Convert `src` to the `to` layout ('kohya', 'diffusers', or 'auto': the other one) at `out` (a
    .safetensors file; for diffusers also a folder, which gets pytorch_lora_weights.safetensors)."""
    if to not in (*TARGETS, "auto"):
        raise UserError(f"unknown target layout '{to}'", field="to", fix="use kohya or diffusers")
    if precision not in ("keep", "fp16", "bf16", "float"):
        raise UserError(f"unknown save precision '{precision}'", field="save_precision",
                        fix="keep (as the source), fp16, bf16 or float")
    if family not in (None, "", *families.FAMILIES):
        raise UserError(f"unknown model family '{family}'", field="family", fix="use sd1, sd2 or sdxl")
    path = source_file(src)
    report(progress, 0, 2, f"reading {path.name}")
    lf = load_lora(path, family=family or None, field_name="source")
    target = ("diffusers" if lf.layout == "kohya" else "kohya") if to == "auto" else to
    out_p = _out_path(Path(out).expanduser(), target)
    if out_p.exists() and out_p.resolve() == path.resolve():
        raise UserError("the output would replace the source file", field="save_to", file=str(out_p),
                        fix="save the converted LoRA under a new name")
    prec = _precision_of(lf.tensors) if precision == "keep" else precision
    names = lf.module_names()
    report(progress, 1, 2, f"writing {out_p.name}")
    if target == "kohya":
        tensors, alpha, folded = one_alpha(lf)
        save_lora_file(out_p, tensors, kohya_metadata(lf, out_p, alpha, folded), precision=prec)
        notes = list(lf.notes) + ([f"per-module alphas folded into lora_up (file alpha {alpha:g})"] if folded else [])
    else:
        _write_diffusers(lf, out_p, prec)
        notes = list(lf.notes)
    report(progress, 2, 2, "done")
    return ConvertResult(out_p, target, lf.layout, lf.family, _components(names), prec, notes)


def _write_diffusers(lf: LoraFile, out: Path, precision: str) -> None:
    from safetensors.torch import save

    from kohya_lite.fileio import write_bytes_atomic
    from kohya_lite.network.io import PRECISIONS

    state, adapter = kohya_to_diffusers(lf.tensors, lf.family)
    dtype = PRECISIONS[precision]
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sorted(state.items())}
    meta = {k: v for k, v in lf.metadata.items() if not k.startswith("sshs_") and k not in _DROP_ON_KOHYA}
    meta["format"] = "pt"
    meta["lora_adapter_metadata"] = json.dumps(adapter, indent=2, sort_keys=True)
    write_bytes_atomic(out, save(state, meta))
