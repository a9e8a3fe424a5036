"""Basic captioning: one fixed caption for every image (kohya_ss "Basic Captioning").

kohya's rules, followed here:
- without `overwrite`: `caption_text` is written to each image that has no caption yet; existing
  captions are untouched, and prefix/postfix and find/replace are ignored (a note says so);
- with `overwrite`: every image gets `caption_text` (or keeps its current caption when the text is
  empty), then `prefix␠caption␠postfix`, then find/replace (plain, case-sensitive) is applied.
  An empty caption text with prefix/postfix/find thus edits the existing captions in place.
A prefix/postfix already present is not added twice. Nothing empty is ever written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kohya_lite.captioning.result import CaptionResult, Progress
from kohya_lite.captioning.runner import plan_run
from kohya_lite.captioning.writer import CaptionWriter, compose_caption, normalize_extension, write_caption
from kohya_lite.media import caption_path, read_caption
from kohya_lite.errors import UserError


@dataclass
class BasicOptions:
    caption_text: str = ""
    caption_extension: str = ".txt"
    overwrite: bool = False
    prefix: str = ""
    postfix: str = ""
    find_text: str = ""
    replace_text: str = ""
    recursive: bool = False

    def validate(self) -> None:
        self.caption_extension = normalize_extension(self.caption_extension)
        edits = self.prefix.strip() or self.postfix.strip() or self.find_text
        if not self.caption_text.strip() and not (self.overwrite and edits):
            raise UserError(
                "Nothing to write: the caption text is empty"
                + ("." if self.overwrite else " (prefix, postfix and find/replace only apply with overwrite on)."),
                field="caption_text",
                fix="Type the caption text, or turn on overwrite to add a prefix/postfix or find/replace "
                    "in the existing captions.",
            )

    def ignored_without_overwrite(self) -> list[str]:
        named = [("prefix", self.prefix.strip()), ("postfix", self.postfix.strip()), ("find/replace", self.find_text)]
        return [name for name, value in named if value]


def _new_text(options: BasicOptions, existing: str | None) -> str:
    if not options.overwrite:
        return options.caption_text
    text = options.caption_text if options.caption_text.strip() else (existing or "")
    text = compose_caption(options.prefix, text, options.postfix)
    if options.find_text:
        text = text.replace(options.find_text, options.replace_text)
    return text


def caption_basic(folder: str | Path, options: BasicOptions | None = None, *,
                  progress: Progress | None = None) -> CaptionResult:
    """Write the fixed caption (see module doc for kohya's overwrite rules)."""
    started = time.perf_counter()
    options = options or BasicOptions()
    options.validate()
    # Basic mode looks at every image itself (it edits existing captions with overwrite on).
    plan = plan_run("basic", folder, CaptionWriter(ext=options.caption_extension, overwrite=True),
                    recursive=options.recursive)
    result = plan.result
    if not options.overwrite and options.ignored_without_overwrite():
        result.notes.append(f"{', '.join(options.ignored_without_overwrite())} ignored: kohya applies them only "
                            "with overwrite on")
    total = len(plan.todo)
    if progress:
        progress(0, total)
    for done, image in enumerate(plan.todo, start=1):
        target = caption_path(image, options.caption_extension)
        try:
            existing = read_caption(target) if target.exists() else None
            if existing is not None and not options.overwrite:
                result.skipped_existing.append(image)
                continue
            text = _new_text(options, existing).strip()
            if not text or text == existing:
                if existing is not None:
                    result.skipped_existing.append(image)
                continue
            write_caption(target, text)
            result.written.append(image)
            result.captions[image] = text
        except (OSError, UserError) as exc:
            result.failed.append((image, f"cannot update {target.name}: {exc}"))
        finally:
            if progress:
                progress(done, total)
    result.seconds = time.perf_counter() - started
    return result
