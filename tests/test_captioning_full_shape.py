"""Captioners on models of the published shapes, random weights, through the same loaders a real download uses:
BLIP at the size of Salesforce/blip-image-captioning-base (ViT-B/16 at 384 px, BERT-base decoder with the 30,524
token vocabulary, saved with save_pretrained as the Hub folder is), and a WD14 tagger with the real NHWC 448 px
input and a selected_tags.csv of the published length (10,861 rows: 4 ratings, 6,951 general, 3,906 characters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kohya_lite.captioning import BlipOptions, WD14Options, caption_blip, caption_wd14
from kohya_lite.captioning.tiny import CHARACTER, GENERAL, RATING, build_tiny_wd14
from kohya_lite.media import caption_path, read_caption
from captioning_fixtures import offline  # noqa: F401  (shared fixture: no hub access)

BLIP_BASE_VOCAB = 30524  # bert-base-uncased's 30,522 + [DEC] and [ENC]


def build_blip_base_shaped(out: Path) -> Path:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    out.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of", "photo", "cat", "dog", "red"]
    vocab = words + [f"w{i:05d}" for i in range(BLIP_BASE_VOCAB - len(words) - 2)] + ["[DEC]", "[ENC]"]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(out / "vocab.txt"), bos_token="[DEC]", model_max_length=512)
    ids = tokenizer.convert_tokens_to_ids
    config = BlipConfig(text_config=dict(vocab_size=len(tokenizer), bos_token_id=ids("[DEC]"), sep_token_id=ids("[SEP]"),
                                         pad_token_id=ids("[PAD]"), eos_token_id=ids("[SEP]")),
                        vision_config=dict(image_size=384, patch_size=16))
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    assert (config.vision_config.num_hidden_layers, config.vision_config.hidden_size) == (12, 768)
    assert (config.text_config.num_hidden_layers, config.text_config.hidden_size) == (12, 768)
    assert sum(p.numel() for p in model.parameters()) > 200e6
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 384, "width": 384}),
                  tokenizer=tokenizer).save_pretrained(out)
    model.save_pretrained(out)
    return out


def _photos(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"photo{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def test_blip_of_the_published_size_loads_and_captions(tmp_path, offline):  # noqa: F811
    model = build_blip_base_shaped(tmp_path / "blip-base")
    images = _photos(tmp_path / "img")
    result = caption_blip(tmp_path / "img", BlipOptions(model_dir=str(model), max_length=8, min_length=2, workers=0))
    assert result.written == images and not result.failed
    for p in images:
        assert read_caption(caption_path(p)).strip(), "a caption was written"


def test_wd14_with_a_full_size_tag_table(tmp_path, offline):  # noqa: F811
    tags = ([(r, RATING) for r in ("general", "sensitive", "questionable", "explicit")]
            + [(f"tag_{i:04d}", GENERAL) for i in range(6951)]
            + [(f"character_{i:04d}_(series)", CHARACTER) for i in range(3906)])
    assert len(tags) == 10861
    scores = np.zeros(len(tags), dtype=np.float32)
    scores[1] = 0.9  # sensitive
    scores[4 + 17], scores[4 + 6000], scores[4 + 6951 + 5] = 0.8, 0.4, 0.7
    model = build_tiny_wd14(tmp_path / "wd14", tags=tags, scores=scores)
    (image,) = _photos(tmp_path / "img", 1)
    result = caption_wd14(tmp_path / "img", WD14Options(model_dir=str(model), use_rating_tags=True))
    assert result.written == [image]
    caption = read_caption(caption_path(image))
    assert caption.split(", ") == ["sensitive", "tag 0017", "tag 6000", "character 0005 (series)"]
