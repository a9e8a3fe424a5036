"""kohya's DreamBooth folder layout, as pure functions.

`train_data_dir` is the *parent* of subfolders named `<repeats>_<trigger> <class>` (e.g. `6_lisabp woman`);
`reg_data_dir` holds `1_<class>` folders of regularization images. Captions are `<stem><caption_extension>`
beside each image, with the folder's class tokens as the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kohya_lite.errors import UserError
from kohya_lite.media import caption_path, count_tags, list_images, read_caption

FOLDER_RE = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class FolderName:
    repeats: int
    tokens: str  # "lisabp woman": trigger word(s) then class

    @property
    def trigger(self) -> str:
        return self.tokens.split(" ")[0] if self.tokens else ""

    @property
    def class_name(self) -> str:
        parts = self.tokens.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""


def parse_folder_name(name: str) -> FolderName | None:
    """`10_sks dog` → FolderName(10, 'sks dog'); None when the name has no `N_` prefix."""
    m = FOLDER_RE.match(name)
    if not m:
        return None
    return FolderName(repeats=int(m.group(1)), tokens=m.group(2).strip())


def load_caption(image: Path, caption_extension: str, *, notes: list[str] | None = None) -> str | None:
    """The caption file's first non-empty line (kohya), or None when there is no caption file or it is empty.

    Raises UserError (naming the file) when the file is not UTF-8 text; see `kohya_lite.textfile`."""
    if not caption_extension:
        return None
    path = caption_path(image, caption_extension)
    if not path.is_file():
        return None
    text = read_caption(path, field="caption_extension", notes=notes)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else None


def caption_or_tokens(image: Path, caption_extension: str, fallback: str) -> tuple[str, bool]:
    """The caption's first line (kohya), or the folder's class tokens when there is no usable file
    (`check` names the unreadable ones).

    Returns (caption, from_file)."""
    try:
        caption = load_caption(image, caption_extension)
    except UserError:
        caption = None
    return (caption, True) if caption else (fallback, False)


@dataclass
class Subset:
    """One `N_name` folder."""

    path: Path
    repeats: int
    tokens: str
    is_reg: bool
    images: list[Path] = field(default_factory=list)
    captioned: int = 0  # images with a caption file

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def missing_captions(self) -> int:
        return len(self.images) - self.captioned


@dataclass
class DatasetSummary:
    subsets: list[Subset]
    skipped_folders: list[Path] = field(default_factory=list)  # no N_ prefix, or repeats < 1

    @property
    def train(self) -> list[Subset]:
        return [s for s in self.subsets if not s.is_reg]

    @property
    def reg(self) -> list[Subset]:
        return [s for s in self.subsets if s.is_reg]

    @property
    def num_train_images(self) -> int:
        """Images × repeats over the training folders (kohya's num_train_images)."""
        return sum(s.repeats * len(s.images) for s in self.train)

    @property
    def num_reg_images(self) -> int:
        return sum(s.repeats * len(s.images) for s in self.reg)

    @property
    def image_count(self) -> int:
        return sum(len(s.images) for s in self.train)


def scan_folder_root(root: Path, *, is_reg: bool, caption_extension: str) -> tuple[list[Subset], list[Path]]:
    subsets: list[Subset] = []
    skipped: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        parsed = parse_folder_name(child.name)
        if parsed is None or parsed.repeats < 1:
            skipped.append(child)
            continue
        images = list_images(child)
        captioned = sum(1 for im in images if caption_extension and caption_path(im, caption_extension).is_file())
        subsets.append(Subset(child, parsed.repeats, parsed.tokens, is_reg, images, captioned))
    return subsets, skipped


def scan_dataset(train_data_dir: str, reg_data_dir: str = "", caption_extension: str = ".txt") -> DatasetSummary:
    """Scan both roots. Missing roots give an empty summary; `check` explains why."""
    subsets: list[Subset] = []
    skipped: list[Path] = []
    for root, is_reg in ((train_data_dir, False), (reg_data_dir, True)):
        if root and Path(root).is_dir():
            found, skip = scan_folder_root(Path(root), is_reg=is_reg, caption_extension=caption_extension)
            subsets += found
            skipped += skip
    return DatasetSummary(subsets, skipped)


def suggest_repeats(n_images: int, target_low: int = 200, target_high: int = 400) -> int:
    """Repeats so one epoch is 200–400 steps: the midpoint target ÷ images, at least 1."""
    if n_images <= 0:
        return 1
    target = (target_low + target_high) / 2
    return max(1, round(target / n_images))


def tag_frequency(subset: Subset, caption_extension: str) -> dict[str, int]:
    """kohya's ss_tag_frequency for one folder (`media.count_tags` over its captions)."""
    return dict(count_tags(caption_or_tokens(image, caption_extension, subset.tokens)[0] for image in subset.images))
