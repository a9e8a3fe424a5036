"""Runs one training at a time as a separate process and exposes its event stream.

The GUI stays responsive and survives a crashed training: the child is `kohya-lite train` (or
`accelerate launch … kohya-lite train` for several processes) in its own process group. Each run has a
folder under `runs_dir` with `config.json`, `events.jsonl` and `log.txt`. Stop is graceful the first time
(SIGINT: the engine saves a step checkpoint and state) and kills the process group the second time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kohya_lite.check import CheckResult, run_check
from kohya_lite.config import TrainingConfig, config_json
from kohya_lite.fileio import write_text_atomic
from kohya_lite.engine.events import EventLog
from kohya_lite.errors import UserError

FINAL_TYPES = ("done", "stopped", "error")


@dataclass
class RunStatus:
    run_id: str | None
    state: str  # idle | running | stopping | done | stopped | error
    pid: int | None = None
    config_path: str | None = None
    events_path: str | None = None
    log_path: str | None = None
    output_dir: str | None = None
    returncode: int | None = None

    @property
    def active(self) -> bool:
        return self.state in ("running", "stopping")


def launch_command(cfg: TrainingConfig, config_path: Path, events_path: Path,
                   resume: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The child's command line and extra environment: plain python for one process, otherwise
    `accelerate launch` (DDP over NCCL on GPUs; gloo on a machine without CUDA)."""
    train = ["-m", "kohya_lite", "train", str(config_path), "--events", str(events_path), "--no-bar"]
    if resume:
        train += ["--resume", resume]
    if cfg.num_processes <= 1:
        return [sys.executable, *train], {}
    import torch

    env = {} if torch.cuda.is_available() else {"ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(cfg.num_processes),
           "--num_machines", str(max(1, cfg.num_machines)), "--num_cpu_threads_per_process",
           str(max(1, cfg.num_cpu_threads_per_process)), "--dynamo_backend", "no"]
    if cfg.gpu_ids:
        cmd += ["--gpu_ids", cfg.gpu_ids]
    if cfg.main_process_port:
        cmd += ["--main_process_port", str(cfg.main_process_port)]
    if cfg.mixed_precision in ("no", "fp16", "bf16"):
        cmd += ["--mixed_precision", cfg.mixed_precision]
    return [*cmd, *train], env


# ---- process groups: the child and everything it starts (accelerate's workers) stop together ----------
WINDOWS = os.name == "nt"


def _new_group() -> dict:
    if WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _interrupt_group(pid: int) -> None:
    """The graceful stop: SIGINT to the group (Ctrl+Break on Windows); the engine saves and exits."""
    if WINDOWS:
        os.kill(pid, signal.CTRL_BREAK_EVENT)
    else:
        os.killpg(pid, signal.SIGINT)


def _kill_group(pid: int) -> None:
    if WINDOWS:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
    else:
        os.killpg(pid, signal.SIGKILL)


class Worker:
    def __init__(self, runs_dir: str | os.PathLike):
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen | None = None
        self._run: RunStatus | None = None
        self._log: EventLog | None = None
        self._stops = 0
        self._reattach()

    # ---- starting ------------------------------------------------------------------------------
    def start(self, cfg: TrainingConfig, *, resume: str | None = None, checked: CheckResult | None = None) -> str:
        """Start `cfg` in a child process; `checked` is the caller's pre-flight of this same config (the page
        runs one to show every problem), so it is not run twice."""
        if self.status().active:
            raise UserError("a training run is already in progress", fix="wait for it to finish, or press Stop first")
        result = checked if checked is not None else run_check(cfg)
        if result.errors:
            p = result.errors[0]
            more = f" (and {len(result.errors) - 1} more: press Check to see them all)" if len(result.errors) > 1 else ""
            raise UserError(p.message + more, field=p.field, file=p.file, fix=p.fix)
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 1000:03d}{int(time.time() * 1000) % 1000:03d}"
        folder = self.runs_dir / run_id
        folder.mkdir(parents=True)
        config_path, events_path, log_path = folder / "config.json", folder / "events.jsonl", folder / "log.txt"
        write_text_atomic(config_path, config_json(cfg))
        events_path.touch()
        cmd, extra_env = launch_command(cfg, config_path, events_path, resume)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", GRADIO_ANALYTICS_ENABLED="False", **extra_env)
        log = open(log_path, "ab")
        log.write((" ".join(cmd) + "\n").encode())
        log.flush()
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                      cwd=os.getcwd(), **_new_group())
        log.close()
        self._stops = 0
        self._run = RunStatus(run_id, "running", self._proc.pid, str(config_path), str(events_path), str(log_path),
                              str(Path(cfg.output_dir).expanduser()))
        self._remember()
        return run_id

    # ---- stopping ------------------------------------------------------------------------------
    def stop(self) -> str:
        """First call: graceful (checkpoint + state). Second call: kill the whole process tree."""
        st = self.status()
        if not st.active or st.pid is None:
            return "nothing to stop"
        self._stops += 1
        try:
            if self._stops == 1:
                _interrupt_group(st.pid)
                self._run.state = "stopping"
                return "stopping after the current step; a checkpoint will be saved"
            _kill_group(st.pid)
            return "killed"
        except ProcessLookupError:
            return "already finished"

    def wait(self, timeout: float | None = None) -> RunStatus:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.status()

    # ---- observing -----------------------------------------------------------------------------
    def status(self) -> RunStatus:
        run = self._run
        if run is None:
            return RunStatus(None, "idle")
        if run.state in ("running", "stopping"):
            code = self._poll()
            if code is not None:
                run.returncode = code
                run.state = self._final_state(code)
                self._remember()
        return run

    def events(self, since: int = 0) -> list[dict]:
        """The run's events from index `since`; the file is read incrementally (only what was appended)."""
        if self._run is None or not self._run.events_path:
            return []
        if self._log is None or str(self._log.path) != self._run.events_path:
            self._log = EventLog(self._run.events_path)
        return self._log.read()[since:]

    def log_tail(self, lines: int = 40) -> str:
        if self._run is None or not self._run.log_path or not Path(self._run.log_path).is_file():
            return ""
        with open(self._run.log_path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    # ---- internals -----------------------------------------------------------------------------
    def _poll(self) -> int | None:
        if self._proc is not None:
            return self._proc.poll()
        pid = self._run.pid if self._run else None
        if pid is None:
            return 0
        import psutil  # a run started by an earlier server process (os.kill(pid, 0) would be Ctrl+C on Windows)

        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return 0
        except psutil.AccessDenied:
            return None
        return None if alive else 0

    def _final_state(self, code: int) -> str:
        finals = [e["type"] for e in self.events() if e.get("type") in FINAL_TYPES]
        if finals:
            return finals[-1]
        if code == 0:
            return "done"
        if self._stops:
            return "stopped"
        return "error"

    def _remember(self) -> None:
        if self._run:
            write_text_atomic(self.runs_dir / "current.json", json.dumps(self._run.__dict__))

    def _reattach(self) -> None:
        """After a server restart, show the last run (and keep watching it if it still runs)."""
        f = self.runs_dir / "current.json"
        if not f.is_file():
            return
        try:
            self._run = RunStatus(**json.loads(f.read_text()))
        except (ValueError, TypeError):
            return
        if self._run.state in ("running", "stopping"):
            code = self._poll()
            if code is not None:
                self._run.state = self._final_state(code)
