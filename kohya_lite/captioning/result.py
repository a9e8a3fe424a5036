"""What every captioner returns, and the progress callback type."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Progress = Callable[[int, int], None]
"""`progress(done, total)`: images processed so far out of the images that need a caption."""


@dataclass
class CaptionResult:
    """Outcome of one captioning run over a folder.

    Every image found lands in at most one list: `written` (caption file created or changed),
    `skipped_existing` (it already had a caption that was left as is) or `failed` (image path and a
    plain reason: unreadable image, caption file not writable, nothing to write...).
    """

    captioner: str
    folder: Path
    caption_extension: str
    total_images: int = 0
    written: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    captions: dict[Path, str] = field(default_factory=dict)  # image -> text written
    tag_counts: Counter = field(default_factory=Counter)  # WD14: tag -> images tagged with it
    notes: list[str] = field(default_factory=list)  # e.g. "batch size 8 -> 1 (model has a fixed batch)"
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{len(self.written)} caption(s) written"]
        if self.skipped_existing:
            parts.append(f"{len(self.skipped_existing)} skipped (caption exists)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return (f"{self.captioner}: {', '.join(parts)} of {self.total_images} image(s) in '{self.folder}' "
                f"({self.seconds:.1f} s)")
