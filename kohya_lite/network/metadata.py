"""LoRA file metadata: sd-scripts' `ss_*` training record and SAI `modelspec.*` (lora-file-format §8, §9).

Every value is a string, written the way sd-scripts writes it: `str()` of the Python value ("True",
"None", "0.0001", "(512, 512)"), JSON text for the dataset/tag/bucket fields. `ss_metadata` maps a
kohya_ss `TrainingConfig` through the GUI's translation rules (zero-valued optional numbers become
None, …); the engine passes what only it knows (session, steps, image counts, tag frequency, …) as
keyword arguments named like the `ss_` keys without the prefix.
"""

from __future__ import annotations

import datetime
import json
import random
import time
from pathlib import Path
from typing import Any, Mapping

from kohya_lite import __version__
from kohya_lite.config import TrainingConfig, parse_resolution
from kohya_lite.models import families

NETWORK_MODULE = "networks.lora"
SAI_MODEL_SPEC = "1.0.1"
# sd-scripts' SS_METADATA_MINIMUM_KEYS (written even with --no_metadata)
MINIMUM_KEYS = ("ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                "ss_network_args")
JSON_KEYS = ("ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency", "ss_bucket_info", "ss_datasets",
             "ss_network_args")
# Keys only written in folder ("DreamBooth") mode; dataset-config mode writes ss_datasets instead.
FOLDER_MODE_KEYS = ("ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_color_aug", "ss_flip_aug",
                    "ss_random_crop", "ss_shuffle_caption", "ss_keep_tokens", "ss_enable_bucket",
                    "ss_bucket_no_upscale", "ss_min_bucket_reso", "ss_max_bucket_reso", "ss_dataset_dirs",
                    "ss_reg_dataset_dirs", "ss_tag_frequency", "ss_bucket_info")
# Filled in by the engine when it knows them; written only when given.
OPTIONAL_RUNTIME_KEYS = ("ss_sd_model_hash", "ss_new_sd_model_hash", "ss_vae_name", "ss_vae_hash", "ss_new_vae_hash",
                         "ss_steps", "ss_epoch", "ss_training_finished_at", "ss_datasets")


def _opt(value: Any) -> Any:
    """kohya's 'zero means unset' rule: 0, 0.0, '' and False become None."""
    return value if value else None


def _compact(value: Any) -> str:
    """Number formatting of `network_args` values as the GUI writes them: 16, 8, 0.1."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def network_module(cfg: TrainingConfig) -> str:
    """sd-scripts' `network_module` for the config's LoRA type (`ss_network_module`)."""
    from kohya_lite.network import lycoris

    if lycoris.is_lycoris_type(cfg.LoRA_type):
        return lycoris.NETWORK_MODULE
    return {"LoRA-FA": "networks.lora_fa", "Kohya DyLoRA": "networks.dylora"}.get(cfg.LoRA_type, NETWORK_MODULE)


def network_args(cfg: TrainingConfig) -> dict[str, str]:
    """The `k=v` network args kohya_ss passes for the config's LoRA type, values as strings: conv rank for Kohya
    LoCon (and DyLoRA, with its unit), the dropouts and LoRA+ ratios when set; LyCORIS: `lycoris.network_args`."""
    from kohya_lite.network import lycoris

    if lycoris.is_lycoris_type(cfg.LoRA_type):
        return lycoris.network_args(cfg)
    args: dict[str, str] = {}
    if cfg.LoRA_type == "Kohya LoCon" and cfg.conv_dim:
        args["conv_dim"] = _compact(cfg.conv_dim)
        args["conv_alpha"] = _compact(cfg.conv_alpha)
    if cfg.LoRA_type == "Kohya DyLoRA":
        for key in ("conv_dim", "conv_alpha"):
            if getattr(cfg, key):
                args[key] = _compact(getattr(cfg, key))
    keys = ["rank_dropout", "module_dropout"] + (["unit"] if cfg.LoRA_type == "Kohya DyLoRA" else [])
    for key in keys + ["loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"]:
        value = getattr(cfg, key)
        if value:
            args[key] = _compact(value)
    return args


def bucket_reso_range(cfg: TrainingConfig) -> tuple[int | None, int | None]:
    """min/max bucket resolution as sd-scripts records them (rounded to the step; None without buckets)."""
    if not cfg.enable_bucket:
        return None, None
    steps = cfg.bucket_reso_steps or 64
    lo, hi = cfg.min_bucket_reso, cfg.max_bucket_reso
    if lo % steps:
        lo -= lo % steps
    if hi % steps:
        hi += steps - hi % steps
    return lo, hi


def _model_name(path: str) -> str:
    p = Path(path)
    return p.name if path and p.exists() else path


def _noise_fields(cfg: TrainingConfig) -> dict[str, Any]:
    multires = cfg.noise_offset_type == "Multires"
    return {
        "ss_noise_offset": None if multires else _opt(cfg.noise_offset),
        "ss_adaptive_noise_scale": None if multires else _opt(cfg.adaptive_noise_scale),
        "ss_multires_noise_iterations": _opt(cfg.multires_noise_iterations) if multires else None,
        "ss_multires_noise_discount": (cfg.multires_noise_discount or 0.3) if multires else 0.3,
    }


def ss_metadata(cfg: TrainingConfig, **runtime: Any) -> dict[str, str]:
    """The full sd-scripts `ss_*` set for a LoRA trained with `cfg`, all values strings.

    Runtime values are passed by key without the `ss_` prefix, e.g. `session_id=…, training_started_at=…,
    steps=…, epoch=…, num_train_images=…, num_reg_images=…, num_batches_per_epoch=…, num_epochs=…,
    max_train_steps=…, lr_warmup_steps=…, optimizer="torch.optim.adamw.AdamW(weight_decay=0.01)", seed=…,
    dataset_dirs={…}, reg_dataset_dirs={…}, tag_frequency={…}, bucket_info={…}, sd_model_name=…,
    sd_model_hash=…, new_sd_model_hash=…, base_model_version=…, v2=…`. Any `ss_` field can be overridden
    that way; JSON fields accept dicts. Unknown keys raise TypeError.
    """
    lr_te = cfg.text_encoder_lr if cfg.text_encoder_lr else None
    min_reso, max_reso = bucket_reso_range(cfg)
    optimizer = cfg.optimizer + (f"({','.join(cfg.optimizer_args.split())})" if cfg.optimizer_args.strip() else "")
    meta: dict[str, Any] = {
        "ss_session_id": random.randint(0, 2**32),
        "ss_training_started_at": time.time(),
        "ss_output_name": cfg.output_name or "last",
        "ss_learning_rate": cfg.learning_rate,
        "ss_text_encoder_lr": lr_te,
        "ss_unet_lr": _opt(cfg.unet_lr),
        "ss_num_train_images": None,
        "ss_num_validation_images": 0,
        "ss_num_reg_images": 0,
        "ss_num_batches_per_epoch": None,
        "ss_num_epochs": _opt(cfg.max_train_epochs),
        "ss_gradient_checkpointing": bool(cfg.gradient_checkpointing),
        "ss_gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "ss_max_train_steps": _opt(cfg.max_train_steps),
        "ss_lr_warmup_steps": cfg.lr_warmup_steps,
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_network_module": network_module(cfg),
        "ss_network_dim": cfg.network_dim,
        "ss_network_alpha": float(cfg.network_alpha),
        "ss_network_dropout": _opt(cfg.network_dropout),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_full_fp16": bool(cfg.full_fp16),
        "ss_v2": bool(cfg.v2) and not cfg.sdxl,
        "ss_base_model_version": families.base_model_version(cfg.family, cfg.v_parameterization),
        "ss_clip_skip": _opt(cfg.clip_skip),
        "ss_max_token_length": _opt(cfg.max_token_length),
        "ss_cache_latents": bool(cfg.cache_latents) and not (cfg.color_aug or cfg.random_crop),
        "ss_seed": _opt(cfg.seed),
        "ss_lowram": False,
        **_noise_fields(cfg),
        "ss_zero_terminal_snr": bool(cfg.extra.get("zero_terminal_snr", False)),
        "ss_training_comment": cfg.training_comment or None,
        "ss_sd_scripts_commit_hash": "(unknown)",
        "ss_optimizer": optimizer,
        "ss_max_grad_norm": cfg.max_grad_norm,
        "ss_caption_dropout_rate": float(cfg.caption_dropout_rate),
        "ss_caption_dropout_every_n_epochs": cfg.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": float(cfg.extra.get("caption_tag_dropout_rate", 0.0) or 0.0),
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": cfg.prior_loss_weight,
        "ss_min_snr_gamma": _opt(cfg.min_snr_gamma),
        "ss_scale_weight_norms": _opt(cfg.scale_weight_norms),
        "ss_ip_noise_gamma": _opt(cfg.ip_noise_gamma),
        "ss_debiased_estimation": bool(cfg.debiased_estimation_loss),
        "ss_noise_offset_random_strength": bool(cfg.noise_offset_random_strength),
        "ss_ip_noise_gamma_random_strength": bool(cfg.ip_noise_gamma_random_strength),
        "ss_loss_type": cfg.loss_type,
        "ss_huber_schedule": cfg.huber_schedule,
        "ss_huber_scale": cfg.huber_scale,
        "ss_huber_c": cfg.huber_c,
        "ss_fp8_base": bool(cfg.fp8_base),
        "ss_fp8_base_unet": False,
        "ss_validation_seed": None,
        "ss_validation_split": 0.0,
        "ss_max_validation_steps": None,
        "ss_validate_every_n_epochs": None,
        "ss_validate_every_n_steps": None,
        "ss_resize_interpolation": None,
        # folder mode
        "ss_batch_size_per_device": cfg.train_batch_size,
        "ss_total_batch_size": cfg.train_batch_size * max(cfg.num_processes, 1) * max(cfg.gradient_accumulation_steps, 1),
        "ss_resolution": parse_resolution(cfg.max_resolution),
        "ss_color_aug": bool(cfg.color_aug),
        "ss_flip_aug": bool(cfg.flip_aug),
        "ss_random_crop": bool(cfg.random_crop),
        "ss_shuffle_caption": bool(cfg.shuffle_caption),
        "ss_enable_bucket": bool(cfg.enable_bucket),
        "ss_bucket_no_upscale": bool(cfg.bucket_no_upscale) if cfg.enable_bucket else False,
        "ss_min_bucket_reso": min_reso,
        "ss_max_bucket_reso": max_reso,
        "ss_keep_tokens": cfg.keep_tokens,
        "ss_dataset_dirs": {},
        "ss_reg_dataset_dirs": {},
        "ss_tag_frequency": {},
        "ss_bucket_info": None,
        "ss_sd_model_name": _model_name(cfg.pretrained_model_name_or_path),
    }
    if cfg.vae:
        meta["ss_vae_name"] = _model_name(cfg.vae)
    args = network_args(cfg)
    if args:
        meta["ss_network_args"] = args

    known = set(meta) | set(OPTIONAL_RUNTIME_KEYS) | {"ss_network_args"}
    for key, value in runtime.items():
        full = key if key.startswith("ss_") else f"ss_{key}"
        if full not in known:
            raise TypeError(f"ss_metadata() got an unknown runtime value {key!r}")
        meta[full] = value
    if "ss_datasets" in meta:  # dataset-config mode: per-dataset details live in ss_datasets
        for key in FOLDER_MODE_KEYS:
            if key not in ("ss_dataset_dirs", "ss_tag_frequency"):
                meta.pop(key, None)
    return {k: _to_str(k, v) for k, v in meta.items()}


def _to_str(key: str, value: Any) -> str:
    if key in JSON_KEYS and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def modelspec_metadata(*, family: str, v_prediction: bool = False, title: str = "LoRA",
                       resolution: int | tuple[int, int] | str | None = None, timestamp: float | None = None,
                       author: str = "", description: str = "", license: str = "", tags: str = "",
                       clip_skip: int | None = None, timestep_range: tuple[int, int] | None = None,
                       trigger_phrase: str = "", lora: bool = True) -> dict[str, str]:
    """SAI ModelSpec keys as sd-scripts' `sai_model_spec.build_metadata` writes them for a LoRA."""
    if resolution is None:
        resolution = families.default_resolution(family, v_prediction)
    if isinstance(resolution, str):
        resolution = parse_resolution(resolution)
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    ts = int(time.time() if timestamp is None else timestamp)
    meta = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC,
        "modelspec.architecture": families.modelspec_architecture(family, v_prediction, "lora" if lora else None),
        "modelspec.implementation": families.modelspec_implementation(family, lora=lora),
        "modelspec.implementation_version": f"kohya-lite/{__version__}",
        "modelspec.title": title,
        "modelspec.date": datetime.datetime.fromtimestamp(ts).isoformat(),
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
    }
    for key, value in (("author", author), ("description", description), ("license", license), ("tags", tags),
                       ("trigger_phrase", trigger_phrase)):
        if value:
            meta[f"modelspec.{key}"] = str(value)
    if timestep_range is not None:
        meta["modelspec.timestep_range"] = f"{timestep_range[0]},{timestep_range[1]}"
    if clip_skip:
        meta["modelspec.encoder_layer"] = str(clip_skip)
    return meta


def modelspec_from_config(cfg: TrainingConfig, *, family: str | None = None, v_prediction: bool | None = None,
                          timestamp: float | None = None, trigger_phrase: str = "") -> dict[str, str]:
    """`modelspec_metadata` with the values a kohya_ss config holds (title, author, …, resolution)."""
    timesteps = None
    if cfg.min_timestep > 0 or (cfg.max_timestep and cfg.max_timestep < 1000):
        timesteps = (cfg.min_timestep, cfg.max_timestep or 1000)
    return modelspec_metadata(
        family=family or cfg.family,
        v_prediction=cfg.v_parameterization if v_prediction is None else v_prediction,
        title=cfg.metadata_title or cfg.output_name or "last", resolution=cfg.max_resolution, timestamp=timestamp,
        author=cfg.metadata_author, description=cfg.metadata_description, license=cfg.metadata_license,
        tags=cfg.metadata_tags, clip_skip=_opt(cfg.clip_skip), timestep_range=timesteps, trigger_phrase=trigger_phrase)


def minimum_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """What sd-scripts keeps with --no_metadata: the minimum `ss_*` keys plus every `modelspec.*`."""
    return {k: v for k, v in metadata.items() if k in MINIMUM_KEYS or k.startswith("modelspec.")}


def lora_metadata(cfg: TrainingConfig, *, family: str | None = None, v_prediction: bool | None = None,
                  trigger_phrase: str = "", **runtime: Any) -> dict[str, str]:
    """`ss_metadata` + `modelspec_from_config` for one save; family/v-prediction as actually loaded win."""
    fam = family or cfg.family
    vp = cfg.v_parameterization if v_prediction is None else v_prediction
    runtime.setdefault("base_model_version", families.base_model_version(fam, vp))
    runtime.setdefault("v2", fam == "sd2")
    meta = ss_metadata(cfg, **runtime)
    meta.update(modelspec_from_config(cfg, family=fam, v_prediction=vp, trigger_phrase=trigger_phrase))
    return meta


# ---- the engine's view: a whole save's metadata from the objects it holds ---------------------------------

def _repeats_of(folder: str) -> int:
    head, _, rest = folder.partition("_")
    return int(head) if head.isdigit() and rest else 1


def dataset_metadata(data: Any, *, enable_bucket: bool = True) -> dict[str, Any]:
    """`ss_*` dataset fields from a training set with `items` (each with `subset`, `caption`, `is_reg`), `samples`
    (item index per sample), `bucket_counts()` and `mean_ar_error()` (duck-typed: kohya_lite.dataset.loader)."""
    items = list(getattr(data, "items", []) or [])
    samples = list(getattr(data, "samples", []) or [])
    dirs: dict[str, dict] = {}
    reg_dirs: dict[str, dict] = {}
    tags: dict[str, dict[str, int]] = {}
    for it in items:
        target = reg_dirs if it.is_reg else dirs
        entry = target.setdefault(it.subset, {"n_repeats": _repeats_of(it.subset), "img_count": 0})
        entry["img_count"] += 1
        if not it.is_reg:
            counts = tags.setdefault(it.subset, {})
            for tag in str(it.caption).split(","):
                tag = tag.strip().lower()
                if tag:
                    counts[tag] = counts.get(tag, 0) + 1
    bucket_info = None
    if enable_bucket and hasattr(data, "bucket_counts"):
        buckets = {str(i): {"resolution": list(reso), "count": count}
                   for i, (reso, count) in enumerate(data.bucket_counts().items())}
        bucket_info = {"buckets": buckets, "mean_img_ar_error": float(data.mean_ar_error())}
    return {
        "num_train_images": sum(1 for i in samples if not items[i].is_reg),
        "num_reg_images": sum(1 for i in samples if items[i].is_reg),
        "dataset_dirs": dirs, "reg_dataset_dirs": reg_dirs, "tag_frequency": tags, "bucket_info": bucket_info,
    }


def base_model_metadata(model: Any) -> dict[str, Any]:
    """ss_sd_model_name/hash and ss_vae_name from a LoadedModel (sd-scripts: hashes only for local paths,
    "IsADirectory" for folders; the full sha256 is computed once and cached by the model)."""
    out: dict[str, Any] = {}
    name = getattr(model, "name", "") or Path(getattr(model, "path", "")).name
    out["sd_model_name"] = name
    source = getattr(model, "source", "")
    if source == "folder":
        out["sd_model_hash"] = out["new_sd_model_hash"] = "IsADirectory"
    elif source == "single_file":
        out["sd_model_hash"] = model.model_hash
        out["new_sd_model_hash"] = model.sha256()
    if getattr(model, "vae_name", ""):
        out["vae_name"] = model.vae_name
    return out


def training_metadata(cfg: TrainingConfig, *, model: Any, data: Any = None, session_id: int, started_at: float,
                      steps: int, epoch: int, num_epochs: int, total_steps: int, batches_per_epoch: int,
                      warmup: int, optimizer_desc: str, seed: int, precision: str | None = None,
                      trigger_phrase: str = "") -> dict[str, str]:
    """Everything written into one checkpoint: `ss_*` (with the values the engine actually used) plus
    `modelspec.*`. `model` is the LoadedModel, `data` the training set (see `dataset_metadata`)."""
    runtime: dict[str, Any] = {
        "session_id": session_id, "training_started_at": started_at, "training_finished_at": time.time(),
        "steps": steps, "epoch": epoch, "num_epochs": num_epochs, "max_train_steps": total_steps,
        "num_batches_per_epoch": batches_per_epoch, "lr_warmup_steps": warmup, "optimizer": optimizer_desc,
        "seed": seed, **base_model_metadata(model),
    }
    if precision is not None:
        runtime["mixed_precision"] = precision
    if data is not None:
        runtime.update(dataset_metadata(data, enable_bucket=cfg.enable_bucket))
    return lora_metadata(cfg, family=model.family, v_prediction=model.v_prediction, trigger_phrase=trigger_phrase,
                         **runtime)
