"""Utilities tab: Captioning and Dataset preparation sub-tabs."""

from __future__ import annotations

import gradio as gr

from kohya_lite.ui import captioning_tab, dataset_prep_tab
from kohya_lite.ui.page import Page


def build(page: Page) -> None:
    with gr.Tabs(elem_id="utilities-tabs"):
        with gr.Tab("Captioning", id="captioning"):
            captioning_tab.build()
        with gr.Tab("Dataset preparation", id="dataset-prep"):
            dataset_prep_tab.build(page)
