"""What the training panel shows, folded from the worker's JSON events (no gradio components here).

`RunView` is a pure fold: `apply(event)` for each event of one run. `RunMonitor` owns one `RunView` per
app, shared by every browser session: each poll asks the worker only for the events it has not seen,
so reloading the page (or opening a second tab) shows the running job at once, and a poll costs a
status call plus reading the new lines.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohya_lite.ui.safe import field_label, md_escape

LOG_LINES = 200
MAX_PLOT_POINTS = 400
ACTIVE_STATES = ("running", "stopping")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class RunView:
    run_id: str | None = None
    state: str = "idle"
    n_events: int = 0
    total_steps: int = 0
    step: int = 0
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    avg_loss: float | None = None
    lr: float | None = None
    sec_per_step: float | None = None
    eta_sec: float | None = None
    phase: str = ""  # a set-up phase in progress ("caching latents 12/40"); the bar shows its share before step 1
    phase_share: float = 0.0
    ram_gb: float | None = None
    vram_gb: float | None = None
    device: str = ""
    precision: str = ""
    images: int = 0
    losses: list[tuple[int, float, float | None]] = field(default_factory=list)  # (step, loss, avg)
    samples: list[tuple[str, str]] = field(default_factory=list)  # (path, caption)
    checkpoints: list[str] = field(default_factory=list)
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    warnings: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    final_path: str | None = None
    stopped_path: str | None = None
    stopped_step: int | None = None
    stopped_state: str | None = None  # the training-state folder a graceful stop saved (Resume continues from it)
    stop_event: bool = False  # the engine reported the stop (a killed run never does)
    resumed_from: int | None = None

    def apply(self, ev: dict[str, Any]) -> None:
        self.n_events += 1
        kind = ev.get("type")
        if kind == "start":
            self.total_steps = int(ev.get("total_steps") or 0)
            self.epochs = int(ev.get("epochs") or 0)
            self.images = int(ev.get("images") or 0)
            self.device = str(ev.get("device") or "")
            self.precision = str(ev.get("precision") or "")
            if ev.get("resumed_at"):
                self.resumed_from = self.step = int(ev["resumed_at"])
            self.log.append(f"started: {self.total_steps} steps, {self.epochs} epochs, {self.images} images"
                            f"{', ' + self.device if self.device else ''}{', ' + self.precision if self.precision else ''}")
        elif kind == "progress":
            done, total = int(ev.get("done") or 0), int(ev.get("total") or 0)
            self.phase = f"{ev.get('phase', 'preparing')} {done}/{total}" if done < total else ""
            self.phase_share = done / total if total and done < total else 0.0
        elif kind == "step":
            self.phase = ""
            self.ram_gb, self.vram_gb = _num(ev.get("ram_gb")), _num(ev.get("vram_gb"))
            self.step = int(ev.get("step") or 0)
            self.total_steps = int(ev.get("total_steps") or self.total_steps)
            self.epoch = int(ev.get("epoch") or self.epoch)
            self.loss = _num(ev.get("loss"))
            self.avg_loss = _num(ev.get("avg_loss"))
            self.lr = _num(ev.get("lr"))
            self.sec_per_step = _num(ev.get("sec_per_step"))
            self.eta_sec = _num(ev.get("eta_sec"))
            if self.loss is not None:
                self.losses.append((self.step, self.loss, self.avg_loss))
        elif kind == "epoch":  # an epoch finished; steps of the next one may already have been seen
            self.epoch = max(self.epoch, int(ev.get("epoch") or 0))
            avg = _num(ev.get("avg_loss"))
            self.log.append(f"epoch {self.epoch} done" + (f", average loss {avg:.4f}" if avg is not None else ""))
        elif kind == "checkpoint":
            path = str(ev.get("path") or "")
            if path and path not in self.checkpoints:
                self.checkpoints.append(path)
            self.log.append(f"saved {path}")
        elif kind == "sample":
            path = str(ev.get("path") or "")
            if path:
                self.samples.append((path, f"step {ev.get('step', '?')}: {ev.get('prompt', '')}"))
        elif kind == "warning":
            msg = str(ev.get("message") or "")
            self.warnings.append(msg)
            self.log.append(f"warning: {msg}")
        elif kind == "error":
            self.error = {k: ev.get(k) for k in ("message", "field", "file", "hint")}
            self.log.append(f"error: {ev.get('message')}")
        elif kind == "stopped":
            self.stop_event = True
            self.stopped_path = str(ev.get("path") or "") or None
            self.stopped_step = ev.get("step")
            self.stopped_state = str(ev.get("state") or "") or None
            if self.stopped_path and self.stopped_path not in self.checkpoints:
                self.checkpoints.append(self.stopped_path)
            self.log.append(f"stopped at step {self.stopped_step}" + (f", saved {self.stopped_path}" if self.stopped_path else ""))
        elif kind == "done":
            self.final_path = str(ev.get("path") or "") or None
            if self.total_steps:
                self.step = self.total_steps
            if self.final_path and self.final_path not in self.checkpoints:
                self.checkpoints.append(self.final_path)
            self.log.append(f"done: {self.final_path}")
        elif kind == "log":
            self.log.append(str(ev.get("message") or ""))

    # ---- presentation ------------------------------------------------------------------------------
    @property
    def percent(self) -> int:
        if self.state == "done":
            return 100
        if not self.total_steps:
            return int(100 * self.phase_share)  # latent caching, before the first step
        return max(0, min(100, int(100 * self.step / self.total_steps)))

    def stats_line(self) -> str:
        if self.run_id is None:
            return "No training run yet."
        parts = [f"step {self.step:,}/{self.total_steps:,}" if self.total_steps else (self.phase or "preparing…")]
        if self.epochs:
            parts.append(f"epoch {max(self.epoch, 1 if self.step else 0)}/{self.epochs}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}" + (f" (avg {self.avg_loss:.4f})" if self.avg_loss is not None else ""))
        if self.sec_per_step:
            parts.append(f"{1 / self.sec_per_step:.2f} it/s" if self.sec_per_step < 1 else f"{self.sec_per_step:.2f} s/it")
        if self.state in ACTIVE_STATES and self.eta_sec is not None:
            parts.append(f"ETA {fmt_duration(self.eta_sec)}")
        if self.vram_gb is not None:
            parts.append(f"VRAM {self.vram_gb:.1f} GB")
        if self.ram_gb is not None:
            parts.append(f"RAM {self.ram_gb:.1f} GB")
        return " · ".join(parts)

    def state_text(self) -> str:
        return {
            "idle": "idle", "running": "training", "stopping": "stopping (saving a checkpoint)…", "done": "finished",
            "stopped": "stopped by the user", "error": "failed",
        }.get(self.state, self.state)

    def plot_points(self) -> list[tuple[int, float, float | None]]:
        """(step, loss, average) for the chart, thinned to MAX_PLOT_POINTS (the newest point always kept)."""
        pts = self.losses
        if len(pts) > MAX_PLOT_POINTS:
            stride = len(pts) / MAX_PLOT_POINTS
            pts = [pts[int(i * stride)] for i in range(MAX_PLOT_POINTS)] + [pts[-1]]
        return list(pts)

    @property
    def can_resume(self) -> bool:
        return self.state == "stopped" and bool(self.stopped_state) and Path(self.stopped_state).is_dir()

    def note(self) -> str:
        """One line under the progress bar: what the run is doing, and after a stop what was saved (markdown)."""
        if self.run_id is None:
            return ""
        if self.state == "running":
            again = f" (resumed at step {self.resumed_from:,})" if self.resumed_from else ""
            return f"▶ Training{again}. *Stop* saves a checkpoint and the training state, then ends."
        if self.state == "stopping":
            return ("⏹ Stopping: saving a checkpoint of the current step and the training state… "
                    "*Stop now (kill)* ends at once and saves nothing.")
        if self.state == "stopped":
            if not self.stop_event:
                last = f" The last file saved before it: {_name(self.checkpoints[-1])}." if self.checkpoints else \
                    " No checkpoint had been saved."
                return f"⏹ Ended at once (killed): nothing was saved at the stop.{last}"
            if not self.stopped_path:
                return f"⏹ Stopped before the first step (step {self.stopped_step or 0}): there was nothing to save."
            state = f" and the training state {_name(self.stopped_state)}/" if self.stopped_state else ""
            more = " **Resume** continues from there." if self.can_resume else ""
            return f"⏹ Stopped at step {self.stopped_step:,}: saved {_name(self.stopped_path)}{state}.{more}"
        if self.state == "done":
            return f"✅ Finished: {_name(self.final_path)}." if self.final_path else "✅ Finished."
        if self.state == "error":
            return "❌ Training failed: the reason is below the progress bar."
        return ""

    def error_text(self) -> str:
        if not self.error:
            return ""
        e = self.error
        out = f"**Training failed:** {md_escape(e.get('message') or 'the training process ended with an error')}"
        if e.get("field"):
            out += f"  \nField: {md_escape(field_label(e['field']))}"
        if e.get("file"):
            out += f"  \nFile: {md_escape(e['file'])}"
        if e.get("hint"):
            out += f"  \n**What to do:** {md_escape(e['hint'])}"
        return out

    def log_text(self) -> str:
        return "\n".join(self.log)


def _name(path: str | None) -> str:
    """A saved file or folder for the note: its name, escaped for markdown."""
    return md_escape(Path(path).name) if path else ""


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


class RunMonitor:
    """The app-wide view of the worker's current/last run, refreshed incrementally."""

    def __init__(self, worker: Any):
        self.worker = worker
        self._lock = threading.Lock()
        self.view = RunView()
        self.output_dir: str | None = None

    def refresh(self) -> RunView:
        """Fold in new events; never blocks on another poll for more than a moment."""
        if not self._lock.acquire(timeout=0.5):
            return self.view  # another session is refreshing right now
        try:
            st = self.worker.status()
            run_id = getattr(st, "run_id", None)
            if run_id != self.view.run_id:
                self.view = RunView(run_id=run_id)
            self.output_dir = getattr(st, "output_dir", None) or None
            if run_id is not None:
                for ev in self.worker.events(since=self.view.n_events):
                    self.view.apply(ev)
            self.view.state = getattr(st, "state", "idle") or "idle"
            if self.view.state == "error" and self.view.error is None:
                code = getattr(st, "returncode", None)
                where = getattr(st, "log_path", None)
                self.view.error = {
                    "message": "the training process ended unexpectedly"
                               + (f" (exit code {code})" if code is not None else ""),
                    "hint": f"details in the run's log: {where}" if where else "details in the server log"}
            return self.view
        finally:
            self._lock.release()

    def version(self) -> tuple:
        v = self.view
        return (v.run_id, v.n_events, v.state)


def existing(paths: list[str]) -> list[str]:
    return [p for p in paths if p and Path(p).is_file()]
