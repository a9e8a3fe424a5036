"""Generate images with LoRAs: A1111-style `<lora:NAME:WEIGHT>` prompt tags on a loaded base model.

Tag syntax (A1111, lora-file-format §13.1), any number of tags anywhere in the prompt:
- `<lora:NAME>`: weight 1.0; `<lora:NAME:0.8>`: one weight for the text encoder(s) and the UNet;
- `<lora:NAME:TE:UNET>`: separate weights (A1111's positional order: text encoder first);
- `<lora:NAME:te=0.5:unet=1>`: the same, named. Negative and >1 weights are fine.
NAME is resolved in the LoRA library folder (`library.find_lora`). Tags in the negative prompt are refused.

kohya's inline sample options are accepted after the prompt: `… --n negative --w 512 --h 512 --d 1
--l 7 --s 20 --ss euler_a` (`prompts.parse_prompt_line`); they override the request's values.

Applying (`merged_loras`): A1111's merge, exact and reversible. For every adapted module
W' = W + Σᵢ wᵢ·(αᵢ/rᵢ)·upᵢ@downᵢ (wᵢ = the TE or UNet weight of tag i), summed in fp32 and added once;
the touched weights are backed up (in CPU memory, as A1111 does) and copied back bit for bit afterwards,
also on errors. Weight 0 contributes nothing. A LoRA of another family (SDXL on SD1, SD2 on SD1 …) is a
UserError before anything is touched. Rendering is `engine.sampling.render` (Euler a by default).
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import threading
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from kohya_lite.prompts import SAMPLERS, SamplePrompt, parse_prompt_line
from kohya_lite.errors import UserError
from kohya_lite.library import DEFAULT_LORA_DIR, find_lora, format_weight
from kohya_lite.models import families
from kohya_lite.network import naming
from kohya_lite.network.io import LoraFile, load_lora
from kohya_lite.network.lora import ModuleIndex, delta_weight

DEFAULT_SAMPLER = "euler_a"
DEFAULT_STEPS = 20
DEFAULT_CFG = 7.0
MAX_SEED = 2**32 - 1

_TAG = re.compile(r"<\s*lora\s*:([^<>]*)>", re.IGNORECASE)
_OPEN = re.compile(r"<\s*lora\s*:", re.IGNORECASE)
_OPTION_FIELDS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "l": "cfg_scale", "s": "steps",
                  "ss": "sampler"}
SAMPLER_LABELS = {  # A1111's names, for the infotext
    "ddim": "DDIM", "ddpm": "DDPM", "pndm": "PLMS", "lms": "LMS", "euler": "Euler", "euler_a": "Euler a",
    "heun": "Heun", "dpm_2": "DPM2", "dpm_2_a": "DPM2 a", "dpmsolver": "DPM solver", "dpmsolver++": "DPM++ 2M",
    "dpmsingle": "DPM++ SDE",
}


# ---- prompt tags (pure) ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoraTag:
    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0
    text: str = ""  # the tag as written

    @property
    def weight(self) -> float:
        """The single weight (the UNet one when TE and UNet differ)."""
        return self.unet_weight

    def weight_text(self) -> str:
        if self.te_weight == self.unet_weight:
            return format_weight(self.unet_weight)
        return f"te {format_weight(self.te_weight)} / unet {format_weight(self.unet_weight)}"


@dataclass(frozen=True)
class TaggedPrompt:
    prompt: str  # the prompt without the tags
    loras: tuple[LoraTag, ...] = ()


def _weight(value: str, tag: str) -> float:
    try:
        w = float(value)
    except ValueError:
        w = math.nan
    if not math.isfinite(w):
        raise UserError(f"'{tag}': '{value}' is not a weight", field="prompt",
                        fix="write the weight as a number, e.g. <lora:name:0.8> or <lora:name:-0.5>")
    return w


def parse_tag(body: str, text: str) -> LoraTag:
    """One tag's inside (`name:0.8`, `name:te:unet`, `name:te=…:unet=…`) → LoraTag."""
    parts = [p.strip() for p in body.split(":")]
    name, args = parts[0], parts[1:]
    if not name:
        raise UserError(f"'{text}' has no LoRA name", field="prompt",
                        fix="write <lora:NAME:WEIGHT>, e.g. <lora:zkz:0.8>")
    positional: list[float] = []
    named: dict[str, float] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq:
            key = key.strip().lower()
            if key not in ("te", "unet"):
                raise UserError(f"'{text}': '{key}=' is not supported", field="prompt",
                                fix="use te=WEIGHT and/or unet=WEIGHT (dyn= and other LyCORIS options are "
                                    "not supported)")
            named[key] = _weight(value.strip(), text)
        elif named:
            raise UserError(f"'{text}': a plain weight after a named one", field="prompt",
                            fix="write plain weights first: <lora:name:TE:UNET> or <lora:name:te=…:unet=…>")
        else:
            positional.append(_weight(arg, text))
    if len(positional) > 2:
        raise UserError(f"'{text}' has {len(positional)} weights", field="prompt",
                        fix="use one weight (<lora:name:0.8>) or two: text encoder then UNet (<lora:name:0.5:1>)")
    te = named.get("te", positional[0] if positional else 1.0)
    unet = named.get("unet", positional[1] if len(positional) > 1 else te)
    return LoraTag(name=name, te_weight=te, unet_weight=unet, text=text)


def _tidy(text: str) -> str:
    """Spacing and commas left behind where tags were removed."""
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"[ \t]*,(?:[ \t]*,)+", ",", text)
    text = re.sub(r" ,", ",", text)
    return text.strip(" \t,\n")


def parse_lora_tags(text: str) -> TaggedPrompt:
    """The prompt without its `<lora:…>` tags, and the tags in order (duplicates kept: their weights add)."""
    text = text or ""
    tags = [parse_tag(m.group(1), m.group(0)) for m in _TAG.finditer(text)]
    rest = _TAG.sub("", text)
    leftover = _OPEN.search(rest)
    if leftover:
        snippet = rest[leftover.start(): leftover.start() + 30]
        raise UserError(f"unclosed LoRA tag '{snippet}'", field="prompt",
                        fix="close every tag with '>': <lora:NAME:WEIGHT>")
    return TaggedPrompt(prompt=_tidy(rest) if tags else text.strip(), loras=tuple(tags))


def split_inline_options(text: str) -> tuple[str, dict[str, Any]]:
    """`prompt --n neg --s 20 --d 1` → ('prompt', {'negative': 'neg', 'steps': 20, 'seed': 1}); kohya syntax."""
    parts = re.split(r" --(?=[A-Za-z])", " " + (text or "").strip())
    if len(parts) == 1:
        return (text or "").strip(), {}
    given = {p.partition(" ")[0].lower() for p in parts[1:]}
    try:
        sp = parse_prompt_line(text)
    except UserError as exc:
        raise UserError(exc.message.replace("sample prompt line 0", "prompt"), field="prompt", fix=exc.fix) from None
    return sp.prompt, {f: getattr(sp, f) for opt, f in _OPTION_FIELDS.items() if opt in given}


# ---- requests ------------------------------------------------------------------------------------------------

@dataclass
class GenerateRequest:
    prompt: str  # may hold <lora:…> tags and kohya inline options
    negative: str = ""
    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG
    seed: int | None = None  # None or negative → a random seed
    width: int | None = None  # None → the family's default resolution
    height: int | None = None
    sampler: str = DEFAULT_SAMPLER
    clip_skip: int = 1


@dataclass
class Job:
    """A request after inline options, tag parsing and validation; what gets rendered."""

    prompt: str  # clean (no tags, no options)
    negative: str
    loras: tuple[LoraTag, ...]
    steps: int
    cfg_scale: float
    seed: int | None
    width: int | None
    height: int | None
    sampler: str
    clip_skip: int
    source_prompt: str = ""  # the prompt as the user typed it (tags kept), for the infotext

    def sample_prompt(self, family: str, v_prediction: bool = False, seed: int | None = None) -> SamplePrompt:
        size = families.default_resolution(family, v_prediction)
        return SamplePrompt(prompt=self.prompt, negative=self.negative, width=self.width or size,
                            height=self.height or size, seed=seed if seed is not None else self.seed,
                            cfg_scale=self.cfg_scale, steps=self.steps, sampler=self.sampler)


def sampler_name(name: str) -> str:
    """A known sampler name (`k_` aliases accepted); unknown → UserError listing them."""
    n = (name or DEFAULT_SAMPLER).strip().lower()
    n = n[2:] if n.startswith("k_") else n
    if n not in SAMPLERS:
        raise UserError(f"unknown sampler '{name}'", field="sampler", fix=f"use one of: {', '.join(SAMPLERS)}")
    return n


def _size(value: int | None, what: str) -> int | None:
    if value is None or value == 0:
        return None
    v = int(value)
    if v < 64 or v > 4096:
        raise UserError(f"{what} {v} is out of range", field=what, fix="use 64–4096 pixels, e.g. 512")
    return v // 8 * 8


def prepare(request: GenerateRequest) -> Job:
    """Apply inline options, split off the LoRA tags and check every value (pure: no model, no files)."""
    text, opts = split_inline_options(request.prompt)
    req = replace(request, **opts)
    tagged = parse_lora_tags(text)
    if _OPEN.search(req.negative or ""):
        raise UserError("LoRA tags only work in the prompt, not in the negative prompt", field="negative",
                        fix="move the <lora:…> tag to the prompt (a negative weight, e.g. <lora:name:-0.5>, "
                            "pushes away from the LoRA)")
    if not tagged.prompt and not tagged.loras:
        raise UserError("the prompt is empty", field="prompt", fix="describe the image, e.g. 'zkz dog, photo'")
    steps = int(req.steps)
    if not 1 <= steps <= 1000:
        raise UserError(f"steps must be 1–1000 (got {steps})", field="steps", fix="20–30 is typical")
    cfg = float(req.cfg_scale)
    if not math.isfinite(cfg) or cfg < 0:
        raise UserError(f"CFG scale must be 0 or more (got {req.cfg_scale})", field="cfg_scale", fix="7 is typical")
    seed = None if req.seed is None or int(req.seed) < 0 else int(req.seed)
    if seed is not None and seed > MAX_SEED:
        raise UserError(f"seed {seed} is too large", field="seed", fix=f"use 0–{MAX_SEED}, or -1 for a random seed")
    clip_skip = int(req.clip_skip or 1)
    if not 1 <= clip_skip <= 12:
        raise UserError(f"clip skip must be 1–12 (got {clip_skip})", field="clip_skip",
                        fix="1 (SD1/SDXL) or 2 (anime models)")
    return Job(prompt=tagged.prompt, negative=(req.negative or "").strip(), loras=tagged.loras, steps=steps,
               cfg_scale=cfg, seed=seed, width=_size(req.width, "width"), height=_size(req.height, "height"),
               sampler=sampler_name(req.sampler), clip_skip=clip_skip, source_prompt=text.strip())


# ---- LoRA files → weight deltas -----------------------------------------------------------------------------

@dataclass
class LoraUse:
    """One LoRA file at its weights, ready to merge."""

    name: str
    path: Path
    file: LoraFile
    te_weight: float = 1.0
    unet_weight: float = 1.0


@dataclass
class UsedLora:
    name: str
    path: str
    te_weight: float
    unet_weight: float
    family: str
    modules: int  # modules merged into the model (0 when both weights are 0)
    skipped: list[str] = field(default_factory=list)  # file modules this model lacks

    def weight_text(self) -> str:
        return LoraTag(self.name, self.te_weight, self.unet_weight).weight_text()

    def row(self) -> list:
        return [self.name, self.te_weight, self.unet_weight, self.modules, self.path]


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> LoraFile:
    return load_lora(path, field_name="prompt")


def read_lora(path: str | Path) -> LoraFile:
    """`network.io.load_lora`, cached by (path, mtime, size): repeated generations do not re-read files."""
    p = Path(path)
    st = p.stat()
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def check_family(lora: LoraFile, model_family: str, name: str, path: str | Path = "") -> None:
    """A LoRA for another family is refused. Metadata is trusted; from keys, SDXL and SD2 (wide TE or
    deep TE) are reliable, while 'sd1' is only the default guess, so an SD2 model then relies on the shapes."""
    if lora.family == model_family:
        return
    weak = lora.family_source == "keys" and lora.family == "sd1" and model_family == "sd2"
    if weak:
        return
    want, have = families.info(lora.family).label, families.info(model_family).label
    how = "its metadata" if lora.family_source == "metadata" else "its tensor names and shapes"
    raise UserError(f"the LoRA '{name}' was made for {want} (from {how}), but the model is {have}",
                    field="prompt", file=str(path),
                    fix=f"use a LoRA trained on a {have} model, or load a {want} base model for this one")


def resolve_loras(tags: Sequence[LoraTag], lora_dir: str | Path | None, family: str) -> list[LoraUse]:
    """Find, read and family-check the file of every tag (nothing is applied yet)."""
    uses = []
    for tag in tags:
        path = find_lora(tag.name, lora_dir)
        lf = read_lora(path)
        check_family(lf, family, tag.name, path)
        uses.append(LoraUse(tag.name, path, lf, tag.te_weight, tag.unet_weight))
    return uses


def _fit(delta: torch.Tensor, weight: torch.Tensor, name: str, lora: LoraUse, family: str) -> torch.Tensor:
    if delta.shape == weight.shape:
        return delta
    # a Linear LoRA on a 1×1 conv (or the reverse): same numbers, other view
    if delta.numel() == weight.numel() and delta.shape[:2] == weight.shape[:2]:
        return delta.reshape(weight.shape)
    raise UserError(
        f"the LoRA '{lora.name}' does not fit this {families.info(family).label} model: module {name} has shape "
        f"{tuple(delta.shape)}, the model's weight is {tuple(weight.shape)}", field="prompt", file=str(lora.path),
        fix="use a LoRA trained on the same base model family (SD1.x, SD2.x or SDXL)")


Delta = tuple[torch.nn.Module, torch.Tensor]  # (module whose .weight changes, fp32 ΔW shaped like it)


def lora_deltas(model: Any, uses: Sequence[LoraUse]) -> tuple[list[Delta], list[UsedLora]]:
    """Σ wᵢ·(αᵢ/rᵢ)·upᵢ@downᵢ per model module (fp32, CPU), and what each LoRA contributed."""
    index = ModuleIndex(model)
    total: dict[int, Delta] = {}
    used: list[UsedLora] = []
    for use in uses:
        names = use.file.module_names()
        skipped = [n for n in names if index.get(n) is None]
        if len(skipped) == len(names):
            raise UserError(f"none of the {len(names)} modules of the LoRA '{use.name}' exist in this "
                            f"{families.info(model.family).label} model (first: {names[0] if names else '-'})",
                            field="prompt", file=str(use.path),
                            fix="use a LoRA trained on the same base model family (SD1.x, SD2.x or SDXL)")
        merged = 0
        for name in names:
            module = index.get(name)
            if module is None:
                continue
            w = use.unet_weight if name.startswith(naming.UNET_PREFIX + "_") else use.te_weight
            t = use.file.tensors
            down, up = t[f"{name}.lora_down.weight"], t[f"{name}.lora_up.weight"]
            scale = float(t[f"{name}.alpha"].float()) / down.shape[0]
            delta = _fit(delta_weight(down, up, scale), module.weight, name, use, model.family)
            if w == 0:
                continue
            key = id(module)
            prev = total[key][1] if key in total else 0
            total[key] = (module, prev + w * delta)
            merged += 1
        used.append(UsedLora(use.name, str(use.path), use.te_weight, use.unet_weight, use.file.family, merged, skipped))
    return list(total.values()), used


@contextlib.contextmanager
def merged_loras(model: Any, uses: Sequence[LoraUse]) -> Iterator[list[UsedLora]]:
    """Merge the LoRAs into the model's weights for the `with` block; the exact weights come back after."""
    deltas, used = lora_deltas(model, uses)  # every check happens before the model is touched
    backup: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for module, delta in deltas:
                w = module.weight
                backup.append((w, w.detach().to("cpu", copy=True)))  # on the CPU, as A1111: no VRAM doubling
                w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
        yield used
    finally:
        with torch.no_grad():
            for w, original in backup:
                w.copy_(original)


# ---- generating ------------------------------------------------------------------------------------------------

@dataclass
class GenerateResult:
    image: Any  # PIL.Image
    job: Job
    seed: int
    width: int
    height: int
    loras: list[UsedLora]
    model_name: str = ""
    warnings: list[str] = field(default_factory=list)

    def infotext(self) -> str:
        """A1111's 'parameters' text (PNG info), so the image can be re-made elsewhere."""
        j = self.job
        lines = [j.source_prompt or j.prompt]
        if j.negative:
            lines.append(f"Negative prompt: {j.negative}")
        params = [f"Steps: {j.steps}", f"Sampler: {SAMPLER_LABELS.get(j.sampler, j.sampler)}",
                  f"CFG scale: {j.cfg_scale:g}", f"Seed: {self.seed}", f"Size: {self.width}x{self.height}"]
        if self.model_name:
            params.append(f"Model: {self.model_name}")
        if j.clip_skip > 1:
            params.append(f"Clip skip: {j.clip_skip}")
        from kohya_lite import __version__

        params.append(f"Version: kohya-lite {__version__}")
        lines.append(", ".join(params))
        return "\n".join(lines)


_GENERATE_LOCK = threading.RLock()  # merging changes the shared model's weights: one generation at a time


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


def render_job(model: Any, job: Job, uses: Sequence[LoraUse], *, seed: int | None = None) -> GenerateResult:
    """Merge `uses`, render `job` once with the seed, restore the model."""
    from kohya_lite.engine.sampling import render

    seed = seed if seed is not None else (job.seed if job.seed is not None else random_seed())
    sp = job.sample_prompt(model.family, model.v_prediction, seed)
    device = next(model.unet.parameters()).device
    with _GENERATE_LOCK, merged_loras(model, uses) as used:
        image = render(model, sp, sampler=job.sampler, generator=torch.Generator(device="cpu").manual_seed(seed),
                       clip_skip=job.clip_skip, device=device)
    warnings = [f"{u.name}: {len(u.skipped)} of its modules are not in this model and were skipped "
                f"(first: {u.skipped[0]})" for u in used if u.skipped]
    return GenerateResult(image=image, job=job, seed=seed, width=sp.width, height=sp.height, loras=used,
                          model_name=getattr(model, "name", "") or "", warnings=warnings)


def generate(model: Any, request: GenerateRequest, *, lora_dir: str | Path | None = DEFAULT_LORA_DIR) -> GenerateResult:
    """One image for an A1111-style prompt on a `LoadedModel`, all its LoRA tags applied together."""
    job = prepare(request)
    uses = resolve_loras(job.loras, lora_dir, model.family) if job.loras else []
    return render_job(model, job, uses)


# ---- output --------------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_output_path(path: str | Path, field_name: str = "out") -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"'{p.name}' is not an image file name", field=field_name, file=str(p),
                        fix="end the name in .png (keeps the generation settings inside), .jpg or .webp")
    if p.exists() and p.is_dir():
        raise UserError(f"'{p}' is a folder", field=field_name, file=str(p), fix="give a file name, e.g. out.png")
    return p


def save_image(image: Any, path: str | Path, *, parameters: str = "") -> Path:
    """Write atomically; PNGs carry `parameters` (A1111's PNG-info key)."""
    from PIL.PngImagePlugin import PngInfo

    from kohya_lite.fileio import atomic_path

    p = check_output_path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[p.suffix.lower()]
    with atomic_path(p) as tmp:
        if fmt == "PNG":
            info = PngInfo()
            if parameters:
                info.add_text("parameters", parameters)
            image.save(tmp, format=fmt, pnginfo=info)
        else:
            image.convert("RGB").save(tmp, format=fmt, quality=95)
    return p


# ---- a loaded model kept between UI clicks ------------------------------------------------------------------

def inference_placement(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Where Generate and the grid render: 'auto' is the GPU in half precision (bf16 where supported, else fp16)
    when CUDA is present, else the CPU in fp32. An explicit 'cpu' or 'cuda[:N]' is honoured."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"'{device}' is not a device", field="device", fix="use auto, cpu or cuda (cuda:1 for the second GPU)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("a CUDA device was asked for, but this machine has no usable NVIDIA GPU", field="device",
                            fix="use --device cpu (or auto), or install the CUDA build of PyTorch (./setup.sh does)")
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


def place_for_inference(model: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """UNet and text encoders in `dtype` on `device`; the VAE too, except SDXL's, which stays fp32 (its fp16
    decode overflows). Sampling decodes in the VAE's own dtype."""
    model.unet.to(device, dtype=dtype)
    for te in model.text_encoders:
        te.to(device, dtype=dtype)
    model.vae.to(device, dtype=torch.float32 if model.family == "sdxl" else dtype)
    return model


class ModelCache:
    """Keeps the last loaded base model (loading a real one takes long); a new path, flags or device reload it."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    def get(self, path: str | Path, *, v2: bool = False, v_parameterization: bool = False, sdxl: bool = False,
            device: str = "auto") -> Any:
        from kohya_lite.models.load import load_model

        text = str(path or "").strip()
        p = Path(text).expanduser()
        stamp = p.stat().st_mtime_ns if p.exists() else 0
        dev, dtype = inference_placement(device)
        key = (text, bool(v2), bool(v_parameterization), bool(sdxl), stamp, str(dev), dtype)
        with self._lock:
            if key != self._key:
                self._model, self._key = None, None
                model = load_model(text, v2=v2, v_parameterization=v_parameterization, sdxl=sdxl)
                self._model = place_for_inference(model, dev, dtype)
                self._key = key
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._model, self._key = None, None


MODEL_CACHE = ModelCache()
