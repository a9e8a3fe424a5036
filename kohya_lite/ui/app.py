"""Assemble the page: LoRA tab (training) and Utilities tab, plus launch settings.

`build_app` takes the starting config (defaults, or the demo's) and the Worker; `launch` binds
127.0.0.1:7860 unless told otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from kohya_lite import __version__
from kohya_lite.config import TrainingConfig
from kohya_lite.ui import generate_tab, grid_tab, library_tab, lora_tab, utilities_tab

log = logging.getLogger("kohya_lite.ui")

CSS = """
.kl-problems li { color: #c62828; font-size: 0.92em; }
.kl-error p { color: #c62828; }
.kl-quiet [data-testid="status-tracker"] { display: none !important; }
.kl-dirty p { color: #b26a00; font-weight: 600; }
.kl-progress { position: relative; height: 28px; border-radius: 6px; background: var(--neutral-200, #e5e5e5);
               overflow: hidden; }
.kl-progress-bar { height: 100%; background: var(--color-accent, #f97316); transition: width 0.4s; }
.kl-progress-text { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
                    font-weight: 600; color: #111; }
"""


def load_worker() -> Any:
    """The app's one Worker (runs live under the kohya-lite home folder)."""
    from kohya_lite.paths import runs_dir
    from kohya_lite.worker import Worker

    d = runs_dir()
    d.mkdir(parents=True, exist_ok=True)
    return Worker(d)


def build_app(cfg: TrainingConfig | None = None, *, config_path: str = "", config_status: str = "",
              worker: Any = None) -> gr.Blocks:
    cfg = cfg or TrainingConfig()
    with gr.Blocks(title="kohya-lite", analytics_enabled=False) as app:
        gr.Markdown(f"## kohya-lite {__version__} · LoRA trainer", elem_id="title")
        with gr.Tabs(elem_id="main-tabs") as tabs:
            with gr.Tab("LoRA", id="lora"):
                page = lora_tab.build(cfg, worker, app, config_path, config_status)
            with gr.Tab("Generate", id="generate"):
                gen = generate_tab.build(model_path=cfg.pretrained_model_name_or_path, output_dir=None)
            with gr.Tab("LoRA library", id="library"):
                library_tab.build(prompt=gen.prompt)
            with gr.Tab("Epoch grid", id="grid"):
                grid_tab.build(output_dir=cfg.output_dir, model_path=cfg.pretrained_model_name_or_path)
            with gr.Tab("Utilities", id="utilities"):
                utilities_tab.build(page)
    app.kohya_page = page  # for tests and tools: the widgets by kohya key
    app.kohya_tabs = tabs
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           share: bool = False, inbrowser: bool = False) -> None:
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, auth=auth, share=share, inbrowser=inbrowser, css=CSS,
               show_error=False, quiet=False, footer_links=[])
