"""Pre-flight check: every problem with a config at once, each naming the field or file and the fix.

`run_check(cfg)` changes no file. It returns a `CheckResult` with the problems (errors block training,
warnings don't), the dataset summary and the step plan, which the CLI prints and the page shows.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kohya_lite.config import (
    LOCON_LIKE_TYPES, LYCORIS_BUILTIN_PRESETS, LYCORIS_PRESETS, LYCORIS_TYPES, PRECISIONS, QUICK_PICKS,
    SAVE_PRECISIONS, SCHEDULERS, SUPPORTED_LORA_TYPES, UNSUPPORTED_LORA_TYPES, TrainingConfig, known_optimizer,
    parse_kv_args, parse_resolution, te_lr_of, unet_lr_of,
)
from kohya_lite.dataset.folders import DatasetSummary, Subset, load_caption, scan_dataset
from kohya_lite.media import LARGE_SIDE, caption_path, check_image, list_images
from kohya_lite.models.detect import hub_cached, is_diffusers_folder, source_kind
from kohya_lite.dataset.steps import StepPlan, plan_steps
from kohya_lite.errors import Problem, UserError
from kohya_lite.models import safetensors_file
from kohya_lite.models.memory import MemoryEstimate
from kohya_lite.output_folder import describe, files_of
from kohya_lite.textfile import RESAVE_FIX, read_text



@dataclass
class CheckResult:
    problems: list[Problem] = field(default_factory=list)
    dataset: DatasetSummary | None = None
    plan: StepPlan | None = None
    memory: MemoryEstimate | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, message: str, **kw) -> None:
        self.problems.append(Problem(message, severity="error", **kw))

    def warn(self, message: str, **kw) -> None:
        self.problems.append(Problem(message, severity="warning", **kw))



@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: lo ≤ v ≤ hi (v < hi when `hi_open`); None = no bound."""

    lo: float | None = None
    hi: float | None = None
    fix: str = ""
    hi_open: bool = False
    what: str = ""  # what the number is, when the name does not say it

    def problem(self, name: str, value: float) -> str | None:
        if (self.lo is None or value >= self.lo) and \
                (self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)):
            return None
        if self.hi is None:
            rule = "cannot be negative" if self.lo == 0 else f"must be at least {_num(self.lo)}"
        elif self.hi_open:
            rule = f"must be in [{_num(self.lo)}, {_num(self.hi)})"
        else:
            rule = f"must be {_num(self.lo)}–{_num(self.hi)}"
        return f"{name}{f' ({self.what})' if self.what else ''} {rule}, got {_num(value)}"


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


_COUNT = "use a positive number, or 0 to leave the override unset"
_KEEP = "use 0 to keep them all"
_DROPOUT = "use 0 (off) to 0.3"
_LR = "use a positive value or 0"
_LORAPLUS = "use 0 (off), or e.g. 16"

# Every count, interval, rate and size in the config with the values it accepts. Checked elsewhere: fields with
# rules beyond a range (bucket_reso_steps, max_token_length, min/max_timestep, conv_dim for LoCon) and two that
# take any value (adaptive_noise_scale may be negative; stop_text_encoder_training is in config.NOT_IMPLEMENTED).
RANGES: dict[str, Range] = {
    # accelerate
    "num_processes": Range(1, fix="use 1, or the number of GPUs"),
    "num_machines": Range(1, fix="use 1"),
    "num_cpu_threads_per_process": Range(1, fix="use 2, or the number of CPU cores"),
    "main_process_port": Range(0, 65535, fix="use 0 for accelerate's default, or a free port such as 29500"),
    # network
    "network_dim": Range(1, what="rank", fix="use 4–32 for most subjects"),
    "network_alpha": Range(0, fix="use 1 or the same value as the rank"),
    "conv_dim": Range(0, fix="use 4–16 for Kohya LoCon (Standard ignores it)"),
    "conv_alpha": Range(0, fix="use 1 or the same value as conv_dim"),
    "network_dropout": Range(0, 1, hi_open=True, fix=_DROPOUT),
    "rank_dropout": Range(0, 1, hi_open=True, fix=_DROPOUT),
    "module_dropout": Range(0, 1, hi_open=True, fix=_DROPOUT),
    "scale_weight_norms": Range(0, fix="use 0 (off) or 1"),
    "factor": Range(-1, fix="use -1 (LoKr picks the factor itself), or e.g. 4–16"),
    "constrain": Range(0, fix="use 0 (no constraint)"),
    "unit": Range(1, fix="use 1, or a divisor of the rank such as 4"),
    # learning rate and optimizer
    "learning_rate": Range(0, fix=_LR),
    "unet_lr": Range(0, fix=_LR),
    "text_encoder_lr": Range(0, fix=_LR),
    "lr_warmup": Range(0, 100, what="a percentage of the steps", fix="use 0–100 (10 is common)"),
    "lr_warmup_steps": Range(0, fix="use 0 to warm up by the lr_warmup percentage instead"),
    "lr_scheduler_num_cycles": Range(0, fix="use 1"),
    "lr_scheduler_power": Range(0, fix="use 1"),
    "max_grad_norm": Range(0, fix="use 1, or 0 to turn clipping off"),
    "loraplus_lr_ratio": Range(0, fix=_LORAPLUS),
    "loraplus_unet_lr_ratio": Range(0, fix=_LORAPLUS),
    "loraplus_text_encoder_lr_ratio": Range(0, fix=_LORAPLUS),
    # length and saving
    "train_batch_size": Range(1, fix="use 1–4 on most GPUs"),
    "epoch": Range(0, fix="use the number of passes over the dataset, e.g. 10"),
    "max_train_epochs": Range(0, fix=_COUNT),
    "max_train_steps": Range(0, fix=_COUNT),
    "save_every_n_epochs": Range(0, fix="use 1 to save every epoch, 0 for the final file only"),
    "save_every_n_steps": Range(0, fix="use 0 (off), or a step count such as 500"),
    "save_last_n_epochs": Range(0, fix=_KEEP),
    "save_last_n_epochs_state": Range(0, fix=_KEEP),
    "save_last_n_steps": Range(0, fix=_KEEP),
    "save_last_n_steps_state": Range(0, fix=_KEEP),
    "seed": Range(0, 2**32 - 1, fix="use 0 for a random seed, or any number up to 4294967295"),
    # resolution, buckets, caching
    "min_bucket_reso": Range(32, fix="use 256 (and 2048 for max_bucket_reso)"),
    "max_bucket_reso": Range(32, fix="use 2048 (and 256 for min_bucket_reso)"),
    "vae_batch_size": Range(0, fix="use 0 (automatic) or 1–4"),
    # captions and augmentation
    "keep_tokens": Range(0, fix="use 0, or 1 to keep the trigger word first"),
    "caption_dropout_rate": Range(0, 1, hi_open=True, fix=_DROPOUT),
    "caption_tag_dropout_rate": Range(0, 1, hi_open=True, fix=_DROPOUT),
    "caption_dropout_every_n_epochs": Range(0, fix="use 0 (off)"),
    # text encoder
    "clip_skip": Range(0, 12, fix="use 1 (2 for anime SD1 models)"),
    "prior_loss_weight": Range(0, fix="use 1"),
    # memory
    "gradient_accumulation_steps": Range(1, fix="use 1"),
    "max_data_loader_n_workers": Range(0, fix="use 0 (load in the training process) or 1–4"),
    # noise and loss
    "noise_offset": Range(0, 1, fix="use 0 (off) or ~0.05"),
    "multires_noise_iterations": Range(0, fix="use 0 (off), or 6–10"),
    "multires_noise_discount": Range(0, 1, fix="use 0.3"),
    "ip_noise_gamma": Range(0, fix="use 0 (off) or 0.1"),
    "min_snr_gamma": Range(0, fix="use 0 (off) or 5"),
    "v_pred_like_loss": Range(0, fix="use 0 (off)"),
    "huber_c": Range(0, fix="use 0.1"),
    "huber_scale": Range(0, fix="use 1"),
    # samples
    "sample_every_n_steps": Range(0, fix="use 0 (off), or a step count such as 100"),
    "sample_every_n_epochs": Range(0, fix="use 0 (off), or 1 to sample after every epoch"),
}


def run_check(cfg: TrainingConfig, *, verify_images: bool = True) -> CheckResult:
    r = CheckResult()
    _check_not_implemented(cfg, r)
    _check_model(cfg, r)
    _check_ranges(cfg, r)
    _check_network(cfg, r)
    _check_learning(cfg, r)
    _check_resolution(cfg, r)
    _check_precision(cfg, r)
    _check_output(cfg, r)
    _check_dataset(cfg, r, verify_images=verify_images)
    _check_samples(cfg, r)
    _check_memory(cfg, r)
    return r


def _check_not_implemented(cfg: TrainingConfig, r: CheckResult) -> None:
    from kohya_lite.config import DEFAULTS, NOT_IMPLEMENTED

    for name, why in NOT_IMPLEMENTED.items():
        value = getattr(cfg, name)
        if value != getattr(DEFAULTS, name) and value not in ("", None):
            r.warn(f"{name} = {value!r} will be ignored: {why}", field=name, fix="clear it (nothing changes when you do)")


def _check_ranges(cfg: TrainingConfig, r: CheckResult) -> None:
    for name, rng in RANGES.items():
        message = rng.problem(name, getattr(cfg, name))
        if message:
            r.error(message, field=name, fix=rng.fix)


def _check_samples(cfg: TrainingConfig, r: CheckResult) -> None:
    from kohya_lite.prompts import parse_prompts

    if cfg.sample_every_n_steps <= 0 and cfg.sample_every_n_epochs <= 0:
        return
    text = cfg.sample_prompts.strip()
    if not text:
        r.warn("sampling is on but there are no sample prompts", field="sample_prompts",
               fix="write one prompt per line, e.g. 'zkz dog --w 512 --h 512 --d 1 --s 20'")
        return
    path = Path(text).expanduser() if "\n" not in text else None
    if path and path.suffix.lower() in (".txt", ".toml", ".json") and not path.is_file():
        r.error(f"sample prompt file '{text}' does not exist", field="sample_prompts", file=text,
                fix="write the prompts in the box instead, or fix the path")
        return
    prompts = cfg.sample_prompts
    if path and path.is_file():
        notes: list[str] = []
        try:
            prompts = read_text(path, what="sample prompt file", field="sample_prompts", notes=notes)
        except UserError as exc:
            r.problems.append(exc.problem)
            return
        for note in notes:
            r.warn(note, field="sample_prompts", file=str(path), fix=RESAVE_FIX)
    try:
        parse_prompts(prompts)
    except UserError as exc:
        r.problems.append(exc.problem)


# ---- model --------------------------------------------------------------------------------------
def _check_model(cfg: TrainingConfig, r: CheckResult) -> None:
    f = "pretrained_model_name_or_path"
    src = cfg.pretrained_model_name_or_path.strip()
    if not src:
        r.error("no base model chosen", field=f, fix="pick a quick-pick model or enter the path of a .safetensors file or diffusers folder")
        return
    p = Path(src).expanduser()
    kind = source_kind(src)
    if kind == "not_a_model":
        r.error(f"'{src}' is not a model checkpoint", field=f, file=src,
                fix="choose a .safetensors or .ckpt checkpoint, or a diffusers folder (with model_index.json)")
    elif kind == "single_file":
        _check_safetensors(p, f, "model file", r)
    elif kind == "folder" and not is_diffusers_folder(p):
        r.error(f"folder '{src}' is not a diffusers model (no model_index.json)", field=f, file=src,
                fix="point to the folder that contains model_index.json, or to a single .safetensors file")
    elif kind == "hub_id" and not hub_cached(src):
        r.error(f"model '{src}' is not on this machine (kohya-lite never downloads)", field=f,
                fix=f"download it once with `huggingface-cli download {src}` on a machine with internet "
                    "(it lands in the Hugging Face cache), or choose a local .safetensors file")
    elif kind == "missing":
        r.error(f"model path '{src}' does not exist", field=f, file=src,
                fix="check the path; it must be a .safetensors/.ckpt file or a diffusers folder")
    flags = QUICK_PICKS.get(src)
    if flags:
        for k, v in flags.items():
            if getattr(cfg, k) != v:
                r.warn(f"'{src}' is {'an SDXL' if flags['sdxl'] else 'an SD2' if flags['v2'] else 'an SD1.x'} model but {k}={getattr(cfg, k)}",
                       field=k, fix=f"set {k} to {v}")
    if cfg.sdxl and cfg.v2:
        r.error("both sdxl and v2 are ticked", field="sdxl", fix="tick only the one that matches your base model")
    if cfg.v_parameterization and not (cfg.v2 or cfg.sdxl):
        r.warn("v_parameterization is set for an SD1.x model", field="v_parameterization",
               fix="v-prediction is for SD2.x 768-v models; untick it unless your SD1 model really is v-pred")
    if cfg.vae and not Path(cfg.vae).exists():
        r.error(f"VAE '{cfg.vae}' does not exist", field="vae", file=cfg.vae, fix="clear the field or give a VAE file/folder")
    elif cfg.vae and Path(cfg.vae).is_file():
        _check_safetensors(Path(cfg.vae), "vae", "VAE file", r)
    if cfg.network_weights and not Path(cfg.network_weights).is_file():
        r.error(f"network_weights '{cfg.network_weights}' does not exist", field="network_weights",
                file=cfg.network_weights, fix="clear the field or pick an existing .safetensors LoRA")
    elif cfg.network_weights:
        _check_safetensors(Path(cfg.network_weights), "network_weights", "LoRA file", r)
    if cfg.resume and cfg.resume != "last" and not Path(cfg.resume).is_dir():
        r.error(f"resume state folder '{cfg.resume}' does not exist", field="resume", file=cfg.resume,
                fix="pick a '<name>-…-state' folder in the output folder, or 'last'")


def _check_safetensors(path: Path, field_name: str, what: str, r: CheckResult) -> None:
    """A .safetensors file's header and length (cheap: no weights are read); other formats are left to the loader."""
    if path.suffix.lower() != ".safetensors":
        return
    try:
        safetensors_file.check_file(path, field=field_name, what=what)
    except UserError as exc:
        r.problems.append(exc.problem)


# ---- network and learning -------------------------------------------------------------------------
def _check_network(cfg: TrainingConfig, r: CheckResult) -> None:
    if cfg.LoRA_type in UNSUPPORTED_LORA_TYPES:
        r.error(f"LoRA type '{cfg.LoRA_type}' is not supported: {UNSUPPORTED_LORA_TYPES[cfg.LoRA_type]}",
                field="LoRA_type", fix="choose another type, e.g. Kohya DyLoRA for a DyLoRA, or LyCORIS/LoCon")
    elif cfg.LoRA_type not in SUPPORTED_LORA_TYPES:
        r.error(f"'{cfg.LoRA_type}' is not a LoRA type kohya-lite knows", field="LoRA_type",
                fix=f"choose one of: {', '.join(SUPPORTED_LORA_TYPES)}")
    elif cfg.LoRA_type in LYCORIS_TYPES:
        _check_lycoris(cfg, r)
    elif cfg.LoRA_type == "Kohya DyLoRA":
        _check_dylora(cfg, r)
    elif cfg.LoRA_type == "LoRA-FA":
        if cfg.loraplus_lr_ratio or cfg.loraplus_unet_lr_ratio or cfg.loraplus_text_encoder_lr_ratio:
            r.warn("LoRA+ ratios are ignored for LoRA-FA: only the up weights train, at the normal learning rate "
                   "(sd-scripts' networks.lora_fa has no LoRA+)", field="loraplus_lr_ratio", fix="set them to 0")
    _check_network_weights(cfg, r)
    if cfg.network_alpha == 0:
        r.warn("network_alpha 0 trains with alpha 1 (scale 1/rank), as kohya_ss and sd-scripts do: kohya_ss drops "
               "zero values and sd-scripts then uses its default of 1", field="network_alpha",
               fix="set network_alpha explicitly (1, or the rank for scale 1) to make it plain")
    if cfg.LoRA_type == "Kohya LoCon" and cfg.conv_dim < 1:
        r.error("Kohya LoCon needs conv_dim ≥ 1", field="conv_dim", fix="set conv_dim, e.g. 4–16")
    if cfg.dataset_config:
        r.error("dataset TOML files are not supported yet", field="dataset_config",
                fix="clear dataset_config and use train_data_dir with N_name folders")


def _check_lycoris(cfg: TrainingConfig, r: CheckResult) -> None:
    preset = cfg.LyCORIS_preset.strip()
    if preset not in LYCORIS_BUILTIN_PRESETS:
        path = Path(preset).expanduser()
        if not preset or not path.is_file():
            r.error(f"LyCORIS preset '{preset}' is neither a preset name nor a .toml file", field="LyCORIS_preset",
                    fix=f"choose one of {', '.join(LYCORIS_PRESETS)} ('full' is kohya_ss's default), or give the "
                        "path of a preset .toml")
        else:
            _check_preset_file(path, r)
    if cfg.LoRA_type == "LyCORIS/LoKr":
        if cfg.factor == 0:
            r.error("the LoKr factor cannot be 0", field="factor", fix="use -1 (automatic) or a factor such as 8")
        if cfg.use_tucker and not cfg.use_cp:
            r.warn("for LoKr, kohya_ss passes 'use_cp' after 'use_tucker' and lycoris takes use_cp: Tucker stays off",
                   field="use_tucker", fix="tick 'Use CP decomposition' to use the Tucker decomposition with LoKr")


def _check_preset_file(path: Path, r: CheckResult) -> None:
    """A .toml LyCORIS preset: readable TOML naming at least one of lycoris' preset keys (the library checks more)."""
    try:
        from tomllib import loads
    except ModuleNotFoundError:  # Python 3.10: the TOML reader lycoris-lora depends on
        from toml import loads

    keys = ("enable_conv", "unet_target_module", "unet_target_name", "text_encoder_target_module",
            "text_encoder_target_name", "module_algo_map", "name_algo_map", "use_fnmatch", "exclude_name")
    try:
        text = read_text(path, what="LyCORIS preset", field="LyCORIS_preset")
    except UserError as exc:
        r.problems.append(exc.problem)
        return
    try:
        data = loads(text)
    except Exception as exc:  # noqa: BLE001 - tomllib and toml raise their own decode errors
        r.error(f"LyCORIS preset '{path.name}' is not valid TOML: {exc}", field="LyCORIS_preset", file=str(path),
                fix="fix the TOML syntax, or choose a builtin preset such as 'full'")
        return
    if not any(k in data for k in keys):
        r.error(f"LyCORIS preset '{path.name}' has none of the preset keys ({', '.join(keys[:5])}, …)",
                field="LyCORIS_preset", file=str(path), fix="see lycoris' example presets, or choose 'full'")


def _check_dylora(cfg: TrainingConfig, r: CheckResult) -> None:
    if cfg.unit >= 1 and cfg.network_dim % cfg.unit:
        r.error(f"the DyLoRA unit {cfg.unit} does not divide the rank {cfg.network_dim}", field="unit",
                fix="make network_dim a multiple of the unit (e.g. rank 16 with unit 4), or use unit 1")
    if cfg.conv_dim and cfg.conv_dim != cfg.network_dim:
        r.error(f"Kohya DyLoRA needs conv_dim equal to network_dim ({cfg.network_dim}), got {cfg.conv_dim}",
                field="conv_dim", fix=f"set conv_dim to {cfg.network_dim} to train the 3×3 convolutions too, or to 0 "
                                      "to leave them out (sd-scripts' networks.dylora allows nothing else)")
    if cfg.scale_weight_norms:
        r.warn("scale_weight_norms is ignored for Kohya DyLoRA (sd-scripts' networks.dylora has no max-norm)",
               field="scale_weight_norms", fix="set it to 0")


def _check_network_weights(cfg: TrainingConfig, r: CheckResult) -> None:
    """A LyCORIS file continues only a LyCORIS type (and the other way round: a LyCORIS type reads plain LoRAs)."""
    from kohya_lite.network.naming import lycoris_markers

    p = Path(cfg.network_weights).expanduser() if cfg.network_weights else None
    if p is None or p.suffix.lower() != ".safetensors" or not p.is_file():
        return
    try:
        header = safetensors_file.read_header(p)
    except (OSError, ValueError):
        return  # _check_model reports a damaged file
    odd = lycoris_markers([k for k in header if k != "__metadata__"], kohya=True)
    if odd and cfg.LoRA_type not in LYCORIS_TYPES:
        r.error(f"network_weights '{p.name}' is a LyCORIS file ({', '.join(odd[:3])} tensors), which a "
                f"{cfg.LoRA_type} network cannot continue", field="network_weights", file=str(p),
                fix="choose the LyCORIS type the file was trained with (e.g. LyCORIS/LoHa for hada_* tensors)")


def _check_learning(cfg: TrainingConfig, r: CheckResult) -> None:
    if cfg.learning_rate <= 0 and cfg.unet_lr <= 0 and cfg.text_encoder_lr <= 0:
        r.error("all learning rates are zero: nothing would train", field="learning_rate",
                fix="set learning_rate (e.g. 0.0001; 1.0 for Prodigy/DAdapt)")
    elif te_lr_of(cfg) == 0 and cfg.sdxl is False and cfg.train_unet:
        r.warn("text_encoder_lr is 0: only the UNet is trained, the file has no text-encoder part", field="text_encoder_lr",
               fix="set text_encoder_lr (e.g. half the UNet LR) to train the text encoder too")
    opt = known_optimizer(cfg.optimizer)
    if opt is None:
        from kohya_lite.config import OPTIMIZERS

        r.error(f"unknown optimizer '{cfg.optimizer}'", field="optimizer", fix=f"choose one of: {', '.join(OPTIMIZERS)}")
    elif (opt.startswith("DAdapt") or opt == "Prodigy") and max(cfg.learning_rate, unet_lr_of(cfg)) <= 0.1:
        r.warn(f"{opt} adapts the LR itself and expects learning_rate ≈ 1.0", field="learning_rate",
               fix="set learning_rate, unet_lr and text_encoder_lr to 1.0")
    if opt and (opt == "Prodigy" or opt.startswith("DAdapt")) and cfg.train_unet and cfg.train_text_encoder \
            and unet_lr_of(cfg) != te_lr_of(cfg):
        r.error(f"{opt} needs the same learning rate for the UNet and the text encoder", field="text_encoder_lr",
                fix="set unet_lr and text_encoder_lr to the same value (1.0 is usual), or text_encoder_lr to 0")
    for name in ("optimizer_args", "lr_scheduler_args"):
        try:
            parse_kv_args(getattr(cfg, name), name)
        except UserError as exc:
            r.problems.append(exc.problem)
    if cfg.lr_scheduler not in SCHEDULERS:
        r.error(f"unknown lr_scheduler '{cfg.lr_scheduler}'", field="lr_scheduler", fix=f"choose one of: {', '.join(SCHEDULERS)}")
    warmup = cfg.lr_warmup_steps or cfg.lr_warmup
    if cfg.lr_scheduler == "constant" and warmup:
        r.error("the 'constant' scheduler cannot warm up", field="lr_warmup",
                fix="set LR warmup to 0, or choose 'constant_with_warmup'")
    if opt == "Adafactor" and "relative_step=False" not in cfg.optimizer_args.replace(" ", "") and warmup:
        r.error("Adafactor with relative_step cannot use LR warmup", field="lr_warmup",
                fix="set warmup to 0, or add 'scale_parameter=False relative_step=False warmup_init=False' to optimizer_args")
    if not 0 <= cfg.min_timestep < cfg.max_timestep <= 1000:
        r.error(f"timestep range {cfg.min_timestep}–{cfg.max_timestep} is empty or outside 0–1000", field="min_timestep",
                fix="use min_timestep 0 and max_timestep 1000")
    if cfg.scale_v_pred_loss_like_noise_pred and not cfg.v_parameterization:
        r.error("scale_v_pred_loss_like_noise_pred needs v_parameterization", field="scale_v_pred_loss_like_noise_pred",
                fix="untick it, or tick v_parameterization for a v-prediction model")
    if cfg.v_pred_like_loss and cfg.v_parameterization:
        r.error("v_pred_like_loss cannot be combined with v_parameterization", field="v_pred_like_loss", fix="set it to 0")
    if cfg.clip_skip > 1 and cfg.v2:
        r.warn("clip_skip with an SD2 model gives unexpected results", field="clip_skip", fix="use clip_skip 1 for SD2")
    if cfg.max_token_length not in (75, 150, 225):
        r.error(f"max_token_length must be 75, 150 or 225, got {cfg.max_token_length}", field="max_token_length", fix="use 75")
    if cfg.sdxl_cache_text_encoder_outputs and cfg.sdxl:
        if cfg.train_text_encoder:
            r.error("caching text-encoder outputs needs UNet-only training", field="sdxl_cache_text_encoder_outputs",
                    fix="set text_encoder_lr to 0, or untick the cache")
        if cfg.shuffle_caption or cfg.caption_dropout_rate or cfg.caption_dropout_every_n_epochs:
            r.error("caching text-encoder outputs cannot be combined with caption shuffle or dropout",
                    field="sdxl_cache_text_encoder_outputs", fix="untick shuffle_caption and set caption dropout to 0, or untick the cache")


def _check_resolution(cfg: TrainingConfig, r: CheckResult) -> None:
    try:
        w, h = parse_resolution(cfg.max_resolution)
    except UserError as exc:
        r.problems.append(exc.problem)
        return
    step = 32 if cfg.sdxl else 64
    if w % 8 or h % 8 or min(w, h) < 64 or max(w, h) > 4096:
        r.error(f"max_resolution {w},{h} is not usable", field="max_resolution",
                fix="use multiples of 64 between 256 and 2048, e.g. 512,512 or 1024,1024")
    if cfg.enable_bucket:
        if cfg.bucket_reso_steps < 1 or cfg.bucket_reso_steps % step:
            r.error(f"bucket_reso_steps {cfg.bucket_reso_steps} is not a multiple of {step}", field="bucket_reso_steps",
                    fix=f"use {step} (or 64)")
        if cfg.min_bucket_reso > cfg.max_bucket_reso:
            r.error("min_bucket_reso is larger than max_bucket_reso", field="min_bucket_reso", fix="use 256 and 2048")
        if not cfg.bucket_no_upscale and (min(w, h) < cfg.min_bucket_reso or max(w, h) > cfg.max_bucket_reso):
            r.error(f"max_resolution {w},{h} lies outside the bucket range {cfg.min_bucket_reso}–{cfg.max_bucket_reso}",
                    field="max_resolution", fix="widen min/max bucket resolution or lower max_resolution")
    if (cfg.color_aug or cfg.random_crop) and (cfg.cache_latents or cfg.cache_latents_to_disk):
        r.warn("color_aug/random_crop need fresh pixels every step, so latent caching will be turned off",
               field="cache_latents", fix="untick color_aug/random_crop to keep the faster cached latents")


def _check_memory(cfg: TrainingConfig, r: CheckResult) -> None:
    """The memory estimate (shown by the report and the page), and a warning when it will not fit."""
    if r.errors:
        return
    from kohya_lite.models.memory import GB, estimate_memory, free_memory

    device, free = free_memory()
    r.memory = estimate_memory(cfg, r.plan, device=device)
    if free is not None and r.memory.total > free:
        where = "GPU memory" if device == "cuda" else "RAM"
        r.warn(f"training needs {r.memory.summary()}, more than the {free / GB:.1f} GB of {where} free now",
               field="train_batch_size",
               fix="lower the batch size or the resolution, turn on gradient checkpointing, keep latents cached, "
                   "use AdamW8bit, or train the UNet only")


def _check_precision(cfg: TrainingConfig, r: CheckResult) -> None:
    if cfg.dynamo_backend not in ("", "no", "inductor", "eager", "aot_eager", "cudagraphs"):
        r.error(f"dynamo_backend '{cfg.dynamo_backend}' is not one torch.compile offers here", field="dynamo_backend",
                fix="use no, or inductor")
    if cfg.mixed_precision not in PRECISIONS:
        r.error(f"mixed_precision '{cfg.mixed_precision}' is not supported", field="mixed_precision", fix="use no, fp16 or bf16")
    if cfg.save_precision not in SAVE_PRECISIONS:
        r.error(f"save_precision '{cfg.save_precision}' is not supported", field="save_precision", fix="use fp16, bf16 or float")
    if cfg.full_fp16 and cfg.mixed_precision != "fp16":
        r.error("full_fp16 needs mixed_precision fp16", field="full_fp16", fix="set mixed_precision to fp16 or untick full_fp16")
    if cfg.full_bf16 and cfg.mixed_precision != "bf16":
        r.error("full_bf16 needs mixed_precision bf16", field="full_bf16", fix="set mixed_precision to bf16 or untick full_bf16")
    if cfg.save_model_as != "safetensors":
        r.warn(f"save_model_as '{cfg.save_model_as}': kohya-lite writes .safetensors only", field="save_model_as",
               fix="choose safetensors (every LoRA consumer loads it)")


def _check_output(cfg: TrainingConfig, r: CheckResult) -> None:
    if not cfg.output_name.strip() or re.search(r'[\\/:*?"<>|]', cfg.output_name):
        r.error(f"output name '{cfg.output_name}' is not a valid file name", field="output_name",
                fix="use letters, digits, '-' and '_' (e.g. lisabp_v1)")
    if not cfg.output_dir.strip():
        r.error("no output folder", field="output_dir", fix="set the folder where the LoRA files go (e.g. <project>/model)")
        return
    out = Path(cfg.output_dir).expanduser()
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        r.error(f"output folder '{out}' is a file", field="output_dir", file=str(out), fix="choose a folder")
        return
    if not _writable(probe):
        r.error(f"output folder '{out}' cannot be written", field="output_dir", file=str(out),
                fix="choose a folder you own, or fix its permissions")
    existing = files_of(out, cfg.output_name.strip())
    if existing and not cfg.resume:
        n = len(existing)
        r.warn(f"the output folder already holds {n} file{'s' * (n != 1)} of '{cfg.output_name}' ({describe(existing)}): "
               "a new run overwrites them, and old epoch files mix with the new ones", field="output_name",
               file=str(out), fix="choose another output name, or continue that run (--resume last; Resume on the page)")
    if cfg.logging_dir:
        lp = Path(cfg.logging_dir).expanduser()
        while not lp.exists() and lp != lp.parent:
            lp = lp.parent
        if not _writable(lp):
            r.error(f"logging folder '{cfg.logging_dir}' cannot be written", field="logging_dir", fix="choose another folder or clear it")


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


# ---- dataset ------------------------------------------------------------------------------------
def _check_dataset(cfg: TrainingConfig, r: CheckResult, *, verify_images: bool) -> None:
    f = "train_data_dir"
    if not cfg.train_data_dir.strip():
        r.error("no image folder", field=f, fix="set train_data_dir to the parent of your '<repeats>_<trigger> <class>' folder(s)")
        return
    root = Path(cfg.train_data_dir).expanduser()
    if not root.is_dir():
        r.error(f"image folder '{root}' does not exist", field=f, file=str(root), fix="check the path (Utilities → Dataset preparation builds the layout)")
        return
    if cfg.reg_data_dir and not Path(cfg.reg_data_dir).expanduser().is_dir():
        r.error(f"regularization folder '{cfg.reg_data_dir}' does not exist", field="reg_data_dir", file=cfg.reg_data_dir,
                fix="clear the field or point to the parent of a '1_<class>' folder")
    elif cfg.reg_data_dir:
        _check_reg_overlap(root, Path(cfg.reg_data_dir).expanduser(), r)
    summary = scan_dataset(str(root), cfg.reg_data_dir, cfg.caption_extension)
    r.dataset = summary

    direct_images = list_images(root)
    if direct_images and not summary.train:
        r.error(f"'{root}' holds the images themselves; it must be their parent folder", field=f, file=str(root),
                fix=f"move the images into a subfolder named '<repeats>_<trigger> <class>', e.g. '{root / '10_mytrigger woman'}', "
                    "and keep train_data_dir pointing at the parent")
    elif direct_images:
        r.warn(f"{len(direct_images)} images directly in '{root}' are ignored", field=f, file=str(root),
               fix="move them into one of the N_name subfolders")
    for skipped in summary.skipped_folders:
        reg = summary.reg and skipped.parent == Path(cfg.reg_data_dir).expanduser()
        r.problems.append(Problem(
            f"folder '{skipped.name}' has no '<repeats>_' prefix and is skipped", field="reg_data_dir" if reg else f,
            file=str(skipped), fix=f"rename it to e.g. '10_{skipped.name}' (10 repeats)",
            severity="warning" if summary.train else "error"))
    if not summary.train and not direct_images and not summary.skipped_folders:
        r.error(f"no '<repeats>_<trigger> <class>' folders in '{root}'", field=f, file=str(root),
                fix="create e.g. '10_mytrigger woman' inside it and put the images there (train_data_dir must be the parent)")

    checked: dict[Path, Subset] = {}
    for subset in summary.subsets:
        field_name = "reg_data_dir" if subset.is_reg else f
        if subset.path in checked:  # reg_data_dir == train_data_dir (warned above): same folder, same findings
            subset.images, subset.captioned = checked[subset.path].images, checked[subset.path].captioned
            continue
        checked[subset.path] = subset
        found = len(subset.images)
        if verify_images and subset.images:
            _check_images(subset, field_name, r)
        if not subset.images:
            what = ("has no images (.png .jpg .jpeg .webp .bmp)" if not found else
                    "has no usable images: its only image cannot be read" if found == 1 else
                    f"has no usable images: none of its {found} images can be read")
            r.problems.append(Problem(f"folder '{subset.name}' {what}", field=field_name, file=str(subset.path),
                                      fix="add images or remove the folder", severity="warning"))
            continue
        _check_captions(cfg, subset, r)

    if summary.train and summary.num_train_images == 0:
        r.error("the training folders hold no usable images", field=f, file=str(root), fix="add .png/.jpg/.webp images to the N_name folders")
    r.plan = plan_for(cfg, summary)
    if r.plan:
        if cfg.max_train_epochs > 0 and cfg.max_train_steps > 0:
            r.warn(f"max_train_epochs ({cfg.max_train_epochs}) overrides max_train_steps ({cfg.max_train_steps})",
                   field="max_train_steps", fix="clear one of them")
        elif cfg.max_train_epochs > 0:
            r.warn(f"max_train_epochs ({cfg.max_train_epochs}) overrides epoch ({cfg.epoch})", field="max_train_epochs",
                   fix="set max_train_epochs to 0 to use the epoch field")
        elif cfg.max_train_steps > 0:
            r.warn(f"max_train_steps ({cfg.max_train_steps}) overrides epoch ({cfg.epoch}): {r.plan.epochs} epochs will run",
                   field="max_train_steps", fix="set max_train_steps to 0 to train for the epoch count")


def plan_for(cfg: TrainingConfig, summary: DatasetSummary) -> StepPlan | None:
    """The GUI-style step plan of a scanned dataset (None without training images)."""
    if not summary.num_train_images:
        return None
    return plan_steps(num_images=summary.image_count, num_train_samples=summary.num_train_images,
                      batch_size=cfg.train_batch_size, epoch=cfg.epoch, max_train_epochs=cfg.max_train_epochs,
                      max_train_steps=cfg.max_train_steps, grad_accum=cfg.gradient_accumulation_steps,
                      with_reg=bool(summary.reg))


def step_plan_text(dataset: DatasetSummary | None, plan: StepPlan | None) -> str:
    """The one step-arithmetic line: `check` prints it and the page shows it (under Parameters and after Check),
    e.g. '6 images × 5 repeats × 3 epochs ÷ batch 2 = 45 steps'."""
    if plan is None:
        return ""
    repeats = {s.repeats for s in dataset.train if s.images} if dataset else set()
    repeats_text = (f" × {repeats.pop()} repeats" if len(repeats) == 1 else
                    f" ({dataset.num_train_images:,} with repeats)" if repeats else "")
    return plan.summary(repeats_text)


def _check_reg_overlap(root: Path, reg: Path, r: CheckResult) -> None:
    train, reg = root.resolve(), reg.resolve()
    if reg == train:
        r.warn(f"reg_data_dir is the training folder '{root}': its images are trained on and also used as "
               "regularization images", field="reg_data_dir", file=str(reg),
               fix="point reg_data_dir at a separate folder of class images (e.g. project/reg next to project/img), "
                   "or clear it")
    elif train in reg.parents:
        r.warn(f"regularization folder '{reg}' is inside the training folder '{root}': the training scan sees it too",
               field="reg_data_dir", file=str(reg),
               fix="move it next to the training folder (e.g. project/reg beside project/img)")
    elif reg in train.parents:
        r.warn(f"the training folder '{root}' is inside the regularization folder '{reg}': the regularization scan "
               "sees it too", field="reg_data_dir", file=str(reg),
               fix="keep the two folders side by side (e.g. project/img and project/reg)")


def _names(paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _check_images(subset: Subset, field_name: str, r: CheckResult) -> None:
    """Headers only (no pixel decode, see `check_image`); unreadable images are dropped from the subset."""
    bad: dict[Path, str] = {}
    large: list[tuple[Path, tuple[int, int]]] = []
    for im in subset.images:
        info = check_image(im)
        if info.problem:
            bad[im] = info.problem
        elif info.is_large:
            large.append((im, info.size))
    for im, why in list(bad.items())[:20]:
        r.warn(f"image '{im.name}' {why}; it will be skipped", field=field_name, file=str(im),
               fix="re-save it as PNG/JPEG or delete it")
    if len(bad) > 20:
        r.warn(f"{len(bad) - 20} more unreadable images in '{subset.name}'", field=field_name, file=str(subset.path))
    if bad:
        subset.images = [im for im in subset.images if im not in bad]
    if len(large) == 1:
        (path, (w, h)), = large
        r.warn(f"image '{path.name}' is very large ({w}×{h}, {w * h / 1e6:.0f} MP): it is downscaled to the training "
               "resolution anyway, but takes seconds and GBs of memory to decode", field=field_name, file=str(path),
               fix=f"downscale it to at most {LARGE_SIDE // 2} px on the long side before training")
    elif large:
        w, h = max((size for _, size in large), key=lambda s: s[0] * s[1])
        r.warn(f"{len(large)} images in '{subset.name}' are very large (up to {w}×{h}, {w * h / 1e6:.0f} MP; "
               f"{_names([p for p, _ in large])}): they are downscaled to the training resolution anyway, but each "
               "takes seconds and GBs of memory to decode", field=field_name, file=str(subset.path),
               fix=f"downscale them to at most {LARGE_SIDE // 2} px on the long side before training")


def _check_captions(cfg: TrainingConfig, subset: Subset, r: CheckResult) -> None:
    """Captions are read as training reads them: a missing, empty or unreadable file means the folder name."""
    ext = cfg.caption_extension
    if not ext:
        return
    subset.captioned = sum(1 for im in subset.images if caption_path(im, ext).is_file())
    if not subset.is_reg and subset.missing_captions:
        r.warn(f"{subset.missing_captions} of {len(subset.images)} images in '{subset.name}' have no "
               f"'{ext}' caption; the folder name '{subset.tokens}' is used instead",
               field="caption_extension", file=str(subset.path),
               fix="caption them (Utilities → Captioning), or ignore this if the trigger word alone is what you want")
    bad: list[tuple[Path, UserError]] = []
    utf16: list[Path] = []
    for im in subset.images:
        notes: list[str] = []
        try:
            load_caption(im, ext, notes=notes)
        except UserError as exc:
            bad.append((caption_path(im, ext), exc))
        if notes:
            utf16.append(caption_path(im, ext))
    fallback = f"the folder name '{subset.tokens}' is used instead"
    if len(bad) == 1:
        path, exc = bad[0]
        r.warn(f"{exc.message}; {fallback}", field="caption_extension", file=str(path), fix=exc.fix)
    elif bad:
        r.warn(f"{len(bad)} caption files in '{subset.name}' cannot be read as UTF-8 text ({_names([p for p, _ in bad])}); "
               f"for their images {fallback}", field="caption_extension", file=str(subset.path),
               fix=f"{RESAVE_FIX}; a binary file under a caption name must be replaced by a real caption")
    if utf16:
        r.warn(f"{len(utf16)} caption file{'s' if len(utf16) > 1 else ''} in '{subset.name}' "
               f"{'are' if len(utf16) > 1 else 'is'} UTF-16 ({_names(utf16)}): kohya-lite reads "
               f"{'them' if len(utf16) > 1 else 'it'}, but kohya_ss and sd-scripts need UTF-8",
               field="caption_extension", file=str(utf16[0] if len(utf16) == 1 else subset.path), fix=RESAVE_FIX)


def format_report(cfg: TrainingConfig, result: CheckResult) -> str:
    """The text `kohya-lite check` prints: settings, dataset, step arithmetic, then every problem."""
    lines = ["Settings"]
    lines.append(f"  model        {cfg.pretrained_model_name_or_path}  ({cfg.family}{', v-pred' if cfg.v_parameterization else ''})")
    conv = cfg.LoRA_type in LOCON_LIKE_TYPES and cfg.LoRA_type != "LoRA-FA" and cfg.conv_dim
    lines.append(f"  network      {cfg.LoRA_type}, rank {cfg.network_dim}, alpha {cfg.network_alpha:g}"
                 + (f", conv {cfg.conv_dim}/{cfg.conv_alpha:g}" if conv else "")
                 + (f", preset {cfg.LyCORIS_preset}" if cfg.LoRA_type.startswith("LyCORIS/") else ""))
    lines.append(f"  learning     {cfg.optimizer}, lr {cfg.learning_rate:g} (UNet {unet_lr_of(cfg):g}, TE {te_lr_of(cfg):g}), "
                 f"{cfg.lr_scheduler}, warmup {cfg.lr_warmup_steps or str(cfg.lr_warmup) + '%'}")
    lines.append(f"  resolution   {cfg.max_resolution}, buckets {'on' if cfg.enable_bucket else 'off'}, "
                 f"precision {cfg.mixed_precision}, save as {cfg.save_precision}")
    lines.append(f"  output       {Path(cfg.output_dir or '.') / cfg.output_name}.safetensors")
    if result.dataset and result.dataset.subsets:
        lines.append("Dataset")
        for s in result.dataset.subsets:
            kind = "reg " if s.is_reg else ""
            lines.append(f"  {kind}{s.name!r}: {len(s.images)} images × {s.repeats} repeats, trigger '{s.tokens}', "
                         f"{s.captioned} captions")
    if result.plan:
        p = result.plan
        lines.append("Steps")
        lines.append(f"  {step_plan_text(result.dataset, p)}")
        lines.append(f"  {p.steps_per_epoch:,} steps per epoch × {p.epochs} epochs = {p.total_steps:,} steps")
    if result.memory:
        lines.append("Memory")
        lines.append(f"  {result.memory.summary()}")
    if result.problems:
        lines.append(f"Problems ({len(result.errors)} errors, {len(result.warnings)} warnings)")
        for prob in result.problems:
            lines += ["  " + ln for ln in prob.format().splitlines()]
    lines.append("Ready to train." if result.ok else "Not ready: fix the errors above.")
    return "\n".join(lines)
