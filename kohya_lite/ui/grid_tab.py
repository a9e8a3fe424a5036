"""Epoch × weight grid tab: compare a training run's checkpoints at several LoRA weights.

Wiring only (`kohya_lite.grid`): "Find checkpoints" lists the output names and checkpoints of a training
output folder; "Render grid" renders the seeded prompt for every checkpoint × weight on the model kept by
`generate.MODEL_CACHE` and shows the labelled grid (saved as PNG in `<output folder>/grid/`) and its cell layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from kohya_lite.prompts import SAMPLERS
from kohya_lite.errors import UserError
from kohya_lite.generate import (DEFAULT_CFG, DEFAULT_SAMPLER, DEFAULT_STEPS, MODEL_CACHE, GenerateRequest,
                                 ModelCache, prepare, save_image)
from kohya_lite.grid import DEFAULT_WEIGHTS, GridResult, checkpoint_names, find_checkpoints, parse_weights, render_grid
from kohya_lite.library import DEFAULT_LORA_DIR
from kohya_lite.prompts import format_weight
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.files import served
from kohya_lite.ui.safe import md_escape, safe
from kohya_lite.ui.widgets import path_field

LABELS = {"output_dir": "Training output folder", "name": "Output name", "model": "Base model",
          "lora_dir": "LoRA folder", "prompt": "Prompt", "negative": "Negative prompt", "weights": "Weights",
          "sampler": "Sampler", "steps": "Steps", "cfg_scale": "CFG scale", "seed": "Seed", "width": "Width",
          "height": "Height"}


@dataclass
class GridTab:
    output_dir: gr.Textbox
    find: gr.Button
    name: gr.Dropdown
    checkpoints: gr.Markdown
    model_path: gr.Textbox
    v_prediction: gr.Checkbox
    lora_dir: gr.Textbox
    prompt: gr.Textbox
    negative: gr.Textbox
    weights: gr.Textbox
    sampler: gr.Dropdown
    steps: gr.Slider
    cfg: gr.Slider
    seed: gr.Number
    width: gr.Slider
    height: gr.Slider
    button: gr.Button
    image: gr.Image
    layout: gr.Markdown
    message: gr.Markdown
    on_find: Callable[..., dict]
    on_render: Callable[..., dict]

    @property
    def inputs(self) -> list:
        return [self.output_dir, self.name, self.model_path, self.v_prediction, self.lora_dir, self.prompt,
                self.negative, self.weights, self.sampler, self.steps, self.cfg, self.seed, self.width, self.height]


def describe(output_dir: str, name: str | None) -> tuple[list[str], str | None, str]:
    """(output names, the chosen one, markdown list of its checkpoints)."""
    names = checkpoint_names(output_dir)
    if not names:
        find_checkpoints(output_dir)  # raises the "no checkpoints" UserError
    chosen = name if name in names else names[0]
    cps = find_checkpoints(output_dir, chosen)
    lines = [f"**{md_escape(chosen)}**: {len(cps)} checkpoint{'s' if len(cps) != 1 else ''}"]
    lines += [f"- {c.label}: {md_escape(c.path.name)}" for c in cps]
    return names, chosen, "\n".join(lines)


def layout_text(result: GridResult) -> str:
    """The grid's rows and columns in words (instead of the raw cell layout)."""
    lay = result.layout
    w, h = lay.cell_size
    return (f"Rows (checkpoints): {md_escape(', '.join(lay.row_labels))}  \n"
            f"Columns (LoRA weight): {md_escape(', '.join(lay.col_labels))}  \n"
            f"{len(lay.row_labels)} × {len(lay.col_labels)} cells of {w}×{h} px, seed {result.seed}")


def run(output_dir: str, name: str | None, model_path: str, v_prediction: bool, lora_dir: str, prompt: str,
        negative: str, weights: str, sampler: str, steps: Any, cfg: Any, seed: Any, width: Any, height: Any, *,
        cache: ModelCache = MODEL_CACHE, progress: Callable[[int, int, str], None] | None = None,
        save_to: str | Path | None = None) -> tuple[GridResult, Path]:
    """Render and save the grid (default: `<output_dir>/grid/<name>-<time>.png`)."""
    if not str(model_path or "").strip():
        raise UserError("no base model is chosen", field="model", fix="enter the base model the LoRA was trained on")
    request = GenerateRequest(prompt=prompt or "", negative=negative or "", steps=int(steps or DEFAULT_STEPS),
                              cfg_scale=float(cfg if cfg is not None else DEFAULT_CFG),
                              seed=int(seed) if seed not in (None, "") else -1, width=int(width or 0) or None,
                              height=int(height or 0) or None, sampler=sampler or DEFAULT_SAMPLER)
    prepare(request)
    parse_weights(weights)
    cps = find_checkpoints(output_dir, name or None)
    model = cache.get(model_path, v_parameterization=bool(v_prediction))
    result = render_grid(model, output_dir, request, name=name or None, weights=weights, lora_dir=lora_dir,
                         progress=progress)
    folder = Path(save_to) if save_to else Path(output_dir).expanduser() / "grid"
    path = folder / f"{cps[0].name}-{time.strftime('%Y%m%d-%H%M%S')}-{result.seed}.png"
    save_image(result.image, path, parameters=result.infotext())
    return result, path


def build(*, output_dir: str = "", model_path: str = "", lora_dir: str = str(DEFAULT_LORA_DIR),
          cache: ModelCache = MODEL_CACHE, name: str = "", v_prediction: bool = False, width: int = 512,
          height: int = 512, prompt: str = "", cfg_scale: float = DEFAULT_CFG) -> GridTab:
    gr.Markdown("Renders one seeded prompt for every epoch checkpoint (rows) at every LoRA weight (columns). "
                "Weight 0 is the base model.")
    out_box, _ = path_field(FieldSpec("grid_output_dir", "Training output folder",
                                      "holds name-000001.safetensors … name.safetensors", "path", "grid"), output_dir)
    with gr.Row():
        find = gr.Button("Find checkpoints", elem_id="grid-find", scale=1)
        name_box = gr.Dropdown(choices=[name] if name else [], value=name or None, label="Output name",
                               allow_custom_value=True, scale=2, elem_id="grid-name")
    checkpoints = gr.Markdown("", elem_id="grid-checkpoints")
    with gr.Row():
        model_box, _ = path_field(FieldSpec("grid_model", "Base model", "the model the LoRA was trained on", "model",
                                            "grid"), model_path)
        v_pred = gr.Checkbox(v_prediction, label="V-prediction", elem_id="grid-vpred")
    lora_box, _ = path_field(FieldSpec("grid_lora_dir", "LoRA folder", "for extra <lora:…> tags in the prompt",
                                       "path", "grid"), lora_dir)
    prompt = gr.Textbox(prompt, label="Prompt", lines=2, elem_id="grid-prompt")
    negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="grid-negative")
    with gr.Row():
        weights = gr.Textbox(",".join(format_weight(w) for w in DEFAULT_WEIGHTS), label="Weights",
                             info="comma-separated, negative allowed", elem_id="grid-weights")
        sampler = gr.Dropdown(choices=list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler", elem_id="grid-sampler")
        seed = gr.Number(1, precision=0, label="Seed", info="-1 = random (one seed for all cells)", elem_id="grid-seed")
    with gr.Row():
        steps = gr.Slider(1, 150, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="grid-steps")
        cfg = gr.Slider(0, 30, value=cfg_scale, step=0.5, label="CFG scale", elem_id="grid-cfg")
        width = gr.Slider(64, 2048, value=width, step=8, label="Width", elem_id="grid-width")
        height = gr.Slider(64, 2048, value=height, step=8, label="Height", elem_id="grid-height")
    button = gr.Button("Render grid", variant="primary", elem_id="grid-run")
    message = gr.Markdown("", elem_id="grid-message", elem_classes=["kl-problems"])
    image = gr.Image(label="Grid", type="filepath", format="png", interactive=False, elem_id="grid-image")
    layout = gr.Markdown("", elem_id="grid-layout")

    @safe(message=message, labels=LABELS)
    def on_find(folder: str, current: str | None) -> dict:
        names, chosen, text = describe(folder, current)
        return {name_box: gr.update(choices=names, value=chosen), checkpoints: text, message: ""}

    @safe(message=message, labels=LABELS)
    def on_render(*values: Any, progress: gr.Progress = gr.Progress()) -> dict:
        def report(done: int, total: int, what: str) -> None:
            progress((done, total), desc=what)

        result, path = run(*values, cache=cache, progress=report)
        return {image: served(path), layout: layout_text(result), message: f"Saved {md_escape(path)}"}

    find.click(on_find, [out_box, name_box], [name_box, checkpoints, message], api_name="grid_find")
    tab = GridTab(out_box, find, name_box, checkpoints, model_box, v_pred, lora_box, prompt, negative, weights,
                  sampler, steps, cfg, seed, width, height, button, image, layout, message, on_find, on_render)
    button.click(on_render, tab.inputs, [image, layout, message], api_name="grid_render")
    return tab
