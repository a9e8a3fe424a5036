"""The config ↔ page mapping: one row per `TrainingConfig` field (label, info, widget kind, choices, section).

No gradio here: `ui/widgets.py` turns these rows into components. `FIELD_SPECS` must name every
TrainingConfig field exactly once (a test enforces it), so a new config field cannot be forgotten on
the page. Labels follow kohya_ss's LoRA tab; sections are the page's field groups, in page order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

from kohya_lite.config import (
    DEFAULTS, LOCON_LIKE_TYPES, LORA_TYPES, LYCORIS_PRESETS, LYCORIS_TYPES, OPTIMIZERS, PRECISIONS, QUICK_PICKS,
    SAMPLERS, SAVE_PRECISIONS, SCHEDULERS, TrainingConfig, merge_config,
)
from kohya_lite.errors import Problem, UserError

# kind: text | textarea | int | float | bool | choice | path (folder) | model (model file/folder) | file
SECTIONS = {
    "model": "Source model",
    "folders": "Folders",
    "metadata": "Metadata",
    "accelerate": "Accelerate launch",
    "basic": "Basic",
    "sdxl": "SDXL",
    "advanced": "Advanced",
    "samples": "Sample images",
}

# The quick-pick dropdown (model_list): label → hub id, as in kohya_ss's Model Quick Pick.
QUICK_PICK_CHOICES: list[tuple[str, str]] = [
    ("custom", "custom"),
    ("SD1.5 (runwayml/stable-diffusion-v1-5)", "runwayml/stable-diffusion-v1-5"),
    ("SD2.1-base (stabilityai/stable-diffusion-2-1-base)", "stabilityai/stable-diffusion-2-1-base"),
    ("SD2.1 768-v (stabilityai/stable-diffusion-2-1)", "stabilityai/stable-diffusion-2-1"),
    ("SDXL base (stabilityai/stable-diffusion-xl-base-1.0)", "stabilityai/stable-diffusion-xl-base-1.0"),
] + [(k, k) for k in QUICK_PICKS if k not in (
    "runwayml/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1-base", "stabilityai/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-xl-base-1.0")]

# Which LoRA types show which type-specific field (kohya_ss lora_gui.py `update_LoRA_settings`); a field not
# listed here is shown for every type. The page hides the others, as kohya_ss does.
_LY = {t.split("/", 1)[1]: t for t in LYCORIS_TYPES}
_RANKED = {"Standard", "Kohya LoCon", "Kohya DyLoRA", "LoRA-FA", "Kohya LoHa", "Kohya LoKr", _LY["BOFT"],
           _LY["Diag-OFT"], _LY["DyLoRA"], _LY["GLoRA"], _LY["LoCon"], _LY["LoHa"], _LY["LoKr"]}
_LOCON_LOHA_LOKR = {_LY["LoCon"], _LY["LoHa"], _LY["LoKr"]}
_DROPOUT_TYPES = {"Standard", "Kohya LoCon", "Kohya DyLoRA", "LoRA-FA", _LY["BOFT"], _LY["Diag-OFT"], _LY["GLoRA"],
                  *_LOCON_LOHA_LOKR, _LY["Native Fine-Tuning"]}
_LORAPLUS_TYPES = _DROPOUT_TYPES | {"Kohya LoHa", "Kohya LoKr"}
TYPE_FIELDS: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in {
    "network_dim": _RANKED,
    "network_alpha": _RANKED,
    "conv_dim": LOCON_LIKE_TYPES,
    "conv_alpha": LOCON_LIKE_TYPES,
    "LyCORIS_preset": LYCORIS_TYPES,
    "factor": {"Kohya LoKr", _LY["LoKr"]},
    "bypass_mode": _LOCON_LOHA_LOKR,
    "dora_wd": _LOCON_LOHA_LOKR,
    "use_scalar": _LOCON_LOHA_LOKR,
    "use_cp": {_LY["LoKr"]},
    "use_tucker": {"Kohya LoHa", "Kohya LoKr", _LY["BOFT"], _LY["Diag-OFT"], _LY["DyLoRA"], _LY["GLoRA"],
                   *_LOCON_LOHA_LOKR},
    "rank_dropout_scale": {_LY["BOFT"], _LY["Diag-OFT"], _LY["GLoRA"], *_LOCON_LOHA_LOKR, _LY["Native Fine-Tuning"]},
    "constrain": {_LY["Diag-OFT"]},
    "rescaled": {_LY["Diag-OFT"]},
    "train_norm": {_LY["DyLoRA"], _LY["BOFT"], _LY["Diag-OFT"], _LY["GLoRA"], *_LOCON_LOHA_LOKR,
                   _LY["Native Fine-Tuning"]},
    "decompose_both": {_LY["LoKr"]},
    "train_on_input": {_LY["iA3"]},
    "unit": {"Kohya DyLoRA", _LY["DyLoRA"]},
    "scale_weight_norms": {"Standard", "Kohya LoCon", "Kohya DyLoRA", "LoRA-FA", _LY["DyLoRA"], _LY["GLoRA"],
                           *_LOCON_LOHA_LOKR},
    "network_dropout": _DROPOUT_TYPES,
    "rank_dropout": _DROPOUT_TYPES | {"Kohya LoHa", "Kohya LoKr"},
    "module_dropout": _DROPOUT_TYPES | {"Kohya LoHa", "Kohya LoKr"},
    "loraplus_lr_ratio": _LORAPLUS_TYPES,
    "loraplus_unet_lr_ratio": _LORAPLUS_TYPES,
    "loraplus_text_encoder_lr_ratio": _LORAPLUS_TYPES,
}.items()}


def shown_for(name: str, lora_type: str) -> bool:
    """Whether the page shows field `name` for `lora_type` (kohya_ss's rules; unknown types show everything)."""
    types = TYPE_FIELDS.get(name)
    return types is None or lora_type not in LORA_TYPES or lora_type in types


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    info: str
    kind: str
    section: str
    choices: Sequence[Any] | None = None
    lines: int = 1


def _f(name, label, info, kind, section, choices=None, lines=1) -> FieldSpec:
    return FieldSpec(name, label, info, kind, section, tuple(choices) if choices is not None else None, lines)


FIELD_SPECS: list[FieldSpec] = [
    # ---- source model
    _f("model_list", "Model Quick Pick", "a known base model sets the model-type boxes; 'custom' for your own", "choice",
       "model", QUICK_PICK_CHOICES),
    _f("pretrained_model_name_or_path", "Pretrained model name or path",
       ".safetensors/.ckpt file, diffusers folder, or a Hugging Face id already in the local cache", "model", "model"),
    _f("v2", "v2", "SD 2.x model", "bool", "model"),
    _f("v_parameterization", "v_param", "v-prediction model (SD2.x 768-v)", "bool", "model"),
    _f("sdxl", "SDXL", "Stable Diffusion XL model", "bool", "model"),
    # ---- folders
    _f("train_data_dir", "Image folder (containing training images subfolders)",
       "the parent of '<repeats>_<trigger> <class>' folders, e.g. project/img", "path", "folders"),
    _f("reg_data_dir", "Regularisation folder (optional)", "parent of '1_<class>' folders of class images", "path",
       "folders"),
    _f("output_dir", "Output directory for trained model", "where the .safetensors files are written", "path",
       "folders"),
    _f("logging_dir", "Logging directory (optional)", "TensorBoard logs go here", "path", "folders"),
    _f("output_name", "Trained Model output name", "file name without extension", "text", "folders"),
    _f("training_comment", "Training comment", "stored in the LoRA's metadata (ss_training_comment)", "text", "folders"),
    _f("dataset_config", "Dataset config file (optional)", "a .toml dataset config instead of folders", "file",
       "folders"),
    _f("save_model_as", "Save trained model as", "", "choice", "folders", ("safetensors", "ckpt")),
    _f("save_precision", "Save precision", "precision of the saved LoRA weights", "choice", "folders",
       SAVE_PRECISIONS),
    # ---- metadata
    _f("metadata_title", "Metadata title", "modelspec.title", "text", "metadata"),
    _f("metadata_author", "Metadata author", "modelspec.author", "text", "metadata"),
    _f("metadata_description", "Metadata description", "modelspec.description", "textarea", "metadata", lines=2),
    _f("metadata_license", "Metadata license", "modelspec.license", "text", "metadata"),
    _f("metadata_tags", "Metadata tags", "comma-separated", "text", "metadata"),
    # ---- accelerate
    _f("mixed_precision", "Mixed precision", "fp16/bf16 on GPUs; 'no' on CPUs", "choice", "accelerate",
       (*PRECISIONS, "fp8")),
    _f("num_processes", "Number of processes", "", "int", "accelerate"),
    _f("num_machines", "Number of machines", "", "int", "accelerate"),
    _f("num_cpu_threads_per_process", "Number of CPU threads per core", "", "int", "accelerate"),
    _f("multi_gpu", "Multi GPU", "", "bool", "accelerate"),
    _f("gpu_ids", "GPU IDs", "e.g. 0,1", "text", "accelerate"),
    _f("main_process_port", "Main process port", "0 = default", "int", "accelerate"),
    # ---- basic
    _f("LoRA_type", "LoRA type", "Standard; Kohya LoCon also trains the conv layers; LyCORIS types train with the "
       "lycoris-lora library (LoHa, LoKr, …)", "choice", "basic", LORA_TYPES),
    _f("LyCORIS_preset", "LyCORIS Preset", "which layers train: full (kohya_ss default), attn-mlp, …, or the path of a "
       ".toml preset", "choice", "basic", LYCORIS_PRESETS),
    _f("network_weights", "Network weights", "start from an existing LoRA file (optional)", "file", "basic"),
    _f("dim_from_weights", "DIM from weights", "take the rank from the network weights file", "bool", "basic"),
    _f("train_batch_size", "Train batch size", "images per step", "int", "basic"),
    _f("epoch", "Epoch", "passes over the dataset", "int", "basic"),
    _f("max_train_epochs", "Max train epoch", "overrides Epoch when > 0", "int", "basic"),
    _f("max_train_steps", "Max train steps", "overrides the epoch count when > 0", "int", "basic"),
    _f("save_every_n_epochs", "Save every N epochs", "0 = final file only", "int", "basic"),
    _f("caption_extension", "Caption file extension", "captions are <image name><extension>", "choice", "basic",
       ("", ".cap", ".caption", ".txt")),
    _f("seed", "Seed", "0 = random", "int", "basic"),
    _f("cache_latents", "Cache latents", "encode images once (faster)", "bool", "basic"),
    _f("cache_latents_to_disk", "Cache latents to disk", "keep them between runs", "bool", "basic"),
    _f("lr_scheduler", "LR Scheduler", "", "choice", "basic", SCHEDULERS),
    _f("lr_scheduler_type", "LR Scheduler type", "custom scheduler class (optional)", "text", "basic"),
    _f("optimizer", "Optimizer", "AdamW8bit needs a CUDA GPU; AdamW works everywhere", "choice", "basic", OPTIMIZERS),
    _f("max_grad_norm", "Max grad norm", "0 disables clipping", "float", "basic"),
    _f("lr_scheduler_args", "LR scheduler extra arguments", "key=value key=value", "text", "basic"),
    _f("optimizer_args", "Optimizer extra arguments", "key=value key=value, e.g. weight_decay=0.01", "text", "basic"),
    _f("learning_rate", "Learning rate", "1e-4 typical; ~1.0 for Prodigy/DAdapt", "float", "basic"),
    _f("lr_warmup", "LR warmup (% of total steps)", "", "int", "basic"),
    _f("lr_warmup_steps", "LR warmup steps (override)", "overrides the % when > 0", "int", "basic"),
    _f("lr_scheduler_num_cycles", "LR # cycles", "cosine_with_restarts", "int", "basic"),
    _f("lr_scheduler_power", "LR power", "polynomial", "float", "basic"),
    _f("max_resolution", "Max resolution", "W,H: 512,512 for SD1.5, 1024,1024 for SDXL", "text", "basic"),
    _f("stop_text_encoder_training", "Stop TE (% of total steps)", "ignored for LoRA", "int", "basic"),
    _f("enable_bucket", "Enable buckets", "group images by aspect ratio", "bool", "basic"),
    _f("min_bucket_reso", "Minimum bucket resolution", "", "int", "basic"),
    _f("max_bucket_reso", "Maximum bucket resolution", "", "int", "basic"),
    _f("text_encoder_lr", "Text Encoder learning rate", "0 = train the UNet only", "float", "basic"),
    _f("unet_lr", "Unet learning rate", "0 = train the text encoder only", "float", "basic"),
    _f("loraplus_lr_ratio", "LoRA+ learning rate ratio", "0 = off; 16 is typical", "float", "basic"),
    _f("loraplus_unet_lr_ratio", "LoRA+ Unet learning rate ratio", "", "float", "basic"),
    _f("loraplus_text_encoder_lr_ratio", "LoRA+ Text Encoder learning rate ratio", "", "float", "basic"),
    _f("network_dim", "Network Rank (Dimension)", "1–512; 8–32 for most subjects", "int", "basic"),
    _f("network_alpha", "Network Alpha", "scale = alpha / rank; 1 or the rank", "float", "basic"),
    _f("conv_dim", "Convolution Rank (Dimension)", "rank of the 3×3 convolutions (LoCon-like types)", "int", "basic"),
    _f("conv_alpha", "Convolution Alpha", "scale = alpha / conv rank", "float", "basic"),
    _f("factor", "LoKr factor", "-1 = automatic; the Kronecker factor of the smaller block", "int", "basic"),
    _f("bypass_mode", "Bypass mode", "adds the change in the forward pass instead of rebuilding the weight "
       "(for 8-bit/4-bit base layers)", "bool", "basic"),
    _f("dora_wd", "DoRA Weight Decompose", "DoRA: trains the weights' magnitude and direction apart (dora_scale)",
       "bool", "basic"),
    _f("use_cp", "Use CP decomposition", "LoKr: Tucker/CP core for 3×3 convs (for LoKr it decides over 'Use "
       "Tucker')", "bool", "basic"),
    _f("use_tucker", "Use Tucker decomposition", "3×3 convs through a small Tucker core (lora_mid, hada_t*, lokr_t*)",
       "bool", "basic"),
    _f("use_scalar", "Use Scalar", "trains an extra scalar in front of the weight change (other initialisation)",
       "bool", "basic"),
    _f("rank_dropout_scale", "Rank Dropout Scale", "kohya_ss passes it; lycoris' kohya wrapper does not use it", "bool",
       "basic"),
    _f("constrain", "Constrain OFT", "limit on the OFT blocks' norm; 0 = none", "float", "basic"),
    _f("rescaled", "Rescaled OFT", "an extra trained scale per output of the OFT blocks", "bool", "basic"),
    _f("train_norm", "Train Norm", "also trains the normalisation layers of the chosen blocks (w_norm, b_norm)",
       "bool", "basic"),
    _f("decompose_both", "LoKr decompose both", "also factor the smaller Kronecker block into two", "bool", "basic"),
    _f("train_on_input", "iA3 train on input", "kohya_ss passes it; lycoris' kohya wrapper does not use it (iA3 "
       "scales the layers' outputs)", "bool", "basic"),
    _f("unit", "DyLoRA Unit / Block size", "the trained rank can later be cut at multiples of this", "int", "basic"),
    _f("scale_weight_norms", "Scale weight norms", "0 = off; 1 recommended", "float", "basic"),
    _f("network_dropout", "Network dropout", "0–0.5", "float", "basic"),
    _f("rank_dropout", "Rank dropout", "", "float", "basic"),
    _f("module_dropout", "Module dropout", "", "float", "basic"),
    # ---- SDXL
    _f("sdxl_cache_text_encoder_outputs", "Cache text encoder outputs", "needs UNet-only training", "bool", "sdxl"),
    _f("sdxl_no_half_vae", "No half VAE", "run the SDXL VAE in fp32 (avoids NaNs)", "bool", "sdxl"),
    # ---- advanced
    _f("no_token_padding", "No token padding", "", "bool", "advanced"),
    _f("gradient_accumulation_steps", "Gradient accumulate steps", "", "int", "advanced"),
    _f("weighted_captions", "Weighted captions", "(word:1.2) syntax in captions", "bool", "advanced"),
    _f("prior_loss_weight", "Prior loss weight", "weight of regularization images", "float", "advanced"),
    _f("vae", "VAE (optional)", "a separate VAE file or folder", "file", "advanced"),
    _f("additional_parameters", "Additional parameters", "extra engine arguments", "text", "advanced"),
    _f("keep_tokens", "Keep n tokens", "0–32; tokens kept first when shuffling", "int", "advanced"),
    _f("keep_tokens_separator", "Keep tokens separator", "e.g. '|||': 'fixed ||| shuffled ||| fixed suffix'", "text",
       "advanced"),
    _f("caption_tag_dropout_rate", "Rate of tag dropout", "0–1; each shuffled tag is dropped with this chance",
       "float", "advanced"),
    _f("clip_skip", "Clip skip", "0–12; 2 for anime SD1 models", "int", "advanced"),
    _f("max_token_length", "Max Token Length", "", "choice", "advanced", (75, 150, 225)),
    _f("loss_type", "Loss type", "", "choice", "advanced", ("l2", "huber", "smooth_l1")),
    _f("huber_schedule", "Huber schedule", "", "choice", "advanced", ("constant", "exponential", "snr")),
    _f("huber_c", "Huber C", "", "float", "advanced"),
    _f("huber_scale", "Huber scale", "", "float", "advanced"),
    _f("save_every_n_steps", "Save every N steps", "0 = off", "int", "advanced"),
    _f("save_last_n_steps", "Save last N steps", "keep only checkpoints of the last N steps", "int", "advanced"),
    _f("save_last_n_steps_state", "Save last N steps state", "", "int", "advanced"),
    _f("save_last_n_epochs", "Save last N epochs", "", "int", "advanced"),
    _f("save_last_n_epochs_state", "Save last N epochs state", "", "int", "advanced"),
    _f("fp8_base", "fp8 base training (experimental)", "", "bool", "advanced"),
    _f("full_fp16", "Full fp16 training (experimental)", "", "bool", "advanced"),
    _f("full_bf16", "Full bf16 training (experimental)", "", "bool", "advanced"),
    _f("gradient_checkpointing", "Gradient checkpointing", "less memory, slower", "bool", "advanced"),
    _f("channels_last", "Channels-last UNet", "another memory layout for the convolutions; measure it on your GPU (benchmarks/bench_full.py)",
       "bool", "advanced"),
    _f("dynamo_backend", "Dynamo backend", "torch.compile the UNet ('inductor'); the first steps are slow", "choice",
       "accelerate", ("no", "inductor", "eager", "aot_eager", "cudagraphs")),
    _f("persistent_data_loader_workers", "Persistent data loader", "", "bool", "advanced"),
    _f("mem_eff_attn", "Memory efficient attention", "", "bool", "advanced"),
    _f("xformers", "CrossAttention", "", "choice", "advanced", ("none", "sdpa", "xformers")),
    _f("shuffle_caption", "Shuffle caption", "", "bool", "advanced"),
    _f("color_aug", "Color augmentation", "turns latent caching off", "bool", "advanced"),
    _f("flip_aug", "Flip augmentation", "", "bool", "advanced"),
    _f("masked_loss", "Masked loss", "", "bool", "advanced"),
    _f("min_snr_gamma", "Min SNR gamma", "0 = off; 5 recommended", "float", "advanced"),
    _f("debiased_estimation_loss", "Debiased Estimation loss", "", "bool", "advanced"),
    _f("scale_v_pred_loss_like_noise_pred", "Scale v prediction loss", "v-pred models only", "bool", "advanced"),
    _f("v_pred_like_loss", "V Pred like loss", "", "float", "advanced"),
    _f("min_timestep", "Min Timestep", "0–999", "int", "advanced"),
    _f("max_timestep", "Max Timestep", "1–1000", "int", "advanced"),
    _f("noise_offset_type", "Noise offset type", "", "choice", "advanced", ("Original", "Multires")),
    _f("noise_offset", "Noise offset", "0 = off; ~0.05 for darker/brighter images", "float", "advanced"),
    _f("noise_offset_random_strength", "Noise offset random strength", "", "bool", "advanced"),
    _f("adaptive_noise_scale", "Adaptive noise scale", "", "float", "advanced"),
    _f("multires_noise_iterations", "Multires noise iterations", "", "int", "advanced"),
    _f("multires_noise_discount", "Multires noise discount", "", "float", "advanced"),
    _f("ip_noise_gamma", "IP noise gamma", "0 = off; 0.1 recommended", "float", "advanced"),
    _f("ip_noise_gamma_random_strength", "IP noise gamma random strength", "", "bool", "advanced"),
    _f("bucket_no_upscale", "Don't upscale bucket resolution", "", "bool", "advanced"),
    _f("bucket_reso_steps", "Bucket resolution steps", "64", "int", "advanced"),
    _f("random_crop", "Random crop instead of center crop", "", "bool", "advanced"),
    _f("caption_dropout_rate", "Rate of caption dropout", "0–1", "float", "advanced"),
    _f("caption_dropout_every_n_epochs", "Dropout caption every n epochs", "", "int", "advanced"),
    _f("vae_batch_size", "VAE batch size", "0 = default", "int", "advanced"),
    _f("save_state", "Save training state", "to resume later", "bool", "advanced"),
    _f("save_state_on_train_end", "Save training state at end of training", "", "bool", "advanced"),
    _f("resume", "Resume from saved training state", "a '<name>-…-state' folder", "path", "advanced"),
    _f("max_data_loader_n_workers", "Max num workers for DataLoader", "0 = load in the main process", "int",
       "advanced"),
    _f("log_with", "Logging", "", "choice", "advanced", ("", "tensorboard", "wandb", "all")),
    _f("wandb_api_key", "WANDB API Key", "", "text", "advanced"),
    _f("wandb_run_name", "WANDB run name", "", "text", "advanced"),
    # ---- samples
    _f("sample_every_n_steps", "Sample every n steps", "0 = off", "int", "samples"),
    _f("sample_every_n_epochs", "Sample every n epochs", "0 = off; wins over steps", "int", "samples"),
    _f("sample_sampler", "Sample sampler", "", "choice", "samples", SAMPLERS),
    _f("sample_at_first", "Sample at first", "also before the first step (the base model's look)", "bool", "samples"),
    _f("sample_prompts", "Sample prompts", "one per line, e.g. 'zkz woman --w 512 --h 512 --s 28 --d 1'",
       "textarea", "samples", lines=4),
]

SPEC_BY_NAME: dict[str, FieldSpec] = {s.name: s for s in FIELD_SPECS}
FIELD_ORDER: list[str] = [s.name for s in FIELD_SPECS]
CONFIG_FIELDS: list[str] = [f.name for f in dataclasses.fields(TrainingConfig) if f.name != "extra"]


def specs_in(section: str) -> list[FieldSpec]:
    return [s for s in FIELD_SPECS if s.section == section]


def label_of(name: str | None) -> str:
    spec = SPEC_BY_NAME.get(name or "")
    return spec.label if spec else (name or "")


def section_of(name: str | None) -> str | None:
    spec = SPEC_BY_NAME.get(name or "")
    return spec.section if spec else None


def to_values(cfg: TrainingConfig) -> list[Any]:
    """Widget values in FIELD_ORDER."""
    return [getattr(cfg, name) for name in FIELD_ORDER]


NUMBER_KINDS = ("int", "float")
EMPTY_NUMBER = "enter a number"  # the placeholder of an empty number box (the page marks the box with it)


def is_blank(value: Any) -> bool:
    """An emptied (or not-a-number) number box: the browser sends null."""
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def blank_numbers(values: Sequence[Any]) -> list[Problem]:
    """One problem per number box left empty (values in FIELD_ORDER): a blank is never replaced by a default."""
    out = []
    for spec, value in zip(FIELD_SPECS, values):
        if spec.kind in NUMBER_KINDS and is_blank(value):
            default = getattr(DEFAULTS, spec.name)
            out.append(Problem("the box is empty (or not a number)", field=spec.name,
                               fix=f"enter a number, e.g. {default:g} (the default)"))
    return out


def from_values(values: Sequence[Any], extra: dict | None = None, *, strict: bool = True) -> TrainingConfig:
    """A TrainingConfig from widget values in FIELD_ORDER, coerced like a loaded file; `extra` (unknown keys of
    the loaded file) is carried along. An empty number box is a UserError naming it (`strict`, the default), or
    keeps the default (`strict=False`: the base a loaded file is merged over)."""
    if len(values) != len(FIELD_ORDER):
        raise ValueError(f"expected {len(FIELD_ORDER)} values, got {len(values)}")
    blank = blank_numbers(values) if strict else []
    if blank:
        p = blank[0]
        more = f" (and {len(blank) - 1} more empty number boxes)" if len(blank) > 1 else ""
        raise UserError(f"{label_of(p.field)}: {p.message}{more}", field=p.field, fix=p.fix)
    base = TrainingConfig()
    base.extra = dict(extra or {})
    cfg, _ = merge_config(dict(zip(FIELD_ORDER, values)), base)
    return cfg
