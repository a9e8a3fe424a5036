"""Utilities → Captioning → Manual: a paged grid of images with their caption boxes.

Wiring only (the work is in `kohya_lite.captioning.editor`): a caption is saved when its box loses focus
or Enter is pressed (an emptied box deletes the caption file, as an empty file breaks training); quick tags
add to every caption at the front or back; search/replace runs across the folder; tag frequency is shown.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from kohya_lite.captioning.editor import add_tags, list_images_with_captions, save_caption, search_replace, tag_frequency
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.safe import safe
from kohya_lite.ui.widgets import path_field

PAGE_SIZE = 8
TOP_TAGS = 30


def _frequency_text(folder: str, ext: str) -> str:
    counts = tag_frequency(folder, ext)
    if not counts:
        return "_No captions yet._"
    return "**Tag frequency:** " + ", ".join(f"{t} ({n})" for t, n in counts.most_common(TOP_TAGS))


def build() -> None:
    gr.Markdown("Edit captions by hand. A caption is saved when you leave its box or press Enter; "
                "clearing a box deletes that caption file.")
    folder, _ = path_field(FieldSpec("manual-folder", "Image folder", "captions beside the images", "path", "caption"), "")
    with gr.Row():
        ext = gr.Textbox(".txt", label="Caption extension", elem_id="manual-ext", scale=1)
        page = gr.Number(1, precision=0, label="Page", elem_id="manual-page", scale=1)
        load = gr.Button("Load", variant="primary", elem_id="manual-load", scale=1)
        prev_btn = gr.Button("◀ Previous", elem_id="manual-prev", scale=1)
        next_btn = gr.Button("Next ▶", elem_id="manual-next", scale=1)
    status = gr.Markdown("", elem_id="manual-status", elem_classes=["kl-problems"])
    with gr.Row():
        quick = gr.Textbox(label="Quick tags (comma separated)", elem_id="manual-quick", scale=3)
        where = gr.Radio(["front", "back"], value="front", label="Add at", elem_id="manual-where", scale=1)
        add_btn = gr.Button("Add to every caption", elem_id="manual-add", scale=1)
    with gr.Row():
        find = gr.Textbox(label="Find", elem_id="manual-find", scale=2)
        repl = gr.Textbox(label="Replace with", elem_id="manual-replace", scale=2)
        repl_btn = gr.Button("Replace in all captions", elem_id="manual-replace-run", scale=1)
    freq = gr.Markdown("", elem_id="manual-freq")

    paths = gr.State([])  # the image path shown in each slot
    images, boxes = [], []
    for row in range(0, PAGE_SIZE, 4):
        with gr.Row():
            for i in range(row, row + 4):
                with gr.Column(min_width=160):
                    images.append(gr.Image(visible=False, interactive=False, show_label=False, height=160,
                                           elem_id=f"manual-img-{i}"))
                    boxes.append(gr.Textbox(visible=False, lines=2, max_lines=6, show_label=False,
                                            elem_id=f"manual-cap-{i}"))

    def show(folder_text: str, ext_text: str, page_no: Any) -> dict:
        cp = list_images_with_captions(folder_text, ext_text or ".txt", int(page_no or 1), PAGE_SIZE)
        out: dict = {page: cp.page, paths: [str(it.image) for it in cp.items],
                     status: f"Page {cp.page} of {cp.total_pages} · {cp.total_images} images",
                     freq: _frequency_text(folder_text, ext_text or ".txt")}
        for i in range(PAGE_SIZE):
            it = cp.items[i] if i < len(cp.items) else None
            out[images[i]] = gr.update(value=str(it.image) if it else None, visible=it is not None,
                                       label=it.image.name if it else None)
            out[boxes[i]] = gr.update(value=it.caption if it else "", visible=it is not None,
                                      placeholder="(no caption)" if it else None)
        return out

    outputs = [page, paths, status, freq, *images, *boxes]
    load.click(safe(message=status)(show), [folder, ext, page], outputs)
    prev_btn.click(safe(message=status)(lambda f, e, p: show(f, e, int(p or 1) - 1)), [folder, ext, page], outputs)
    next_btn.click(safe(message=status)(lambda f, e, p: show(f, e, int(p or 1) + 1)), [folder, ext, page], outputs)

    for i, box in enumerate(boxes):
        @safe(message=status)
        def save(text: str, shown: list[str], ext_text: str, folder_text: str, _i: int = i) -> dict:
            if _i >= len(shown):
                return {status: gr.skip()}
            target = save_caption(shown[_i], text, ext_text or ".txt")
            return {status: f"Saved `{target.name}`", freq: _frequency_text(folder_text, ext_text or ".txt")}

        gr.on([box.blur, box.submit], save, [box, paths, ext, folder], [status, freq], show_progress="hidden")

    @safe(message=status)
    def do_add(folder_text: str, ext_text: str, tags: str, position: str, page_no: Any) -> dict:
        n = add_tags(folder_text, ext_text or ".txt", tags, position)
        return {**show(folder_text, ext_text, page_no), status: f"Added to {n} caption(s)"}

    add_btn.click(do_add, [folder, ext, quick, where, page], outputs)

    @safe(message=status)
    def do_replace(folder_text: str, ext_text: str, find_text: str, repl_text: str, page_no: Any) -> dict:
        n = search_replace(folder_text, ext_text or ".txt", find_text, repl_text)
        return {**show(folder_text, ext_text, page_no), status: f"Replaced in {n} caption(s)"}

    repl_btn.click(do_replace, [folder, ext, find, repl, page], outputs)
