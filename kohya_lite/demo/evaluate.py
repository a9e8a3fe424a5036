"""How well a model draws the demo's colours: seeded renders through the Generate path (`generate.generate`,
the same prompt parsing, LoRA merge and sampler as the Generate tab), judged by `shapes.analyse`.

Used by the pretraining script's final checks, the tests and the demo benchmark.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from kohya_lite.demo import shapes

# The demo's sampling settings (its sample prompts and Generate tab use the same). The tiny base is made for a low
# guidance scale: at CFG 7 its latents overshoot and red comes out orange or yellow, green black.
STEPS, CFG, SAMPLER = 20, 2.5, "euler_a"


def render(model: Any, prompt: str, seeds: Iterable[int], *, lora_dir: str | Path | None = None,
           steps: int = STEPS, cfg: float = CFG, sampler: str = SAMPLER, size: int = shapes.SIZE) -> list:
    """One PIL image per seed for an A1111-style prompt (`<lora:NAME:W>` tags resolved in `lora_dir`)."""
    from kohya_lite.generate import GenerateRequest, generate

    return [generate(model, GenerateRequest(prompt=prompt, steps=steps, cfg_scale=cfg, seed=int(s), width=size,
                                            height=size, sampler=sampler), lora_dir=lora_dir).image
            for s in seeds]


def colour_scores(model: Any, colours: Iterable[str], *, n: int = 20, shape: str = "circle",
                  **kw) -> dict[str, tuple[int, dict[str, int]]]:
    """colour → (renders of "a <colour> <shape> on a grey background" whose dominant colour is it, what the
    n renders showed: colour name → count)."""
    out = {}
    for colour in colours:
        seen = Counter(str(shapes.dominant_colour(im)) for im in render(model, shapes.caption_for(colour, shape),
                                                                           range(n), **kw))
        out[colour] = (seen.get(colour, 0), dict(seen.most_common()))
    return out


def orange_count(model: Any, prompt: str, *, n: int = 20, **kw) -> int:
    """How many of n seeded renders of `prompt` are orange (`shapes.is_orange`)."""
    return sum(shapes.is_orange(im) for im in render(model, prompt, range(n), **kw))
