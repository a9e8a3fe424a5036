"""Source model section: quick-pick ids and model-type detection for a chosen path.

`detect_model(path)` sets the kohya_ss flags (v2, sdxl) for a known quick-pick id, for a `.safetensors`
checkpoint from its tensor names (`models.load.read_checkpoint_keys`, no weights loaded; rules in
`models.families.detect_family_from_keys`) and for a diffusers folder from its configs (`folder_family`). v-prediction
cannot be read from keys, so `v_parameterization` is only set for quick-pick ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kohya_lite.config import QUICK_PICKS
from kohya_lite.errors import UserError
from kohya_lite.models.families import detect_family_from_keys, family_from_flags
from kohya_lite.models.load import folder_family, read_checkpoint_keys

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
        fam = family_from_flags(v2=flags["v2"], sdxl=flags["sdxl"])
        vp = ", v-prediction" if flags["v_parameterization"] else ""
        return Detection(flags, src, f"Quick pick: **{FAMILY_NAMES[fam]}{vp}**.")
    p = Path(src).expanduser()
    if p.is_file() and p.suffix.lower() == ".safetensors":
        try:
            keys = read_checkpoint_keys(p)
        except UserError as exc:  # a broken file is reported beside the field, not raised
            return Detection({}, "custom", f"⚠️ Cannot read '{p.name}': {exc.message}; set the model-type boxes yourself.")
        family = detect_family_from_keys(keys)
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
