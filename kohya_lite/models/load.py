"""Load a base model offline: a diffusers folder, a single `.safetensors`/`.ckpt`, or a Hub id that is
already in the local Hugging Face cache. Nothing here touches the network.

- Folder: each component with `from_pretrained(..., local_files_only=True)`.
- Single file: the family is read from the keys (kohya_ss rules), then diffusers' `from_single_file`
  builds the pipeline with `config=` a local config folder: the folder the file sits in when it holds a
  `model_index.json` of the same family, else the shipped full-size config of that family. `.ckpt`
  files are only ever read with `torch.load(weights_only=True)`.
- Hub id: resolved with `snapshot_download(local_files_only=True)`; when it is not cached the
  UserError says how to get it.

What the model itself says (keys, folder layout, its scheduler) wins over the kohya flags; a
disagreement is kept in `LoadedModel.warnings`.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kohya_lite.errors import UserError
from kohya_lite.models import clip_bpe, families
from kohya_lite.models.detect import FIELD, HUB_ID, SINGLE_FILE_SUFFIXES, folder_family, read_checkpoint_keys, read_json

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    family: str  # 'sd1' | 'sd2' | 'sdxl'
    v_prediction: bool
    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    scheduler_config: dict  # DDPM training schedule (families.training_scheduler_config)
    source: str  # 'folder' | 'single_file' | 'hub_cache'
    path: str  # the local file or folder the weights came from
    detected: str  # one line for the user: what was found and how it is loaded
    name: str = ""  # what the user asked for (file name or Hub id): ss_sd_model_name
    warnings: list[str] = field(default_factory=list)
    sampling_scheduler_config: dict = field(default_factory=dict)  # the model's own (inference) scheduler
    config_dir: str | None = None  # config folder used for a single file
    model_hash: str | None = None  # A1111 legacy hash of the file ("IsADirectory" for folders)
    vae_name: str = ""
    _sha256: str | None = field(default=None, repr=False)

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def text_encoder(self):
        return self.text_encoders[0]

    @property
    def tokenizer(self):
        return self.tokenizers[0]

    @property
    def base_model_version(self) -> str:
        return families.base_model_version(self.family, self.v_prediction)

    def sha256(self) -> str | None:
        """Full sha256 of the model file (ss_new_sd_model_hash); computed once, on demand. None for folders."""
        if self._sha256 is None and Path(self.path).is_file():
            self._sha256 = sha256_file(self.path)
        return self._sha256

    def training_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.scheduler_config)

    def make_pipeline(self, scheduler=None):
        """The diffusers StableDiffusion(XL)Pipeline over these very components (no safety checker)."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        scheduler = scheduler or self._default_scheduler()
        if self.is_sdxl:
            return StableDiffusionXLPipeline(
                vae=self.vae, text_encoder=self.text_encoders[0], text_encoder_2=self.text_encoders[1],
                tokenizer=self.tokenizers[0], tokenizer_2=self.tokenizers[1], unet=self.unet, scheduler=scheduler,
                add_watermarker=False)
        return StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoders[0], tokenizer=self.tokenizers[0], unet=self.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def _default_scheduler(self):
        import diffusers

        cfg = dict(self.sampling_scheduler_config or {})
        cls = getattr(diffusers, str(cfg.pop("_class_name", "DDIMScheduler")), None) or diffusers.DDIMScheduler
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        cfg["prediction_type"] = families.prediction_type(self.v_prediction)
        if not cfg.get("beta_schedule"):
            cfg.update(families.TRAIN_SCHEDULE)
        return cls.from_config(cfg)


# ---- hashes ---------------------------------------------------------------------------------------

def legacy_model_hash(path: str | Path) -> str:
    """A1111's old 8-hex model hash: sha256 of 64 KiB at offset 1 MiB (sd-scripts `model_hash`)."""
    p = Path(path)
    if p.is_dir():
        return "IsADirectory"
    try:
        with open(p, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    except FileNotFoundError:
        return "NOFILE"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ---- reading single-file checkpoints ---------------------------------------------------------------

def load_torch_checkpoint(path: str | Path) -> dict:
    """A .ckpt/.pt state dict, read with weights_only=True (never runs pickled code)."""
    p = Path(path)
    try:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError and friends
        raise UserError(
            f"'{p.name}' cannot be read safely: it is not a plain weights file ({type(exc).__name__})",
            field=FIELD, file=str(p),
            fix="kohya-lite only reads .ckpt files as weights (no pickled code); convert it to .safetensors "
                "with a tool you trust, or download the .safetensors version") from None
    while isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(f"'{p.name}' does not contain a state dict", field=FIELD, file=str(p),
                        fix="choose a Stable Diffusion checkpoint (.safetensors or .ckpt)")
    return sd


@contextmanager
def _no_progress_bars():
    """diffusers/transformers draw a progress bar per component load; a model load is one step for us."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    restore = [(m.enable_progress_bar, m.is_progress_bar_enabled()) for m in (dlog, tlog)]
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        for enable, was in restore:
            if was:
                enable()


# ---- the entry point --------------------------------------------------------------------------------

def load_model(path: str | Path, *, v2: bool = False, v_parameterization: bool = False, sdxl: bool = False,
               vae_path: str | Path = "", dtype: torch.dtype = torch.float32, config_dir: str | Path | None = None,
               hf_cache_dir: str | Path | None = None) -> LoadedModel:
    """Load a base model from a diffusers folder, a single .safetensors/.ckpt file, or a cached Hub id.

    `v2`/`v_parameterization`/`sdxl` are kohya_ss's flags: used where the model cannot tell (v-prediction
    of a single file; family of an undetectable file); otherwise a disagreement becomes a warning.
    `config_dir` overrides the config folder used for a single file.
    """
    text = str(path or "").strip()
    if not text:
        raise UserError("no base model is chosen", field=FIELD,
                        fix="pick a quick-pick model, or a local .safetensors file or diffusers folder")
    with _no_progress_bars():
        model = _load(text, families.family_from_flags(v2=v2, sdxl=sdxl), v_parameterization, dtype, config_dir,
                      hf_cache_dir)
        if str(vae_path or "").strip():
            model.vae = _load_vae(str(vae_path).strip(), model.family, model.v_prediction, dtype, hf_cache_dir)
            model.vae_name = Path(str(vae_path)).name if Path(str(vae_path)).exists() else str(vae_path)
            model.detected += f"; VAE from {model.vae_name}"
    for w in model.warnings:
        log.warning(w)
    return model


def _load(text: str, flags_family: str, v_parameterization: bool, dtype: torch.dtype, config_dir,
          hf_cache_dir) -> LoadedModel:
    p = Path(text).expanduser()
    if p.is_dir():
        return _load_folder(p, flags_family, v_parameterization, dtype, source="folder", name=p.name)
    if p.is_file():
        if p.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise UserError(f"'{p.name}' is not a model checkpoint", field=FIELD, file=str(p),
                            fix="choose a .safetensors or .ckpt file, or a diffusers folder (with model_index.json)")
        return _load_single_file(p, flags_family, v_parameterization, dtype, config_dir)
    if HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        folder = _resolve_hub_cache(text, hf_cache_dir)
        return _load_folder(folder, flags_family, v_parameterization, dtype, source="hub_cache", name=text,
                            quick=families.quick_pick(text))
    raise UserError(f"the base model '{text}' does not exist", field=FIELD, file=text,
                    fix="check the path, or choose a .safetensors file, a diffusers folder or a quick-pick model")


# ---- folders ----------------------------------------------------------------------------------------

def _flag_warnings(detected_family: str, flags_family: str, how: str) -> list[str]:
    if detected_family == flags_family:
        return []
    want = families.flags_for(detected_family)
    return [f"the model is {families.info(detected_family).label} ({how}), but the config flags say "
            f"{families.info(flags_family).label}: loading it as {detected_family}; set v2={want['v2']}, "
            f"sdxl={want['sdxl']} to match"]


def _load_folder(folder: Path, flags_family: str, v_flag: bool, dtype: torch.dtype, *, source: str, name: str,
                 quick: families.QuickPick | None = None) -> LoadedModel:
    if not (folder / "model_index.json").is_file():
        hint = " (it looks like a single component)" if (folder / "config.json").is_file() else ""
        raise UserError(f"'{folder}' is not a diffusers model folder{hint}: it has no model_index.json", field=FIELD,
                        file=str(folder), fix="choose the folder that holds model_index.json, unet/ and vae/, "
                                              "or a single .safetensors checkpoint")
    family = folder_family(folder)
    warnings = _flag_warnings(family, flags_family, "from its folder layout")
    sched_path = folder / "scheduler" / "scheduler_config.json"
    sampling = read_json(sched_path) if sched_path.is_file() else {}
    v_pred = v_flag or (quick.v_prediction if quick else False)
    if sampling.get("prediction_type") == "v_prediction" and not v_pred:
        warnings.append("the model's scheduler says v_prediction but v_parameterization is off: training with "
                        "v-prediction; tick v_parameterization to match")
        v_pred = True
    try:
        comps = _folder_components(folder, family, dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load the model in '{folder}': {exc}", field=FIELD, file=str(folder),
                        fix="the folder is incomplete or damaged (missing weights?): download it again") from None
    where = "the local Hugging Face cache" if source == "hub_cache" else "a diffusers folder"
    detected = (f"{families.info(family).label}{' (v-prediction)' if v_pred else ''} from {where}: {name}")
    return LoadedModel(family=family, v_prediction=v_pred, scheduler_config=families.training_scheduler_config(v_pred),
                       source=source, path=str(folder), detected=detected, name=name, warnings=warnings,
                       sampling_scheduler_config=sampling, model_hash="IsADirectory", **comps)


def _from_pretrained(cls, folder: Path, subfolder: str, dtype: torch.dtype, transformers_model: bool = False):
    kw = {"dtype": dtype} if transformers_model else {"torch_dtype": dtype}
    try:
        return cls.from_pretrained(str(folder), subfolder=subfolder, local_files_only=True, **kw)
    except OSError:
        return cls.from_pretrained(str(folder), subfolder=subfolder, local_files_only=True, variant="fp16", **kw)


def _folder_tokenizer(folder: Path, sub: str, family: str, index: int):
    from transformers import CLIPTokenizer

    if (folder / sub).is_dir():
        return CLIPTokenizer.from_pretrained(str(folder), subfolder=sub, local_files_only=True)
    return clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for(family, index))


def _folder_components(folder: Path, family: str, dtype: torch.dtype) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    comps = {
        "unet": _from_pretrained(UNet2DConditionModel, folder, "unet", dtype),
        "vae": _from_pretrained(AutoencoderKL, folder, "vae", dtype),
        "text_encoders": [_from_pretrained(CLIPTextModel, folder, "text_encoder", dtype, True)],
        "tokenizers": [_folder_tokenizer(folder, "tokenizer", family, 0)],
    }
    if family == "sdxl":
        comps["text_encoders"].append(_from_pretrained(CLIPTextModelWithProjection, folder, "text_encoder_2", dtype, True))
        comps["tokenizers"].append(_folder_tokenizer(folder, "tokenizer_2", family, 1))
    return comps


# ---- single files -----------------------------------------------------------------------------------

def _config_folder_for(file: Path, family: str, v_pred: bool, explicit: str | Path | None) -> Path:
    """The config folder for a single file: explicit > the file's own folder (or `<stem>/`) when it is a
    diffusers folder of the same family > the shipped config."""
    if explicit:
        folder = Path(explicit)
        if not (folder / "model_index.json").is_file():
            raise UserError(f"config folder '{folder}' has no model_index.json", file=str(folder),
                            fix="point to a diffusers folder (configs are enough, weights are not needed)")
        return folder
    for candidate in (file.parent, file.with_suffix("")):
        if (candidate / "model_index.json").is_file():
            try:
                if folder_family(candidate) == family:
                    return candidate
            except UserError:
                continue
    return families.config_dir(family, v_pred)


def _load_single_file(file: Path, flags_family: str, v_flag: bool, dtype: torch.dtype,
                      config_dir: str | Path | None) -> LoadedModel:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    keys = read_checkpoint_keys(file)
    detected_family = families.detect_family_from_keys(keys)
    warnings: list[str] = []
    if detected_family is None:
        family = flags_family
        warnings.append(f"could not tell the model family from '{file.name}'; using the config flags ({family})")
    else:
        family = detected_family
        warnings += _flag_warnings(family, flags_family, "from its weights")
    cfg_dir = _config_folder_for(file, family, v_flag, config_dir)
    tokenizers = [clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for(family, i))
                  for i in range(2 if family == "sdxl" else 1)]
    extra: dict[str, Any] = {"tokenizer": tokenizers[0]}
    if family == "sdxl":
        extra["tokenizer_2"] = tokenizers[1]
        cls = StableDiffusionXLPipeline
    else:
        extra.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        cls = StableDiffusionPipeline
    # local tokenizers of a sidecar folder win over the shipped one
    for i, sub in enumerate(("tokenizer", "tokenizer_2")[: len(tokenizers)]):
        if (cfg_dir / sub).is_dir():
            tokenizers[i] = _folder_tokenizer(cfg_dir, sub, family, i)
            extra[sub] = tokenizers[i]
    try:
        if dtype != torch.float32:  # (passing float32 only makes diffusers print a spurious cast warning)
            extra["torch_dtype"] = dtype
        pipe = cls.from_single_file(str(file), config=str(cfg_dir), local_files_only=True, **extra)
    except UserError:
        raise
    except Exception as exc:  # diffusers raises many types for a file that does not fit the config
        raise UserError(
            f"cannot load '{file.name}' as {families.info(family).label}: {type(exc).__name__}: {exc}",
            field=FIELD, file=str(file),
            fix="check that the file is a complete SD1.x/SD2.x/SDXL checkpoint (inpainting, refiner and pruned "
                "UNet-only files are not supported) and that the v2/sdxl flags match it") from None
    sched_path = cfg_dir / "scheduler" / "scheduler_config.json"
    sampling = read_json(sched_path) if sched_path.is_file() else {}
    v_pred = bool(v_flag)
    if family == "sd2" and not v_flag:
        warnings.append("SD2 single files can be v-prediction (768-v) or epsilon (512 base); "
                        "v_parameterization is off, so training uses epsilon")
    detected = (f"{families.info(family).label}{' (v-prediction)' if v_pred else ''} from a single file "
                f"({'detected from its keys' if detected_family else 'by the config flags'}): {file.name}")
    tes = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    return LoadedModel(family=family, v_prediction=v_pred, unet=pipe.unet, vae=pipe.vae, text_encoders=tes,
                       tokenizers=tokenizers, scheduler_config=families.training_scheduler_config(v_pred),
                       source="single_file", path=str(file), detected=detected, name=file.name, warnings=warnings,
                       sampling_scheduler_config=sampling, config_dir=str(cfg_dir),
                       model_hash=legacy_model_hash(file))


# ---- Hub cache -----------------------------------------------------------------------------------------

def _resolve_hub_cache(repo_id: str, cache_dir: str | Path | None, field: str = FIELD) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception:  # LocalEntryNotFoundError, or any hub error: we never go online
        if families.quick_pick(repo_id):
            message = f"the quick-pick model '{repo_id}' is not on this computer (kohya-lite does not download models)"
        else:
            message = (f"'{repo_id}' is not a local file or folder, and no Hugging Face model of that name is on "
                       "this computer (kohya-lite does not download models)")
        raise UserError(
            message,
            field=field,
            fix=f"on a machine with internet run `hf download {repo_id}` (older: `huggingface-cli download {repo_id}`) "
                "and copy the Hugging Face cache (~/.cache/huggingface/hub) here, or choose a local .safetensors "
                "file or diffusers folder instead") from None
    return Path(folder)


def _load_vae(vae_path: str, family: str, v_pred: bool, dtype: torch.dtype, cache_dir) -> Any:
    from diffusers import AutoencoderKL

    p = Path(vae_path).expanduser()
    try:
        if p.is_dir():
            if (p / "config.json").is_file():
                return AutoencoderKL.from_pretrained(str(p), local_files_only=True, torch_dtype=dtype)
            if (p / "vae" / "config.json").is_file():
                return AutoencoderKL.from_pretrained(str(p), subfolder="vae", local_files_only=True, torch_dtype=dtype)
            raise UserError(f"'{p}' is not a VAE folder (no config.json)", field="vae", file=str(p),
                            fix="choose a VAE .safetensors file or a diffusers VAE folder")
        if p.is_file():
            return AutoencoderKL.from_single_file(str(p), config=str(families.config_dir(family, v_pred)),
                                                  subfolder="vae", local_files_only=True, torch_dtype=dtype)
        if HUB_ID.match(vae_path):
            folder = _resolve_hub_cache(vae_path, cache_dir, field="vae")
            sub = {} if (folder / "config.json").is_file() else {"subfolder": "vae"}
            return AutoencoderKL.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype, **sub)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot load the VAE '{vae_path}': {type(exc).__name__}: {exc}", field="vae", file=vae_path,
                        fix="choose a VAE made for this model family, as .safetensors or a diffusers folder") from None
    raise UserError(f"the VAE '{vae_path}' does not exist", field="vae", file=vae_path,
                    fix="check the path, or leave the VAE field empty to use the model's own VAE")
