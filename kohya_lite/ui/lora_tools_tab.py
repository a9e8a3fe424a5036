"""Utilities → LoRA tools: inspect, resize, merge, merge into a model, extract, convert and download LoRA files.

Wiring only: the work is in `kohya_lite.lora_tools` and `kohya_lite.tools`. `build()` returns the new tabs'
handlers (`LoraToolsTab`) so tests can call them without a browser; long work reports through gr.Progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from kohya_lite.errors import UserError
from kohya_lite.library import DEFAULT_LORA_DIR
from kohya_lite.lora_tools import DYNAMIC_METHODS, merge_loras, parse_merge_inputs, resize_lora
from kohya_lite.library import lora_file_info
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.safe import safe
from kohya_lite.ui.widgets import path_field

PRECISIONS = ["fp16", "bf16", "float"]


@dataclass
class LoraToolsTab:
    on_merge_to_model: Callable[..., dict]
    on_extract: Callable[..., dict]
    on_convert: Callable[..., dict]
    on_download: Callable[..., dict]


def info_text(path: str) -> str:
    from kohya_lite.tools.verify import verify_lora

    info = lora_file_info(path)
    lines = [f"**{info.output_name or info.path}** · {info.base_model_version or info.family} · "
             f"rank {info.rank} / alpha {info.alpha:g} · {info.size_bytes / 1024:.0f} KB",
             "Modules: " + ", ".join(f"{k} {v}" for k, v in info.modules.items()),
             "Trigger words: " + (", ".join(info.trigger_words) or "–")]
    lines += [f"⚠️ {p}" for p in verify_lora(path).problems()]
    return "  \n".join(lines)


def _reporter(progress: Any) -> Callable[[int, int, str], None]:
    """The tools' progress(done, total, what) → gr.Progress (bytes for downloads)."""

    def report(done: int, total: int, what: str) -> None:
        progress((done, total or None), desc=what, unit="B" if what == "downloading" else "steps")

    return report


def _lines(head: str, notes: list[str]) -> str:
    return "  \n".join([head] + [f"_note: {n}_" for n in notes])


def _ratio_list(text: str) -> list[tuple[str, float]]:
    files, ratios = parse_merge_inputs((text or "").splitlines())
    return list(zip(files, ratios))


def merge_to_model_text(model: str, loras_text: str, out: str, fmt: str, precision: str, overwrite: bool,
                        v_pred: bool, progress: Callable | None = None) -> str:
    from kohya_lite.tools.merge_to_model import merge_to_model

    if not (out or "").strip():
        raise UserError("no output given", field="save_to", fix="type where the merged model goes: a .safetensors "
                                                                 "file or a new folder name")
    res = merge_to_model(model, _ratio_list(loras_text), out, fmt=fmt, precision=precision, overwrite=bool(overwrite),
                         v_parameterization=bool(v_pred), progress=progress)
    return _lines(f"✅ {res.summary()}", res.warnings)


def extract_text(base: str, tuned: str, out: str, rank: Any, conv_rank: Any, quantile: Any, min_diff: Any,
                 precision: str, load_precision: str, progress: Callable | None = None) -> str:
    from kohya_lite.tools.extract import extract_lora

    if not (out or "").strip():
        raise UserError("no output file", field="save_to", fix="type where the extracted LoRA goes (.safetensors)")
    res = extract_lora(base, tuned, out, rank=int(rank or 0), conv_rank=int(conv_rank or 0),
                       clamp_quantile=float(quantile if quantile is not None else 0.99),
                       min_diff=float(min_diff if min_diff is not None else 0.01), precision=precision,
                       load_precision=load_precision, progress=progress)
    return _lines(f"✅ {res.summary()}", res.warnings)


def convert_text(src: str, out: str, to: str, family: str, precision: str) -> str:
    from kohya_lite.tools.convert import convert_lora

    if not (out or "").strip():
        raise UserError("no output given", field="save_to", fix="type where the converted LoRA goes")
    res = convert_lora(src, out, to=to, family=None if family in (None, "", "auto") else family, precision=precision)
    return _lines(f"✅ {res.summary()}", res.notes)


def download_text(url: str, sha256: str, folder: str, name: str, allow_pickle: bool, overwrite: bool,
                  token_env: str, progress: Callable | None = None) -> str:
    from kohya_lite.tools.download import download_lora

    res = download_lora(url, folder or None, sha256=sha256 or None, filename=(name or "").strip() or None,
                        allow_pickle=bool(allow_pickle), overwrite=bool(overwrite),
                        token_env=(token_env or "").strip() or None, progress=progress)
    lines = [f"✅ saved `{res.path}`: {res.summary()}"]
    entry = res.entry
    if entry is not None and not entry.error:
        lines.append(f"{entry.base_model_version} · rank {entry.rank} / alpha {entry.alpha:g} · use it as "
                     f"`<lora:{entry.name}:1>` (LoRA library → Refresh lists it)")
        lines.append("Trigger words: " + (", ".join(entry.trigger_words) or "–"))
    return _lines("  \n".join(lines), res.warnings)


def _done(result) -> str:
    ranks = ", ".join(f"rank {r}: {n}" for r, n in result.ranks.items())
    return f"✅ wrote `{result.path}`: {result.modules} modules ({ranks}), alpha {result.alpha:g}"


def build(*, lora_dir: str = str(DEFAULT_LORA_DIR)) -> LoraToolsTab:
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

    with gr.Tab("Merge into model", id="lora-merge-to-model"):
        gr.Markdown("Bakes LoRAs into a base model: W += ratio · alpha/rank · up@down (LoRA and LoCon; LyCORIS "
                    "types merge their own ΔW). A `.safetensors` name gives one checkpoint in the original SD1/SD2/SDXL "
                    "layout, any other name a diffusers folder.")
        t_model, _ = path_field(FieldSpec("tools-mtm-model", "Base model", "diffusers folder, .safetensors/.ckpt or "
                                          "cached Hub id", "model", "tools"), "")
        t_list = gr.Textbox(lines=3, label="LoRAs and ratios", info="one file.safetensors:ratio per line",
                            elem_id="tools-mtm-list")
        with gr.Row():
            t_out = gr.Textbox(label="Save to", elem_id="tools-mtm-out", scale=3)
            t_fmt = gr.Dropdown(["auto", "single_file", "diffusers"], value="auto", label="Format",
                                elem_id="tools-mtm-format", scale=1)
            t_prec = gr.Dropdown(PRECISIONS, value="fp16", label="Save precision", elem_id="tools-mtm-precision",
                                 scale=1)
            t_over = gr.Checkbox(False, label="Overwrite a folder", elem_id="tools-mtm-overwrite", scale=1)
            t_vpred = gr.Checkbox(False, label="V-prediction (SD2 768-v)", elem_id="tools-mtm-vpred", scale=1)
        t_btn = gr.Button("Merge into model", variant="primary", elem_id="tools-mtm-run")
        t_msg = gr.Markdown("", elem_id="tools-mtm-result", elem_classes=["kl-problems"])

        @safe(message=t_msg)
        def on_merge_to_model(model: str, text: str, out_path: str, fmt: str, prec: str, overwrite: bool,
                              v_pred: bool, progress: gr.Progress = gr.Progress()) -> dict:
            return {t_msg: merge_to_model_text(model, text, out_path, fmt, prec, overwrite, v_pred, _reporter(progress))}

        t_btn.click(on_merge_to_model, [t_model, t_list, t_out, t_fmt, t_prec, t_over, t_vpred], [t_msg])
    with gr.Tab("Extract", id="lora-extract"):
        gr.Markdown("The LoRA that turns a base model into a fine-tuned one: per module an SVD of the difference "
                    "(sd-scripts' extract_lora_from_models). Both models must be of the same family.")
        e_base, _ = path_field(FieldSpec("tools-extract-base", "Base model", "the original model", "model", "tools"),
                               "")
        e_tuned, _ = path_field(FieldSpec("tools-extract-tuned", "Tuned model", "the fine-tuned model", "model",
                                          "tools"), "")
        with gr.Row():
            e_out = gr.Textbox(label="Save to", elem_id="tools-extract-out", scale=3)
            e_rank = gr.Number(128, precision=0, label="Rank", elem_id="tools-extract-rank", scale=1)
            e_conv = gr.Number(128, precision=0, label="Conv rank (0 = no 3×3 convs)", elem_id="tools-extract-conv",
                               scale=1)
        with gr.Row():
            e_q = gr.Number(0.99, label="Clamp quantile", info="1 = no clamping", elem_id="tools-extract-quantile")
            e_min = gr.Number(0.01, label="Minimum difference", info="text encoder threshold",
                              elem_id="tools-extract-min-diff")
            e_prec = gr.Dropdown(PRECISIONS, value="fp16", label="Save precision", elem_id="tools-extract-precision")
            e_load = gr.Dropdown(PRECISIONS, value="float", label="Load precision", info="fp16 halves the memory",
                                 elem_id="tools-extract-load-precision")
        e_btn = gr.Button("Extract LoRA", variant="primary", elem_id="tools-extract-run")
        e_msg = gr.Markdown("", elem_id="tools-extract-result", elem_classes=["kl-problems"])

        @safe(message=e_msg)
        def on_extract(base: str, tuned: str, out_path: str, r: Any, cr: Any, q: Any, md: Any, prec: str, lp: str,
                       progress: gr.Progress = gr.Progress()) -> dict:
            return {e_msg: extract_text(base, tuned, out_path, r, cr, q, md, prec, lp, _reporter(progress))}

        e_btn.click(on_extract, [e_base, e_tuned, e_out, e_rank, e_conv, e_q, e_min, e_prec, e_load], [e_msg])
    with gr.Tab("Convert", id="lora-convert"):
        gr.Markdown("diffusers/peft LoRAs (diffusers' trainers, PEFT adapter folders) → kohya format for the library "
                    "and A1111/ComfyUI; kohya → diffusers format (`load_lora_weights`).")
        c_src, _ = path_field(FieldSpec("tools-convert-file", "LoRA file or folder", "", "model", "tools"), "")
        with gr.Row():
            c_out = gr.Textbox(label="Save to", info=".safetensors (diffusers: or a folder)",
                               elem_id="tools-convert-out", scale=3)
            c_to = gr.Dropdown(["auto", "kohya", "diffusers"], value="auto", label="Convert to",
                               elem_id="tools-convert-to", scale=1)
            c_fam = gr.Dropdown(["auto", "sd1", "sd2", "sdxl"], value="auto", label="Model family",
                                elem_id="tools-convert-family", scale=1)
            c_prec = gr.Dropdown(["keep", *PRECISIONS], value="keep", label="Save precision",
                                 elem_id="tools-convert-precision", scale=1)
        c_btn = gr.Button("Convert", variant="primary", elem_id="tools-convert-run")
        c_msg = gr.Markdown("", elem_id="tools-convert-result", elem_classes=["kl-problems"])

        @safe(message=c_msg)
        def on_convert(src: str, out_path: str, to: str, fam: str, prec: str) -> dict:
            return {c_msg: convert_text(src, out_path, to, fam, prec)}

        c_btn.click(on_convert, [c_src, c_out, c_to, c_fam, c_prec], [c_msg])
    with gr.Tab("Download", id="lora-download"):
        gr.Markdown("Downloads a LoRA into the library folder: a model site's download link or a Hugging Face "
                    "`…/resolve/main/FILE.safetensors` link. An interrupted download resumes; only `.safetensors` "
                    "files are accepted unless you allow pickle files. Tokens are read from the server's "
                    "environment: `HF_TOKEN` (Hugging Face), `CIVITAI_API_TOKEN` (Civitai). This is the only time "
                    "kohya-lite goes online.")
        d_url = gr.Textbox(label="Download link (URL)", elem_id="tools-dl-url")
        with gr.Row():
            d_sha = gr.Textbox(label="Expected SHA-256 (optional)", elem_id="tools-dl-sha", scale=2)
            d_dir = gr.Textbox(lora_dir, label="LoRA folder", elem_id="tools-dl-dir", scale=2)
            d_name = gr.Textbox(label="File name (optional)", elem_id="tools-dl-name", scale=1)
        with gr.Row():
            d_pickle = gr.Checkbox(False, label="Allow pickle files (.ckpt/.pt; read as weights only, saved as "
                                   ".safetensors)", elem_id="tools-dl-pickle")
            d_over = gr.Checkbox(False, label="Overwrite a different file of that name", elem_id="tools-dl-overwrite")
            d_env = gr.Textbox(label="Token variable for another site (optional)", elem_id="tools-dl-token-env")
        d_btn = gr.Button("Download", variant="primary", elem_id="tools-dl-run")
        d_msg = gr.Markdown("", elem_id="tools-dl-result", elem_classes=["kl-problems"])

        @safe(message=d_msg)
        def on_download(url: str, sha: str, folder: str, name: str, allow_pickle: bool, overwrite: bool,
                        token_env: str, progress: gr.Progress = gr.Progress()) -> dict:
            return {d_msg: download_text(url, sha, folder, name, allow_pickle, overwrite, token_env,
                                         _reporter(progress))}

        d_btn.click(on_download, [d_url, d_sha, d_dir, d_name, d_pickle, d_over, d_env], [d_msg])
    return LoraToolsTab(on_merge_to_model, on_extract, on_convert, on_download)
