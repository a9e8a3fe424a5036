"""No traceback reaches the page: every handler is wrapped by `safe`.

A `UserError` becomes its message (next to the field when the handler has a message box); anything
unexpected becomes one plain sentence plus "details in the log", and the traceback goes to the log
file (`~/.kohya-lite/gui.log`, see `kohya_lite.commands.gui`) and the console.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Sequence

import gradio as gr

from kohya_lite.errors import Problem, UserError
from kohya_lite.ui.fields import label_of

log = logging.getLogger("kohya_lite.ui")
LOG_HINT = "details in the log (~/.kohya-lite/gui.log and the console)"


def problem_line(p: Problem) -> str:
    """One markdown bullet: ❌/⚠️ Label (`key`): message. Fix: …"""
    icon = "❌" if p.is_error else "⚠️"
    where = f"**{label_of(p.field)}** (`{p.field}`): " if p.field else ""
    text = f"- {icon} {where}{p.message}"
    if p.file and p.file not in p.message:
        text += f" — `{p.file}`"
    if p.fix:
        text += f"  \n  *Fix:* {p.fix}"
    return text


def problems_markdown(problems: Sequence[Problem]) -> str:
    return "\n".join(problem_line(p) for p in problems)


def unexpected_text(exc: BaseException) -> str:
    return f"❌ Something went wrong: {exc.__class__.__name__}: {exc}. {LOG_HINT[0].upper()}{LOG_HINT[1:]}."


def safe(message: Any = None) -> Callable:
    """Wrap a handler that returns a {component: value} dict.

    On error: {message: text} when `message` is given, else a gr.Error toast with the plain message."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            try:
                return fn(*args)
            except gr.Error:
                raise
            except UserError as exc:
                if message is not None:
                    return {message: problems_markdown([exc.problem])}
                raise gr.Error(exc.format(), print_exception=False) from None
            except Exception as exc:  # noqa: BLE001 - the page gets a sentence, the log the traceback
                log.exception("unexpected error in %s", fn.__name__)
                if message is not None:
                    return {message: unexpected_text(exc)}
                raise gr.Error(unexpected_text(exc), print_exception=False) from None

        return wrapper

    return deco
