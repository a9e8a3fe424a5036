"""Which base model a path or id names, in one place for the pre-flight check, the loader and the page.

- `source_kind(text)`: 'folder', 'single_file', 'hub_id', 'not_a_model' (a file of another kind) or 'missing'.
- `folder_family(folder)`: the family of a diffusers folder, from its configs.
- `read_checkpoint_keys(path)`: a single file's tensor names, without loading weights.
- `hub_cached(repo_id)`: whether a Hub id is in the local Hugging Face cache (kohya-lite never downloads).
- `detect_model(path)`: the kohya_ss model-type flags for the page's Source model field.
Nothing here imports torch at import time (`check` must stay light).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from kohya_lite.config import QUICK_PICKS
from kohya_lite.errors import UserError
from kohya_lite.models import families, safetensors_file

FIELD = "pretrained_model_name_or_path"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def source_kind(text: str) -> str:
    """What `pretrained_model_name_or_path` points at (no file is read)."""
    text = (text or "").strip()
    p = Path(text).expanduser()
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "single_file" if p.suffix.lower() in SINGLE_FILE_SUFFIXES else "not_a_model"
    if HUB_ID.match(text) and not text.startswith((".", "/", "~")) and not text.lower().endswith(SINGLE_FILE_SUFFIXES):
        return "hub_id"
    return "missing"


def is_diffusers_folder(folder: Path) -> bool:
    return (folder / "model_index.json").is_file() or (folder / "unet").is_dir()


def hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except Exception:
        return False


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read '{path}': {exc}", field=FIELD, file=str(path),
                        fix="the model folder is damaged or incomplete: copy or download it again") from None


def folder_family(folder: Path) -> str:
    """Family of a diffusers folder from its model_index.json and UNet config."""
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    unet_cfg = read_json(folder / "unet" / "config.json") if (folder / "unet" / "config.json").is_file() else {}
    has_te2 = bool(index.get("text_encoder_2") and index["text_encoder_2"][0]) or \
        index.get("_class_name", "").startswith("StableDiffusionXL") or (folder / "text_encoder_2").is_dir()
    return families.detect_family_from_configs(unet_cfg, has_te2)


def read_checkpoint_keys(path: str | Path) -> list[str]:
    """Tensor names of a single-file checkpoint without loading the weights (safetensors), or via a
    weights-only, memory-mapped `torch.load` (.ckpt/.pt)."""
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        safetensors_file.check_file(p, field=FIELD)  # a truncated download gets a message that says so
        try:
            with safe_open(str(p), framework="pt") as f:
                return list(f.keys())
        except Exception as exc:  # safetensors raises its own error types
            raise UserError(f"'{p.name}' is not a readable safetensors file ({exc})", field=FIELD, file=str(p),
                            fix="the file may be incomplete: download it again") from None
    from kohya_lite.models.load import load_torch_checkpoint  # torch: only for .ckpt/.pt

    return list(load_torch_checkpoint(p).keys())



# ---- the page's Source model field ------------------------------------------------------------------------

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


@dataclass
class Detection:
    flags: dict[str, bool]  # the flags to set: some of v2, v_parameterization, sdxl
    model_list: str  # quick-pick id or "custom"
    note: str  # shown under the field


def _from_family(family: str, how: str) -> Detection:
    note = f"Detected **{FAMILY_NAMES[family]}** from the {how}."
    if family == "sd2":
        note += " Tick v_param if it is a 768-v (v-prediction) model."
    return Detection({"v2": family == "sd2", "sdxl": family == "sdxl"}, "custom", note)


def detect_model(path: str | None) -> Detection | None:
    """None when nothing can be said (empty or missing path, unknown file); raises UserError for SD3/FLUX
    checkpoints and LoRA files (they are not base models)."""
    src = (path or "").strip()
    if not src:
        return None
    if src in QUICK_PICKS:
        flags = dict(QUICK_PICKS[src])
        fam = families.family_from_flags(v2=flags["v2"], sdxl=flags["sdxl"])
        vp = ", v-prediction" if flags["v_parameterization"] else ""
        return Detection(flags, src, f"Quick pick: **{FAMILY_NAMES[fam]}{vp}**.")
    p = Path(src).expanduser()
    if p.is_file() and p.suffix.lower() == ".safetensors":
        try:
            keys = read_checkpoint_keys(p)
        except UserError as exc:  # a broken file is reported beside the field, not raised
            return Detection({}, "custom", f"⚠️ Cannot read '{p.name}': {exc.message}; set the model-type boxes yourself.")
        family = families.detect_family_from_keys(keys)
        if family is None:
            return Detection({}, "custom", "⚠️ Unknown checkpoint layout; set the model-type boxes yourself.")
        return _from_family(family, "checkpoint's tensor names")
    if p.is_dir() and (p / "unet" / "config.json").is_file():
        try:
            return _from_family(folder_family(p), "model folder")
        except UserError:
            return None
    if p.is_file():
        return Detection({}, "custom", "Set the model-type boxes to match this checkpoint (only .safetensors can be "
                                       "inspected).")
    return None
