"""Configuration file section: path box, Open (presets + recent files), Save, Save as, Load.

As in kohya_ss, Load/Open merge the file over the page (a key that is missing or null keeps the page's
value); opening a preset does not change the path box. Unknown keys ride along in the session's
`extra` state and are written back on save. A JS-only `.input` handler on every field marks the page
dirty without a server round trip; Load and Save clear the mark.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from kohya_lite.config import load_config, save_config
from kohya_lite.errors import UserError
from kohya_lite.paths import presets_dir
from kohya_lite.ui.files import add_recent, open_choices
from kohya_lite.ui.page import DIRTY_TEXT, Page
from kohya_lite.ui.safe import safe


def _config_path(text: str | None, field: str = "config_file") -> Path:
    s = (text or "").strip()
    if not s:
        raise UserError("no configuration file path given", field=field,
                        fix="type a path such as 'my_lora.json', or pick one from Open")
    p = Path(s).expanduser()
    return p if p.suffix else p.with_suffix(".json")


def _status(verb: str, path: Path, notes: list[str] | None = None) -> str:
    text = f"{verb} **{path.name}** ({path.parent}) at {time.strftime('%H:%M:%S')}"
    for n in notes or []:
        text += f"  \n_note: {n}_"
    return text


def build(page: Page, initial_path: str = "", initial_status: str = "") -> Callable[[], None]:
    """Lay out the section; returns `wire()`, to call once every field widget exists."""
    with gr.Accordion("Configuration file", open=True, elem_id="sec-config"):
        with gr.Row(equal_height=True):
            path = gr.Textbox(value=initial_path, label="Configuration file", scale=4, lines=1, max_lines=1,
                              elem_id="cfg-path", info="a kohya_ss-style .json file on this machine")
            opener = gr.Dropdown(choices=open_choices(), value=None, label="Open", scale=3, elem_id="cfg-open",
                                 info="a preset (merged into the page) or a recent file")
        with gr.Row():
            save_btn = gr.Button("💾 Save", size="sm", elem_id="cfg-save")
            save_as_btn = gr.Button("Save as…", size="sm", elem_id="cfg-save-as")
            load_btn = gr.Button("↩️ Load", size="sm", elem_id="cfg-load")
        with gr.Row(visible=False, equal_height=True) as save_as_row:
            save_as_path = gr.Textbox(label="Save as", scale=4, lines=1, max_lines=1, elem_id="cfg-save-as-path")
            save_as_ok = gr.Button("Save here", size="sm", scale=1, elem_id="cfg-save-as-ok")
        with gr.Row():
            status = gr.Markdown(initial_status, elem_id="cfg-status")
            dirty = gr.Markdown("", elem_id="cfg-dirty", elem_classes=["kl-dirty"])
        message = gr.Markdown("", elem_id="cfg-message", elem_classes=["kl-problems"])
    page.config_path, page.config_status, page.dirty = path, status, dirty

    def loaded(cfg, p: Path, report, verb: str) -> dict[Any, Any]:
        out = page.field_updates(cfg)
        out.update({status: _status(verb, p, report.lines()), dirty: "", message: ""})
        return out

    @safe(message=message)
    def do_load(path_text: str, extra: dict | None, *values: Any):
        p = _config_path(path_text)
        cfg, report = load_config(p, page.config_from(extra, *values, strict=False))
        add_recent(p)
        return loaded(cfg, p, report, "Loaded")

    @safe(message=message)
    def do_open(choice: str | None, extra: dict | None, *values: Any):
        if not choice:
            return {opener: gr.skip()}
        p = Path(choice)
        cfg, report = load_config(p, page.config_from(extra, *values, strict=False))
        is_preset = p.resolve().parent in (presets_dir().resolve(), (presets_dir() / "user_presets").resolve())
        out = loaded(cfg, p, report, "Applied preset" if is_preset else "Loaded")
        if is_preset:
            out[dirty] = DIRTY_TEXT  # the page now differs from its file (kohya: a preset keeps the path)
        else:
            add_recent(p)
            out[path] = str(p)
        out[opener] = gr.update(value=None, choices=open_choices())
        return out

    def write(p: Path, extra: dict | None, values: tuple) -> dict[Any, Any]:
        existed = p.exists()
        save_config(page.config_from(extra, *values), p)
        add_recent(p)
        return {status: _status("Replaced" if existed else "Saved", p), dirty: "", message: "", path: str(p)}

    @safe(message=message)
    def do_save(path_text: str, extra: dict | None, *values: Any):
        if not (path_text or "").strip():
            return {save_as_row: gr.update(visible=True), save_as_path: "my_lora.json",
                    message: "Type a file name under **Save as** and click *Save here*."}
        return write(_config_path(path_text), extra, values)

    @safe(message=message)
    def do_save_as(path_text: str, extra: dict | None, *values: Any):
        out = write(_config_path(path_text, "save_as"), extra, values)
        out[save_as_row] = gr.update(visible=False)
        return out

    def wire() -> None:
        all_out = [*page.fields, page.extra, status, dirty, message, path, opener, save_as_row, save_as_path]
        inputs = [page.extra, *page.fields]
        load_btn.click(do_load, [path, *inputs], all_out, api_name="load_config")
        path.submit(do_load, [path, *inputs], all_out)
        opener.input(do_open, [opener, *inputs], all_out, api_name="open_config")
        opener.focus(lambda: gr.update(choices=open_choices()), None, opener, queue=False, show_progress="hidden")
        save_btn.click(do_save, [path, *inputs], all_out, api_name="save_config")
        save_as_btn.click(lambda p: (gr.update(visible=True), p or "my_lora.json"), [path], [save_as_row, save_as_path],
                          queue=False)
        save_as_ok.click(do_save_as, [save_as_path, *inputs], all_out, api_name="save_config_as")
        save_as_path.submit(do_save_as, [save_as_path, *inputs], all_out)

        # JS-only: any user edit marks the page dirty, no request
        gr.on([w.input for w in page.fields], None, None, dirty, js=f"() => {DIRTY_TEXT!r}", queue=False,
              show_progress="hidden", api_visibility="private")

    return wire
