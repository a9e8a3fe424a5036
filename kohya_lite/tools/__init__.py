"""LoRA tools that need a base model or the network: merge into a checkpoint, extract, convert, download
(and the per-tensor verify). Each module is pure functions returning a dataclass; the CLI
(`commands/lora.py`) and the page (`ui/lora_tools_tab.py`) only call them.

Long work reports through an optional `progress(done, total, what)` callback (`total` 0 when unknown);
the CLI draws it with tqdm, the page with `gr.Progress`. Resize and merge of LoRA files live in
`kohya_lite.lora_tools`.
"""

from __future__ import annotations

from typing import Callable, Optional

Progress = Optional[Callable[[int, int, str], None]]


def report(progress: Progress, done: int, total: int, what: str) -> None:
    if progress is not None:
        progress(done, total, what)
