"""BLIP captioning (kohya's `finetune/make_captions.py`, on transformers).

The decoder is prompted with "a picture of " and that prompt is cut from the output, as kohya does.
Beam search (default, 1 beam = greedy) is `generate(num_beams=N, do_sample=False)`; without it,
nucleus sampling `do_sample=True, top_p` with BLIP's repetition penalty 1.1, seeded. The model comes
from a local folder or the local Hugging Face cache only (`local_files_only=True`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from kohya_lite.captioning.model_files import ModelKind, resolve_model_folder
from kohya_lite.captioning.result import CaptionResult, Progress
from kohya_lite.captioning.runner import plan_run, run_batches
from kohya_lite.captioning.writer import CaptionWriter, normalize_extension
from kohya_lite.errors import UserError
from kohya_lite.media import load_rgb

DEFAULT_BLIP_MODEL = "Salesforce/blip-image-captioning-large"
BLIP_PROMPT = "a picture of "
BLIP_MODEL = ModelKind(
    label="BLIP captioning model",
    required=(("config.json",), ("model.safetensors", "pytorch_model.bin"),
              ("preprocessor_config.json", "processor_config.json"), ("tokenizer.json", "vocab.txt")),
)


@dataclass
class BlipOptions:
    """kohya_ss GUI defaults (BLIP Captioning tab)."""

    model: str = DEFAULT_BLIP_MODEL  # Hugging Face id (cache only) or a local folder
    model_dir: str = ""  # a folder holding the model; wins over `model`
    caption_extension: str = ".txt"
    batch_size: int = 1
    beam_search: bool = True
    num_beams: int = 1
    top_p: float = 0.9
    max_length: int = 75
    min_length: int = 5
    prefix: str = ""
    postfix: str = ""
    overwrite: bool = False
    recursive: bool = False
    seed: int = 42
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    workers: int = 2  # image-loading threads

    def validate(self) -> None:
        self.caption_extension = normalize_extension(self.caption_extension)
        for name in ("batch_size", "num_beams", "max_length"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be at least 1 (got {getattr(self, name)}).", field=name)
        if int(self.min_length) < 0:
            raise UserError(f"min_length must be 0 or more (got {self.min_length}).", field="min_length")
        if int(self.min_length) > int(self.max_length):
            raise UserError(f"min_length ({self.min_length}) is larger than max_length ({self.max_length}).",
                            field="min_length", fix="Lower min_length or raise max_length.")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise UserError(f"top_p must be in (0, 1] (got {self.top_p}).", field="top_p", fix="Use 0.9.")
        if int(self.workers) < 0:
            raise UserError("workers must be 0 or more.", field="workers")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def pick_device(device: str = "auto") -> str:
    import torch

    if device in ("", "auto", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"Device '{device}' asked for, but no CUDA GPU is available.", field="device",
                        fix="Use device 'auto' or 'cpu'.")
    return device


def strip_prompt(text: str, prompt: str = BLIP_PROMPT) -> str:
    """Cut the decoder prompt from a decoded caption (kohya: `caption[len(prompt):]`)."""
    text = text.strip()
    p = prompt.strip()
    if text.lower().startswith(p.lower()):
        text = text[len(p):]
    return text.strip()


class BlipCaptioner:
    """A loaded BLIP model + processor; `caption(images)` -> captions (prompt stripped)."""

    def __init__(self, model, processor, device: str, folder: Path):
        self.model, self.processor, self.device, self.folder = model, processor, device, folder

    @classmethod
    def load(cls, model: str = DEFAULT_BLIP_MODEL, model_dir: str | Path | None = None,
             device: str = "auto") -> "BlipCaptioner":
        folder = resolve_model_folder(BLIP_MODEL, model, model_dir)
        device = pick_device(device)
        from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

        try:
            with quiet_transformers():
                net = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True)
                processor = BlipProcessor(
                    image_processor=BlipImageProcessorPil.from_pretrained(folder, local_files_only=True),
                    tokenizer=AutoTokenizer.from_pretrained(folder, local_files_only=True),
                )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"Could not load the BLIP model in '{folder}': {exc}", field="model", file=str(folder),
                            fix="The folder looks damaged or is another kind of model; download it again.") from None
        return cls(net.to(device).eval(), processor, device, folder)

    def caption(self, images: Sequence[Image.Image], *, beam_search: bool = True, num_beams: int = 1,
                top_p: float = 0.9, max_length: int = 75, min_length: int = 5) -> list[str]:
        import torch

        inputs = self.processor(images=list(images), text=[BLIP_PROMPT] * len(images), return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if beam_search:
            decoding = dict(num_beams=int(num_beams), do_sample=False)
        else:
            decoding = dict(do_sample=True, top_p=float(top_p), num_beams=1, repetition_penalty=1.1)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_length=int(max_length), min_length=int(min_length), **decoding)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [strip_prompt(t) for t in texts]


def caption_blip(folder: str | Path, options: BlipOptions | None = None, *, progress: Progress | None = None,
                 captioner: BlipCaptioner | None = None) -> CaptionResult:
    """Caption every image in `folder` with BLIP; existing captions are kept unless `overwrite`.

    Pass a loaded `captioner` to reuse it across runs (the model is loaded only when needed).
    """
    import torch

    options = options or BlipOptions()
    options.validate()
    writer = CaptionWriter(ext=options.caption_extension, overwrite=options.overwrite,
                           prefix=options.prefix, postfix=options.postfix)
    plan = plan_run("blip", folder, writer, recursive=options.recursive)
    if not plan.todo:
        return plan.finish()
    captioner = captioner or BlipCaptioner.load(options.model, options.model_dir or None, options.device)

    def infer(images: list[Image.Image]) -> list[str]:
        return captioner.caption(images, beam_search=options.beam_search, num_beams=options.num_beams,
                                 top_p=options.top_p, max_length=options.max_length, min_length=options.min_length)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(options.seed))
        return run_batches(plan, writer=writer, prepare=load_rgb, infer=infer, batch_size=int(options.batch_size),
                           workers=int(options.workers), progress=progress)
