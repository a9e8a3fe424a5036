"""Assemble the page: LoRA tab (training), Generate, LoRA library, Epoch grid and Utilities, plus launch settings.

`build_app` takes the starting config (defaults, or the demo's) and the Worker; the Generate / library / grid
tabs start from `tab_defaults.tab_defaults(cfg)` and follow the LoRA page's output folder, name, model and
resolution (`tab_defaults.link`). `launch` binds 127.0.0.1:7860 unless told otherwise and never widens
gradio's allowed paths: files reach the browser only as `files.served` copies.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from kohya_lite import __version__
from kohya_lite.config import TrainingConfig
from kohya_lite.ui import generate_tab, grid_tab, library_tab, lora_tab, tab_defaults, utilities_tab

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
/* the run bar: Train/Stop/Resume/Check and the run's state stay in view while the settings scroll
   (gradio's container hides its overflow, which would make it the sticky bar's scroller; clip does not) */
.gradio-container { overflow: clip !important; }
#run-bar { position: sticky; bottom: 0; z-index: 50; background: var(--background-fill-primary, #fff);
           border-top: 1px solid var(--border-color-primary, #e5e7eb); box-shadow: 0 -6px 14px rgba(0,0,0,0.08);
           padding: 8px 4px 4px; gap: 6px; }
#run-bar .prose p { margin: 0; }
#run-stats { text-align: right; font-size: 0.9em; }
#overwrite-confirm { border: 1px solid #b26a00; border-radius: 6px; padding: 8px; background: #fff8e1; }
/* an emptied number box: red border and its placeholder ("enter a number") in red, beside the field */
.kl-number input:placeholder-shown { border-color: #c62828 !important;
           box-shadow: 0 0 0 1px #c62828 !important; }
.kl-number input::placeholder { color: #c62828; opacity: 1; font-weight: 600; }
/* the checkpoint list is read-only: no per-file remove buttons */
#run-checkpoints .label-clear-button { display: none !important; }
.kl-chart { width: 100%; max-height: 280px; }
.kl-chart-empty { color: #6b7280; padding: 24px 8px; font-size: 0.92em; }
"""

# The log box keeps showing its newest line unless the user has scrolled up in it.
JS = """
() => {
  let last = null, follow = true;
  setInterval(() => {
    const t = document.querySelector('#run-log textarea');
    if (!t) return;
    if (t.value !== last) { last = t.value; if (follow) t.scrollTop = t.scrollHeight; }
    else follow = t.scrollTop + t.clientHeight >= t.scrollHeight - 8;
  }, 250);
}
"""


def load_worker() -> Any:
    """The app's one Worker (runs live under the kohya-lite home folder)."""
    from kohya_lite.paths import runs_dir
    from kohya_lite.worker import Worker

    d = runs_dir()
    d.mkdir(parents=True, exist_ok=True)
    return Worker(d)


def build_app(cfg: TrainingConfig | None = None, *, config_path: str = "", config_status: str = "",
              worker: Any = None, intro: str = "", prompts: dict | None = None) -> gr.Blocks:
    """`intro`: the run bar's first line (the demo says it is ready to train). `prompts`: the Generate and grid
    tabs' starting prompts and CFG scale (`prompt`, `grid_prompt`, `cfg_scale`; the demo's try its LoRA)."""
    p = prompts or {}
    cfg_kw = {"cfg_scale": p["cfg_scale"]} if "cfg_scale" in p else {}
    cfg = cfg or TrainingConfig()
    d = tab_defaults.tab_defaults(cfg)
    with gr.Blocks(title="kohya-lite", analytics_enabled=False) as app:
        gr.Markdown(f"## kohya-lite {__version__} · LoRA trainer", elem_id="title")
        with gr.Tabs(elem_id="main-tabs") as tabs:
            with gr.Tab("LoRA", id="lora"):
                page = lora_tab.build(cfg, worker, app, config_path, config_status, intro)
            with gr.Tab("Generate", id="generate"):
                gen = generate_tab.build(model_path=d.model_path, lora_dir=d.lora_dir, output_dir=None,
                                         v_prediction=d.v_prediction, width=d.width, height=d.height,
                                         prompt=p.get("prompt", ""), **cfg_kw)
            with gr.Tab("LoRA library", id="library"):
                lib = library_tab.build(lora_dir=d.lora_dir, prompt=gen.prompt)
            with gr.Tab("Epoch grid", id="grid"):
                grid = grid_tab.build(output_dir=d.output_dir, model_path=d.model_path, lora_dir=d.lora_dir,
                                      name=d.output_name, v_prediction=d.v_prediction, width=d.width, height=d.height,
                                      prompt=p.get("grid_prompt", ""), **cfg_kw)
            with gr.Tab("Utilities", id="utilities"):
                utilities_tab.build(page)
        tab_defaults.link(page, gen, lib, grid)
    app.kohya_page = page  # for tests and tools: the widgets by kohya key
    app.kohya_tabs = tabs
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           share: bool = False, inbrowser: bool = False) -> None:
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, auth=auth, share=share, inbrowser=inbrowser, css=CSS, js=JS,
               show_error=False, quiet=False, footer_links=[])
