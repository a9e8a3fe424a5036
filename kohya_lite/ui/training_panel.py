"""The run bar (Train model / Stop / Resume / Check / Print command, progress and what the run is doing) and
the training panel below it (stats, loss chart, checkpoints, samples, log).

The bar sticks to the bottom of the window while the settings are scrolled, so the buttons and the run's
state are always in view. All run state lives in the server-side `Worker`; the page polls it once a second
through one shared `RunMonitor`, so a reload (or a second tab) shows the running job. Each browser session
remembers what it has already drawn and only receives the parts that changed.

Train model checks the page (empty number boxes, `check`, the output-folder lock) and, when the output folder
already holds files of the output name, asks first: replace them (they are moved into a hidden subfolder, not
deleted), or train under the next free name. After a graceful Stop, Resume continues the stopped run from its
training state with that run's own settings. Files reach the browser only through `files.served` (copies of
what the run wrote), never by opening the output folder to gradio.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from kohya_lite import output_folder
from kohya_lite.check import CheckResult, run_check
from kohya_lite.config import TrainingConfig, load_config
from kohya_lite.errors import Problem, UserError
from kohya_lite.ui.chart import loss_svg
from kohya_lite.ui.files import served
from kohya_lite.ui.page import Page
from kohya_lite.ui.run_view import ACTIVE_STATES, RunMonitor, RunView, existing
from kohya_lite.ui.safe import md_escape, problems_markdown, safe

log = logging.getLogger("kohya_lite.ui")
POLL_SECONDS = 1.0
SLOW_POLL_S = 1.0  # a poll slower than this is logged (the page must never wait longer)
QUIET = ["kl-quiet"]  # polled outputs: no progress timer flashing every second
NO_WORKER = Problem("training is not available: the background worker (kohya_lite.worker) is not installed",
                    fix="update kohya-lite; Check and Save still work")


@dataclass
class RunBar:
    train: gr.Button
    stop: gr.Button
    resume: gr.Button
    check: gr.Button
    print_: gr.Button
    confirm: gr.Column  # "the output folder already holds files of this name": replace / new name / cancel
    confirm_text: gr.Markdown
    replace: gr.Button
    rename: gr.Button
    cancel: gr.Button
    progress: gr.HTML
    stats: gr.Markdown
    status: gr.Markdown  # one line: what the run is doing, or the last action's outcome


def progress_html(view: RunView) -> str:
    pct = view.percent
    state = html.escape(view.state_text())
    return (f'<div class="kl-progress" data-percent="{pct}" data-state="{html.escape(view.state)}" '
            f'data-run="{html.escape(view.run_id or "")}">'
            f'<div class="kl-progress-bar" style="width:{pct}%"></div>'
            f'<span class="kl-progress-text">{pct}% · {state}</span></div>')


def build_bar(intro: str = "") -> RunBar:
    """The sticky bar, laid out where the caller is (after the settings)."""
    with gr.Column(elem_id="run-bar"):
        with gr.Row():
            train = gr.Button("Train model", variant="primary", elem_id="btn-train")
            stop = gr.Button("Stop", variant="stop", elem_id="btn-stop", visible=False)
            resume = gr.Button("Resume", variant="primary", elem_id="btn-resume", visible=False)
            check = gr.Button("Check", elem_id="btn-check")
            print_ = gr.Button("Print command", elem_id="btn-print")
        with gr.Column(visible=False, elem_id="overwrite-confirm") as confirm:
            confirm_text = gr.Markdown("", elem_id="overwrite-text")
            with gr.Row():
                rename = gr.Button("Train under a new name", variant="primary", elem_id="btn-rename")
                replace = gr.Button("Replace and train", variant="stop", elem_id="btn-replace")
                cancel = gr.Button("Cancel", elem_id="btn-cancel")
        progress = gr.HTML(progress_html(RunView()), elem_id="run-progress", elem_classes=QUIET)
        with gr.Row(equal_height=False):
            status = gr.Markdown(intro, elem_id="run-status", elem_classes=QUIET, scale=3)
            stats = gr.Markdown("No training run yet.", elem_id="run-stats", elem_classes=QUIET, scale=2)
    return RunBar(train, stop, resume, check, print_, confirm, confirm_text, replace, rename, cancel, progress, stats,
                  status)


def build(page: Page, worker: Any, app: gr.Blocks, bar: RunBar) -> None:
    """The panel below the bar, and the wiring of the bar's buttons and the poll."""
    monitor = RunMonitor(worker) if worker is not None else None
    with gr.Column(elem_id="run-panel"):
        error = gr.Markdown("", elem_id="run-error", elem_classes=["kl-error", *QUIET])
        with gr.Row():
            with gr.Column(scale=3):
                chart = gr.HTML(loss_svg([]), label="Loss", elem_id="run-loss", elem_classes=QUIET)
            files = gr.Files(label="Saved checkpoints", interactive=False, elem_id="run-checkpoints", scale=2,
                             elem_classes=QUIET)
        gallery = gr.Gallery(label="Sample images", columns=6, height=220, elem_id="run-samples", fit_columns=False,
                             object_fit="contain", interactive=False, elem_classes=QUIET)
        log_box = gr.Textbox(label="Log", lines=8, max_lines=8, interactive=False, autoscroll=True,
                             elem_id="run-log", elem_classes=QUIET)
    drawn = gr.State({})  # this session's last drawn (run, counts, state)
    problems_all = page.problem_boxes["all"]
    w = page.widgets

    def render(view: RunView, seen: dict) -> dict[Any, Any]:
        """Only what changed since this session last drew."""
        key = {"run": view.run_id, "n": view.n_events, "state": view.state, "loss": len(view.losses),
               "samples": len(view.samples), "ckpt": len(view.checkpoints)}
        if key == seen:
            return {drawn: seen}
        fresh = key["run"] != seen.get("run")
        out: dict[Any, Any] = {drawn: key, bar.progress: progress_html(view), bar.stats: view.stats_line(),
                               error: view.error_text(), log_box: view.log_text()}
        if fresh or key["loss"] != seen.get("loss"):
            out[chart] = loss_svg(view.plot_points())
        if fresh or key["samples"] != seen.get("samples"):
            out[gallery] = [(served(p), c) for p, c in view.samples if Path(p).is_file()]
        if fresh or key["ckpt"] != seen.get("ckpt"):
            out[files] = [served(p) for p in existing(view.checkpoints)] or None
        if fresh or key["state"] != seen.get("state"):
            running = view.state in ACTIVE_STATES
            out[bar.train] = gr.update(interactive=not running)
            out[bar.stop] = gr.update(visible=running, value="Stop now (kill)" if view.state == "stopping" else "Stop")
            out[bar.resume] = gr.update(visible=view.can_resume)
            if view.run_id is not None:
                out[bar.status] = view.note()
        return out

    panel_outputs = [drawn, bar.progress, bar.stats, bar.status, error, log_box, chart, gallery, files, bar.train,
                     bar.stop, bar.resume]

    @safe(message=error)
    def tick(seen: dict | None):
        if monitor is None:
            return {drawn: seen or {}}
        t0 = time.perf_counter()
        view = monitor.refresh()
        out = render(view, seen or {})
        elapsed = time.perf_counter() - t0
        if elapsed > SLOW_POLL_S:
            log.warning("slow poll: %.2fs (run %s, %d events)", elapsed, view.run_id, view.n_events)
        return out

    # ---- starting a run ------------------------------------------------------------------------------
    def refused(problems: list[Problem], headline: str = "❌ Training did not start.") -> dict[Any, Any]:
        out = page.show_problems(problems, headline)
        out[bar.confirm] = gr.update(visible=False)
        return out

    def ready(extra: dict | None, values: tuple) -> tuple[TrainingConfig | None, CheckResult | None, dict | None]:
        """The page's config and its check, or the answer that says why training cannot start."""
        blank = page.blank_problems(values)
        if blank:
            out = page.show_blank(blank)
            out[bar.confirm] = gr.update(visible=False)
            return None, None, out
        cfg = page.config_from(extra, *values)
        return (cfg, *checked(cfg))

    def checked(cfg: TrainingConfig) -> tuple[CheckResult | None, dict | None]:
        result = run_check(cfg)
        if not result.ok:
            out = page.show_check(result, "")
            out[bar.confirm] = gr.update(visible=False)
            return None, out
        held = output_folder.holder(cfg.output_dir)
        if held is not None:
            return None, refused([output_folder.in_use_error(cfg.output_dir, held).problem])
        return result, None

    def start(cfg: TrainingConfig, result: CheckResult, note: str = "") -> dict[Any, Any]:
        try:
            run_id = worker.start(cfg, checked=result)
        except UserError as exc:
            return refused([exc.problem])
        out = page.show_check(result, f"Training started (run {run_id}).{note}")
        out.update({bar.train: gr.update(interactive=False), bar.stop: gr.update(visible=True, value="Stop"),
                    bar.resume: gr.update(visible=False), bar.confirm: gr.update(visible=False)})
        return out

    @safe(message=problems_all)
    def train(extra: dict | None, *values: Any):
        if worker is None:
            return {problems_all: problems_markdown([NO_WORKER])}
        cfg, result, answer = ready(extra, values)
        if answer is not None:
            return answer
        old = output_folder.files_of(cfg.output_dir, cfg.output_name)
        if old and not cfg.resume:  # ask first: replace them, or a new name
            new = output_folder.free_name(cfg.output_dir, cfg.output_name)
            n = len(old)
            headline = f"⚠️ '{md_escape(cfg.output_name)}' already has {n} file{'s' * (n != 1)} in the output folder: " \
                       "choose below (nothing started yet)."
            out = page.show_check(result, "")
            out[page.status] = out[problems_all] = headline
            out[bar.confirm] = gr.update(visible=True)
            them = "them" if n != 1 else "it"
            out[bar.confirm_text] = (
                f"**The output folder already holds {n} file{'s' * (n != 1)} of '{md_escape(cfg.output_name)}'** "
                f"({md_escape(output_folder.describe(old))}). A new run would overwrite {them}, and old epoch files "
                f"would mix with the new ones.  \n*Train as '{md_escape(new)}'* keeps {them}; *Replace* moves {them} "
                f"into {md_escape(output_folder.REPLACED_DIR)}/ inside the output folder first (nothing is deleted).")
            out[bar.rename] = gr.update(value=f"Train as '{new}'")
            return out
        return start(cfg, result)

    @safe(message=problems_all)
    def train_renamed(extra: dict | None, *values: Any):
        cfg, result, answer = ready(extra, values)
        if answer is not None:
            return answer
        new = output_folder.free_name(cfg.output_dir, cfg.output_name)
        cfg = cfg.replace(output_name=new)
        result, answer = checked(cfg)
        if answer is not None:
            return answer
        out = start(cfg, result, f" Output name: {md_escape(new)}.")
        out[w["output_name"]] = new
        return out

    @safe(message=problems_all)
    def train_replacing(extra: dict | None, *values: Any):
        cfg, result, answer = ready(extra, values)
        if answer is not None:
            return answer
        dest, moved = output_folder.move_aside(cfg.output_dir, cfg.output_name)
        result, answer = checked(cfg)  # again: the moved files are no longer a warning
        if answer is not None:
            return answer
        note = f" The {len(moved)} old files were moved to {md_escape(dest)}." if moved else ""
        return start(cfg, result, note)

    def cancel():
        return {bar.confirm: gr.update(visible=False), page.status: "Nothing started.",
                problems_all: "Nothing started."}

    @safe(message=problems_all)
    def resume():
        if worker is None:
            return {problems_all: problems_markdown([NO_WORKER])}
        view = monitor.refresh()
        st = worker.status()
        if not view.can_resume or not getattr(st, "config_path", None):
            return {problems_all: "There is no stopped run with a saved training state to resume.",
                    bar.resume: gr.update(visible=False)}
        cfg, _ = load_config(st.config_path)
        cfg = cfg.replace(resume=view.stopped_state)
        result, answer = checked(cfg)
        if answer is not None:
            return answer
        step = f" at step {view.stopped_step:,}" if view.stopped_step else ""
        return start(cfg, result, f" Resuming run {view.run_id}{step} from {md_escape(Path(view.stopped_state).name)}/ "
                                  "with that run's own settings.")

    @safe(message=problems_all)
    def stop():
        if worker is None:
            return {problems_all: problems_markdown([NO_WORKER])}
        state = getattr(worker.status(), "state", "idle")
        if state not in ACTIVE_STATES:
            return {page.status: "No training is running.", bar.stop: gr.update(visible=False)}
        worker.stop()
        if state == "stopping":  # the bar's line (the poll replaces it with what happened once the run ends)
            return {page.status: "⏹ Ending the training process now (killed): nothing is saved at this stop."}
        return {page.status: "⏹ Stopping: a checkpoint of the current step and the training state are being saved. "
                             "*Stop now (kill)* ends at once without saving.",
                bar.stop: gr.update(value="Stop now (kill)")}

    # one start/stop at a time across all sessions: two quick clicks must not race into two runs
    start_outputs = [*page.problem_outputs, bar.train, bar.stop, bar.resume, bar.confirm, bar.confirm_text, bar.rename,
                     w["output_name"]]
    control = dict(concurrency_limit=1, concurrency_id="run-control")
    bar.train.click(train, page.inputs, start_outputs, api_name="train", **control)
    bar.rename.click(train_renamed, page.inputs, start_outputs, api_name="train_new_name", **control)
    bar.replace.click(train_replacing, page.inputs, start_outputs, api_name="train_replace", **control)
    bar.cancel.click(cancel, None, [bar.confirm, page.status, problems_all], queue=False, api_visibility="private")
    bar.resume.click(resume, None, start_outputs, api_name="resume", **control)
    bar.stop.click(stop, None, [problems_all, page.status, bar.stop], api_name="stop", **control)
    if monitor is not None:
        timer = gr.Timer(POLL_SECONDS)
        timer.tick(tick, [drawn], panel_outputs, show_progress="hidden", api_visibility="private")
        app.load(tick, [drawn], panel_outputs, show_progress="hidden", api_visibility="private")
