"""The CLIP BPE tokenizer kohya-lite ships (no Hub access needed).

`kohya_lite/models/tokenizer/` holds OpenAI CLIP's vocabulary (MIT) as HF `vocab.json` + `merges.txt`,
converted from `bpe_simple_vocab_16e6.txt.gz` (the file inside the open_clip_torch / clip-anytorch
wheels) by `convert_openai_bpe`. Real token ids: "a photo of a cat" → 49406 320 1125 539 320 2368 49407.

Padding differs by family: SD1 and SDXL's first tokenizer pad with <|endoftext|>; SD2's and SDXL's
second tokenizer (OpenCLIP) pad with "!" (id 0). One copy of the files serves all of them.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

TOKENIZER_DIR = Path(__file__).parent / "tokenizer"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49406, 49407
VOCAB_SIZE = 49408
MAX_LENGTH = 77
OPENCLIP_PAD = "!"  # id 0


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable-character table, in its standard order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def convert_openai_bpe(gz_path: str | Path, out_dir: str | Path = TOKENIZER_DIR, *, pad_token: str = EOS) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json from OpenAI's merges file (offline-models §2.3)."""
    lines = gzip.open(gz_path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS, EOS]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(pad_token), indent=2) + "\n", encoding="utf-8")
    return out


def tokenizer_config(pad_token: str = EOS) -> dict:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad_token,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
    }


@lru_cache(maxsize=4)
def _load(pad_token: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), pad_token=pad_token, model_max_length=MAX_LENGTH,
                                         local_files_only=True)


def load_clip_tokenizer(pad_token: str = EOS):
    """A fresh copy of the shipped CLIP tokenizer (pad with EOS, or "!" for OpenCLIP-style encoders)."""
    import copy

    return copy.deepcopy(_load(pad_token))


def pad_token_for(family: str, index: int = 0) -> str:
    """The pad token of tokenizer `index` of a family: "!" for SD2 and SDXL's second tokenizer."""
    return OPENCLIP_PAD if (family == "sd2" or (family == "sdxl" and index == 1)) else EOS
