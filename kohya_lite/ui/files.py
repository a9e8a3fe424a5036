"""Server-side file helpers for the page (no gradio here): where state lives, presets, recent configs,
and the directory listings behind the in-browser path pickers.

The page runs in a browser that may be on another machine, so paths are always the server's: the
pickers list the server's folders instead of opening an OS dialog.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kohya_lite.fileio import write_text_atomic
from kohya_lite.paths import home, list_presets

MODEL_EXTENSIONS = (".safetensors", ".ckpt")
CONFIG_EXTENSIONS = (".json",)
MAX_RECENT = 10
MAX_LISTED = 300
UP = ".."


# ---- recent config files ---------------------------------------------------------------------------
def _recent_file() -> Path:
    return home() / "recent.json"


def recent_configs() -> list[Path]:
    try:
        items = json.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [Path(p) for p in items if isinstance(p, str) and Path(p).is_file()][:MAX_RECENT]


def add_recent(path: str | os.PathLike) -> None:
    p = str(Path(path).resolve())
    items = [str(x) for x in recent_configs() if str(x) != p]
    try:
        write_text_atomic(_recent_file(), json.dumps([p, *items][:MAX_RECENT], indent=2))
    except OSError:
        pass  # a read-only home only loses the recent list


def open_choices() -> list[tuple[str, str]]:
    """The Open dropdown: (label, path) for each preset, then each recent file."""
    out = [(f"preset: {p.stem}", str(p)) for p in list_presets()]
    out += [(f"recent: {p}", str(p)) for p in recent_configs()]
    return out


# ---- path picker -----------------------------------------------------------------------------------
def browse_start(current: str | None) -> Path:
    """The folder a picker opens in: the typed path (or its parent for a file), else the working dir."""
    p = Path(current).expanduser() if current and str(current).strip() else Path.cwd()
    if not p.is_absolute():
        p = Path.cwd() / p
    while not p.is_dir() and p != p.parent:
        p = p.parent
    return p.resolve()


def browse_choices(folder: str | os.PathLike, kind: str = "dir") -> list[tuple[str, str]]:
    """(label, absolute path) entries of one server folder for a picker dropdown.

    kind 'dir' lists subfolders; 'model' adds .safetensors/.ckpt files; 'file' adds every file;
    'config' adds .json files. The first entries are the folder itself ('.') and its parent ('..')."""
    d = Path(folder)
    entries: list[tuple[str, str]] = [(f"📂 . ({d})", str(d))]
    if d.parent != d:
        entries.append((f"⬆ {UP}", str(d.parent)))
    try:
        children = sorted(d.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower()))
    except OSError:
        return entries
    for child in children:
        if child.name.startswith("."):
            continue
        try:
            is_dir = child.is_dir()
        except OSError:
            continue
        if is_dir:
            entries.append((f"📁 {child.name}/", str(child)))
        elif kind == "file" or (kind == "model" and child.suffix.lower() in MODEL_EXTENSIONS) or (
                kind == "config" and child.suffix.lower() in CONFIG_EXTENSIONS):
            entries.append((f"📄 {child.name}", str(child)))
        if len(entries) >= MAX_LISTED:
            break
    return entries


# ---- files the app wrote, handed to the browser ----------------------------------------------------
_served_dir: Path | None = None


def _serve_dir() -> Path:
    global _served_dir
    if _served_dir is None or not _served_dir.is_dir():
        import atexit
        import shutil
        import tempfile

        _served_dir = Path(tempfile.mkdtemp(prefix="kohya-lite-served-"))
        atexit.register(shutil.rmtree, _served_dir, True)
    return _served_dir


def served(path: str | os.PathLike) -> str:
    """A copy of one file the app itself wrote (a sample, checkpoint, generated image or grid) that gradio will
    hand to the browser.

    gradio serves a returned file only from the working folder, the temp folder or `allowed_paths`. Adding an
    output folder to `allowed_paths` would make every file under it downloadable, so nothing is ever added:
    each file is linked (or copied) into this process's own temp folder, under a key of its path, size and
    modification time, and only those files can be fetched."""
    import hashlib
    import shutil

    src = Path(path).expanduser().resolve()
    st = src.stat()
    key = hashlib.sha1(f"{src}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dst = _serve_dir() / key / src.name
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    return str(dst)
