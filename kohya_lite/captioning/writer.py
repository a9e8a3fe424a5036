"""Composing and writing caption files (naming and reading them is `kohya_lite.media`'s job).

- `compose_caption(prefix, body, postfix)`: `prefix␠body␠postfix` with no doubled spaces (and no
  space before a postfix that starts with a comma, e.g. ", masterpiece"); a prefix or postfix the
  body already starts/ends with is not added twice (re-runs stay idempotent).
- `merge_tags`: append mode; the existing tags keep their order, new ones are added once.
- `CaptionWriter`: decides per image whether to write (skip existing / overwrite / append) and writes
  UTF-8 with one trailing newline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kohya_lite.errors import UserError
from kohya_lite.media import IMAGE_EXTENSIONS, caption_path, read_caption

_SPACES = re.compile(r"[ \t]{2,}")
_BOUNDARY = " ,;:."


def normalize_extension(ext: str | None, field: str = "caption_extension") -> str:
    """'.txt' stays, 'txt' becomes '.txt'; empty, path-like or image extensions are refused."""
    ext = (ext or "").strip()
    if not ext or ext == ".":
        raise UserError("The caption file extension is empty.", field=field, fix="Use .txt (or .caption).")
    if not ext.startswith("."):
        ext = "." + ext
    if "/" in ext or "\\" in ext:
        raise UserError(f"Caption extension '{ext}' contains a path separator.", field=field, fix="Use .txt.")
    if ext.lower() in IMAGE_EXTENSIONS:
        raise UserError(f"Caption extension '{ext}' is an image extension: captions would overwrite images.",
                        field=field, fix="Use .txt (or .caption).")
    return ext


def write_caption(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8 with exactly one trailing newline."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text.replace("\r\n", "\n").rstrip() + "\n")


def tidy(text: str) -> str:
    """Strip and collapse runs of spaces/tabs to one space (newlines are kept)."""
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.strip().split("\n"))


def _starts_with(body: str, part: str) -> bool:
    if not body.startswith(part):
        return False
    return len(body) == len(part) or part[-1] in _BOUNDARY or body[len(part)] in _BOUNDARY


def _ends_with(body: str, part: str) -> bool:
    if not body.endswith(part):
        return False
    return len(body) == len(part) or part[0] in _BOUNDARY or body[-len(part) - 1] in _BOUNDARY


def compose_caption(prefix: str = "", body: str = "", postfix: str = "") -> str:
    """`prefix␠body␠postfix`, empty parts dropped, no double spaces, no repeated prefix/postfix."""
    body = tidy(body or "")
    pre, post = tidy(prefix or ""), tidy(postfix or "")
    parts = []
    pre_core, post_core = pre.rstrip(" ,;:"), post.lstrip(" ,;:")  # 'lisabp,' is there when 'lisabp' is
    if pre and not (_starts_with(body, pre) or (pre_core and _starts_with(body, pre_core))):
        parts.append(pre)
    if body:
        parts.append(body)
    if post and not (_ends_with(body, post) or (post_core and _ends_with(body, post_core))):
        parts.append(post)
    text = ""
    for part in parts:  # one space between parts; none before a part that starts with , ; : .
        text = part if not text else text + ("" if part[0] in ",;:." else " ") + part
    return tidy(text).strip(" ,")  # 'lisabp,' alone -> 'lisabp'


def split_tags(text: str, separator: str = ", ") -> list[str]:
    """Tags of a caption: split on the separator (stripped, e.g. ','), each stripped, empties dropped."""
    sep = separator.strip() or separator
    return [t.strip() for t in text.replace("\n", sep).split(sep) if t.strip()]


def _unique(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    return [t for t in tags if not (t in seen or seen.add(t))]


def merge_tags(existing: str, new: str, separator: str = ", ", prefix: str = "", postfix: str = "") -> str:
    """Append mode: existing tags first (order kept), then new tags not present yet, each once.

    Tags of `prefix` (a trigger word) lead and tags of `postfix` close the result, wherever they were.
    """
    head, tail = _unique(split_tags(prefix, separator)), split_tags(postfix, separator)
    tail = [t for t in _unique(tail) if t not in head]
    edge = set(head) | set(tail)
    middle = _unique([t for t in split_tags(existing, separator) + split_tags(new, separator) if t not in edge])
    return separator.join(head + middle + tail)


@dataclass(frozen=True)
class CaptionWriter:
    """How a captioner writes: extension, what to do with an existing caption, prefix/postfix.

    Existing caption files are left alone unless `overwrite` (replace) or `append` (merge tags) is on;
    with both on, `append` wins (it keeps what is there).
    """

    ext: str = ".txt"
    overwrite: bool = False
    append: bool = False
    prefix: str = ""
    postfix: str = ""
    separator: str = ", "

    def path_for(self, image: Path) -> Path:
        return caption_path(image, self.ext)

    def keeps_existing(self, image: Path) -> bool:
        """True when this image already has a caption that this writer must not touch."""
        return not (self.overwrite or self.append) and self.path_for(image).exists()

    def final_text(self, image: Path, body: str) -> str:
        """The text that `write` would put in the caption file (reads the existing one in append mode)."""
        target = self.path_for(image)
        if self.append and target.exists():
            return merge_tags(read_caption(target), body, self.separator, self.prefix, self.postfix)
        return compose_caption(self.prefix, body, self.postfix)

    def write(self, image: Path, body: str) -> str:
        """Write the caption for `image`; returns the text written ('' means nothing was written)."""
        text = self.final_text(image, body)
        if text:
            write_caption(self.path_for(image), text)
        return text
