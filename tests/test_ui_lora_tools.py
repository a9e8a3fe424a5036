"""Utilities → LoRA tools, second half, without a browser: the tab builds, and its handlers merge into a model,
convert, extract and download (from a local HTTP server) and show results and problems in words."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from download_helpers import start_server, stop_server
from kohya_lite.models.load import load_model
from kohya_lite.ui import lora_tools_tab
from lora_helpers import write_lora


def _text(result: dict) -> str:
    (value,) = result.values()
    return value


@pytest.fixture(scope="module")
def tab():
    with gr.Blocks():
        return lora_tools_tab.build()


@pytest.fixture(scope="module")
def lora(tiny_sd1_dir, tmp_path_factory):
    meta = {"ss_base_model_version": "sd_v1", "ss_v2": "False", "modelspec.trigger_phrase": "zkz style",
            "ss_tag_frequency": json.dumps({"5_zkz": {"zkz style": 3}})}
    return write_lora(load_model(tiny_sd1_dir), tmp_path_factory.mktemp("ui") / "a.safetensors", seed=1, metadata=meta)


def test_merge_to_model_and_extract_handlers(tab, lora, tiny_sd1_dir, tmp_path):
    out = tmp_path / "merged"  # a diffusers folder (a tiny single file would need its configs beside it)
    text = _text(tab.on_merge_to_model(str(tiny_sd1_dir), f"{lora}:0.8", str(out), "auto", "float", False, False))
    assert text.startswith("✅ wrote diffusers folder") and "a.safetensors × 0.8" in text
    assert (out / "model_index.json").is_file()
    assert "no output" in _text(tab.on_merge_to_model(str(tiny_sd1_dir), str(lora), "", "auto", "fp16", False, False))
    lora_out = tmp_path / "x.safetensors"
    text = _text(tab.on_extract(str(tiny_sd1_dir), str(out), str(lora_out), 4, 0, 1, 0.01, "fp16", "float"))
    assert text.startswith("✅ wrote") and lora_out.is_file()
    text = _text(tab.on_extract(str(tiny_sd1_dir), str(tiny_sd1_dir), str(lora_out), 4, 0, 1, 0.01, "fp16", "float"))
    assert text.startswith("- ❌") and "same" in text


def test_convert_handler(tab, lora, tmp_path):
    text = _text(tab.on_convert(str(lora), str(tmp_path / "d"), "auto", "auto", "keep"))
    assert "✅ wrote" in text and "diffusers layout" in text
    assert (tmp_path / "d" / "pytorch_lora_weights.safetensors").is_file()
    text = _text(tab.on_convert(str(tmp_path / "d"), str(tmp_path / "k.safetensors"), "kohya", "sd1", "fp16"))
    assert "kohya layout" in text
    assert "❌" in _text(tab.on_convert(str(tmp_path / "nope.safetensors"), str(tmp_path / "z.safetensors"), "auto",
                                       "auto", "keep"))


def test_download_handler_shows_trigger_words(tab, lora, tmp_path):
    srv = start_server({"zkz.safetensors": lora.read_bytes()})
    try:
        lib = tmp_path / "Lora"
        text = _text(tab.on_download(f"{srv.url}/files/zkz.safetensors", "", str(lib), "", False, False, ""))
        assert text.startswith("✅ saved") and "Trigger words: zkz style" in text and "<lora:zkz:1>" in text
        assert (lib / "zkz.safetensors").read_bytes() == lora.read_bytes()
        text = _text(tab.on_download(f"{srv.url}/missing.safetensors", "", str(lib), "", False, False, ""))
        assert "❌" in text and "HTTP 404" in text
    finally:
        stop_server(srv)


def test_inspect_flags_untrained_modules(tiny_sd1_dir, tmp_path):
    from kohya_lite.network.io import save_lora_file
    from kohya_lite.network.lora import LoRANetwork

    fresh = tmp_path / "fresh.safetensors"
    save_lora_file(fresh, LoRANetwork.create(load_model(tiny_sd1_dir), 4, 2).kohya_state_dict(), {})
    assert "all zero (not trained" in lora_tools_tab.info_text(str(fresh))
