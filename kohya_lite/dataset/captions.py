"""Per-sample caption processing as sd-scripts does it (reference §3.3): whole-caption dropout, then tag
processing (keep_tokens or keep_tokens_separator, shuffle, tag dropout) when any of those is on."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionSettings:
    shuffle: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    tag_dropout_rate: float = 0.0
    dropout_rate: float = 0.0
    dropout_every_n_epochs: int = 0
    separator: str = ","

    @classmethod
    def from_config(cls, cfg) -> "CaptionSettings":
        return cls(cfg.shuffle_caption, cfg.keep_tokens, cfg.keep_tokens_separator, cfg.caption_tag_dropout_rate,
                   cfg.caption_dropout_rate, cfg.caption_dropout_every_n_epochs)

    @property
    def static(self) -> bool:
        """True when every sample's caption is the same each epoch, so text-encoder outputs can be cached."""
        return not (self.shuffle or self.tag_dropout_rate or self.dropout_rate or self.dropout_every_n_epochs)


def text_outputs_cached(cfg) -> bool:
    """Text-encoder outputs are encoded once: the encoders are not trained and captions never change."""
    from kohya_lite.config import te_lr_of

    return not te_lr_of(cfg) and CaptionSettings.from_config(cfg).static


def process_caption(caption: str, settings: CaptionSettings, *, rng: random.Random, epoch: int = 1) -> str:
    """Dropout (the whole caption becomes ""), else shuffle/drop the flexible tags. Empty tags are kept, as in
    sd-scripts, except around a keep_tokens_separator (`fixed ||| flexible ||| fixed suffix`)."""
    s = settings
    if s.dropout_rate and rng.random() < s.dropout_rate:
        return ""
    if s.dropout_every_n_epochs and epoch % s.dropout_every_n_epochs == 0:
        return ""
    if not (s.shuffle or s.tag_dropout_rate):
        return caption

    def split(text: str, keep_empty: bool) -> list[str]:
        tags = [t.strip() for t in text.split(s.separator)]
        return tags if keep_empty else [t for t in tags if t]

    suffix: list[str] = []
    if s.keep_tokens_separator and s.keep_tokens_separator in caption:
        fixed_part, flex_part = caption.split(s.keep_tokens_separator, 1)
        if s.keep_tokens_separator in flex_part:
            flex_part, suffix_part = flex_part.split(s.keep_tokens_separator, 1)
            suffix = split(suffix_part, keep_empty=False)
        fixed, flexible = split(fixed_part, keep_empty=False), split(flex_part, keep_empty=False)
    else:
        tags = split(caption.strip(), keep_empty=True)
        fixed, flexible = (tags[:s.keep_tokens], tags[s.keep_tokens:]) if s.keep_tokens > 0 else ([], tags)
    if s.shuffle:
        rng.shuffle(flexible)
    if s.tag_dropout_rate:
        flexible = [t for t in flexible if rng.random() >= s.tag_dropout_rate]
    return ", ".join(fixed + flexible + suffix)
