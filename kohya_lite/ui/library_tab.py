"""LoRA library tab: the LoRAs in the library folder, and the text that uses one in a prompt.

Wiring only (`kohya_lite.library`): Refresh lists the folder; selecting a row shows `<lora:name:W> trigger`
and, once linked (`link_to_prompt`, or `build(prompt=…)`), appends it to the Generate tab's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from kohya_lite.library import (DEFAULT_INSERT_WEIGHT, DEFAULT_LORA_DIR, TABLE_HEADERS, add_to_prompt, insert_text,
                                list_library, table_rows)
from kohya_lite.ui.fields import FieldSpec
from kohya_lite.ui.safe import safe
from kohya_lite.ui.widgets import path_field

LABELS = {"lora_dir": "LoRA folder", "prompt": "Prompt"}


@dataclass
class LibraryTab:
    folder: gr.Textbox
    refresh: gr.Button
    table: gr.Dataframe
    weight: gr.Slider
    insert: gr.Textbox  # the text for the selected LoRA
    message: gr.Markdown
    entries: gr.State  # [{'name', 'trigger'}] per table row
    on_refresh: Callable[..., dict]
    on_select: Callable[..., dict]


def listing(folder: str) -> tuple[list[list], list[dict], str]:
    """(table rows, per-row state, summary line) for a folder."""
    entries = list_library(folder)
    state = [{"name": e.name, "trigger": e.trigger_word, "entry": e} for e in entries]
    bad = sum(1 for e in entries if e.error)
    summary = f"{len(entries)} LoRA{'s' if len(entries) != 1 else ''}" + (f", {bad} unreadable" if bad else "")
    return table_rows(entries), state, summary


def text_for(state: list[dict], row: int, weight: float) -> str:
    """The insert text of table row `row` at `weight`."""
    if not state or row is None or not 0 <= row < len(state):
        return ""
    return insert_text(state[row]["entry"], weight if weight is not None else DEFAULT_INSERT_WEIGHT)


def build(*, lora_dir: str = str(DEFAULT_LORA_DIR), prompt: gr.Textbox | None = None) -> LibraryTab:
    folder, _ = path_field(FieldSpec("lib_lora_dir", "LoRA folder", "listed recursively", "path", "library"), lora_dir)
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="lib-refresh", scale=1)
        weight = gr.Slider(-2, 2, value=DEFAULT_INSERT_WEIGHT, step=0.05, label="Weight to insert", scale=3,
                           elem_id="lib-weight")
    message = gr.Markdown("", elem_id="lib-message", elem_classes=["kl-problems"])
    table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, label="LoRAs (select one to use it)",
                         elem_id="lib-table", wrap=True)
    insert = gr.Textbox(label="Text to insert", interactive=False, elem_id="lib-insert",
                        buttons=["copy"])
    entries = gr.State([])

    @safe(message=message, labels=LABELS)
    def on_refresh(folder_text: str) -> dict:
        rows, state, summary = listing(folder_text)
        return {table: rows, entries: state, message: summary, insert: ""}

    @safe(message=message, labels=LABELS)
    def on_select(state: list[dict], w: float, evt: gr.SelectData) -> dict:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return {insert: text_for(state, row, w)}

    refresh.click(on_refresh, [folder], [table, entries, message, insert], api_name="library_refresh")
    table.select(on_select, [entries, weight], [insert, message])
    tab = LibraryTab(folder, refresh, table, weight, insert, message, entries, on_refresh, on_select)
    if prompt is not None:
        link_to_prompt(tab, prompt)
    return tab


def link_to_prompt(tab: LibraryTab, prompt: gr.Textbox) -> None:
    """Selecting a row also appends its text to `prompt` (the Generate tab's)."""

    def add(current: str, state: list[dict], w: float, evt: gr.SelectData) -> Any:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return add_to_prompt(current or "", text_for(state, row, w))

    tab.table.select(add, [prompt, tab.entries, tab.weight], [prompt])
