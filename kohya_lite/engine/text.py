"""Text conditioning as sd-scripts computes it: clip_skip, long prompts in 75-token chunks, SDXL's two encoders."""

from __future__ import annotations

import torch


def tokenize_chunks(tokenizer, texts: list[str], max_token_length: int = 75) -> torch.Tensor:
    """[B, n_chunks, 77] ids: each chunk is BOS + 75 tokens + EOS/padding (n_chunks = max_token_length / 75)."""
    n_chunks = max(1, max_token_length // 75)
    if n_chunks == 1:
        return tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids[:, None]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, truncation=False).input_ids[: 75 * n_chunks]
        chunks = []
        for c in range(n_chunks):
            body = ids[c * 75:(c + 1) * 75]
            row = [bos] + body + [eos]
            row += [pad] * (77 - len(row))
            chunks.append(row)
        out.append(chunks)
    return torch.tensor(out, dtype=torch.long)


def _hidden(te, ids: torch.Tensor, layer: int, final_norm: bool) -> tuple[torch.Tensor, object]:
    out = te(ids.to(te.device), output_hidden_states=True)
    h = out.hidden_states[layer]
    if final_norm:
        h = getattr(te, "text_model", te).final_layer_norm(h)
    return h, out


def _join_chunks(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Keep one BOS at the front and one EOS at the end, as sd-scripts does."""
    if len(chunks) == 1:
        return chunks[0]
    parts = []
    for i, h in enumerate(chunks):
        start = 0 if i == 0 else 1
        end = h.shape[1] if i == len(chunks) - 1 else h.shape[1] - 1
        parts.append(h[:, start:end])
    return torch.cat(parts, dim=1)


def encode_sd(te, tokenizer, texts: list[str], *, clip_skip: int = 1, max_token_length: int = 75) -> torch.Tensor:
    """SD1/SD2: hidden_states[-clip_skip] then final_layer_norm (clip_skip 1 = last layer output)."""
    ids = tokenize_chunks(tokenizer, texts, max_token_length)
    skip = max(1, clip_skip)
    chunks = [_hidden(te, ids[:, c], -skip, final_norm=skip > 1)[0] if skip > 1 else te(ids[:, c].to(te.device))[0]
              for c in range(ids.shape[1])]
    return _join_chunks(chunks)


def encode_sdxl(te1, te2, tok1, tok2, texts: list[str], *, max_token_length: int = 75) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL: concat(TE1 h[-2], TE2 h[-2]) and the pooled TE2 projection of the first chunk."""
    ids1 = tokenize_chunks(tok1, texts, max_token_length)
    ids2 = tokenize_chunks(tok2, texts, max_token_length)
    c1, c2, pooled = [], [], None
    for c in range(ids1.shape[1]):
        h1, _ = _hidden(te1, ids1[:, c], -2, final_norm=False)
        h2, out2 = _hidden(te2, ids2[:, c], -2, final_norm=False)
        c1.append(h1)
        c2.append(h2)
        if pooled is None:
            pooled = out2.text_embeds
    return torch.cat([_join_chunks(c1), _join_chunks(c2)], dim=-1), pooled


def sdxl_time_ids(original_hw: tuple[int, int], crop_tl: tuple[int, int], target_hw: tuple[int, int]) -> torch.Tensor:
    return torch.tensor([*original_hw, *crop_tl, *target_hw], dtype=torch.float32)
