"""Utilities → Captioning: Basic, BLIP and WD14 captioners and the manual editor (kohya_ss's Captioning tabs).

Wiring only: each sub-tab's form is generated from the captioner's options dataclass
(`BasicOptions`, `BlipOptions`, `WD14Options` in `kohya_lite.captioning`), so defaults and fields
stay those of the library; the Run button calls `caption_basic` / `caption_blip` / `caption_wd14`
and shows `CaptionResult.summary()`, notes and failures.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import gradio as gr

from kohya_lite.ui import manual_caption_tab
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.safe import safe
from kohya_lite.ui.widgets import path_field

MAX_FAILED_SHOWN = 20


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _option_widget(prefix: str, f: dataclasses.Field) -> gr.components.Component:
    default = f.default if f.default is not dataclasses.MISSING else ""
    common = dict(label=_label(f.name), elem_id=f"{prefix}-{f.name}")
    if isinstance(default, bool):
        return gr.Checkbox(value=default, **common)
    if isinstance(default, int):
        return gr.Number(value=default, precision=0, **common)
    if isinstance(default, float):
        return gr.Number(value=default, **common)
    return gr.Textbox(value=str(default), lines=1, max_lines=1, **common)


def _captioner_tab(title: str, prefix: str, options_cls: type, run: Callable[..., Any], about: str) -> None:
    with gr.Tab(title, id=f"caption-{prefix}"):
        gr.Markdown(about)
        folder, _ = path_field(FieldSpec(f"{prefix}-folder", "Image folder to caption",
                                         "captions are written beside the images", "path", "caption"), "")
        names: list[str] = []
        widgets: list[gr.components.Component] = []
        opts = [f for f in dataclasses.fields(options_cls)]
        for i in range(0, len(opts), 4):
            with gr.Row():
                for f in opts[i:i + 4]:
                    names.append(f.name)
                    widgets.append(_option_widget(prefix, f))
        button = gr.Button(f"Caption images ({title})", variant="primary", elem_id=f"{prefix}-run")
        result = gr.Markdown("", elem_id=f"{prefix}-result", elem_classes=["kl-problems"])

        @safe(message=result)
        def go(folder_text: str, *values: Any, progress: gr.Progress = gr.Progress()):
            kwargs = {}
            for f, v in zip(opts, values):
                if v is None:
                    continue
                kwargs[f.name] = type(f.default)(v) if f.default is not dataclasses.MISSING and v != "" else v
            res = run(folder_text, options_cls(**kwargs), progress=lambda done, total: progress((done, total)))
            lines = [f"✅ {res.summary()}"] + [f"_note: {n}_" for n in res.notes]
            for path, why in res.failed[:MAX_FAILED_SHOWN]:
                lines.append(f"- ❌ `{path.name}`: {why}")
            if len(res.failed) > MAX_FAILED_SHOWN:
                lines.append(f"- … and {len(res.failed) - MAX_FAILED_SHOWN} more")
            return {result: "  \n".join(lines)}

        button.click(go, [folder, *widgets], [result], api_name=f"caption_{prefix}")


def build() -> None:
    from kohya_lite.captioning import (BasicOptions, BlipOptions, WD14Options, caption_basic, caption_blip,
                                       caption_wd14)

    with gr.Tabs():
        _captioner_tab("Basic Captioning", "basic", BasicOptions, caption_basic,
                       "One fixed caption for every image that has none (with *overwrite*: for all, and prefix/"
                       "postfix and find/replace are applied).")
        _captioner_tab("BLIP Captioning", "blip", BlipOptions, caption_blip,
                       "Natural-language captions for photos. The model must already be on this machine "
                       "(Hugging Face cache or a folder in *Model dir*); nothing is downloaded.")
        _captioner_tab("WD14 Captioning", "wd14", WD14Options, caption_wd14,
                       "Danbooru-style tags for anime/illustrations (ONNX tagger, local files only).")
        with gr.Tab("Manual Captioning", id="caption-manual"):
            manual_caption_tab.build()
