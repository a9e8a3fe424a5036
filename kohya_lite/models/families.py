"""What kohya-lite knows about each model family: SD1.x, SD2.x and SDXL.

Everything here is a plain fact or a pure function of flags and key names: pipeline classes, the
shipped config folder, metadata strings (`ss_base_model_version`, `modelspec.architecture`), default
resolutions, the DDPM training schedule, quick-pick Hub ids, and the family-from-keys rules the
kohya_ss GUI uses for single-file checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from kohya_lite.config import QUICK_PICKS
from kohya_lite.errors import UserError

FAMILIES = ("sd1", "sd2", "sdxl")
CONFIGS_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Family:
    id: str
    label: str
    pipeline_class: str
    te_prefixes: tuple[str, ...]  # kohya LoRA prefixes, one per text encoder
    unet_naming: str  # "diffusers" (SD1/SD2) or "sgm" (SDXL), lora-file-format §3.1
    default_resolution: int
    modelspec_arch: str


FAMILY_INFO: dict[str, Family] = {
    "sd1": Family("sd1", "Stable Diffusion 1.x", "StableDiffusionPipeline", ("lora_te",), "diffusers", 512,
                  "stable-diffusion-v1"),
    "sd2": Family("sd2", "Stable Diffusion 2.x", "StableDiffusionPipeline", ("lora_te",), "diffusers", 512,
                  "stable-diffusion-v2-512"),
    "sdxl": Family("sdxl", "Stable Diffusion XL", "StableDiffusionXLPipeline", ("lora_te1", "lora_te2"), "sgm", 1024,
                   "stable-diffusion-xl-v1-base"),
}

# DDPM-style training schedule (sd-scripts: DDPMScheduler with these values, clip_sample off).
TRAIN_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}


def info(family: str) -> Family:
    try:
        return FAMILY_INFO[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}") from None


def family_from_flags(*, v2: bool = False, sdxl: bool = False) -> str:
    """kohya_ss's model-type flags → 'sd1' | 'sd2' | 'sdxl' (sdxl wins, as in the GUI)."""
    return "sdxl" if sdxl else ("sd2" if v2 else "sd1")


def flags_for(family: str, v_prediction: bool = False) -> dict[str, bool]:
    """The kohya_ss flags (v2, v_parameterization, sdxl) that select a family."""
    info(family)
    return {"v2": family == "sd2", "v_parameterization": bool(v_prediction), "sdxl": family == "sdxl"}


def base_model_version(family: str, v_prediction: bool = False) -> str:
    """`ss_base_model_version`: sd_v1, sd_v2, sd_v2_v or sdxl_base_v1-0."""
    info(family)
    if family == "sdxl":
        return "sdxl_base_v1-0"
    if family == "sd2":
        return "sd_v2_v" if v_prediction else "sd_v2"
    return "sd_v1"


def modelspec_architecture(family: str, v_prediction: bool = False, adapter: str | None = "lora") -> str:
    """`modelspec.architecture`, e.g. 'stable-diffusion-v2-768-v/lora'."""
    arch = info(family).modelspec_arch
    if family == "sd2" and v_prediction:
        arch = "stable-diffusion-v2-768-v"
    return f"{arch}/{adapter}" if adapter else arch


def modelspec_implementation(family: str, lora: bool = True) -> str:
    """diffusers naming for SD1/SD2 LoRA; Stability's generative-models for SDXL LoRA and full checkpoints."""
    info(family)
    if family == "sdxl" or not lora:
        return "https://github.com/Stability-AI/generative-models"
    return "diffusers"


def default_resolution(family: str, v_prediction: bool = False) -> int:
    if family == "sd2" and v_prediction:
        return 768
    return info(family).default_resolution


def prediction_type(v_prediction: bool) -> str:
    """The diffusers scheduler `prediction_type`."""
    return "v_prediction" if v_prediction else "epsilon"


def training_scheduler_config(v_prediction: bool = False) -> dict:
    """The DDPM training schedule as a diffusers scheduler config."""
    return {**TRAIN_SCHEDULE, "prediction_type": prediction_type(v_prediction)}


def config_name(family: str, v_prediction: bool = False) -> str:
    """Name of the shipped config-only folder: sd1, sd2 (2.1 768-v), sd2-base or sdxl."""
    info(family)
    if family == "sd2" and not v_prediction:
        return "sd2-base"
    return family


def config_dir(family: str, v_prediction: bool = False) -> Path:
    """The shipped config-only diffusers folder for a family (full-size architecture, no weights)."""
    return CONFIGS_DIR / config_name(family, v_prediction)


# ---- quick picks ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuickPick:
    repo_id: str
    family: str
    v_prediction: bool

    @property
    def flags(self) -> dict[str, bool]:
        return flags_for(self.family, self.v_prediction)


def quick_pick(repo_id: str) -> QuickPick | None:
    """The family and v-prediction of a kohya_ss quick-pick Hub id; None for other ids."""
    flags = QUICK_PICKS.get(repo_id)
    if flags is None:
        return None
    return QuickPick(repo_id, family_from_flags(v2=flags["v2"], sdxl=flags["sdxl"]), flags["v_parameterization"])


def quick_pick_ids() -> list[str]:
    return list(QUICK_PICKS)


# ---- family from checkpoint keys -----------------------------------------------------------------

# Key prefixes of architectures kohya-lite does not train, checked before the SD rules.
_UNSUPPORTED_MARKERS: tuple[tuple[str, str], ...] = (
    ("joint_blocks.", "Stable Diffusion 3"),
    ("model.diffusion_model.joint_blocks.", "Stable Diffusion 3"),
    ("text_encoders.clip_g.", "Stable Diffusion 3"),
    ("double_blocks.", "FLUX"),
    ("model.diffusion_model.double_blocks.", "FLUX"),
    ("single_blocks.", "FLUX"),
    ("model.diffusion_model.single_blocks.", "FLUX"),
    ("model.diffusion_model.single_stream_modulation.", "FLUX.2"),
)
_LORA_MARKERS = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")


def detect_family_from_keys(keys: Iterable[str]) -> str | None:
    """kohya_ss GUI rules for a single-file checkpoint: `conditioner.` → sdxl, `cond_stage_model.model.` → sd2,
    `model.` → sd1. SD3/FLUX checkpoints and LoRA files raise UserError; anything else gives None.
    v-prediction cannot be read from keys."""
    keys = list(keys)
    for marker, name in _UNSUPPORTED_MARKERS:
        if any(k.startswith(marker) for k in keys):
            raise UserError(
                f"this checkpoint is a {name} model, which kohya-lite does not support",
                field="pretrained_model_name_or_path",
                fix="choose a Stable Diffusion 1.x, 2.x or SDXL checkpoint",
            )
    if keys and all(k.startswith(_LORA_MARKERS) for k in keys):
        raise UserError(
            "this file is a LoRA adapter, not a base model",
            field="pretrained_model_name_or_path",
            fix="choose the base checkpoint here; LoRA files go in 'network_weights' or the LoRA tools",
        )
    if any(k.startswith("conditioner.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("model.") for k in keys):
        return "sd1"
    return None


def detect_family_from_configs(unet_config: dict, has_text_encoder_2: bool) -> str:
    """Family of a diffusers folder: SDXL has a second text encoder (and text_time embeddings); SD2 uses
    linear projections in its transformers (SD1 uses 1×1 convs)."""
    if has_text_encoder_2 or unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if unet_config.get("use_linear_projection") or unet_config.get("cross_attention_dim") == 1024:
        return "sd2"
    return "sd1"
