"""The Generate prompt: A1111's `<lora:NAME:WEIGHT>` tags and kohya's inline sample options, parsed and checked
into a `Job` (pure: no model, no files, no torch).

Tag syntax (A1111, lora-file-format §13.1), any number of tags anywhere in the prompt:
- `<lora:NAME>`: weight 1.0; `<lora:NAME:0.8>`: one weight for the text encoder(s) and the UNet;
- `<lora:NAME:TE:UNET>`: separate weights (A1111's positional order: text encoder first);
- `<lora:NAME:te=0.5:unet=1>`: the same, named. Negative and >1 weights are fine.
Tags in the negative prompt are refused. kohya's inline options may follow the prompt: `… --n negative --w 512
--h 512 --d 1 --l 7 --s 20 --ss euler_a` (`prompts.parse_prompt_line`); they override the request's values.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace
from typing import Any

from kohya_lite.errors import UserError
from kohya_lite.models import families
from kohya_lite.prompts import (DEFAULT_CFG, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, SamplePrompt, format_weight,
                                parse_prompt_line)

MAX_SEED = 2**32 - 1

_TAG = re.compile(r"<\s*lora\s*:([^<>]*)>", re.IGNORECASE)
_OPEN = re.compile(r"<\s*lora\s*:", re.IGNORECASE)
_OPTION_FIELDS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "l": "cfg_scale", "s": "steps",
                  "ss": "sampler"}


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


def random_seed() -> int:
    return random.randint(0, MAX_SEED)
