"""What the Generate, LoRA library and Epoch grid tabs point at: the training config's output folder, output
name, base model and resolution, so a finished run (and the demo) can be tried without typing a path.

`tab_defaults(cfg)` is the one derivation: `ui.app.build_app` builds the tabs with it (with `--demo` the
config is the demo's), and `link` re-derives it whenever one of `LINKED_FIELDS` changes on the LoRA page
(typing, Load, a preset, Dataset preparation), so the tabs follow the run the page would train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from kohya_lite.config import TrainingConfig, parse_resolution
from kohya_lite.errors import UserError

LINKED_FIELDS = ("pretrained_model_name_or_path", "v_parameterization", "sdxl", "output_dir", "output_name",
                 "max_resolution")
MIN_SIZE, MAX_SIZE = 64, 2048  # the tabs' width/height sliders


@dataclass(frozen=True)
class TabDefaults:
    model_path: str  # the base model the LoRA is trained on
    v_prediction: bool
    lora_dir: str  # Generate's and the library's LoRA folder: the run's output folder
    output_dir: str  # the grid's training output folder
    output_name: str  # the grid's output name
    width: int
    height: int


def _size(value: int) -> int:
    return max(MIN_SIZE, min(MAX_SIZE, value // 8 * 8))


def tab_defaults(cfg: TrainingConfig) -> TabDefaults:
    """The Generate / LoRA library / Epoch grid defaults for a training config."""
    try:
        w, h = parse_resolution(cfg.max_resolution)
    except (UserError, ValueError, TypeError):
        w = h = 1024 if cfg.sdxl else 512
    out = (cfg.output_dir or "").strip()
    folder = str(Path(out).expanduser()) if out else ""
    return TabDefaults(model_path=(cfg.pretrained_model_name_or_path or "").strip(),
                       v_prediction=bool(cfg.v_parameterization), lora_dir=folder, output_dir=folder,
                       output_name=(cfg.output_name or "").strip(), width=_size(w), height=_size(h))


def _from_fields(values: tuple) -> TabDefaults:
    fields = dict(zip(LINKED_FIELDS, values))
    fields["v_parameterization"] = bool(fields["v_parameterization"])
    fields["sdxl"] = bool(fields["sdxl"])
    return tab_defaults(TrainingConfig().replace(**{k: ("" if v is None else v) for k, v in fields.items()}))


def link(page: Any, gen: Any, lib: Any, grid: Any) -> None:
    """Keep the tabs on the LoRA page's output folder, name, model and resolution as those fields change."""
    inputs = [page.widgets[n] for n in LINKED_FIELDS]
    outputs = [gen.model_path, gen.v_prediction, gen.lora_dir, gen.width, gen.height, lib.folder, grid.output_dir,
               grid.name, grid.model_path, grid.v_prediction, grid.lora_dir, grid.width, grid.height]

    def follow(*values: Any) -> list:
        d = _from_fields(values)
        name = gr.update(choices=[d.output_name] if d.output_name else [], value=d.output_name or None)
        return [d.model_path, d.v_prediction, d.lora_dir, d.width, d.height, d.lora_dir, d.output_dir, name,
                d.model_path, d.v_prediction, d.lora_dir, d.width, d.height]

    gr.on([c.change for c in inputs], follow, inputs, outputs, trigger_mode="always_last", show_progress="hidden",
          queue=False, api_visibility="private")
