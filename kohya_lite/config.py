"""The training config: kohya_ss GUI key names in and out.

`TrainingConfig` holds every field kohya-lite understands, typed, with kohya_ss's LoRA-tab defaults
(except `max_train_steps`, which defaults to 0 = computed from epochs, see the reference's pitfalls).
Loading is a merge, as in kohya_ss: a key whose value is not null replaces the current value; values
are coerced (string numbers, "" for unset, legacy bools); legacy keys are renamed; unknown keys are
kept aside in `extra`, reported, and written back on save, so a kohya_ss file round-trips. A value that
is none of kohya_ss's conventions and does not parse ("1e-4abc" for a number) is a UserError naming the
field, never a silent 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from kohya_lite.errors import UserError
from kohya_lite.fileio import write_text_atomic
from kohya_lite.textfile import read_text

QUICK_PICKS: dict[str, dict[str, bool]] = {
    "runwayml/stable-diffusion-v1-5": {"v2": False, "v_parameterization": False, "sdxl": False},
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {"v2": False, "v_parameterization": False, "sdxl": False},
    "CompVis/stable-diffusion-v1-4": {"v2": False, "v_parameterization": False, "sdxl": False},
    "stabilityai/stable-diffusion-2-1-base": {"v2": True, "v_parameterization": False, "sdxl": False},
    "stabilityai/stable-diffusion-2-base": {"v2": True, "v_parameterization": False, "sdxl": False},
    "stabilityai/stable-diffusion-2-1": {"v2": True, "v_parameterization": True, "sdxl": False},
    "stabilityai/stable-diffusion-2": {"v2": True, "v_parameterization": True, "sdxl": False},
    "stabilityai/stable-diffusion-xl-base-1.0": {"v2": False, "v_parameterization": False, "sdxl": True},
}

# kohya_ss's LoRA_type values (the SD1/SD2/SDXL ones), and what each one trains as:
# sd-scripts `networks.lora` (Standard, Kohya LoCon), `networks.lora_fa`, `networks.dylora`, or the lycoris-lora
# library's kohya wrapper `lycoris.kohya` with an algorithm (network/lycoris.py).
LYCORIS_TYPES = (
    "LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr", "LyCORIS/iA3", "LyCORIS/DyLoRA", "LyCORIS/GLoRA",
    "LyCORIS/Diag-OFT", "LyCORIS/BOFT", "LyCORIS/Native Fine-Tuning",
)
LORA_TYPES = ("Standard", "Kohya LoCon", "Kohya DyLoRA", "LoRA-FA", *LYCORIS_TYPES, "Kohya LoHa", "Kohya LoKr")
# Types kohya-lite does not train, with the reason (check reports it; the page still lists them so a file loads).
UNSUPPORTED_LORA_TYPES: dict[str, str] = {
    "LyCORIS/DyLoRA": "the lycoris-lora library's DyLoRA module cannot load weights back (no resume, no "
                      "network_weights) and writes 1×1-conv up weights without their kernel dimensions",
    "Kohya LoHa": "it is sd-scripts' own SDXL-only networks.loha fork, not available here",
    "Kohya LoKr": "it is sd-scripts' own SDXL-only networks.lokr fork, not available here",
}
SUPPORTED_LORA_TYPES = tuple(t for t in LORA_TYPES if t not in UNSUPPORTED_LORA_TYPES)
# kohya_ss shows the convolution rank/alpha for these types (lora_gui.py `convolution_row`).
LOCON_LIKE_TYPES = (
    "Kohya LoCon", "Kohya DyLoRA", "Kohya LoHa", "Kohya LoKr", "LoRA-FA", "LyCORIS/LoCon", "LyCORIS/LoHa",
    "LyCORIS/LoKr", "LyCORIS/DyLoRA", "LyCORIS/GLoRA", "LyCORIS/Diag-OFT", "LyCORIS/BOFT",
)
# The presets kohya_ss offers for LyCORIS (a path to a .toml preset file is accepted too), and every preset name
# the lycoris-lora library knows (its `lycoris.config.PRESET`; a test keeps the two in step).
LYCORIS_PRESETS = ("attn-mlp", "attn-only", "full", "full-lin", "unet-transformer-only", "unet-convblock-only")
LYCORIS_BUILTIN_PRESETS = (*LYCORIS_PRESETS, "unet-only", "ia3")


@dataclass
class TrainingConfig:
    # model
    pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"
    model_list: str = "custom"
    v2: bool = False
    v_parameterization: bool = False
    sdxl: bool = False
    vae: str = ""
    # folders
    train_data_dir: str = ""
    reg_data_dir: str = ""
    output_dir: str = ""
    logging_dir: str = ""
    output_name: str = "last"
    dataset_config: str = ""
    training_comment: str = ""
    save_model_as: str = "safetensors"
    save_precision: str = "fp16"
    # metadata
    metadata_title: str = ""
    metadata_author: str = ""
    metadata_description: str = ""
    metadata_license: str = ""
    metadata_tags: str = ""
    # accelerate
    mixed_precision: str = "fp16"
    num_processes: int = 1
    num_machines: int = 1
    num_cpu_threads_per_process: int = 2
    multi_gpu: bool = False
    gpu_ids: str = ""
    main_process_port: int = 0
    # network
    LoRA_type: str = "Standard"
    network_dim: int = 8
    network_alpha: float = 1.0
    conv_dim: int = 1
    conv_alpha: float = 1.0
    network_weights: str = ""
    dim_from_weights: bool = False
    network_dropout: float = 0.0
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    scale_weight_norms: float = 0.0
    # LyCORIS and DyLoRA options (kohya_ss key names and defaults); which type uses which: ui/fields.TYPE_FIELDS
    LyCORIS_preset: str = "full"
    factor: int = -1
    bypass_mode: bool = False
    dora_wd: bool = False
    use_cp: bool = False
    use_tucker: bool = False
    use_scalar: bool = False
    rank_dropout_scale: bool = False
    constrain: float = 0.0
    rescaled: bool = False
    train_norm: bool = False
    decompose_both: bool = False
    train_on_input: bool = True
    unit: int = 1
    # learning rate and optimizer
    learning_rate: float = 0.0001
    text_encoder_lr: float = 0.0001
    unet_lr: float = 0.0001
    lr_scheduler: str = "cosine"
    lr_warmup: int = 10
    lr_warmup_steps: int = 0
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0
    lr_scheduler_args: str = ""
    lr_scheduler_type: str = ""
    optimizer: str = "AdamW8bit"
    optimizer_args: str = ""
    max_grad_norm: float = 1.0
    loraplus_lr_ratio: float = 0.0
    loraplus_unet_lr_ratio: float = 0.0
    loraplus_text_encoder_lr_ratio: float = 0.0
    # length and saving
    train_batch_size: int = 1
    epoch: int = 1
    max_train_epochs: int = 0
    max_train_steps: int = 0
    save_every_n_epochs: int = 1
    save_every_n_steps: int = 0
    save_last_n_epochs: int = 0
    save_last_n_epochs_state: int = 0
    save_last_n_steps: int = 0
    save_last_n_steps_state: int = 0
    save_state: bool = False
    save_state_on_train_end: bool = False
    resume: str = ""
    seed: int = 0
    # resolution, buckets, caching
    max_resolution: str = "512,512"
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 2048
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = True
    cache_latents: bool = True
    cache_latents_to_disk: bool = False
    vae_batch_size: int = 0
    # captions and augmentation
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_tag_dropout_rate: float = 0.0
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    # text encoder
    clip_skip: int = 1
    max_token_length: int = 75
    no_token_padding: bool = False
    weighted_captions: bool = False
    prior_loss_weight: float = 1.0
    stop_text_encoder_training: int = 0
    # memory and precision
    gradient_checkpointing: bool = False
    channels_last: bool = False  # kohya-lite's own: the UNet in channels-last memory format
    dynamo_backend: str = "no"  # torch.compile through accelerate ("inductor"), as kohya_ss's accelerate option
    gradient_accumulation_steps: int = 1
    full_fp16: bool = False
    full_bf16: bool = False
    fp8_base: bool = False
    xformers: str = "xformers"
    mem_eff_attn: bool = False
    max_data_loader_n_workers: int = 0
    persistent_data_loader_workers: bool = False
    # noise and loss
    noise_offset_type: str = "Original"
    noise_offset: float = 0.0
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float = 0.0
    multires_noise_iterations: int = 0
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float = 0.0
    ip_noise_gamma_random_strength: bool = False
    min_snr_gamma: float = 0.0
    debiased_estimation_loss: bool = False
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: float = 0.0
    min_timestep: int = 0
    max_timestep: int = 1000
    loss_type: str = "l2"
    huber_schedule: str = "snr"
    huber_c: float = 0.1
    huber_scale: float = 1.0
    masked_loss: bool = False
    # samples
    sample_every_n_steps: int = 0
    sample_every_n_epochs: int = 0
    sample_sampler: str = "euler_a"
    sample_prompts: str = ""
    sample_at_first: bool = False
    # SDXL
    sdxl_cache_text_encoder_outputs: bool = False
    sdxl_no_half_vae: bool = True
    # logging and misc
    log_with: str = ""
    wandb_api_key: str = ""
    wandb_run_name: str = ""
    additional_parameters: str = ""

    # keys we do not model, preserved verbatim so a kohya_ss file round-trips
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ---- derived values -------------------------------------------------------------------
    @property
    def family(self) -> str:
        """'sdxl', 'sd2' or 'sd1' from the model-type flags."""
        if self.sdxl:
            return "sdxl"
        return "sd2" if self.v2 else "sd1"

    def resolution(self) -> tuple[int, int]:
        """`max_resolution` as (width, height); raises UserError when malformed."""
        return parse_resolution(self.max_resolution)

    @property
    def train_unet(self) -> bool:
        return unet_lr_of(self) > 0

    @property
    def train_text_encoder(self) -> bool:
        return te_lr_of(self) > 0

    def to_dict(self, include_extra: bool = True) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if include_extra:
            for k, v in self.extra.items():
                out.setdefault(k, v)
        return dict(sorted(out.items()))

    def replace(self, **changes: Any) -> "TrainingConfig":
        return dataclasses.replace(self, extra=dict(self.extra), **changes)


# Fields kohya-lite keeps (so a kohya_ss config round-trips) but does not act on, with the reason. `check` warns
# when one is set to anything but its default; the page shows them greyed out with the reason.
NOT_IMPLEMENTED: dict[str, str] = {
    "fp8_base": "fp8 base weights are not implemented; the base model runs in the mixed-precision dtype",
    "masked_loss": "masked loss (the image's alpha channel as a loss mask) is not implemented",
    "weighted_captions": "(word:1.2) caption weights are not implemented; captions train as written",
    "no_token_padding": "sd-scripts' LoRA training does not use it either",
    "log_with": "only TensorBoard logging (in the logging folder) is implemented",
    "wandb_api_key": "Weights & Biases logging is not implemented",
    "wandb_run_name": "Weights & Biases logging is not implemented",
    "stop_text_encoder_training": "ignored for LoRA, as in kohya_ss",
    "additional_parameters": "extra sd-scripts command-line arguments are not read; set the matching fields instead",
}
# Fields whose purpose kohya-lite serves another way: kept and shown, never warned about.
HANDLED_OTHERWISE: dict[str, str] = {
    "xformers": "PyTorch's scaled-dot-product attention is always used (as fast as xformers)",
    "mem_eff_attn": "PyTorch's scaled-dot-product attention is always used",
}


def unet_lr_of(cfg: TrainingConfig) -> float:
    """Effective UNet LR: 0 when the UNet is not trained (TE-only), else `unet_lr` or `learning_rate`."""
    if cfg.text_encoder_lr != 0 and cfg.unet_lr == 0:
        return 0.0  # kohya: network_train_text_encoder_only
    return cfg.unet_lr or cfg.learning_rate


def latents_cached(cfg: TrainingConfig) -> bool:
    """Latents are encoded once (in memory or on disk) unless color_aug/random_crop need fresh pixels each step."""
    return bool(cfg.cache_latents or cfg.cache_latents_to_disk) and not (cfg.color_aug or cfg.random_crop)


CACHING_PIXELS = 4 * 512 * 512  # what one VAE batch encodes when vae_batch_size is 0 (automatic)


def vae_batch_of(cfg: TrainingConfig, device: str) -> int:
    """Images per VAE batch while caching latents: `vae_batch_size`; automatically 1 on a CPU (batching does not
    pay there: benchmarks/bench_caching.py), and on a GPU as many images of `max_resolution` as make 4 × 512²
    pixels (4 at 512 px, 1 at 1024 px), so the encoder's transient stays bounded (sd-scripts' default is 1)."""
    if cfg.vae_batch_size > 0:
        return cfg.vae_batch_size
    if device != "cuda":
        return 1
    try:
        w, h = parse_resolution(cfg.max_resolution)
    except UserError:
        return 1
    return max(1, min(4, CACHING_PIXELS // (w * h)))


def te_lr_of(cfg: TrainingConfig) -> float:
    """Effective text-encoder LR: 0 ⇒ UNet only (kohya: network_train_unet_only)."""
    if cfg.text_encoder_lr == 0 and cfg.unet_lr != 0:
        return 0.0
    return cfg.text_encoder_lr or cfg.learning_rate


FIELD_TYPES: dict[str, type] = {
    name: tp for name, tp in get_type_hints(TrainingConfig).items() if name != "extra"
}
FIELD_NAMES = frozenset(FIELD_TYPES)
DEFAULTS = TrainingConfig()

# kohya_ss update_my_data: what a bad or empty value becomes
_BAD_INT = {"lr_scheduler_num_cycles": 1, "max_token_length": 75}
_BAD_FLOAT = {"lr_scheduler_power": 1.0}
_LEGACY_RENAMES = {
    "lora_network_weights": "network_weights",
    "stop_text_encoder_training_pct": "stop_text_encoder_training",
    "conv_dims": "conv_dim",
    "conv_alphas": "conv_alpha",
}


@dataclass
class LoadReport:
    """What a load did besides copying values: shown to the user, never fatal."""

    unknown_keys: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the file was UTF-16

    def lines(self) -> list[str]:
        out = list(self.notes)
        out += [f"renamed legacy {r}" for r in self.renamed]
        if self.unknown_keys:
            out.append(f"kept {len(self.unknown_keys)} keys kohya-lite does not use: {', '.join(self.unknown_keys)}")
        return out


def parse_resolution(text: Any) -> tuple[int, int]:
    s = str(text).strip().replace("x", ",").replace(" ", "")
    parts = [p for p in s.split(",") if p]
    try:
        nums = [int(float(p)) for p in parts]
    except ValueError:
        nums = []
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) <= 0:
        raise UserError(
            f"max_resolution '{text}' is not a size", field="max_resolution",
            fix="write it as 'W,H', e.g. '512,512' (SD1.5) or '1024,1024' (SDXL)",
        )
    return nums[0], nums[1]


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    s = str(value).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off", "", "none"):
        return False
    return None


class _Unparsable(ValueError):
    """A value that is neither one of kohya_ss's conventions nor a value of the field's type."""


def _number(value: Any, *, whole: bool) -> float:
    """A finite number from a JSON number or a numeric string ("12", "5e-05", "64.0"); raises _Unparsable."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Unparsable("not a number") from None
    else:
        raise _Unparsable(f"a {type(value).__name__}, not a number")
    if not math.isfinite(number):
        raise _Unparsable("not a finite number")
    if whole and number != int(number):
        raise _Unparsable("not a whole number")
    return number


def _coerce(name: str, value: Any) -> Any:
    """kohya_ss's conventions: "" means unset (kohya's value for a bad entry: 0, or 1/75/1.0 for a few keys),
    numbers may be strings, whole floats fill int fields, yes/no words fill bool fields. Anything else raises
    _Unparsable: a value that does not parse is not silently replaced."""
    tp = FIELD_TYPES[name]
    if tp is bool:
        b = _to_bool(value)
        if b is None:
            raise _Unparsable("not true or false")
        return b
    if tp is int:
        if isinstance(value, str) and not value.strip():
            return _BAD_INT.get(name, 0)
        return int(_number(value, whole=True))
    if tp is float:
        if isinstance(value, str) and not value.strip():
            return _BAD_FLOAT.get(name, 0.0)
        return float(_number(value, whole=False))
    return "" if value is None else str(value)


def _unparsable_error(bad: list[tuple[str, Any, str]]) -> UserError:
    def one(name: str, value: Any, why: str) -> str:
        return f"{name} is {json.dumps(value, ensure_ascii=False, default=str)}: {why}"

    name = bad[0][0]
    default = getattr(DEFAULTS, name)
    if len(bad) == 1:
        message = f"config value {one(*bad[0])}"
    else:
        message = f"{len(bad)} config values do not parse: " + "; ".join(one(*b) for b in bad)
    kind = ("true or false" if FIELD_TYPES[name] is bool
            else "a whole number" if FIELD_TYPES[name] is int else "a number")
    fix = (f"write {kind} for {name}, e.g. {json.dumps(default)} (the default)"
           + ("; then fix the other fields named the same way" if len(bad) > 1 else ""))
    return UserError(message, field=name, fix=fix)


def merge_config(data: dict[str, Any], base: TrainingConfig | None = None) -> tuple[TrainingConfig, LoadReport]:
    """Merge a kohya_ss-style dict over `base` (defaults when None), as kohya_ss's Load does."""
    if not isinstance(data, dict):
        raise UserError("the config is not a JSON object", fix="a kohya_ss config is a flat {\"key\": value} object")
    cfg = (base or TrainingConfig()).replace()
    report = LoadReport()
    data = dict(data)

    # legacy keys and values
    for old, new in _LEGACY_RENAMES.items():
        if old in data:
            value = data.pop(old)
            if value in ("", None):
                continue
            if new not in data or data[new] in ("", None):
                data[new] = value
                report.renamed.append(f"{old} → {new}")
    if "optimizer" not in data and "use_8bit_adam" in data:
        data["optimizer"] = "AdamW8bit" if _to_bool(data["use_8bit_adam"]) else "AdamW"
        report.renamed.append(f"use_8bit_adam → optimizer={data['optimizer']}")
    data.pop("use_8bit_adam", None)
    if isinstance(data.get("xformers"), bool):
        data["xformers"] = "xformers" if data["xformers"] else "none"
        report.renamed.append(f"xformers (bool) → '{data['xformers']}'")
    if "use_wandb" in data:
        if _to_bool(data.pop("use_wandb")):
            data["log_with"] = "wandb"
            report.renamed.append("use_wandb → log_with=wandb")
    if data.get("LoRA_type") == "LoCon":
        data["LoRA_type"] = "LyCORIS/LoCon"
        report.renamed.append("LoRA_type LoCon → LyCORIS/LoCon")
    if "save_model_as" in data and data["save_model_as"] not in ("ckpt", "safetensors", None):
        data["save_model_as"] = "safetensors"
    if "model_list" in data and data["model_list"] not in QUICK_PICKS:
        data["model_list"] = "custom"

    bad: list[tuple[str, Any, str]] = []
    for key, value in data.items():
        if key in FIELD_NAMES:
            if value is None:
                continue  # null keeps the current value
            try:
                setattr(cfg, key, _coerce(key, value))
            except _Unparsable as exc:
                bad.append((key, value, str(exc)))
        elif key not in ("file_path", "save_as"):
            cfg.extra[key] = value
            report.unknown_keys.append(key)
    if bad:
        raise _unparsable_error(bad)
    return cfg, report


def load_config(path: str | os.PathLike, base: TrainingConfig | None = None) -> tuple[TrainingConfig, LoadReport]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file '{p}' does not exist", file=str(p), fix="check the path, or save a config first")
    notes: list[str] = []
    text = read_text(p, what="config file", notes=notes)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"config file '{p}' is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            file=str(p), fix="fix the JSON syntax (a missing comma or quote is the usual cause)",
        ) from None
    try:
        cfg, report = merge_config(data, base)
    except UserError as exc:
        exc.problem.file = exc.problem.file or str(p)
        raise
    report.notes[:0] = [f"{n}: re-save it as UTF-8 (Save in kohya-lite writes UTF-8)" for n in notes]
    return cfg, report


def config_json(cfg: TrainingConfig) -> str:
    """kohya_ss's saved form: flat, keys sorted, indent 2."""
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save_config(cfg: TrainingConfig, path: str | os.PathLike) -> None:
    try:
        write_text_atomic(path, config_json(cfg))
    except OSError as exc:
        raise UserError(f"cannot write config '{path}': {exc.strerror}", file=str(path),
                        fix="choose a folder you can write to, and check the disk has space") from None


# Names the engine implements (kohya's optimizer_type, matched case-insensitively).
OPTIMIZERS = (
    "AdamW", "AdamW8bit", "PagedAdamW8bit", "PagedAdamW", "PagedAdamW32bit", "Lion", "Lion8bit", "PagedLion8bit",
    "SGDNesterov", "SGDNesterov8bit", "Prodigy", "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdam", "DAdaptAdaGrad",
    "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD", "Adafactor",
)
SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "piecewise_constant",
)
SAMPLERS = (
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++", "dpmsingle",
    "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
)
PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("fp16", "bf16", "float")


def known_optimizer(name: str) -> str | None:
    """The canonical spelling of an optimizer name, or None."""
    for opt in OPTIMIZERS:
        if opt.lower() == name.strip().lower():
            return opt
    return None


def parse_kv_args(text: str, field_name: str) -> dict[str, Any]:
    """kohya's `k=v k=v` argument strings (optimizer_args, lr_scheduler_args); values via literal_eval."""
    import ast

    out: dict[str, Any] = {}
    for token in text.split():
        if "=" not in token or token.startswith("="):
            raise UserError(f"'{token}' in {field_name} is not key=value", field=field_name,
                            fix="write space-separated key=value pairs, e.g. 'weight_decay=0.01 betas=0.9,0.999'")
        key, value = token.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if value.lower() in ("true", "false"):
                out[key] = value.lower() == "true"
            else:
                out[key] = value  # a bare word, e.g. a scheduler class name
    return out
