"""Utilities → Dataset preparation: kohya_ss's Dreambooth/LoRA folder preparation, by copying.

Wiring for `kohya_lite.dataset.prepare.prepare_dataset`; on success the LoRA tab's Folders fields
(image, regularisation, output, logging folders) are filled in and the page is marked unsaved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from kohya_lite.dataset.folders import list_images, suggest_repeats
from kohya_lite.dataset.prepare import prepare_dataset
from kohya_lite.errors import Problem, UserError
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.page import DIRTY_TEXT, Page
from kohya_lite.ui.safe import problem_line, safe
from kohya_lite.ui.widgets import path_field

LABELS = {
    "instance_prompt": "Instance prompt",
    "class_prompt": "Class prompt",
    "images_dir": "Training images",
    "repeats": "Repeats",
    "reg_images_dir": "Regularisation images",
    "reg_repeats": "Regularisation repeats",
    "destination": "Destination training directory",
}


def _problem_text(p: Problem) -> str:
    return problem_line(p, LABELS)


def repeats_hint(folder: str) -> tuple[int | None, str]:
    """Suggested repeats for the images in `folder` and a one-line explanation."""
    p = Path((folder or "").strip()).expanduser()
    if not str(folder or "").strip() or not p.is_dir():
        return None, ""
    n = len(list_images(p))
    if not n:
        return None, f"No images directly in '{p}'."
    r = suggest_repeats(n)
    return r, f"{n} images → **{r} repeats** suggested ({n * r} image views per epoch; 200–400 is a good range)."


def build(page: Page) -> None:
    gr.Markdown("Copies your images into kohya's layout: `img/<repeats>_<instance> <class>`, `reg/<repeats>_<class>`, "
                "`model/` and `log/`. Your original files are never moved, changed or deleted; caption files "
                "beside the images are copied too.")
    with gr.Row():
        instance = gr.Textbox(label=LABELS["instance_prompt"], info="the trigger word, e.g. 'zkz'",
                              elem_id="prep-instance")
        klass = gr.Textbox(label=LABELS["class_prompt"], info="what it is, e.g. 'woman', 'dog', 'style'",
                           elem_id="prep-class")
    images, _ = path_field(FieldSpec("prep-images", LABELS["images_dir"], "the folder holding your images", "path",
                                     "prep"), "")
    with gr.Row():
        repeats = gr.Number(value=40, precision=0, label=LABELS["repeats"], elem_id="prep-repeats",
                            info="suggested from the image count when you choose the folder")
        hint = gr.Markdown("", elem_id="prep-hint")
    reg, _ = path_field(FieldSpec("prep-reg", LABELS["reg_images_dir"], "optional: images of the class", "path",
                                  "prep"), "")
    reg_repeats = gr.Number(value=1, precision=0, label=LABELS["reg_repeats"], elem_id="prep-reg-repeats")
    dest, _ = path_field(FieldSpec("prep-dest", LABELS["destination"],
                                   "a new folder outside the image folders, e.g. ~/loras/zkz", "path", "prep"), "")
    run = gr.Button("Prepare training data", variant="primary", elem_id="prep-run")
    result = gr.Markdown("", elem_id="prep-result", elem_classes=["kl-problems"])

    @safe(message=hint)
    def suggest(folder: str):
        r, text = repeats_hint(folder)
        return {hint: text, repeats: r if r is not None else gr.skip()}

    images.change(suggest, [images], [hint, repeats], trigger_mode="always_last", show_progress="hidden")

    w = page.widgets

    @safe(message=result, labels=LABELS)
    def do_prepare(inst: str, cls: str, img: str, rep: Any, reg_dir: str, reg_rep: Any, dst: str):
        try:
            res = prepare_dataset(instance_prompt=inst, class_prompt=cls, images_dir=img, destination=dst,
                                  repeats=int(rep or 0), reg_images_dir=reg_dir or None, reg_repeats=int(reg_rep or 1))
        except UserError as exc:
            return {result: _problem_text(exc.problem)}
        text = "✅ " + res.summary().replace("\n", "  \n") + "  \n**The Folders fields on the LoRA tab are filled in.**"
        return {
            result: text,
            w["train_data_dir"]: str(res.train_data_dir),
            w["reg_data_dir"]: str(res.reg_data_dir or ""),
            w["output_dir"]: str(res.output_dir),
            w["logging_dir"]: str(res.logging_dir),
            page.dirty: DIRTY_TEXT,
        }

    run.click(do_prepare, [instance, klass, images, repeats, reg, reg_repeats, dest],
              [result, w["train_data_dir"], w["reg_data_dir"], w["output_dir"], w["logging_dir"], page.dirty],
              api_name="prepare_dataset")
