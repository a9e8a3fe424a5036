"""Utilities tab: Captioning, Dataset preparation and LoRA tools sub-tabs."""

from __future__ import annotations

import gradio as gr

from kohya_lite.ui import captioning_tab, dataset_prep_tab, lora_tools_tab
from kohya_lite.ui.page import Page


def build(page: Page) -> None:
    with gr.Tabs(elem_id="utilities-tabs"):
        with gr.Tab("Captioning", id="captioning"):
            captioning_tab.build()
        with gr.Tab("Dataset preparation", id="dataset-prep"):
            dataset_prep_tab.build(page)
        with gr.Tab("LoRA tools", id="lora-tools"):
            with gr.Tabs():
                lora_tools_tab.build()
