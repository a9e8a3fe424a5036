"""Rendering a Generate job: merge its LoRAs, render once with the seed (`engine.sampling.render`, Euler a by
default), restore the model; the result's A1111 infotext; writing the image."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from kohya_lite.errors import UserError
from kohya_lite.generate.merge import LoraUse, UsedLora, merged_loras, resolve_loras
from kohya_lite.generate.tags import GenerateRequest, Job, prepare, random_seed
from kohya_lite.paths import DEFAULT_LORA_DIR

SAMPLER_LABELS = {  # A1111's names, for the infotext
    "ddim": "DDIM", "ddpm": "DDPM", "pndm": "PLMS", "lms": "LMS", "euler": "Euler", "euler_a": "Euler a",
    "heun": "Heun", "dpm_2": "DPM2", "dpm_2_a": "DPM2 a", "dpmsolver": "DPM solver", "dpmsolver++": "DPM++ 2M",
    "dpmsingle": "DPM++ SDE",
}


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
