"""Per-sample caption processing (reference §3.3): dropout, then keep_tokens + shuffle of comma tags."""

from __future__ import annotations

import random


def process_caption(caption: str, *, rng: random.Random, shuffle: bool = False, keep_tokens: int = 0,
                    dropout_rate: float = 0.0, dropout_every_n_epochs: int = 0, epoch: int = 1) -> str:
    """kohya order: dropout (whole caption → ""), then shuffle the tags after the first `keep_tokens`."""
    if dropout_rate and rng.random() < dropout_rate:
        return ""
    if dropout_every_n_epochs and epoch % dropout_every_n_epochs == 0:
        return ""
    if not shuffle:
        return caption
    tags = [t.strip() for t in caption.split(",")]
    tags = [t for t in tags if t]
    fixed, flexible = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(flexible)
    return ", ".join(fixed + flexible)


def captions_are_static(*, shuffle: bool, dropout_rate: float, dropout_every_n_epochs: int) -> bool:
    """True when every sample's caption is the same each epoch, so text-encoder outputs can be cached."""
    return not shuffle and not dropout_rate and not dropout_every_n_epochs
