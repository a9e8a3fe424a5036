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


def read_events(path: str | os.PathLike, since: int = 0) -> list[dict]:
    """Events from index `since`; a half-written last line (the writer is mid-flush) is left for later."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    with open(p, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < since:
                continue
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out
