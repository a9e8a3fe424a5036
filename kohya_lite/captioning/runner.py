"""The loop every model captioner shares: plan, load in worker threads, infer in batches, write.

`plan_run` finds the images and sets aside the ones that keep their caption or whose caption file
is shared with another image. `run_batches` loads/preprocesses images in a small thread pool (at
least two images per thread ahead of the model), records unreadable images as failed instead of
stopping, calls the model once per batch and writes each caption through the `CaptionWriter`.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kohya_lite.captioning.images import find_images
from kohya_lite.captioning.result import CaptionResult, Progress
from kohya_lite.captioning.writer import CaptionWriter
from kohya_lite.errors import UserError


@dataclass
class RunPlan:
    result: CaptionResult
    todo: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def finish(self) -> CaptionResult:
        self.result.seconds = time.perf_counter() - self.started
        return self.result


def plan_run(captioner: str, folder: str | Path, writer: CaptionWriter, *, recursive: bool = False) -> RunPlan:
    """Images to caption; those keeping their caption go to `skipped_existing` already."""
    images = find_images(folder, recursive=recursive)
    result = CaptionResult(captioner=captioner, folder=Path(folder).expanduser(), caption_extension=writer.ext,
                           total_images=len(images))
    plan = RunPlan(result=result)
    owner: dict[Path, Path] = {}
    for image in images:
        target = writer.path_for(image)
        if target in owner:
            result.failed.append((image, f"its caption file {target.name} belongs to {owner[target].name} "
                                         "(two images with the same name); rename one"))
            continue
        owner[target] = image
        if writer.keeps_existing(image):
            result.skipped_existing.append(image)
        else:
            plan.todo.append(image)
    return plan


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"cannot read image: {text}"


def _safe(prepare: Callable[[Path], Any], path: Path) -> tuple[Any, str | None]:
    try:
        return prepare(path), None
    except Exception as exc:  # any decoder error: the image is reported, the folder goes on
        return None, _describe(exc)


def run_batches(
    plan: RunPlan,
    *,
    writer: CaptionWriter,
    prepare: Callable[[Path], Any],
    infer: Callable[[list[Any]], Sequence[str]],
    batch_size: int = 1,
    workers: int = 2,
    progress: Progress | None = None,
    empty_reason: str = "the model produced an empty caption",
) -> CaptionResult:
    """Caption `plan.todo`: `prepare(path)` per image (in threads), `infer(items)` per batch -> texts."""
    result, todo = plan.result, plan.todo
    total, done = len(todo), 0
    if progress:
        progress(0, total)
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), max(1, batch_size))]
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None

    def submit(batch: list[Path]) -> list[tuple[Path, Future | tuple]]:
        if pool is None:
            return [(p, _safe(prepare, p)) for p in batch]
        return [(p, pool.submit(_safe, prepare, p)) for p in batch]

    ahead = max(1, -(-2 * workers // max(1, batch_size)))  # batches loading ahead: >= 2 images per thread
    queue: deque = deque()
    try:
        next_batch = 0
        for _ in range(len(batches)):
            while next_batch < len(batches) and len(queue) <= ahead:
                queue.append(submit(batches[next_batch]))
                next_batch += 1
            current = queue.popleft()
            paths, items = [], []
            for path, job in current:
                item, error = job.result() if isinstance(job, Future) else job
                if error:
                    result.failed.append((path, error))
                else:
                    paths.append(path)
                    items.append(item)
            if items:
                _write_all(result, writer, paths, infer(items), empty_reason)
            done += len(current)
            if progress:
                progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return plan.finish()


def _write_all(result: CaptionResult, writer: CaptionWriter, paths: list[Path], texts: Sequence[str],
               empty_reason: str) -> None:
    for path, body in zip(paths, texts, strict=True):
        try:
            text = writer.write(path, body)
        except (OSError, UserError) as exc:
            result.failed.append((path, f"cannot write {writer.path_for(path).name}: {exc}"))
            continue
        if text:
            result.written.append(path)
            result.captions[path] = text
        else:
            result.failed.append((path, empty_reason))
