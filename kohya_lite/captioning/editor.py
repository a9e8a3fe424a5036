"""Manual caption editing, for the GUI's editor (pure library, no gradio).

All functions work on the images of a folder (same discovery as the captioners) and their
`<stem><ext>` caption files:
- `list_images_with_captions(folder, ext, page, page_size)` -> one page of (image, caption);
- `save_caption(image_path, text, ext)` -> writes it (an empty text removes the caption file,
  because an empty caption file stops kohya training);
- `search_replace(folder, ext, find, replace)` -> number of caption files changed;
- `tag_frequency(folder, ext)` -> Counter of tags (comma-split, stripped, lower-cased, as
  kohya's `ss_tag_frequency`);
- `add_tags(folder, ext, tags, position)` -> number of files changed; tags already present are not
  repeated, and an image without a caption gets one holding just the tags.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from kohya_lite.captioning.images import find_images
from kohya_lite.captioning.writer import normalize_extension, split_tags, write_caption
from kohya_lite.media import caption_path, count_tags, is_image, read_caption
from kohya_lite.errors import UserError


@dataclass(frozen=True)
class ImageCaption:
    image: Path
    caption_file: Path
    caption: str  # '' when there is no caption file
    has_caption: bool


@dataclass
class CaptionPage:
    items: list[ImageCaption] = field(default_factory=list)
    page: int = 1  # 1-based, clamped to the pages that exist
    page_size: int = 10
    total_images: int = 0
    total_pages: int = 1


def _read(path: Path) -> str:
    try:
        return read_caption(path)
    except UserError:
        return path.read_bytes().decode("utf-8", errors="replace").rstrip()


def _read_for_edit(path: Path) -> str:
    try:
        return read_caption(path)
    except UserError as exc:
        raise UserError(f"{exc.message}; it was left as is.", file=str(path), fix=exc.fix) from None


def list_images_with_captions(folder: str | Path, ext: str = ".txt", page: int = 1, page_size: int = 10,
                              *, recursive: bool = False) -> CaptionPage:
    """One page of the folder's images with their captions (page numbers start at 1)."""
    ext = normalize_extension(ext)
    if int(page_size) < 1:
        raise UserError(f"page_size must be at least 1 (got {page_size}).", field="page_size")
    images = find_images(folder, recursive=recursive, required=False)
    total_pages = max(1, math.ceil(len(images) / page_size))
    page = min(max(1, int(page)), total_pages)
    items = []
    for image in images[(page - 1) * page_size: page * page_size]:
        target = caption_path(image, ext)
        exists = target.is_file()
        items.append(ImageCaption(image=image, caption_file=target, caption=_read(target) if exists else "",
                                  has_caption=exists))
    return CaptionPage(items=items, page=page, page_size=int(page_size), total_images=len(images),
                       total_pages=total_pages)


def save_caption(image_path: str | Path, text: str, ext: str = ".txt") -> Path:
    """Write `text` as the caption of `image_path`; an empty text deletes the caption file. Returns its path."""
    image = Path(image_path).expanduser()
    if not (is_image(image) and image.is_file()):
        raise UserError(f"'{image}' is not an image file.", field="image", file=str(image),
                        fix="Pick one of the folder's .png/.jpg/.jpeg/.webp/.bmp images.")
    target = caption_path(image, normalize_extension(ext))
    text = (text or "").replace("\r\n", "\n").strip()
    if text:
        write_caption(target, text)
    elif target.exists():
        target.unlink()
    return target


def _captions(folder: str | Path, ext: str, recursive: bool) -> list[tuple[Path, Path]]:
    ext = normalize_extension(ext)
    return [(image, caption_path(image, ext)) for image in find_images(folder, recursive=recursive, required=False)]


def search_replace(folder: str | Path, ext: str, find: str, replace: str, *, recursive: bool = False) -> int:
    """Replace `find` by `replace` (plain text, case-sensitive) in every caption; returns files changed."""
    if not find:
        raise UserError("The text to find is empty.", field="find", fix="Type the text to look for.")
    changed = 0
    for _, target in _captions(folder, ext, recursive):
        if not target.is_file():
            continue
        old = _read_for_edit(target)
        new = old.replace(find, replace).strip()
        if new != old:
            if new:
                write_caption(target, new)
            else:
                target.unlink()  # the caption was only the found text; an empty file would stop training
            changed += 1
    return changed


def tag_frequency(folder: str | Path, ext: str = ".txt", *, recursive: bool = False) -> Counter:
    """How often each tag appears across the captions (comma-separated, stripped, lower-cased)."""
    return count_tags(_read(target).replace("\n", ",") for _, target in _captions(folder, ext, recursive)
                      if target.is_file())


def _as_tags(tags: str | Iterable[str]) -> list[str]:
    items = split_tags(tags, ",") if isinstance(tags, str) else [t.strip() for t in tags if t and t.strip()]
    seen: set[str] = set()
    return [t for t in items if not (t in seen or seen.add(t))]


def add_tags(folder: str | Path, ext: str, tags: str | Iterable[str], position: str = "front", *,
             recursive: bool = False, separator: str = ", ") -> int:
    """Add `tags` ("a, b" or a list) to every caption, at the 'front' or 'back'; returns files changed."""
    if position not in ("front", "back"):
        raise UserError(f"position must be 'front' or 'back' (got '{position}').", field="position")
    wanted = _as_tags(tags)
    if not wanted:
        raise UserError("No tags given.", field="tags", fix="Type one or more tags separated by commas.")
    changed = 0
    for _, target in _captions(folder, ext, recursive):
        current = split_tags(_read_for_edit(target), separator) if target.is_file() else []
        new = [t for t in wanted if t not in current]
        if not new:
            continue
        write_caption(target, separator.join(new + current if position == "front" else current + new))
        changed += 1
    return changed
