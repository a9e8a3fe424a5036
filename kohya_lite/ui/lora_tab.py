"""The LoRA tab (the training page), in kohya_ss's order: Configuration file, Source model, Folders,
Metadata, Accelerate launch, Parameters (Basic, SDXL, Advanced), Sample images, then the buttons and
the training panel. Wiring only: values ↔ `TrainingConfig` via `fields`, checks via `check.run_check`,
step arithmetic via `dataset.folders.scan_dataset` + `dataset.steps.plan_steps`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import gradio as gr

from kohya_lite.check import plan_for, run_check, step_plan_text
from kohya_lite.config import TrainingConfig, config_json
from kohya_lite.dataset.folders import scan_dataset
from kohya_lite.models.detect import detect_model
from kohya_lite.ui import config_file, training_panel
from kohya_lite.ui.fields import SPEC_BY_NAME, TYPE_FIELDS, is_blank, label_of, shown_for, specs_in
from kohya_lite.ui.page import Page, section_title
from kohya_lite.ui.safe import md_escape, safe
from kohya_lite.ui.widgets import PICKER_KIND, field_widget, path_field

STEP_INPUTS = ("train_data_dir", "reg_data_dir", "caption_extension", "train_batch_size", "epoch", "max_train_epochs",
               "max_train_steps", "gradient_accumulation_steps")
ROW = 3  # widgets per row in the parameter groups
NO_IMAGES = "No images in '<repeats>_<trigger> <class>' subfolders of the image folder yet."


def _fields(page: Page, cfg: TrainingConfig, names: list[str], per_row: int = ROW) -> None:
    """Widgets for `names`: path kinds on their own row with a picker, the rest `per_row` to a row."""
    row: list[str] = []

    def flush() -> None:
        if row:
            with gr.Row(equal_height=False):
                for n in row:
                    page.widgets[n] = field_widget(SPEC_BY_NAME[n], getattr(cfg, n))
            row.clear()

    for n in names:
        spec = SPEC_BY_NAME[n]
        if spec.kind in PICKER_KIND or spec.kind == "textarea":
            flush()
            if spec.kind in PICKER_KIND:
                page.widgets[n], _ = path_field(spec, getattr(cfg, n))
            else:
                page.widgets[n] = field_widget(spec, getattr(cfg, n))
        else:
            row.append(n)
            if len(row) == per_row:
                flush()
    flush()


def _section(page: Page, cfg: TrainingConfig, section: str, open_: bool, per_row: int = ROW) -> None:
    with gr.Accordion(section_title(section), open=open_, elem_id=f"sec-{section}") as acc:
        _fields(page, cfg, [s.name for s in specs_in(section)], per_row)
    page.accordions[section] = acc
    page.problem_boxes[section] = gr.Markdown("", elem_id=f"problems-{section}", elem_classes=["kl-problems"])


def step_summary(train_dir: str, reg_dir: str, caption_ext: str, batch: Any, epoch: Any, max_epochs: Any,
                 max_steps: Any, grad_accum: Any) -> str:
    """The live line under Parameters: `check`'s step-plan text for the page's values, e.g.
    '34 images × 6 repeats × 10 epochs ÷ batch 1 = 2,040 steps'."""
    if not (train_dir or "").strip():
        return "_Set the image folder to see how many steps this training has._"
    numbers = dict(zip(STEP_INPUTS[3:], (batch, epoch, max_epochs, max_steps, grad_accum)))
    blank = [n for n, v in numbers.items() if is_blank(v)]
    if blank:
        return f"_{md_escape(label_of(blank[0]))} is empty: enter a number to see the steps._"
    if not Path(train_dir).expanduser().is_dir():
        return f"_Image folder {md_escape(repr(train_dir))} does not exist yet._"
    ds = scan_dataset(train_dir, reg_dir or "", caption_ext or "")
    values = {n: int(float(v)) for n, v in numbers.items()}
    plan = plan_for(TrainingConfig().replace(**values), ds)
    if plan is None:
        return "_" + md_escape(NO_IMAGES) + "_"
    line = f"**{md_escape(step_plan_text(ds, plan))}**"
    if plan.decided_by == "max_train_steps":
        line += f"  \n⚠️ Max train steps ({plan.total_steps:,}) overrides Epoch ({values['epoch']}): {plan.epochs} epochs will run."
    elif plan.decided_by == "max_train_epochs":
        line += f"  \n⚠️ Max train epoch ({plan.epochs}) overrides Epoch ({values['epoch']})."
        if values["max_train_steps"] > 0:
            line += " It also overrides Max train steps."
    return line


def print_command(path_text: str, cfg: TrainingConfig) -> tuple[str, str]:
    """The `kohya-lite train` line for the config file in the path box, and the page's config as JSON."""
    text = config_json(cfg)
    path = (path_text or "").strip()
    if not path:
        return "kohya-lite train my_lora.json    # save the config first (Save as…)", text
    cmd = f"kohya-lite train {shlex.quote(path)}"
    p = Path(path).expanduser()
    try:
        same = p.is_file() and p.read_text(encoding="utf-8") == text
    except OSError:
        same = False
    if not same:
        cmd += "    # click Save first: the file differs from the page"
    return cmd, text


def build(cfg: TrainingConfig, worker: Any, app: gr.Blocks, config_path: str = "", config_status: str = "",
          intro: str = "") -> Page:
    page = Page()
    page.extra = gr.State(dict(cfg.extra))
    wire_config = config_file.build(page, config_path, config_status)

    # ---- source model
    with gr.Accordion(section_title("model"), open=True, elem_id="sec-model") as acc:
        page.widgets["model_list"] = field_widget(SPEC_BY_NAME["model_list"], cfg.model_list)
        _fields(page, cfg, ["pretrained_model_name_or_path"])
        _fields(page, cfg, ["v2", "v_parameterization", "sdxl"])
        model_note = gr.Markdown("", elem_id="model-note", elem_classes=["kl-quiet"])
    page.accordions["model"] = acc
    page.problem_boxes["model"] = gr.Markdown("", elem_id="problems-model", elem_classes=["kl-problems"])

    _section(page, cfg, "folders", True, per_row=2)
    _section(page, cfg, "metadata", False)
    _section(page, cfg, "accelerate", False, per_row=4)
    gr.Markdown("### Parameters")
    summary = gr.Markdown(step_summary(*(getattr(cfg, n) for n in STEP_INPUTS)), elem_id="step-summary",
                          elem_classes=["kl-quiet"])
    _section(page, cfg, "basic", True, per_row=4)
    _section(page, cfg, "sdxl", False)
    _section(page, cfg, "advanced", False, per_row=4)
    _section(page, cfg, "samples", False, per_row=3)

    bar = training_panel.build_bar(intro)
    page.status = bar.status
    page.problem_boxes["all"] = gr.Markdown("", elem_id="problems-all", elem_classes=["kl-problems"])
    with gr.Group(visible=False) as command_group:
        command = gr.Textbox(label="Equivalent command", lines=1, interactive=False, elem_id="print-command",
                             buttons=["copy"])
        command_json = gr.Code(label="Config JSON", language="json", interactive=False, elem_id="print-json")

    wire_config()
    w = page.widgets

    # ---- quick pick and model-type detection
    @safe(message=model_note)
    def quick_pick(choice: str):
        if not choice or choice == "custom":
            return {model_note: "Enter your own model path below."}
        det = detect_model(choice)
        return {w["pretrained_model_name_or_path"]: choice, model_note: det.note,
                **{w[k]: v for k, v in det.flags.items()}}

    @safe(message=model_note)
    def detect(path: str):
        det = detect_model(path)
        if det is None:
            return {model_note: ""}
        return {w["model_list"]: det.model_list, model_note: det.note, **{w[k]: v for k, v in det.flags.items()}}

    model_outputs = [w["pretrained_model_name_or_path"], w["model_list"], w["v2"], w["v_parameterization"], w["sdxl"],
                     model_note]
    w["model_list"].input(quick_pick, [w["model_list"]], model_outputs, queue=False)
    w["pretrained_model_name_or_path"].change(detect, [w["pretrained_model_name_or_path"]], model_outputs,
                                              trigger_mode="always_last", show_progress="hidden")

    # ---- kohya_ss's show/hide rules: the LoRA type's own fields (conv rank, LyCORIS preset/options, DyLoRA
    # unit, …: fields.TYPE_FIELDS), SDXL options only for SDXL, v_param only for SD2
    typed = [n for n in TYPE_FIELDS if n in w]
    for n in typed:
        w[n].visible = shown_for(n, cfg.LoRA_type)
    page.accordions["sdxl"].visible = cfg.sdxl
    w["v_parameterization"].interactive = cfg.v2

    def show_type_fields(lora_type: str):
        return [gr.update(visible=shown_for(n, lora_type)) for n in typed]

    w["LoRA_type"].change(show_type_fields, [w["LoRA_type"]], [w[n] for n in typed], queue=False,
                          show_progress="hidden", api_visibility="private")
    w["sdxl"].change(lambda on: gr.update(visible=bool(on)), [w["sdxl"]], [page.accordions["sdxl"]], queue=False,
                     show_progress="hidden", api_visibility="private")
    w["v2"].change(lambda on: gr.update(interactive=bool(on)), [w["v2"]], [w["v_parameterization"]], queue=False,
                   show_progress="hidden", api_visibility="private")

    # ---- live step summary
    step_inputs = [w[n] for n in STEP_INPUTS]

    @safe(message=summary)
    def refresh_summary(*values: Any):
        return {summary: step_summary(*values)}

    gr.on([c.change for c in step_inputs], refresh_summary, step_inputs, [summary], trigger_mode="always_last",
          show_progress="hidden", api_visibility="private")

    # ---- check and print
    @safe(message=page.problem_boxes["all"])
    def do_check(extra: dict | None, *values: Any):
        blank = page.blank_problems(values)
        if blank:
            return page.show_blank(blank)
        result = run_check(page.config_from(extra, *values))
        return page.show_check(result, "Ready to train.")

    bar.check.click(do_check, page.inputs, page.problem_outputs, api_name="check")

    @safe(message=page.problem_boxes["all"])
    def do_print(path_text: str, extra: dict | None, *values: Any):
        cmd, text = print_command(path_text, page.config_from(extra, *values))
        return {command_group: gr.update(visible=True), command: cmd, command_json: text}

    bar.print_.click(do_print, [page.config_path, *page.inputs],
                    [command_group, command, command_json, page.problem_boxes["all"]], api_name="print_command")

    training_panel.build(page, worker, app, bar)
    return page
