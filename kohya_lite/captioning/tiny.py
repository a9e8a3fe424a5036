"""Tiny, offline stand-ins for the captioning models (tests, benchmark, GUI demo).

`build_tiny_blip(out_dir)` saves a ~70k-parameter BLIP captioner (hand-written BERT vocabulary with
the `[DEC]` bos token, 64 px image processor, random weights from a fixed seed) that loads through
the same `from_pretrained` path as `Salesforce/blip-image-captioning-large`. Its captions are
random words, deterministic for a given image.

`build_tiny_wd14(out_dir)` saves `model.onnx` + `selected_tags.csv` with the SmilingWolf contract:
input `input_1` float32 NHWC [batch, 448, 448, 3] BGR 0-255, output `predictions_sigmoid` [batch, K].
By default the scores depend on the image's mean colour (sigmoid of a fixed linear map); with
`scores=[...]` every image gets exactly those scores, so tag filtering can be checked by hand.
Building the ONNX graph needs the `onnx` package (dev extra).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from kohya_lite.errors import UserError

# ---------------------------------------------------------------------------------------------- BLIP

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
_WORDS = [
    "picture", "of", "photo", "the", "an", "with", "on", "in", "and", "is", "dog", "cat", "woman", "man",
    "girl", "boy", "red", "blue", "green", "white", "black", "sitting", "standing", "grass", "sky", "tree",
    "table", "street", "water", "hair", "dress", "smiling", "holding", "flower", "city", "beach",
]
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,'-")
_PIECES = ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##s", "##ing", "##ed", "##er"]


def tiny_blip_vocab() -> list[str]:
    """The hand-written vocabulary: specials, single characters, some words, `##` pieces (no [unusedN])."""
    vocab: list[str] = []
    for token in _SPECIAL + _CHARS + _WORDS + _PIECES:
        if token not in vocab:
            vocab.append(token)
    return vocab


def build_tiny_blip(out_dir: str | Path, *, seed: int = 0, image_size: int = 64) -> Path:
    """Save a tiny BLIP captioner (model + processor) to `out_dir`; returns the folder."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil,
                              BlipProcessor)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_blip_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file), bos_token="[DEC]", model_max_length=128)
    ids = tokenizer.convert_tokens_to_ids
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, encoder_hidden_size=32, intermediate_size=37,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
            bos_token_id=ids("[DEC]"), sep_token_id=ids("[SEP]"), pad_token_id=ids("[PAD]"),
            eos_token_id=ids("[SEP]"),
        ),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=16),
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    from kohya_lite.captioning.blip import quiet_transformers

    with quiet_transformers():
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------- WD14

RATING, GENERAL, CHARACTER = 9, 0, 4

TINY_WD14_TAGS: tuple[tuple[str, int], ...] = (
    ("general", RATING), ("sensitive", RATING), ("questionable", RATING), ("explicit", RATING),
    ("1girl", GENERAL), ("solo", GENERAL), ("long_hair", GENERAL), ("smile", GENERAL), ("blue_sky", GENERAL),
    ("^_^", GENERAL), ("outdoors", GENERAL), ("red_eyes", GENERAL), ("short_hair", GENERAL), ("tree", GENERAL),
    ("hatsune_miku", CHARACTER), ("saber_(fate)", CHARACTER),
)
"""Rows of the tiny tagger's selected_tags.csv: 4 ratings, 10 general tags, 2 characters."""


def write_selected_tags(path: str | Path, tags: Sequence[tuple[str, int]]) -> Path:
    """Write a `tag_id,name,category,count` file for `tags` (name, category) in order."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(tags):
            w.writerow([100000 + i, name, category, 1000 * (len(tags) - i)])
    return path


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ModuleNotFoundError as exc:  # pragma: no cover - onnx is in the dev extra
        raise UserError("Building the tiny WD14 tagger needs the 'onnx' package.",
                        fix="pip install onnx (or ./setup.sh --dev, which installs it)") from exc
    return onnx, TensorProto, helper, numpy_helper


def _wd14_graph(n_tags: int, image_size: int, batch: int | str, scores: Sequence[float] | None, seed: int):
    onnx, TensorProto, helper, numpy_helper = _onnx()
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, image_size, image_size, 3])
    y = helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, n_tags])
    if scores is not None:
        # constant scores: mean(x) * 0 gives the batch dimension, + scores[1, K]
        const = np.asarray(scores, dtype=np.float32).reshape(1, n_tags)
        inits = [numpy_helper.from_array(const, "scores"),
                 numpy_helper.from_array(np.zeros((1, 1), np.float32), "zero"),
                 numpy_helper.from_array(np.array([-1, 1], np.int64), "shape_n1")]
        nodes = [
            helper.make_node("ReduceMean", ["input_1"], ["mean4"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["mean4", "shape_n1"], ["mean"]),
            helper.make_node("Mul", ["mean", "zero"], ["nil"]),
            helper.make_node("Add", ["nil", "scores"], ["predictions_sigmoid"]),
        ]
    else:
        # scores depend on the image: sigmoid(mean colour (BGR, 0-1) @ W + b)
        rng = np.random.default_rng(seed)
        weight = rng.normal(0.0, 4.0, (3, n_tags)).astype(np.float32)
        bias = rng.normal(0.0, 1.0, (n_tags,)).astype(np.float32) - weight.sum(0) / 2
        inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
                 numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")]
        nodes = [
            helper.make_node("Mul", ["input_1", "scale"], ["unit"]),
            helper.make_node("ReduceMean", ["unit"], ["colour"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["colour", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ]
    graph = helper.make_graph(nodes, "tiny_wd14", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kohya-lite")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_tiny_wd14(
    out_dir: str | Path,
    *,
    fixed_batch: int | None = None,
    scores: Sequence[float] | None = None,
    tags: Sequence[tuple[str, int]] = TINY_WD14_TAGS,
    image_size: int = 448,
    seed: int = 0,
) -> Path:
    """Save a tiny WD14 tagger (`model.onnx` + `selected_tags.csv`) to `out_dir`; returns the folder.

    fixed_batch: give the input a fixed batch dimension (as some re-exported taggers have).
    scores: one score per tag row; every image then gets exactly these scores.
    """
    if scores is not None and len(scores) != len(tags):
        raise ValueError(f"scores has {len(scores)} values for {len(tags)} tags")
    onnx = _onnx()[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch: int | str = int(fixed_batch) if fixed_batch else "batch"
    onnx.save(_wd14_graph(len(tags), image_size, batch, scores, seed), str(out / "model.onnx"))
    write_selected_tags(out / "selected_tags.csv", tags)
    return out


# ------------------------------------------------------------------------------------- sample images

def build_sample_images(out_dir: str | Path, *, corrupt: bool = True) -> tuple[list[Path], list[Path]]:
    """A folder of small, awkward images for demos and tests; returns (good images, corrupt files).

    Good: RGBA PNG (transparent corner), grayscale PNG, 16-bit grayscale PNG, palette PNG with a
    transparent index, RGBA WEBP, EXIF-rotated JPEG (stored 48x24, shown 24x48), BMP, an upper-case
    .JPG. Corrupt (with `corrupt`): a non-image with a .png name and a truncated JPEG.
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    good: list[Path] = []

    def save(name: str, img: Image.Image, **kw) -> None:
        img.save(out / name, **kw)
        good.append(out / name)

    rgba = Image.new("RGBA", (40, 30), (200, 40, 40, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 10, 10))  # transparent black corner -> white after compositing
    save("alpha.png", rgba)
    save("gray.png", Image.linear_gradient("L").resize((32, 32)))
    save("gray16.png", Image.fromarray((np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)))
    palette = Image.new("P", (30, 30), 1)
    palette.putpalette([0, 0, 0, 10, 120, 200] + [0, 0, 0] * 254)
    palette.paste(0, (0, 0, 8, 8))
    save("palette.png", palette, transparency=0)
    save("photo.webp", Image.new("RGBA", (50, 20), (20, 160, 60, 200)), lossless=True)
    stored = Image.new("RGB", (48, 24), (220, 30, 30))
    stored.paste((30, 30, 220), (24, 0, 48, 24))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save("rotated.jpg", stored, exif=exif.tobytes(), quality=95)
    save("plain.bmp", Image.new("RGB", (20, 20), (250, 250, 0)))
    save("UPPER.JPG", Image.new("RGB", (36, 36), (90, 90, 90)), quality=90)

    bad: list[Path] = []
    if corrupt:
        (out / "broken.png").write_bytes(b"this is not a png at all")
        bad.append(out / "broken.png")
        full = out / "_full.jpg"
        Image.effect_noise((256, 256), 60).convert("RGB").save(full, quality=95)
        data = full.read_bytes()
        full.unlink()
        (out / "truncated.jpg").write_bytes(data[: len(data) // 3])
        bad.append(out / "truncated.jpg")
    return sorted(good), sorted(bad)
