"""Generate tab: one image from an A1111-style prompt with `<lora:NAME:WEIGHT>` tags.

Wiring only: `run` calls `kohya_lite.generate.generate` on the model kept by `generate.MODEL_CACHE` (loaded
once, reused until the path changes), saves the PNG with its settings (A1111 "parameters") into the output
folder and returns it. Errors show as a plain message under the button (`ui.safe`), never a traceback.
`build` returns the components, so the Library tab can insert tags into `prompt`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from kohya_lite.prompts import SAMPLERS
from kohya_lite.generate import (DEFAULT_CFG, DEFAULT_SAMPLER, DEFAULT_STEPS, MODEL_CACHE, GenerateRequest,
                                 GenerateResult, ModelCache, generate, prepare, save_image)
from kohya_lite.library import DEFAULT_LORA_DIR
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.files import served
from kohya_lite.ui.safe import md_escape, safe
from kohya_lite.ui.widgets import path_field

USED_HEADERS = ["LoRA", "TE weight", "UNet weight", "Modules", "File"]
LABELS = {"model": "Base model", "lora_dir": "LoRA folder", "prompt": "Prompt", "negative": "Negative prompt",
          "sampler": "Sampler", "steps": "Steps", "cfg_scale": "CFG scale", "seed": "Seed", "width": "Width",
          "height": "Height", "clip_skip": "Clip skip", "device": "Device"}


@dataclass
class GenerateTab:
    model_path: gr.Textbox
    v_prediction: gr.Checkbox
    lora_dir: gr.Textbox
    prompt: gr.Textbox
    negative: gr.Textbox
    sampler: gr.Dropdown
    steps: gr.Slider
    cfg: gr.Slider
    seed: gr.Number
    width: gr.Slider
    height: gr.Slider
    button: gr.Button
    image: gr.Image
    used: gr.Dataframe
    info: gr.Textbox
    message: gr.Markdown
    on_generate: Callable[..., dict]  # the click handler (wrapped by `safe`), for tests and other wiring

    @property
    def inputs(self) -> list:
        return [self.model_path, self.v_prediction, self.lora_dir, self.prompt, self.negative, self.sampler,
                self.steps, self.cfg, self.seed, self.width, self.height]


def default_output_dir() -> Path:
    from kohya_lite.paths import home

    return home() / "generated"


def run(model_path: str, v_prediction: bool, lora_dir: str, prompt: str, negative: str, sampler: str, steps: Any,
        cfg: Any, seed: Any, width: Any, height: Any, *, output_dir: str | Path | None = None,
        cache: ModelCache = MODEL_CACHE) -> tuple[GenerateResult, Path]:
    """Generate and save; returns the result and the PNG written."""
    from kohya_lite.errors import UserError

    if not str(model_path or "").strip():
        raise UserError("no base model is chosen", field="model", fix="enter a .safetensors file or a diffusers folder")
    request = GenerateRequest(prompt=prompt or "", negative=negative or "", steps=int(steps or DEFAULT_STEPS),
                              cfg_scale=float(cfg if cfg is not None else DEFAULT_CFG),
                              seed=int(seed) if seed not in (None, "") else -1, width=int(width or 0) or None,
                              height=int(height or 0) or None, sampler=sampler or DEFAULT_SAMPLER)
    prepare(request)  # a bad prompt fails before the model loads
    model = cache.get(model_path, v_parameterization=bool(v_prediction))
    result = generate(model, request, lora_dir=lora_dir)
    out_dir = Path(output_dir) if output_dir else default_output_dir()
    path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{result.seed}.png"
    save_image(result.image, path, parameters=result.infotext())
    return result, path


def build(*, model_path: str = "", lora_dir: str = str(DEFAULT_LORA_DIR), output_dir: str | Path | None = None,
          cache: ModelCache = MODEL_CACHE, v_prediction: bool = False, width: int = 512,
          height: int = 512, prompt: str = "", cfg_scale: float = DEFAULT_CFG) -> GenerateTab:
    """The tab's components, inside the caller's Blocks/Tab context (the app passes `ui.tab_defaults`: the
    training config's model, output folder and resolution)."""
    gr.Markdown("Write the prompt with `<lora:NAME:WEIGHT>` tags (NAME = file in the LoRA folder; "
                "`<lora:NAME:TE:UNET>` for separate weights; negative weights push away). kohya options after the "
                "prompt (`--n … --s 20 --d 1`) work too.")
    with gr.Row():
        model_box, _ = path_field(FieldSpec("gen_model", "Base model", "a .safetensors/.ckpt file or a diffusers "
                                            "folder", "model", "generate"), model_path)
        v_pred = gr.Checkbox(v_prediction, label="V-prediction", info="SD2 768-v single files", elem_id="gen-vpred")
    lora_box, _ = path_field(FieldSpec("gen_lora_dir", "LoRA folder", "searched recursively for <lora:NAME> tags",
                                       "path", "generate"), lora_dir)
    prompt = gr.Textbox(prompt, label="Prompt", lines=3, elem_id="gen-prompt",
                        placeholder="zkz dog, photo <lora:zkz:0.8>")
    negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="gen-negative")
    with gr.Row():
        sampler = gr.Dropdown(choices=list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler", elem_id="gen-sampler")
        steps = gr.Slider(1, 150, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="gen-steps")
        cfg = gr.Slider(0, 30, value=cfg_scale, step=0.5, label="CFG scale", elem_id="gen-cfg")
        seed = gr.Number(-1, precision=0, label="Seed", info="-1 = random", elem_id="gen-seed")
    with gr.Row():
        width = gr.Slider(64, 2048, value=width, step=8, label="Width", info="512 for SD1/SD2, 1024 for SDXL",
                          elem_id="gen-width")
        height = gr.Slider(64, 2048, value=height, step=8, label="Height", elem_id="gen-height")
    button = gr.Button("Generate", variant="primary", elem_id="gen-run")
    message = gr.Markdown("", elem_id="gen-message", elem_classes=["kl-problems"])
    with gr.Row():
        image = gr.Image(label="Image", type="filepath", format="png", interactive=False, elem_id="gen-image")
        with gr.Column():
            used = gr.Dataframe(headers=USED_HEADERS, value=[], label="LoRAs used", interactive=False,
                                elem_id="gen-used")
            info = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="gen-info")

    @safe(message=message, labels=LABELS)
    def on_generate(*values: Any) -> dict:
        result, path = run(*values, output_dir=output_dir, cache=cache)
        note = "  \n".join(f"⚠️ {md_escape(w)}" for w in result.warnings)
        return {image: served(path), used: [u.row() for u in result.loras], info: result.infotext(), message: note}

    tab = GenerateTab(model_box, v_pred, lora_box, prompt, negative, sampler, steps, cfg, seed, width, height, button,
                      image, used, info, message, on_generate)
    button.click(on_generate, tab.inputs, [image, used, info, message], api_name="generate")
    return tab
