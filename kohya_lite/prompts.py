"""kohya's sample-prompt syntax, as pure functions.

One prompt per line; blank lines and `#` comments are skipped; options follow the prompt, each introduced
by ` --` and matched case-insensitively: --n negative, --w/--h size (floored to a multiple of 8, min 64),
--d seed, --l CFG scale, --s steps (1–1000), --ss sampler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kohya_lite.errors import UserError

# What Generate and the epoch grid use when a prompt does not say
DEFAULT_SAMPLER = "euler_a"
DEFAULT_STEPS = 20
DEFAULT_CFG = 7.0
IGNORED_OPTIONS = {"g", "cn", "ctr", "rcfg", "fs", "am", "f"}  # Flux/SD3/Lumina/ControlNet options: not for SD


@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    cfg_scale: float = 7.5
    steps: int = 30
    sampler: str | None = None
    line: int = 0


# kohya sampler names → diffusers scheduler classes (+ kwargs)
SAMPLERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
}


def canonical_sampler(name: str) -> str:
    """`k_euler_a` → `euler_a`; unknown names fall back to ddim, as in sd-scripts."""
    n = name.strip().lower()
    n = n[2:] if n.startswith("k_") else n
    return n if n in SAMPLERS else "ddim"


def make_scheduler(sampler: str, *, v_prediction: bool = False):
    import diffusers

    cls_name, extra = SAMPLERS[canonical_sampler(sampler)]
    kwargs = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  prediction_type="v_prediction" if v_prediction else "epsilon", steps_offset=1, **extra)
    if cls_name in ("DDIMScheduler", "DDPMScheduler"):
        kwargs["clip_sample"] = False
    if cls_name in ("DDIMScheduler", "PNDMScheduler"):
        kwargs.update(set_alpha_to_one=False)
        if cls_name == "PNDMScheduler":
            kwargs.update(skip_prk_steps=True)
    return getattr(diffusers, cls_name)(**kwargs)


def parse_prompt_line(text: str, line: int = 0) -> SamplePrompt:
    parts = re.split(r" --(?=[A-Za-z])", " " + text.strip())
    sp = SamplePrompt(prompt=parts[0].strip(), line=line)
    for part in parts[1:]:
        name, _, value = part.partition(" ")
        name, value = name.lower(), value.strip()
        try:
            if name == "n":
                sp.negative = value
            elif name == "w":
                sp.width = max(64, int(value) // 8 * 8)
            elif name == "h":
                sp.height = max(64, int(value) // 8 * 8)
            elif name == "d":
                sp.seed = int(value)
            elif name == "l":
                sp.cfg_scale = float(value)
            elif name == "s":
                sp.steps = min(1000, max(1, int(value)))
            elif name == "ss":
                if not value:
                    raise ValueError("empty")
                sp.sampler = value
            elif name in IGNORED_OPTIONS:
                continue
            else:
                raise UserError(f"sample prompt line {line}: unknown option '--{name}'", field="sample_prompts",
                                fix="use --n, --w, --h, --d, --l, --s or --ss")
        except ValueError:
            raise UserError(f"sample prompt line {line}: '--{name} {value}' is not a valid value", field="sample_prompts",
                            fix={"w": "--w takes a width in pixels, e.g. --w 512", "h": "--h takes a height, e.g. --h 512",
                                 "d": "--d takes an integer seed, e.g. --d 1", "l": "--l takes a CFG scale, e.g. --l 7.5",
                                 "s": "--s takes a step count, e.g. --s 20"}.get(name, "check the option's value")) from None
    if not sp.prompt:
        raise UserError(f"sample prompt line {line} has options but no prompt", field="sample_prompts",
                        fix="write the prompt first, then the options: 'zkz dog --w 512 --h 512'")
    return sp


def parse_prompts(text: str) -> list[SamplePrompt]:
    out = []
    for i, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        out.append(parse_prompt_line(s, i))
    return out


def sample_filename(output_name: str, *, step: int, epoch: int | None, index: int, timestamp: str,
                    seed: int | None) -> str:
    """`[name_]<e000003|000123>_<idx:02d>_<YYYYmmddHHMMSS>[_<seed>].png` (sd-scripts)."""
    num = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    prefix = f"{output_name}_" if output_name else ""
    suffix = f"_{seed}" if seed is not None else ""
    return f"{prefix}{num}_{index:02d}_{timestamp}{suffix}.png"


def format_weight(weight: float) -> str:
    """A LoRA weight as prompts and labels write it: 0.8, 1, -0.5."""
    return f"{float(weight):g}"
