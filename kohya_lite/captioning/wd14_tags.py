"""WD14 tag table and kohya's tag selection, as pure functions of the scores.

`load_tag_table` reads `selected_tags.csv` (tag_id,name,category,count; 9 rating, 0 general,
4 character). `TagRules` holds the display names (character expansion, underscore removal for tags
longer than 3 characters, replacements) and thresholds; `TagRules.select(scores)` reproduces
`tag_images_by_wd14_tagger.py` step by step:

1. general tags with score >= general threshold, in file order; character tags with score >=
   character threshold, appended (or each inserted at the front with `character_tags_first`);
   undesired tags are dropped (matched against the shown name and the file's name);
2. with `use_rating_tags` the argmax rating is inserted first (`..._as_last_tag`: appended);
3. each `always_first_tags` entry that was found is moved to the front, in list order (so the
   last listed ends up first, exactly as kohya does);
4. duplicates (possible after replacements) are kept once.

A threshold above 1 disables that category (scores are at most 1).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kohya_lite.errors import UserError

RATING, GENERAL, CHARACTER = 9, 0, 4


@dataclass(frozen=True)
class TagTable:
    names: tuple[str, ...]
    categories: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)

    def indices(self, category: int) -> list[int]:
        return [i for i, c in enumerate(self.categories) if c == category]


def load_tag_table(path: str | Path) -> TagTable:
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"Cannot read the WD14 tag list: {exc}", file=str(path)) from None
    header = [h.strip() for h in rows[0]] if rows else []
    if header[:3] != ["tag_id", "name", "category"]:
        raise UserError(f"'{path.name}' is not a WD14 tag list (header {header[:4]}, "
                        "expected tag_id,name,category,count).", file=str(path),
                        fix="Use the selected_tags.csv that came with the model.")
    names, categories = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            names.append(row[1])
            categories.append(int(row[2]))
        except (IndexError, ValueError):
            raise UserError(f"Line {line} of '{path.name}' is malformed: {row}", file=str(path)) from None
    if not names:
        raise UserError(f"'{path.name}' lists no tags.", file=str(path))
    return TagTable(tuple(names), tuple(categories))


def parse_tag_list(text: str, separator: str = ", ") -> list[str]:
    """'a, b ,c' -> ['a', 'b', 'c'] (split on the stripped separator)."""
    sep = separator.strip() or separator
    return [t.strip() for t in (text or "").split(sep) if t.strip()]


def parse_tag_replacement(text: str) -> list[tuple[str, str]]:
    """kohya's `src,dst;src2,dst2` with `\\,` and `\\;` as escapes."""
    if not text or not text.strip():
        return []
    escaped = text.replace("\\,", "@@@@").replace("\\;", "####")
    pairs = []
    for item in escaped.split(";"):
        if not item.strip():
            continue
        parts = item.split(",")
        if len(parts) != 2:
            shown = item.replace("@@@@", ",").replace("####", ";")
            raise UserError(f"Tag replacement '{shown}' is not 'source,target'.",
                            field="tag_replacement", fix="Write pairs as source,target;source2,target2 "
                                                         "(escape commas/semicolons inside tags as \\, and \\;).")
        src, dst = (p.replace("@@@@", ",").replace("####", ";").strip() for p in parts)
        pairs.append((src, dst))
    return pairs


def expand_character_tag(tag: str, separator: str) -> str:
    """`name_(series)` -> `name<sep>series` (kohya's --character_tag_expand)."""
    if not tag.endswith(")"):
        return tag
    pieces = tag.split("(")
    character = "(".join(pieces[:-1])
    if character.endswith("_"):
        character = character[:-1]
    return character + separator + pieces[-1].replace(")", "")


@dataclass
class TagRules:
    table: TagTable
    shown: list[str]  # display name per row
    general_threshold: float = 0.35
    character_threshold: float = 0.35
    undesired: frozenset[str] = frozenset()
    use_rating_tags: bool = False
    use_rating_tags_as_last_tag: bool = False
    character_tags_first: bool = False
    always_first: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, table: TagTable, *, general_threshold: float = 0.35, character_threshold: float = 0.35,
              undesired_tags: str = "", tag_replacement: str = "", remove_underscore: bool = True,
              character_tag_expand: bool = False, character_tags_first: bool = False,
              always_first_tags: str = "", use_rating_tags: bool = False, use_rating_tags_as_last_tag: bool = False,
              caption_separator: str = ", ") -> "TagRules":
        shown = list(table.names)
        if character_tag_expand:
            for i in table.indices(CHARACTER):
                shown[i] = expand_character_tag(shown[i], caption_separator)
        if remove_underscore:
            shown = [t.replace("_", " ") if len(t) > 3 else t for t in shown]
        for src, dst in parse_tag_replacement(tag_replacement):
            for category in (GENERAL, CHARACTER, RATING):  # kohya's order; first match only
                hit = next((i for i in table.indices(category) if shown[i] == src), None)
                if hit is not None:
                    shown[hit] = dst
                    break
        return cls(table=table, shown=shown, general_threshold=float(general_threshold),
                   character_threshold=float(character_threshold),
                   undesired=frozenset(parse_tag_list(undesired_tags, caption_separator)),
                   use_rating_tags=use_rating_tags, use_rating_tags_as_last_tag=use_rating_tags_as_last_tag,
                   character_tags_first=character_tags_first,
                   always_first=parse_tag_list(always_first_tags, caption_separator))

    def _wanted(self, i: int) -> bool:
        return self.shown[i] not in self.undesired and self.table.names[i] not in self.undesired

    def select(self, scores: Sequence[float] | np.ndarray) -> list[str]:
        """The tags for one image's scores, in kohya's order."""
        scores = np.asarray(scores).reshape(-1)  # float32 from the model: compared in float32, as kohya does
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        if scores.shape[0] != len(self.table):
            raise ValueError(f"{scores.shape[0]} scores for {len(self.table)} tags")
        tags: list[str] = []
        for i, category in enumerate(self.table.categories):
            if category == GENERAL and scores[i] >= self.general_threshold and self._wanted(i):
                tags.append(self.shown[i])
            elif category == CHARACTER and scores[i] >= self.character_threshold and self._wanted(i):
                if self.character_tags_first:
                    tags.insert(0, self.shown[i])
                else:
                    tags.append(self.shown[i])
        ratings = self.table.indices(RATING)
        if (self.use_rating_tags or self.use_rating_tags_as_last_tag) and ratings:
            best = ratings[int(np.argmax(scores[ratings]))]
            if self._wanted(best):
                if self.use_rating_tags:
                    tags.insert(0, self.shown[best])
                else:
                    tags.append(self.shown[best])
        for tag in self.always_first:
            if tag in tags:
                tags.remove(tag)
                tags.insert(0, tag)
        seen: set[str] = set()
        return [t for t in tags if not (t in seen or seen.add(t))]
