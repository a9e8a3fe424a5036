"""No traceback reaches the page: every handler is wrapped by `safe`.

A `UserError` becomes its message (next to the field when the handler has a message box); anything
unexpected becomes one plain sentence plus "details in the log", and the traceback goes to the log
file (`~/.kohya-lite/gui.log`, see `kohya_lite.commands.gui`) and the console.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Callable, Mapping, Sequence

import gradio as gr

from kohya_lite.errors import Problem, UserError
from kohya_lite.ui.fields import label_of

log = logging.getLogger("kohya_lite.ui")
LOG_HINT = "details in the log (~/.kohya-lite/gui.log and the console)"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#|~<>$&])")
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))", re.M)  # list markers, setext underlines, "1." at a line start


def md_escape(text: Any) -> str:
    """Plain text for a gr.Markdown: Markdown/HTML characters backslash-escaped, so a message such as
    "folder 'cats' has no '<repeats>_' prefix" shows whole instead of losing '<repeats>_…' as an HTML tag.
    Line breaks become Markdown hard breaks."""
    text = _MD_SPECIAL.sub(r"\\\1", str(text))
    text = _LINE_START.sub(lambda m: m[1] + ("\\" + m[2] if not m[2][0].isdigit() else m[2] + "\\"), text)
    return text.replace("\n", "  \n")


def field_label(name: str | None, labels: Mapping[str, str] | None = None) -> str:
    """The label the user sees for a field: the tab's own label, the config field's label, else the key in words."""
    if not name:
        return ""
    if labels and name in labels:
        return labels[name]
    label = label_of(name)
    return label if label != name else name.replace("_", " ").capitalize()


def problem_line(p: Problem, labels: Mapping[str, str] | None = None) -> str:
    """One markdown bullet: ❌/⚠️ **Label**: message — file  /  *Fix:* …, all user text escaped."""
    icon = "❌" if p.is_error else "⚠️"
    where = f"**{md_escape(field_label(p.field, labels))}**: " if p.field else ""
    text = f"- {icon} {where}{md_escape(p.message)}"
    if p.file and p.file not in p.message:
        text += f" — {md_escape(p.file)}"
    if p.fix:
        text += f"  \n  *Fix:* {md_escape(p.fix)}"
    return text


def problems_markdown(problems: Sequence[Problem], labels: Mapping[str, str] | None = None) -> str:
    return "\n".join(problem_line(p, labels) for p in problems)


def unexpected_text(exc: BaseException) -> str:
    return md_escape(f"❌ Something went wrong: {exc.__class__.__name__}: {exc}. {LOG_HINT[0].upper()}{LOG_HINT[1:]}.")


def safe(message: Any = None, labels: Mapping[str, str] | None = None) -> Callable:
    """Wrap a handler that returns a {component: value} dict.

    On error: {message: text} when `message` is given (the field named by `labels`, the tab's own field
    labels), else a gr.Error toast with the plain message."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            try:
                return fn(*args)
            except gr.Error:
                raise
            except UserError as exc:
                if message is not None:
                    return {message: problems_markdown([exc.problem], labels)}
                raise gr.Error(exc.format(), print_exception=False) from None
            except Exception as exc:  # noqa: BLE001 - the page gets a sentence, the log the traceback
                log.exception("unexpected error in %s", fn.__name__)
                if message is not None:
                    return {message: unexpected_text(exc)}
                raise gr.Error(unexpected_text(exc), print_exception=False) from None

        return wrapper

    return deco
