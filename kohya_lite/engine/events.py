"""The event stream: JSON lines, one object each, with `type` and `time` (see docs/ARCHITECTURE.md).

The engine writes; the worker and the UI only read. Types: start, step, epoch, checkpoint, sample, warning,
error, stopped, done, log. Adding a field never breaks a reader.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

EVENT_TYPES = ("start", "step", "epoch", "checkpoint", "sample", "warning", "error", "stopped", "done", "log")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class EventWriter:
    """Appends events to a file (when given) and calls `listener` (when given). Disabled when not main."""

    def __init__(self, path: str | os.PathLike | None = None, listener: Callable[[dict], None] | None = None,
                 enabled: bool = True):
        self.path = Path(path) if path else None
        self.listener = listener
        self.enabled = enabled
        self._fh = None
        if self.path and enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    def emit(self, type: str, **fields: Any) -> dict:
        assert type in EVENT_TYPES, type
        event = {"type": type, "time": round(time.time(), 3), **_clean(fields)}
        if not self.enabled:
            return event
        if self._fh:
            self._fh.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._fh.flush()
        if self.listener:
            self.listener(event)
        return event

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


class EventLog:
    """An event file read incrementally: each `read()` parses only the bytes appended since the previous one
    (the page polls a run's file every second for hours). A half-written last line waits for the next read."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self._events: list[dict] = []

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return self._events
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            try:
                self._events.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a damaged line (a killed writer): skip it, keep the rest
        return self._events


def read_events(path: str | os.PathLike, since: int = 0) -> list[dict]:
    """Events from index `since` (a one-off read; pollers keep an `EventLog`)."""
    return EventLog(path).read()[since:]
