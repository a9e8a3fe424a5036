"""The handles the LoRA page's sections share: field widgets in `fields.FIELD_ORDER`, the per-session
`extra` state (unknown keys of the loaded file), problem boxes per section, and the config-file status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from kohya_lite.check import CheckResult, step_plan_text
from kohya_lite.config import TrainingConfig
from kohya_lite.errors import Problem
from kohya_lite.ui.fields import FIELD_ORDER, SECTIONS, blank_numbers, from_values, section_of, to_values
from kohya_lite.ui.safe import md_escape, problems_markdown

DIRTY_TEXT = "● unsaved changes"


@dataclass
class Page:
    widgets: dict[str, Any] = field(default_factory=dict)  # kohya key → component
    extra: Any = None  # gr.State: TrainingConfig.extra of the loaded file
    problem_boxes: dict[str, Any] = field(default_factory=dict)  # section → gr.Markdown (+ "all")
    accordions: dict[str, Any] = field(default_factory=dict)  # section → gr.Accordion
    config_path: Any = None  # gr.Textbox
    config_status: Any = None  # gr.Markdown: loaded/saved file name
    dirty: Any = None  # gr.Markdown: unsaved-changes marker
    status: Any = None  # gr.Markdown in the run bar: the last action's outcome in one line

    @property
    def fields(self) -> list[Any]:
        return [self.widgets[n] for n in FIELD_ORDER]

    @property
    def inputs(self) -> list[Any]:
        """[extra, *fields]: what `config_from` takes."""
        return [self.extra, *self.fields]

    def config_from(self, extra: dict | None, *values: Any, strict: bool = True) -> TrainingConfig:
        """The page's config; an empty number box raises a UserError naming it (`strict=False`: it keeps the
        default, for the base a loaded file is merged over)."""
        return from_values(values, extra, strict=strict)

    def blank_problems(self, values: tuple) -> list[Problem]:
        """The empty number boxes among `values` (the `fields`' values), one problem each."""
        return blank_numbers(values)

    def field_updates(self, cfg: TrainingConfig) -> dict[Any, Any]:
        out: dict[Any, Any] = dict(zip(self.fields, to_values(cfg)))
        out[self.extra] = dict(cfg.extra)
        return out

    @property
    def problem_outputs(self) -> list[Any]:
        return [*self.problem_boxes.values(), *self.accordions.values(), *([self.status] if self.status else [])]

    def show_problems(self, problems: list[Problem], headline: str = "") -> dict[Any, Any]:
        """Each problem under its field group (opening that group), and all of them in the list by the buttons."""
        by_section: dict[str, list[Problem]] = {}
        for p in problems:
            by_section.setdefault(section_of(p.field) or "all", []).append(p)
        out: dict[Any, Any] = {}
        for section, box in self.problem_boxes.items():
            if section == "all":
                continue
            out[box] = problems_markdown(by_section.get(section, []))
        for section, acc in self.accordions.items():
            has_error = any(p.is_error for p in by_section.get(section, []))
            out[acc] = gr.update(open=True) if has_error else gr.skip()
        listing = problems_markdown(problems)
        out[self.problem_boxes["all"]] = "\n\n".join(x for x in (headline, listing) if x)
        if self.status is not None:
            out[self.status] = headline.split("  \n")[0]
        return out

    def show_check(self, result: CheckResult, ok_text: str) -> dict[Any, Any]:
        n_err, n_warn = len(result.errors), len(result.warnings)
        if result.ok:
            head = f"✅ {ok_text}" + (f" ({n_warn} warning{'s' * (n_warn != 1)})" if n_warn else "")
        else:
            head = f"❌ Not ready: {n_err} error{'s' * (n_err != 1)}" + (f", {n_warn} warning{'s' * (n_warn != 1)}" if n_warn else "") + \
                   ". Each problem is shown under its field group."
        if result.plan:
            head += f"  \n{md_escape(step_plan_text(result.dataset, result.plan))}"
        if result.memory:
            head += f"  \nMemory: {md_escape(result.memory.summary())}"
        return self.show_problems(result.problems, head)

    def show_blank(self, blank: list[Problem]) -> dict[Any, Any]:
        n = len(blank)
        return self.show_problems(blank, f"❌ Not ready: {n} empty number box{'es' * (n != 1)}. "
                                         "Each is shown under its field group.")


def section_title(section: str) -> str:
    return SECTIONS[section]
