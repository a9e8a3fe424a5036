"""gradio components for the `fields.FIELD_SPECS` rows, and the in-browser server path picker.

Every field widget gets `elem_id="f-<kohya key>"`, so tests and the problem list can find it. Number boxes
carry no min/max (gradio would reject an out-of-range loaded value before `check` could explain it); an
emptied one shows "enter a number" in red beside the field (CSS in `ui.app`), and Check/Train refuse it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from kohya_lite.config import HANDLED_OTHERWISE, NOT_IMPLEMENTED
from kohya_lite.ui.fields import EMPTY_NUMBER, FieldSpec
from kohya_lite.ui.files import browse_choices, browse_start
from kohya_lite.ui.safe import safe

PICKER_KIND = {"path": "dir", "model": "model", "file": "file"}


def field_widget(spec: FieldSpec, value: Any) -> gr.components.Component:
    common = dict(label=spec.label, info=spec.info or None, elem_id=f"f-{spec.name}")
    if spec.name in NOT_IMPLEMENTED:  # kept for the round trip, greyed out with the reason
        common.update(info=f"not used: {NOT_IMPLEMENTED[spec.name]}", interactive=False)
    elif spec.name in HANDLED_OTHERWISE:
        common.update(info=HANDLED_OTHERWISE[spec.name])
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if spec.kind in ("int", "float"):  # an emptied box shows the placeholder, which the page's CSS marks red
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None, placeholder=EMPTY_NUMBER,
                         elem_classes=["kl-number"], **common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices or ()), value=value, allow_custom_value=True, filterable=True,
                           **common)
    if spec.kind == "textarea":
        return gr.Textbox(value=value, lines=spec.lines, max_lines=max(spec.lines, 20), **common)
    return gr.Textbox(value=value, lines=1, max_lines=1, **common)


def path_field(spec: FieldSpec, value: Any) -> tuple[gr.Textbox, gr.Dropdown]:
    """A path box with a 'Browse…' dropdown listing the server's folders (and files of the right kind).

    Choosing a folder enters it (the box gets the folder); choosing a file puts its path in the box."""
    kind = PICKER_KIND[spec.kind]
    with gr.Row(equal_height=True):
        box = gr.Textbox(value=value, label=spec.label, info=spec.info or None, lines=1, max_lines=1,
                         elem_id=f"f-{spec.name}", scale=4)
        picker = gr.Dropdown(choices=[], value=None, label="Browse…", elem_id=f"b-{spec.name}", scale=2,
                             info="server folders" + ("" if kind == "dir" else " and files"))

    @safe()
    def refresh(current: str):
        return {picker: gr.update(choices=browse_choices(browse_start(current), kind), value=None)}

    @safe()
    def chosen(choice: str | None):
        if not choice:
            return {box: gr.skip(), picker: gr.skip()}
        p = Path(choice)
        if p.is_dir():
            return {box: str(p), picker: gr.update(choices=browse_choices(p, kind), value=None)}
        return {box: str(p), picker: gr.update(value=None)}

    picker.focus(refresh, [box], [picker], show_progress="hidden", queue=False)
    picker.input(chosen, [picker], [box, picker], show_progress="hidden", queue=False)
    return box, picker
