"""Utilities → LoRA tools: inspect, resize and merge LoRA files (wiring for `kohya_lite.lora_tools`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from kohya_lite.errors import UserError
from kohya_lite.lora_tools import DYNAMIC_METHODS, merge_loras, parse_merge_inputs, resize_lora
from kohya_lite.network.io import lora_file_info
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.safe import safe
from kohya_lite.ui.widgets import path_field


def info_text(path: str) -> str:
    info = lora_file_info(path)
    lines = [f"**{info.output_name or info.path}** · {info.base_model_version or info.family} · "
             f"rank {info.rank} / alpha {info.alpha:g} · {info.size_bytes / 1024:.0f} KB",
             "Modules: " + ", ".join(f"{k} {v}" for k, v in info.modules.items()),
             "Trigger words: " + (", ".join(info.trigger_words) or "–")]
    return "  \n".join(lines)


def _done(result) -> str:
    ranks = ", ".join(f"rank {r}: {n}" for r, n in result.ranks.items())
    return f"✅ wrote `{result.path}`: {result.modules} modules ({ranks}), alpha {result.alpha:g}"


def build() -> None:
    with gr.Tab("Inspect", id="lora-info"):
        src, _ = path_field(FieldSpec("tools-info-file", "LoRA file", "a .safetensors LoRA", "model", "tools"), "")
        show = gr.Button("Show", elem_id="tools-info-run")
        out = gr.Markdown("", elem_id="tools-info-result", elem_classes=["kl-problems"])
        show.click(safe(message=out)(lambda p: {out: info_text(p)}), [src], [out])
    with gr.Tab("Resize", id="lora-resize"):
        gr.Markdown("SVD to a lower rank (or a per-module rank with a dynamic rule); the effective weights are "
                    "kept as well as the rank allows, with one alpha for the file.")
        r_src, _ = path_field(FieldSpec("tools-resize-file", "LoRA file", "", "model", "tools"), "")
        with gr.Row():
            r_out = gr.Textbox(label="Save to", elem_id="tools-resize-out", scale=3)
            rank = gr.Number(8, precision=0, label="New rank", elem_id="tools-resize-rank", scale=1)
            method = gr.Dropdown(["none", *DYNAMIC_METHODS], value="none", label="Dynamic method",
                                 elem_id="tools-resize-method", scale=1)
            param = gr.Number(0.9, label="Dynamic parameter", elem_id="tools-resize-param", scale=1)
            precision = gr.Dropdown(["fp16", "bf16", "float"], value="fp16", label="Save precision", scale=1)
        r_btn = gr.Button("Resize", variant="primary", elem_id="tools-resize-run")
        r_msg = gr.Markdown("", elem_id="tools-resize-result", elem_classes=["kl-problems"])

        @safe(message=r_msg)
        def do_resize(path: str, out_path: str, new_rank: Any, how: str, p: Any, prec: str) -> dict:
            if not (out_path or "").strip():
                raise UserError("no output file", field="save_to", fix="type where the resized LoRA goes")
            res = resize_lora(path, out_path, int(new_rank or 0), method=None if how == "none" else how,
                              param=float(p or 0), precision=prec)
            return {r_msg: _done(res)}

        r_btn.click(do_resize, [r_src, r_out, rank, method, param, precision], [r_msg])
    with gr.Tab("Merge", id="lora-merge"):
        gr.Markdown("One `file.safetensors:ratio` per line (negative ratios subtract). Without a rank the ranks "
                    "are concatenated (exact); with one, each module is reduced to it by SVD.")
        m_list = gr.Textbox(lines=4, label="LoRAs and ratios", elem_id="tools-merge-list")
        with gr.Row():
            m_out = gr.Textbox(label="Save to", elem_id="tools-merge-out", scale=3)
            m_rank = gr.Number(0, precision=0, label="New rank (0 = concatenate)", elem_id="tools-merge-rank", scale=1)
            m_prec = gr.Dropdown(["fp16", "bf16", "float"], value="fp16", label="Save precision", scale=1)
        m_btn = gr.Button("Merge", variant="primary", elem_id="tools-merge-run")
        m_msg = gr.Markdown("", elem_id="tools-merge-result", elem_classes=["kl-problems"])

        @safe(message=m_msg)
        def do_merge(text: str, out_path: str, new_rank: Any, prec: str) -> dict:
            if not (out_path or "").strip():
                raise UserError("no output file", field="save_to", fix="type where the merged LoRA goes")
            files, ratios = parse_merge_inputs((text or "").splitlines())
            res = merge_loras(files, ratios, out_path, new_rank=int(new_rank or 0) or None, precision=prec)
            return {m_msg: _done(res)}

        m_btn.click(do_merge, [m_list, m_out, m_rank, m_prec], [m_msg])
