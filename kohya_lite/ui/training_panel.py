"""The training panel: Train model / Stop, and the live view of the worker's run.

All run state lives in the server-side `Worker`; the page polls it once a second through one shared
`RunMonitor`, so a reload (or a second tab) shows the running job. Each browser session remembers
what it has already drawn and only receives the parts that changed (plot, gallery and checkpoint
list are skipped when unchanged), so a poll stays a few milliseconds.
"""

from __future__ import annotations

import html
import logging
import os
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from kohya_lite.check import run_check
from kohya_lite.errors import Problem, UserError
from kohya_lite.ui.page import Page
from kohya_lite.ui.run_view import ACTIVE_STATES, RunMonitor, RunView, existing
from kohya_lite.ui.safe import problems_markdown, safe

log = logging.getLogger("kohya_lite.ui")
POLL_SECONDS = 1.0
SLOW_POLL_S = 1.0  # a poll slower than this is logged (the page must never wait longer)
QUIET = ["kl-quiet"]  # polled outputs: no progress timer flashing every second
NO_WORKER = Problem("training is not available: the background worker (kohya_lite.worker) is not installed",
                    fix="update kohya-lite; Check and Save still work")


def progress_html(view: RunView) -> str:
    pct = view.percent
    state = html.escape(view.state_text())
    return (f'<div class="kl-progress" data-percent="{pct}" data-state="{html.escape(view.state)}" '
            f'data-run="{html.escape(view.run_id or "")}">'
            f'<div class="kl-progress-bar" style="width:{pct}%"></div>'
            f'<span class="kl-progress-text">{pct}% · {state}</span></div>')


def loss_frame(view: RunView) -> pd.DataFrame | None:
    """None before the first step: gradio 6.31's chart keeps the axis types and colours of the first
    data it is given, so it must never be given an empty frame."""
    rows = view.plot_rows()
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype(
        {"step": "int64", "loss": "float64", "series": "str"})


def _allow(app: gr.Blocks, folder: str | None) -> None:
    """Let gradio serve files (checkpoints, samples) from a run's output folder, and only those."""
    if not folder:
        return
    p = os.path.abspath(folder)
    allowed = getattr(app, "allowed_paths", None)
    if isinstance(allowed, list) and p not in allowed:
        allowed.append(p)


def build(page: Page, worker: Any, app: gr.Blocks, train_btn: gr.Button, stop_btn: gr.Button) -> None:
    monitor = RunMonitor(worker) if worker is not None else None
    with gr.Group(elem_id="training-panel"):
        progress = gr.HTML(progress_html(RunView()), elem_id="run-progress", elem_classes=QUIET)
        stats = gr.Markdown("No training run yet.", elem_id="run-stats", elem_classes=QUIET)
        error = gr.Markdown("", elem_id="run-error", elem_classes=["kl-error", *QUIET])
        with gr.Row():
            plot = gr.LinePlot(None, x="step", y="loss", color="series", label="Loss",
                               elem_id="run-loss", height=260, scale=3, elem_classes=QUIET)
            files = gr.Files(label="Saved checkpoints", interactive=False, elem_id="run-checkpoints", scale=2,
                             elem_classes=QUIET)
        gallery = gr.Gallery(label="Sample images", columns=6, height=220, elem_id="run-samples", fit_columns=False,
                             object_fit="contain",
                             interactive=False, elem_classes=QUIET)
        log_box = gr.Textbox(label="Log", lines=8, max_lines=8, interactive=False, autoscroll=True,
                             elem_id="run-log", elem_classes=QUIET)
    drawn = gr.State({})  # this session's last drawn (run, counts, state)
    problems_all = page.problem_boxes["all"]

    def render(view: RunView, seen: dict) -> dict[Any, Any]:
        """Only what changed since this session last drew."""
        key = {"run": view.run_id, "n": view.n_events, "state": view.state, "loss": len(view.losses),
               "samples": len(view.samples), "ckpt": len(view.checkpoints)}
        if key == seen:
            return {drawn: seen}
        fresh = key["run"] != seen.get("run")
        out: dict[Any, Any] = {drawn: key, progress: progress_html(view), stats: view.stats_line(),
                               error: view.error_text(), log_box: view.log_text()}
        if fresh or key["loss"] != seen.get("loss"):
            out[plot] = loss_frame(view)
        if fresh or key["samples"] != seen.get("samples"):
            out[gallery] = [(p, c) for p, c in view.samples if Path(p).is_file()]
        if fresh or key["ckpt"] != seen.get("ckpt"):
            out[files] = existing(view.checkpoints) or None
        if fresh or key["state"] != seen.get("state"):
            running = view.state in ACTIVE_STATES
            out[train_btn] = gr.update(interactive=not running)
            out[stop_btn] = gr.update(visible=running,
                                      value="Stop now (kill)" if view.state == "stopping" else "Stop")
        return out

    panel_outputs = [drawn, progress, stats, error, log_box, plot, gallery, files, train_btn, stop_btn]

    @safe(message=error)
    def tick(seen: dict | None):
        if monitor is None:
            return {drawn: seen or {}}
        t0 = time.perf_counter()
        view = monitor.refresh()
        _allow(app, monitor.output_dir)
        out = render(view, seen or {})
        elapsed = time.perf_counter() - t0
        if elapsed > SLOW_POLL_S:
            log.warning("slow poll: %.2fs (run %s, %d events)", elapsed, view.run_id, view.n_events)
        return out

    @safe(message=problems_all)
    def train(extra: dict | None, *values: Any):
        if worker is None:
            return {problems_all: problems_markdown([NO_WORKER])}
        cfg = page.config_from(extra, *values)
        result = run_check(cfg)
        if not result.ok:
            return page.show_check(result, "")
        try:
            run_id = worker.start(cfg, checked=result)
        except UserError as exc:
            return page.show_problems([exc.problem], "❌ Training did not start.")
        _allow(app, cfg.output_dir)
        out = page.show_check(result, f"Training started (run {run_id}).")
        out[train_btn] = gr.update(interactive=False)
        out[stop_btn] = gr.update(visible=True, value="Stop")
        return out

    @safe(message=problems_all)
    def stop():
        if worker is None:
            return {problems_all: problems_markdown([NO_WORKER])}
        state = getattr(worker.status(), "state", "idle")
        if state not in ACTIVE_STATES:
            return {problems_all: "No training is running.", stop_btn: gr.update(visible=False)}
        worker.stop()
        if state == "stopping":
            return {problems_all: "⏹ Stopping now: the training process is being ended."}
        return {problems_all: "⏹ Stopping: a checkpoint of the current step is being saved. "
                              "Click *Stop now (kill)* to end at once without saving.",
                stop_btn: gr.update(value="Stop now (kill)")}

    # one start/stop at a time across all sessions: two quick clicks must not race into two runs
    train_btn.click(train, page.inputs, [*page.problem_outputs, train_btn, stop_btn], api_name="train",
                    concurrency_limit=1, concurrency_id="run-control")
    stop_btn.click(stop, None, [problems_all, stop_btn], api_name="stop", concurrency_limit=1,
                   concurrency_id="run-control")
    if monitor is not None:
        timer = gr.Timer(POLL_SECONDS)
        timer.tick(tick, [drawn], panel_outputs, show_progress="hidden", api_visibility="private")
        app.load(tick, [drawn], panel_outputs, show_progress="hidden", api_visibility="private")
