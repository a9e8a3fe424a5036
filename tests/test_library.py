"""The LoRA library folder: listing (header-only, agreeing with lora_file_info), name resolution
(stem, relative path, ss_output_name alias, case, ambiguity, close matches) and the text to insert."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from kohya_lite.errors import UserError
from kohya_lite.library import (add_to_prompt, close_matches, find_lora, format_size, insert_text, list_library,
                                lora_files, read_entry)
from kohya_lite.models.load import load_model
from kohya_lite.library import lora_file_info
from lora_helpers import ALPHA, RANK, write_lora


@pytest.fixture(scope="module")
def library(tiny_sd1_dir, tmp_path_factory):
    model = load_model(tiny_sd1_dir)
    d = tmp_path_factory.mktemp("Lora")
    meta = {"ss_base_model_version": "sd_v1", "ss_output_name": "zkz_dog", "ss_network_dim": "4",
            "ss_dataset_dirs": json.dumps({"10_zkz dog": {"n_repeats": 10, "img_count": 12}}),
            "ss_tag_frequency": json.dumps({"10_zkz dog": {"zkz dog": 12, "grass": 3}})}
    write_lora(model, d / "dog-v2.safetensors", seed=1, metadata=meta)
    write_lora(model, d / "chars" / "Hero.safetensors", seed=2, metadata={"modelspec.trigger_phrase": "hrx man"})
    write_lora(model, d / "old" / "hero.safetensors", seed=3, metadata={})
    write_lora(model, d / "style.safetensors", seed=4, metadata={"ss_output_name": "painting"}, rank=8, alpha=1.0)
    # not LoRAs, or not to be listed
    (d / "notes.txt").write_text("hi")
    (d / ".hidden.safetensors").write_bytes(b"x")
    (d / "run-000001-state").mkdir()
    write_lora(model, d / "run-000001-state" / "network.safetensors", seed=5, metadata={})
    (d / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return d


def test_scan_is_recursive_and_skips_other_files(library):
    rel = [p.relative_to(library).as_posix() for p in lora_files(library)]
    assert rel == ["broken.safetensors", "chars/Hero.safetensors", "dog-v2.safetensors", "old/hero.safetensors",
                   "style.safetensors"]


def test_list_entries(library):
    entries = {e.relative: e for e in list_library(library)}
    dog = entries["dog-v2"]
    assert (dog.name, dog.family, dog.base_model_version, dog.rank, dog.alpha) == ("dog-v2", "sd1", "sd_v1", RANK, ALPHA)
    assert dog.dataset_dirs == ["10_zkz dog"] and dog.trigger_words[:2] == ["zkz dog", "grass"]
    assert dog.output_name == "zkz_dog" and dog.size_bytes == (library / "dog-v2.safetensors").stat().st_size
    assert entries["style"].rank == 8 and entries["style"].alpha == 1.0
    # the same stem twice: the relative path is the name to use
    assert entries["chars/Hero"].name == "chars/Hero" and entries["old/hero"].name == "old/hero"
    assert entries["chars/Hero"].trigger_word == "hrx man"
    # no metadata: family from the keys, version from the family
    assert entries["old/hero"].family == "sd1" and entries["old/hero"].base_model_version == "sd_v1"
    assert entries["broken"].error and not entries["dog-v2"].error
    row = dog.row()
    assert row[0] == "dog-v2" and row[1] == "sd_v1" and row[2] == "4 / 2" and "zkz dog" in row[5]


def test_header_listing_agrees_with_lora_file_info(library):
    for path in lora_files(library):
        entry = read_entry(path, library)
        if entry.error:
            continue
        info = lora_file_info(path)
        assert (entry.family, entry.rank, entry.alpha, entry.base_model_version, entry.trigger_words) == (
            info.family, info.rank, info.alpha, info.base_model_version, info.trigger_words), path


def test_listing_other_layouts_reads_the_file(library, tmp_path):
    """A .pt file (no header to read) goes through lora_file_info."""
    import torch

    torch.save(load_file(str(library / "style.safetensors")), tmp_path / "plain.pt")
    (entry,) = list_library(tmp_path)
    assert (entry.name, entry.rank, entry.alpha, entry.family) == ("plain", 8, 1.0, "sd1")


def test_find_by_stem_path_alias_and_case(library):
    assert find_lora("dog-v2", library) == library / "dog-v2.safetensors"
    assert find_lora("DOG-V2", library) == library / "dog-v2.safetensors"
    assert find_lora("dog-v2.safetensors", library) == library / "dog-v2.safetensors"
    assert find_lora("zkz_dog", library) == library / "dog-v2.safetensors"  # ss_output_name
    assert find_lora("painting", library) == library / "style.safetensors"
    assert find_lora("chars/Hero", library) == library / "chars" / "Hero.safetensors"
    assert find_lora("old\\hero", library) == library / "old" / "hero.safetensors"
    assert find_lora("Hero", library) == library / "chars" / "Hero.safetensors"  # exact case wins
    assert find_lora("hero", library) == library / "old" / "hero.safetensors"


def test_find_errors(library, tmp_path):
    with pytest.raises(UserError) as err:
        find_lora("dogv2", library)
    assert "no LoRA named 'dogv2'" in err.value.message and "close matches: dog-v2" in err.value.message
    assert "5 LoRA files" in err.value.fix
    with pytest.raises(UserError) as err:
        find_lora("HERO", library)  # no exact case, two any-case matches
    assert "several LoRAs are called 'HERO'" in err.value.message and "chars/Hero" in err.value.fix
    with pytest.raises(UserError, match="does not exist"):
        find_lora("x", tmp_path / "nope")
    with pytest.raises(UserError) as err:
        find_lora("x", tmp_path)
    assert "holds no LoRA files" in err.value.fix
    assert close_matches("stlye", ["style", "dog", "painting"]) == ["style"]


def test_insert_text(library):
    entries = {e.relative: e for e in list_library(library)}
    assert insert_text(entries["dog-v2"]) == "<lora:dog-v2:0.8> zkz dog"
    assert insert_text(entries["chars/Hero"], 1) == "<lora:chars/Hero:1> hrx man"
    assert insert_text(entries["style"], -0.5) == "<lora:style:-0.5>"  # no trigger word known
    assert add_to_prompt("", "<lora:a:1>") == "<lora:a:1>"
    assert add_to_prompt("a cat", "<lora:a:1> zkz") == "a cat, <lora:a:1> zkz"
    assert add_to_prompt("a cat, ", "<lora:a:1>") == "a cat, <lora:a:1>"
    assert add_to_prompt("a cat, <lora:a:1>", "<lora:a:1>") == "a cat, <lora:a:1>"


def test_format_size():
    assert [format_size(n) for n in (12, 2048, 5 * 1024**2 + 1, 3 * 1024**3)] == ["12 B", "2.0 KB", "5.0 MB", "3.0 GB"]
