"""Reading and writing kohya LoRA `.safetensors` files (lora-file-format §1, §10, §15).

- `save_lora_file`: cast to the save precision, add `sshs_model_hash` / `sshs_legacy_hash` computed
  exactly as sd-scripts does, write atomically (temp file in the same folder, fsync, os.replace).
- `load_lora` / `read_lora_file`: accept kohya files (any producer) and diffusers/peft layouts, and
  return canonical kohya tensors: `lora_te1_` on SD1 → `lora_te_`, a missing `text_model_` inserted,
  SDXL diffusers UNet names → SGM. A peft file's alpha comes from diffusers' `lora_adapter_metadata` or a
  PEFT `adapter_config.json` beside it (rsLoRA converted); no alpha anywhere → rank (scale 1, the diffusers
  convention). LyCORIS files (LoHa, LoKr, DoRA, …) are read only where asked for (`allow_lycoris`: Generate,
  info, the library, network_weights of a LyCORIS training) and are refused clearly elsewhere (resize and
  merge work on plain LoRA / LoCon).
- `lora_file_info`: what a file is (family, rank/alpha, module counts, trigger words).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from kohya_lite.errors import UserError
from kohya_lite.fileio import write_bytes_atomic
from kohya_lite.models import sgm
from kohya_lite.network import naming
from kohya_lite.network.naming import lycoris_markers  # noqa: F401 (part of this module's interface)

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32, "fp32": torch.float32}
KOHYA_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")
_ALT_SUFFIXES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}
# Tensor-name segments of LyCORIS / DoRA / OFT adapters (LoHa, LoKr, Tucker, GLoRA, norm, full diff)


# ---- hashes -----------------------------------------------------------------------------------------

def lora_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, str]:
    """`sshs_model_hash` and `sshs_legacy_hash` (§10): over `safetensors.torch.save(tensors, ss_only_metadata)`
    of the tensors exactly as saved; model hash = sha256 after the header, legacy = 64 KiB at 1 MiB."""
    from safetensors.torch import save

    buf = save(dict(tensors), {k: v for k, v in metadata.items() if k.startswith("ss_")})
    n = int.from_bytes(buf[:8], "little")
    return {
        "sshs_model_hash": hashlib.sha256(buf[8 + n:]).hexdigest(),
        "sshs_legacy_hash": hashlib.sha256(buf[0x100000:0x100000 + 0x10000]).hexdigest()[:8],
    }


def file_model_hash(path: str | Path) -> str:
    """sha256 of a safetensors file's data region (A1111 'addnet hash'; equals sshs_model_hash)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n)
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- writing -------------------------------------------------------------------------------------------

def _meta_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def check_kohya_keys(tensors: Mapping[str, torch.Tensor]) -> None:
    """Only LoRA triplets with kohya prefixes (§1: any other tensor makes diffusers refuse the file). A LyCORIS
    network's file (LoHa, LoKr, DoRA, … tensors) may hold the tensor names the lycoris library writes instead."""
    lycoris = bool(lycoris_markers(tensors, kohya=True))
    allowed = set(KOHYA_SUFFIXES)
    if lycoris:
        from kohya_lite.network.lycoris import library_suffixes

        allowed |= library_suffixes()
    for key in tensors:
        name, _, suffix = key.partition(".")
        if suffix not in allowed or not name.startswith(tuple(p + "_" for p in naming.ALL_PREFIXES)):
            raise ValueError(f"not a kohya {'LyCORIS' if lycoris else 'LoRA'} tensor: {key!r}")
    if lycoris:
        return
    downs = {k.partition(".")[0] for k in tensors if k.endswith(".lora_down.weight")}
    ups = {k.partition(".")[0] for k in tensors if k.endswith(".lora_up.weight")}
    if downs != ups:
        raise ValueError(f"modules without a down/up pair: {sorted(downs ^ ups)[:3]}")


def save_lora_file(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None,
                   precision: str = "fp16") -> dict[str, str]:
    """Write a kohya LoRA file atomically; returns the metadata as written (with the two hashes)."""
    from safetensors.torch import save

    if precision not in PRECISIONS:
        raise UserError(f"unknown save precision '{precision}'", field="save_precision",
                        fix="use fp16 (smallest, the default), bf16 or float")
    check_kohya_keys(tensors)
    dtype = PRECISIONS[precision]
    cast = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sorted(tensors.items())}
    meta = {k: _meta_str(v) for k, v in (metadata or {}).items() if not k.startswith("sshs_")}
    meta.update(lora_hashes(cast, meta))
    data = save(cast, meta)
    write_bytes_atomic(path, data)
    return meta


# ---- reading -------------------------------------------------------------------------------------------

@dataclass
class LoraFile:
    tensors: dict[str, torch.Tensor]  # canonical kohya layout
    metadata: dict[str, str]
    family: str  # 'sd1' | 'sd2' | 'sdxl'
    family_source: str  # 'argument' | 'metadata' | 'keys'
    layout: str  # 'kohya' | 'peft' | 'lycoris' (kohya names, LyCORIS tensors: LoHa, LoKr, DoRA, …)
    notes: list[str] = field(default_factory=list)  # normalisations applied

    @property
    def is_lycoris(self) -> bool:
        return self.layout == "lycoris"

    def module_names(self) -> list[str]:
        if self.is_lycoris:
            return sorted({k.partition(".")[0] for k in self.tensors})
        return sorted(k[: -len(".lora_down.weight")] for k in self.tensors if k.endswith(".lora_down.weight"))


def _read_raw(path: Path, field_name: str | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise UserError(f"LoRA file '{path}' does not exist", field=field_name, file=str(path),
                        fix="check the path")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as exc:
            raise UserError(f"'{path.name}' is not a readable safetensors file ({exc})", field=field_name,
                            file=str(path), fix="the file may be incomplete: copy or download it again") from None
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"'{path.name}' cannot be read as plain weights ({type(exc).__name__})", field=field_name,
                        file=str(path), fix="use the .safetensors version of this LoRA") from None
    if not isinstance(sd, dict):
        raise UserError(f"'{path.name}' does not hold a LoRA state dict", field=field_name, file=str(path))
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}, {}


def family_from_metadata(metadata: Mapping[str, str]) -> str | None:
    version = metadata.get("ss_base_model_version", "")
    arch = metadata.get("modelspec.architecture", "")
    if version.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return "sdxl"
    if version.startswith("sd_v2") or arch.startswith("stable-diffusion-v2") or metadata.get("ss_v2") == "True":
        return "sd2"
    if version.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return "sd1"
    return None


def guess_family_from_keys(tensors: Mapping[str, torch.Tensor]) -> str:
    """§15 hints: te1/te2 or SGM UNet names → SDXL; attn2 key width 2048/1024 → SDXL/SD2; TE layer ≥ 12 or
    TE width 1024 → SD2; otherwise SD1."""
    names = {k.partition(".")[0] for k in tensors}
    if any(n.startswith((naming.TE2_PREFIX + "_", "lora_unet_input_blocks", "lora_unet_middle_block",
                         "lora_unet_output_blocks")) for n in names):
        return "sdxl"
    for key, value in tensors.items():
        if key.endswith("attn2_to_k.lora_down.weight"):
            if value.shape[1] == 2048:
                return "sdxl"
            if value.shape[1] == 1024:
                return "sd2"
    for key, value in tensors.items():
        m = re.match(r"lora_te1?_(?:text_model_)?encoder_layers_(\d+)_self_attn_q_proj\.lora_down\.weight", key)
        if m and (int(m[1]) >= 12 or value.shape[1] == 1024):
            return "sd2"
    return "sd1"


LYCORIS_SCOPE = ("LyCORIS files work with Generate (<lora:…>), the epoch grid, the LoRA library, "
                 "`lora info`/`verify` and as network_weights of a LyCORIS training; the other LoRA tools (resize, "
                 "merge, merge into a model, convert) take plain LoRA / LoCon files only")


def _refuse_lycoris(keys, path: Path, field_name: str | None, *, kohya: bool) -> None:
    odd = lycoris_markers(keys, kohya=kohya)
    if odd:
        raise UserError(
            f"'{path.name}' is a LyCORIS/DoRA-type adapter ({', '.join(odd[:3])} tensors), "
            "which is not supported by this tool",
            field=field_name, file=str(path), fix=LYCORIS_SCOPE)


_PEFT_PATTERNS = (
    (re.compile(r"(.*)\.lora_A(?:\.[\w-]+)?\.weight"), "lora_down.weight"),
    (re.compile(r"(.*)\.lora_B(?:\.[\w-]+)?\.weight"), "lora_up.weight"),
    (re.compile(r"(.*)\.(?:lora|lora_linear_layer)\.down\.weight"), "lora_down.weight"),
    (re.compile(r"(.*)\.(?:lora|lora_linear_layer)\.up\.weight"), "lora_up.weight"),
    (re.compile(r"(.*)\.alpha"), "alpha"),
)
_PROCESSOR = re.compile(r"(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight")


def _peft_module(key: str) -> tuple[str, str, str] | None:
    """(component, module path, kohya suffix) of a diffusers/peft key, or None."""
    component = None
    for prefix in ("unet.", "text_encoder_2.", "text_encoder.", "base_model.model."):
        if key.startswith(prefix):
            if prefix != "base_model.model.":
                component = prefix[:-1]
            key = key[len(prefix):]
    key = key.removeprefix("base_model.model.")
    m = _PROCESSOR.fullmatch(key)
    if m:
        path = f"{m[1]}.{m[2]}" + (".0" if m[2] == "to_out" else "")
        suffix = "lora_down.weight" if m[3] == "down" else "lora_up.weight"
    else:
        for pattern, suffix in _PEFT_PATTERNS:
            m = pattern.fullmatch(key)
            if m:
                path = m[1]
                break
        else:
            return None
    if component is None:
        component = "text_encoder" if path.startswith(("text_model.", "encoder.layers.")) else "unet"
    return component, path, suffix


def adapter_configs(metadata: Mapping[str, str], path: Path | None = None) -> dict[str, dict]:
    """The peft LoraConfig of each component of a diffusers/peft file: from diffusers' `lora_adapter_metadata`
    (`{"unet.r": …, "unet.lora_alpha": …}`), else from a PEFT `adapter_config.json` beside the file (one
    config for every component, under the key '*')."""
    out: dict[str, dict] = {}
    try:
        meta = json.loads(metadata.get("lora_adapter_metadata", "") or "{}")
    except json.JSONDecodeError:
        meta = {}
    if isinstance(meta, dict):
        for key, value in meta.items():
            component, dot, name = str(key).partition(".")
            if dot:
                out.setdefault(component, {})[name] = value
    if not out and path is not None and (path.parent / "adapter_config.json").is_file():
        try:
            cfg = json.loads((path.parent / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cfg = None
        if isinstance(cfg, dict):
            out["*"] = cfg
    return out


def _pattern_value(pattern: Any, path: str) -> float | None:
    if not isinstance(pattern, dict):
        return None
    for key, value in pattern.items():
        if path == key or path.endswith("." + key):
            return float(value)
    return None


def _adapter_alpha(configs: Mapping[str, dict], component: str, path: str, rank: int) -> float | None:
    """The kohya alpha of one module of a peft file: its LoraConfig's alpha (pattern first); with
    `use_rslora` (scale alpha/√r) the equivalent kohya alpha is alpha·√r. None when the file says nothing."""
    cfg = configs.get(component) or configs.get("*")
    if not cfg:
        return None
    alpha = _pattern_value(cfg.get("alpha_pattern"), path)
    if alpha is None and cfg.get("lora_alpha") is not None:
        alpha = float(cfg["lora_alpha"])
    if alpha is None:
        return None
    return alpha * math.sqrt(rank) if cfg.get("use_rslora") else alpha


def _kohya_name_of(component: str, path: str, family: str) -> str:
    target = naming.LoraTarget(component, path.removeprefix("text_model."), "")
    return naming.kohya_name_for(target, family)


def _parse_kohya(raw: dict, p: Path, field_name: str | None) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {suffix: tensor}} of a kohya-layout file (A1111's lora_A/lora_B suffixes accepted)."""
    _refuse_lycoris(raw, p, field_name, kohya=True)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in raw.items():
        name, _, suffix = key.partition(".")
        suffix = _ALT_SUFFIXES.get(suffix, suffix)
        if suffix not in KOHYA_SUFFIXES:
            raise UserError(f"'{p.name}' has a tensor kohya-lite does not understand: {key}", field=field_name,
                            file=str(p), fix="only plain LoRA / LoCon files are supported")
        grouped.setdefault(name, {})[suffix] = value
    return grouped


def _parse_peft(raw: dict, p: Path, field_name: str | None) -> list[tuple[str, str, str, torch.Tensor]]:
    """[(component, module path, kohya suffix, tensor)] of a diffusers/peft-layout file."""
    _refuse_lycoris(raw, p, field_name, kohya=False)
    out = []
    for key, value in raw.items():
        part = _peft_module(key)
        if part is None:
            raise UserError(f"'{p.name}' is not a LoRA file kohya-lite can read (unknown tensor {key})",
                            field=field_name, file=str(p), fix="choose a kohya or diffusers LoRA .safetensors")
        out.append((*part, value))
    return out


def _peft_family_hint(entries: list[tuple[str, str, str, torch.Tensor]]) -> str:
    if any(component == naming.TEXT_ENCODER_2 for component, *_ in entries):
        return "sdxl"
    as_kohya = {}
    for component, path, suffix, value in entries:
        prefix = naming.UNET_PREFIX if component == naming.UNET else naming.TE_PREFIX
        as_kohya[f"{naming.to_kohya(prefix, path)}.{suffix}"] = value
    return guess_family_from_keys(as_kohya)


def load_lora(path: str | Path, *, family: str | None = None, field_name: str | None = None,
              allow_lycoris: bool = False) -> LoraFile:
    """Read a LoRA file (kohya or diffusers/peft layout) into canonical kohya tensors; see module doc.
    `family` ('sd1'|'sd2'|'sdxl') is the model it will be used with; without it, the file's metadata or its
    keys decide (§15). With `allow_lycoris` a kohya-named LyCORIS file comes back as layout 'lycoris' (module
    names made canonical, tensors as they are); without it such a file is a UserError."""
    p = Path(path)
    raw, metadata = _read_raw(p, field_name)
    if not raw:
        raise UserError(f"'{p.name}' holds no tensors", field=field_name, file=str(p))
    kohya_prefixes = tuple(x + "_" for x in naming.ALL_PREFIXES)
    is_kohya = all(k.startswith(kohya_prefixes) for k in raw)
    if not is_kohya and any(k.startswith(kohya_prefixes) for k in raw):
        extra = sorted(k for k in raw if not k.startswith(kohya_prefixes))
        raise UserError(f"'{p.name}' mixes LoRA tensors with other data ({extra[0]}, …)", field=field_name,
                        file=str(p), fix="bundled embeddings are not supported; save them as separate files")
    if allow_lycoris and is_kohya and lycoris_markers(raw, kohya=True):
        return _load_lycoris(raw, metadata, p, family, field_name)
    grouped = _parse_kohya(raw, p, field_name) if is_kohya else {}
    entries = [] if is_kohya else _parse_peft(raw, p, field_name)

    source = "argument"
    if not family:
        family, source = family_from_metadata(metadata), "metadata"
    if not family:
        source = "keys"
        family = guess_family_from_keys(raw) if is_kohya else _peft_family_hint(entries)

    notes: list[str] = []
    out_groups: dict[str, dict[str, torch.Tensor]] = {}
    origin: dict[str, tuple[str, str]] = {}  # peft layout: kohya name → (component, module path)
    for name, group in grouped.items():
        new = _canonical_kohya_name(name, family)
        if new != name:
            notes.append(f"{name} → {new}")
        out_groups.setdefault(new, {}).update(group)
    for component, module_path, suffix, value in entries:
        name = _kohya_name_of(component, module_path, family)
        out_groups.setdefault(name, {})[suffix] = value
        origin[name] = (component, module_path)
    if entries:
        notes.append(f"converted from the diffusers/peft layout ({len(out_groups)} modules)")

    configs = adapter_configs(metadata, p) if entries else {}
    tensors: dict[str, torch.Tensor] = {}
    for name, group in sorted(out_groups.items()):
        down, up = group.get("lora_down.weight"), group.get("lora_up.weight")
        if down is None or up is None:
            raise UserError(f"'{p.name}' is damaged: module {name} lacks its "
                            f"{'lora_up' if down is not None else 'lora_down'} tensor", field=field_name, file=str(p))
        alpha = group.get("alpha")
        if alpha is None and name in origin:
            a = _adapter_alpha(configs, *origin[name], int(down.shape[0]))
            alpha = torch.tensor(a) if a is not None else None
        if alpha is None:
            alpha = torch.tensor(float(down.shape[0]))
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = alpha.reshape(()).to(down.dtype)
    return LoraFile(tensors, metadata, family, source, "kohya" if is_kohya else "peft", notes)


def _load_lycoris(raw: dict, metadata: dict, p: Path, family: str | None, field_name: str | None) -> LoraFile:
    from kohya_lite.network.lycoris import library_suffixes

    known = library_suffixes() | set(KOHYA_SUFFIXES)
    odd = sorted(k for k in raw if k.partition(".")[2] not in known)
    if odd:
        raise UserError(f"'{p.name}' has a tensor no LyCORIS algorithm uses: {odd[0]}", field=field_name,
                        file=str(p), fix="the file may be damaged, or made by a newer LyCORIS version")
    source = "argument"
    if not family:
        family, source = family_from_metadata(metadata), "metadata"
    if not family:
        family, source = guess_family_from_keys(_lycoris_shape_hints(raw)), "keys"
    tensors: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for key, value in sorted(raw.items()):
        name, _, suffix = key.partition(".")
        new = _canonical_kohya_name(name, family)
        if new != name and not any(n.startswith(name + " ") for n in notes):
            notes.append(f"{name} → {new}")
        tensors[f"{new}.{suffix}"] = value
    return LoraFile(tensors, metadata, family, source, "lycoris", notes)


def _lycoris_shape_hints(raw: Mapping[str, torch.Tensor]) -> dict:
    """Keys of a LyCORIS file with the shapes the family guess reads (attn2 key width, TE width) exposed as a
    `lora_down`: LoCon's own down, LoHa's w1_b or the full `diff` (their second dimension is the input width)."""
    from types import SimpleNamespace

    hints: dict = {k: v for k, v in raw.items()}
    for key, value in raw.items():
        name, _, suffix = key.partition(".")
        width = None
        if suffix in ("hada_w1_b", "diff") and value.dim() == 2:
            width = value.shape[1]
        if width is not None and f"{name}.lora_down.weight" not in raw:
            hints[f"{name}.lora_down.weight"] = SimpleNamespace(shape=(1, width))
    return hints


def _canonical_kohya_name(name: str, family: str) -> str:
    prefix, rest = naming.split_prefix(name)
    if prefix != naming.UNET_PREFIX:
        return naming.normalise_te_name(name, sd1_like=family != "sdxl")
    path = naming.underscore_to_path(rest)
    sgm_path = sgm.is_sgm_path(path)
    if family == "sdxl" and not sgm_path:
        return naming.to_kohya(naming.UNET_PREFIX, sgm.diffusers_to_sgm(path))
    if family != "sdxl" and sgm_path:
        return naming.to_kohya(naming.UNET_PREFIX, sgm.sgm_to_diffusers(path))
    return name


def read_lora_file(path: str | Path, *, family: str | None = None,
                   field_name: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors in canonical kohya layout, metadata) of a kohya or diffusers/peft LoRA file."""
    lf = load_lora(path, family=family, field_name=field_name)
    return lf.tensors, lf.metadata
