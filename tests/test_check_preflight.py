"""`kohya-lite check` on inputs users make by accident (issue #11), through the CLI's `main`.

Each case: the exit code, one message naming the file or field with a fix, no traceback, and no file in the
project changed. The project itself lives under a non-ASCII path with spaces, so every case also covers those.
"""

import codecs
import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kohya_lite.cli import main

TRIGGER = "zkz object"


@pytest.fixture
def project(tmp_path):
    """A valid project: a model folder (configs are enough for check), 3 captioned images, a config file."""
    root = tmp_path / "my prøject – ü"
    model = root / "base model"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    img = root / "img" / f"5_{TRIGGER}"
    img.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 40, 10, 10)).save(img / f"{i}.png")
        (img / f"{i}.txt").write_text("zkz object, red", encoding="utf-8")
    cfg = {"pretrained_model_name_or_path": str(model), "train_data_dir": str(root / "img"),
           "output_dir": str(root / "out"), "output_name": "zkz", "optimizer": "AdamW", "epoch": 2}
    return root, cfg


def write_config(root: Path, cfg: dict, name: str = "config.json", encoding: str = "utf-8") -> Path:
    path = root / name
    path.write_bytes(json.dumps(cfg, ensure_ascii=False, indent=2).encode(encoding))
    return path


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def problems(text: str) -> list[dict]:
    """The ERROR/WARNING blocks of the CLI's output: head line (message + [field, file]) and fix."""
    out: list[dict] = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("ERROR:", "WARNING:")):
            out.append({"severity": s.split(":", 1)[0].lower(), "head": s, "fix": None})
        elif s.startswith("fix:") and out:
            out[-1]["fix"] = s[4:].strip()
    return out


def check(capsys, root: Path, config: Path) -> tuple[int, str, list[dict]]:
    before = snapshot(root)
    rc = main(["check", str(config)])
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text
    assert snapshot(root) == before, "check changes no file"
    return rc, text, problems(text)


def one(found: list[dict], needle: str, severity: str) -> dict:
    hits = [p for p in found if needle in p["head"]]
    assert len(hits) == 1, f"expected one message naming {needle!r}: {found}"
    assert hits[0]["severity"] == severity and hits[0]["fix"], hits[0]
    return hits[0]


def with_samples(cfg: dict, prompt_file: Path) -> dict:
    return {**cfg, "sample_prompts": str(prompt_file), "sample_every_n_epochs": 1}


# ---- text files -----------------------------------------------------------------------------------
def test_latin1_sample_prompt_file_is_named_not_a_traceback(capsys, project):
    root, cfg = project
    prompts = root / "prompts.txt"
    prompts.write_bytes("zkz object in a café --w 512 --h 512\n".encode("latin-1"))
    rc, _, found = check(capsys, root, write_config(root, with_samples(cfg, prompts)))
    assert rc == 2
    p = one(found, "prompts.txt", "error")
    assert "field 'sample_prompts'" in p["head"] and "not UTF-8" in p["head"] and "UTF-8" in p["fix"]


@pytest.mark.parametrize("encoding, newline", [("utf-8-sig", "\r\n"), ("utf-8", "\n")])
def test_utf8_prompt_files_with_bom_or_crlf_pass(capsys, project, encoding, newline):
    root, cfg = project
    prompts = root / "prompts.txt"
    prompts.write_bytes(newline.join(["zkz object, café --w 512 --h 512", "zkz object --d 1", ""]).encode(encoding))
    rc, text, found = check(capsys, root, write_config(root, with_samples(cfg, prompts)))
    assert rc == 0, text
    assert not [p for p in found if "prompts.txt" in p["head"]]


def test_utf16_prompt_file_is_read_with_a_warning(capsys, project):
    root, cfg = project
    prompts = root / "prompts.txt"
    prompts.write_bytes("zkz object --w 512 --h 512\r\n".encode("utf-16"))  # Notepad's "Unicode"
    rc, text, found = check(capsys, root, write_config(root, with_samples(cfg, prompts)))
    assert rc == 0, text
    assert "UTF-16" in one(found, "prompts.txt", "warning")["head"]


def test_utf16_config_loads_with_a_note_not_a_permissions_hint(capsys, project):
    root, cfg = project
    rc, text, _ = check(capsys, root, write_config(root, cfg, encoding="utf-16"))
    assert rc == 0, text
    assert "UTF-16" in text and "config.json" in text and "permission" not in text


def test_utf8_bom_config_passes(capsys, project):
    root, cfg = project
    rc, text, _ = check(capsys, root, write_config(root, cfg, encoding="utf-8-sig"))
    assert rc == 0 and "Ready to train" in text, text


def test_windows_ansi_config_is_named(capsys, project):
    root, cfg = project
    rc, _, found = check(capsys, root, write_config(root, {**cfg, "training_comment": "déjà vu"}, encoding="cp1252"))
    assert rc == 2
    p = one(found, "config.json", "error")
    assert "not UTF-8" in p["head"] and "UTF-8" in p["fix"]


def test_unreadable_captions_are_named_and_the_rest_pass(capsys, project):
    root, cfg = project
    folder = root / "img" / f"5_{TRIGGER}"
    (folder / "0.txt").write_bytes("zkz object, café".encode("latin-1"))
    rc, text, found = check(capsys, root, write_config(root, cfg))
    assert rc == 0, text
    p = one(found, "0.txt", "warning")
    assert "field 'caption_extension'" in p["head"] and TRIGGER in p["head"] and "UTF-8" in p["fix"]

    (folder / "1.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # an image saved under a caption name
    rc, text, found = check(capsys, root, write_config(root, cfg))
    assert rc == 0, text
    p = one(found, "caption files", "warning")
    assert "0.txt" in p["head"] and "1.txt" in p["head"] and "2.txt" not in p["head"]


def test_crlf_bom_and_utf16_captions_are_read(capsys, project):
    root, cfg = project
    folder = root / "img" / f"5_{TRIGGER}"
    (folder / "0.txt").write_bytes(codecs.BOM_UTF8 + "zkz object, café\r\nsecond line\r\n".encode())
    (folder / "1.txt").write_bytes("zkz object, naïve\r\n".encode("utf-16"))
    rc, text, found = check(capsys, root, write_config(root, cfg))
    assert rc == 0, text
    assert "3 captions" in text
    assert "UTF-16" in one(found, "1.txt", "warning")["head"]
    assert not [p for p in found if "0.txt" in p["head"]]


# ---- config values ----------------------------------------------------------------------------------
def test_number_with_trailing_junk_is_an_error_naming_the_field(capsys, project):
    root, cfg = project
    rc, _, found = check(capsys, root, write_config(root, {**cfg, "learning_rate": "1e-4abc", "unet_lr": ""}))
    assert rc == 2
    p = one(found, "learning_rate", "error")
    assert "field 'learning_rate'" in p["head"] and "1e-4abc" in p["head"] and "config.json" in p["head"]


def test_kohya_conventions_still_coerce(capsys, project):
    root, cfg = project
    kohya = {**cfg, "learning_rate": "1e-4", "unet_lr": "", "text_encoder_lr": "5e-05", "epoch": "2",
             "network_dim": 16.0, "max_train_steps": "", "seed": "1234", "shuffle_caption": "false"}
    rc, text, _ = check(capsys, root, write_config(root, kohya))
    assert rc == 0, text
    assert "= 30 steps" in text


@pytest.mark.parametrize("field, value", [
    ("save_every_n_steps", -1), ("save_every_n_epochs", -2), ("sample_every_n_steps", -10), ("seed", -1),
    ("lr_warmup_steps", -5), ("save_last_n_steps", -1), ("max_data_loader_n_workers", -1),
    ("caption_dropout_every_n_epochs", -1), ("multires_noise_discount", 1.5),
])
def test_counts_and_intervals_are_range_checked(capsys, project, field, value):
    root, cfg = project
    rc, _, found = check(capsys, root, write_config(root, {**cfg, field: value}))
    assert rc == 2
    p = one(found, f"field '{field}'", "error")
    assert str(value) in p["head"]


# ---- model files --------------------------------------------------------------------------------------
def _safetensors(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"model.diffusion_model.input_blocks.0.0.weight": np.zeros((32, 4, 3, 3), np.float16),
               "first_stage_model.decoder.conv_out.bias": np.zeros(3, np.float16)}, str(path))


def test_truncated_single_file_model_is_an_error(capsys, project):
    root, cfg = project
    model = root / "models" / "base model.safetensors"
    model.parent.mkdir()
    _safetensors(model)
    config = write_config(root, {**cfg, "pretrained_model_name_or_path": str(model)})
    rc, text, _ = check(capsys, root, config)
    assert rc == 0, text  # complete: the header and the length agree

    data = model.read_bytes()
    model.write_bytes(data[: len(data) - 100])
    rc, _, found = check(capsys, root, config)
    assert rc == 2
    p = one(found, "base model.safetensors", "error")
    assert "truncated" in p["head"] and "field 'pretrained_model_name_or_path'" in p["head"]
    assert "download it again" in p["fix"]


def test_truncated_network_weights_are_an_error(capsys, project):
    root, cfg = project
    lora = root / "start.safetensors"
    _safetensors(lora)
    lora.write_bytes(lora.read_bytes() + b"\0" * 16)  # bytes appended (a broken copy)
    rc, _, found = check(capsys, root, write_config(root, {**cfg, "network_weights": str(lora)}))
    assert rc == 2
    assert "after its last tensor" in one(found, "start.safetensors", "error")["head"]


# ---- images --------------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def small_huge_png(path: Path, width: int, height: int) -> None:
    """A 1-bit grayscale PNG of width×height pixels that is only a few hundred KB on disk."""
    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


def test_huge_image_is_warned_about_from_its_header(capsys, project):
    root, cfg = project
    big = root / "img" / f"5_{TRIGGER}" / "huge.png"
    small_huge_png(big, 20000, 20000)
    assert big.stat().st_size < 2_000_000
    rc, text, found = check(capsys, root, write_config(root, cfg))
    assert rc == 0, text
    p = one(found, "huge.png", "warning")
    assert "20000×20000" in p["head"] and "downscale" in p["fix"]
    assert "4 images × 5 repeats" in text, "a large image is still used"


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg", "cut.webp"])
def test_truncated_images_are_still_caught_without_decoding(capsys, project, name):
    root, cfg = project
    folder = root / "img" / f"5_{TRIGGER}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / name)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: int(len(data) * 0.8)])
    rc, text, found = check(capsys, root, write_config(root, cfg))
    assert rc == 0, text
    assert "skipped" in one(found, name, "warning")["head"]
    assert "3 images × 5 repeats" in text


def test_folder_whose_only_image_is_unreadable(capsys, project):
    root, cfg = project
    bad = root / "img" / "3_other thing"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png at all")
    rc, text, found = check(capsys, root, write_config(root, cfg))
    assert rc == 0, text
    assert "skipped" in one(found, "x.png", "warning")["head"]
    assert "no usable images" in one(found, "'3_other thing'", "warning")["head"]
    assert "have no '.txt' caption" not in text


# ---- folders --------------------------------------------------------------------------------------------
def test_reg_folder_equal_to_the_training_folder_is_warned(capsys, project):
    root, cfg = project
    rc, text, found = check(capsys, root, write_config(root, {**cfg, "reg_data_dir": cfg["train_data_dir"]}))
    assert rc == 0, text
    p = one(found, "field 'reg_data_dir'", "warning")
    assert "is the training folder" in p["head"] and "separate folder" in p["fix"]


def test_reg_folder_inside_the_training_folder_is_warned(capsys, project):
    root, cfg = project
    reg = root / "img" / "reg"
    (reg / "1_object").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(reg / "1_object" / "r.png")
    rc, text, found = check(capsys, root, write_config(root, {**cfg, "reg_data_dir": str(reg)}))
    assert rc == 0, text
    assert "inside the training folder" in one(found, "is inside the training", "warning")["head"]
