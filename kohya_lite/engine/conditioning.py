"""Captions → UNet conditioning, with a cache for frozen text encoders.

`TextConditioner` wraps engine.text's encoders (clip skip, 75-token chunks, SDXL's two encoders and pooled
output). When the text encoders are not trained and captions do not change from epoch to epoch, each
distinct caption is encoded once (no grad, under autocast) and reused. `precompute` encodes every caption of
the run up front, after which the encoders may leave the GPU (sd-scripts' cache_text_encoder_outputs): a
caption still missing is then encoded where the encoders are and moved to `output_device`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

from kohya_lite.engine.text import encode_sd, encode_sdxl


class TextConditioner:
    def __init__(self, model, *, clip_skip: int = 1, max_token_length: int = 75, cache: bool = False,
                 autocast: Callable[[], ContextManager] = nullcontext):
        self.model = model
        self.clip_skip = clip_skip
        self.max_token_length = max_token_length
        self.cache_enabled = cache
        self.autocast = autocast
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.output_device: torch.device | None = None  # where cached outputs live once the encoders moved away

    @property
    def is_sdxl(self) -> bool:
        return self.model.family == "sdxl"

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden states [B, 77·chunks, D], SDXL pooled [B, P] or None), with gradients if the encoders train."""
        tes, toks = self.model.text_encoders, self.model.tokenizers
        with self.autocast():
            if self.is_sdxl:
                return encode_sdxl(tes[0], tes[1], toks[0], toks[1], captions, max_token_length=self.max_token_length)
            return encode_sd(tes[0], toks[0], captions, clip_skip=self.clip_skip,
                             max_token_length=self.max_token_length), None

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.cache_enabled:
            return self.encode(captions)
        self.precompute(captions)
        emb = torch.cat([self._cache[c][0] for c in captions])
        pooled = torch.cat([self._cache[c][1] for c in captions]) if self.is_sdxl else None
        return emb, pooled

    def precompute(self, captions: list[str], batch_size: int = 16) -> int:
        """Encode the captions not cached yet, in batches; how many were encoded."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._cache]
        for k in range(0, len(missing), batch_size):
            chunk = missing[k:k + batch_size]
            with torch.no_grad():
                emb, pooled = self.encode(chunk)
            if self.output_device is not None:
                emb = emb.to(self.output_device)
                pooled = pooled.to(self.output_device) if pooled is not None else None
            for i, c in enumerate(chunk):
                self._cache[c] = (emb[i:i + 1], pooled[i:i + 1] if pooled is not None else None)
        return len(missing)
