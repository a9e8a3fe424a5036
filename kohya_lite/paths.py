"""Where kohya-lite keeps things: its own state folder (runs, recent files, generated images) and the shipped
presets. No gradio, no torch: the CLI, the demo builder and the page all use it."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """kohya-lite's own state folder (runs, recent files): $KOHYA_LITE_HOME or ~/.kohya-lite."""
    return Path(os.environ.get("KOHYA_LITE_HOME") or "~/.kohya-lite").expanduser()


def runs_dir() -> Path:
    return home() / "runs"


def presets_dir() -> Path:
    """The shipped `presets/` folder (beside the package in a source checkout, else under the working dir)."""
    here = Path(__file__).resolve().parents[1] / "presets"
    return here if here.is_dir() else Path.cwd() / "presets"


def list_presets() -> list[Path]:
    d = presets_dir()
    if not d.is_dir():
        return []
    return sorted(d.glob("*.json"), key=lambda p: p.stem.lower()) + sorted((d / "user_presets").glob("*.json"))


def preset_path(name: str) -> Path:
    """A shipped preset by its stem, e.g. 'CPU demo (tiny model)'."""
    return presets_dir() / f"{name}.json"
