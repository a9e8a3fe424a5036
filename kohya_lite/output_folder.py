"""A run's output folder: the files a run name already has there, and the lock that keeps two runs out of it.

`engine.train.train` holds `OutputLock` for the whole run, so the page (the worker's child process) and
`kohya-lite train` both take it: a second run on the same folder is refused with the holder named. A lock
whose process has ended (crash, kill, reboot) is stale and taken over; the check uses psutil, so it works the
same on Windows. `files_of` lists what a run name has written (`check` warns about them, the page asks before
replacing them), `move_aside` moves them into a hidden `.kohya-lite-replaced/` subfolder instead of deleting
them, and `free_name` suggests the next unused name. No torch here: `check` imports it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kohya_lite.errors import UserError

LOCK_NAME = ".kohya-lite.lock"
REPLACED_DIR = ".kohya-lite-replaced"  # hidden: the LoRA library and the epoch grid skip dot folders
FRESH_LOCK_S = 10.0  # an unreadable lock younger than this is being written, not stale


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(name)}(-\d{{6}}|-step\d{{8}})?(\.safetensors|\.ckpt|-state)$")


def files_of(output_dir: str | os.PathLike, name: str) -> list[Path]:
    """The LoRA files and training-state folders of run `name` in `output_dir` (final, epoch and step files)."""
    root = Path(output_dir).expanduser()
    if not name or not root.is_dir():
        return []
    pat = _pattern(name)
    try:
        return sorted(p for p in root.iterdir() if pat.match(p.name))
    except OSError:
        return []


def describe(paths: list[Path], limit: int = 4) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths[:limit]]
    return ", ".join(names) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def free_name(output_dir: str | os.PathLike, name: str) -> str:
    """`name_2`, `name_3`, …: the first name with no files in the folder (a trailing _N is counted on)."""
    m = re.match(r"^(.*)_(\d+)$", name)
    stem, n = (m[1], int(m[2])) if m else (name, 1)
    while True:
        n += 1
        candidate = f"{stem}_{n}"
        if not files_of(output_dir, candidate):
            return candidate


def move_aside(output_dir: str | os.PathLike, name: str) -> tuple[Path, list[Path]]:
    """Move run `name`'s files into `<output_dir>/.kohya-lite-replaced/<name>-<time>/` (nothing is deleted).
    Returns that folder and the paths moved."""
    found = files_of(output_dir, name)
    dest = Path(output_dir).expanduser() / REPLACED_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not found:
        return dest, []
    dest.mkdir(parents=True, exist_ok=True)
    for p in found:
        os.replace(p, dest / p.name)
    return dest, found


# ---- the lock ------------------------------------------------------------------------------------------------

def _process_started(pid: int) -> float | None:
    """The start time of process `pid`, or None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # alive, owned by someone else
        return -1.0


def _alive(info: dict) -> bool:
    """Does the process that wrote this lock still run? A lock from another machine (a shared drive) cannot
    be checked and counts as alive; a recycled pid (another start time) does not."""
    if info.get("host") and info["host"] != socket.gethostname():
        return True
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    started = _process_started(pid)
    if started is None:
        return False
    recorded = info.get("process_started")
    return started < 0 or not isinstance(recorded, (int, float)) or abs(started - recorded) < 2.0


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def holder(output_dir: str | os.PathLike) -> dict | None:
    """What holds the folder's lock (pid, host, started, command), or None when it is free or stale."""
    path = Path(output_dir).expanduser() / LOCK_NAME
    if not path.is_file():
        return None
    info = _read(path)
    if info is None:
        try:
            young = time.time() - path.stat().st_mtime < FRESH_LOCK_S
        except OSError:
            return None
        return {"pid": "?", "started": None, "command": "(being written)"} if young else None
    return info if _alive(info) else None


def in_use_error(output_dir: str | os.PathLike, info: dict) -> UserError:
    started = info.get("started")
    when = time.strftime(" since %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else ""
    host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
    folder = Path(output_dir).expanduser()
    return UserError(
        f"the output folder '{folder}' is in use by another training (process {info.get('pid', '?')}{host}{when})",
        field="output_dir", file=str(folder / LOCK_NAME),
        fix="wait for that training to finish or stop it, or choose another output folder")


class OutputLock:
    """An exclusive lock file in the output folder for the length of a run."""

    def __init__(self, output_dir: str | os.PathLike):
        self.folder = Path(output_dir).expanduser()
        self.path = self.folder / LOCK_NAME
        self.created_folder = False
        self.held = False

    def acquire(self) -> "OutputLock":
        import psutil

        self.created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "process_started": psutil.Process().create_time(), "command": " ".join(sys.argv[:3])}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = holder(self.folder)
                if info is not None:
                    raise in_use_error(self.folder, info) from None
                self.path.unlink(missing_ok=True)  # stale: its process has ended
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise in_use_error(self.folder, _read(self.path) or {})

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        info = _read(self.path)
        if info is not None and info.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        if self.created_folder:  # a run that failed before writing anything leaves no empty folder behind
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _is_main_process() -> bool:
    """accelerate launch starts one process per device with RANK set; only rank 0 writes files."""
    return os.environ.get("RANK", "0") in ("", "0")


@contextmanager
def run_lock(output_dir: str) -> Iterator[None]:
    """The lock for one training run (main process only). A folder that cannot be created is left to the
    pre-flight check to explain."""
    if not output_dir.strip() or not _is_main_process():
        yield
        return
    lock = OutputLock(output_dir)
    try:
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()
