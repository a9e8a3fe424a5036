"""Epoch × weight grid: how a training run's checkpoints look at several LoRA weights.

A training output folder holds `<name>-000001.safetensors` … (one per saved epoch) and the final
`<name>.safetensors` (sd-scripts names, lora-file-format §11). Every checkpoint × weight is rendered with
the same seeded prompt (LoRA tags in the prompt apply to every cell, on top) and the images go into one
labelled grid: rows = checkpoints ("epoch 1" … "final"), columns = weights. Weight 0 is the base model,
so that column is rendered once and reused.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kohya_lite.errors import UserError
from kohya_lite.generate import (GenerateRequest, LoraUse, check_family, prepare, random_seed, read_lora, render_job,
                                 resolve_loras)
from kohya_lite.prompts import format_weight

DEFAULT_WEIGHTS = (0.0, 0.5, 0.8, 1.0)
_EPOCH = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6})\.safetensors$")
_STEP = re.compile(r"^(?P<name>.+)-step\d{8}\.safetensors$")
PAD = 6
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


# ---- checkpoints (pure, on the file listing) -----------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    path: Path
    name: str  # the output_name
    epoch: int | None  # None for the final file

    @property
    def label(self) -> str:
        return "final" if self.epoch is None else f"epoch {self.epoch}"


def _scan(folder: Path) -> dict[str, list[Checkpoint]]:
    if not folder.is_dir():
        raise UserError(f"the training output folder '{folder}' does not exist", field="output_dir",
                        file=str(folder), fix="choose the folder training wrote its .safetensors files to")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors"
                   and not p.name.startswith("."))
    found: dict[str, list[Checkpoint]] = {}
    finals: dict[str, Path] = {}
    for p in files:
        m = _EPOCH.match(p.name)
        if m:
            found.setdefault(m["name"], []).append(Checkpoint(p, m["name"], int(m["epoch"])))
        elif not _STEP.match(p.name):
            finals[p.stem] = p
    for name, p in finals.items():
        found.setdefault(name, []).append(Checkpoint(p, name, None))
    for cps in found.values():
        cps.sort(key=lambda c: (c.epoch is None, c.epoch or 0))
    return found


def checkpoint_names(output_dir: str | Path) -> list[str]:
    """The output names with checkpoints in the folder."""
    return sorted(_scan(Path(output_dir).expanduser()))


def find_checkpoints(output_dir: str | Path, name: str | None = None) -> list[Checkpoint]:
    """The epoch checkpoints of `name` in order, then its final file. With several names in the folder,
    `name` must say which."""
    folder = Path(output_dir).expanduser()
    found = _scan(folder)
    if not found:
        raise UserError(f"no LoRA checkpoints in '{folder}'", field="output_dir", file=str(folder),
                        fix="choose the output folder of a training run (it holds name-000001.safetensors …)")
    if name:
        if name not in found:
            raise UserError(f"no checkpoints named '{name}' in '{folder}'", field="name", file=str(folder),
                            fix=f"choose one of: {', '.join(sorted(found))}")
        return found[name]
    if len(found) > 1:
        raise UserError(f"'{folder}' holds checkpoints of {len(found)} trainings: {', '.join(sorted(found))}",
                        field="name", file=str(folder), fix="pick the output name (--name NAME)")
    return next(iter(found.values()))


def parse_weights(text: str | Sequence[float]) -> list[float]:
    """'0, 0.5,1,-1' → [0.0, 0.5, 1.0, -1.0]."""
    if not isinstance(text, str):
        values = [float(v) for v in text]
    else:
        parts = [p.strip() for p in re.split(r"[,\s]+", text.strip()) if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise UserError(f"weights '{text}' are not numbers", field="weights",
                            fix="write them comma-separated, e.g. 0,0.5,0.8,1") from None
    if not values:
        raise UserError("no weights given", field="weights", fix="e.g. 0,0.5,0.8,1")
    if len(values) > 16:
        raise UserError(f"{len(values)} weights is too many for one grid", field="weights", fix="use at most 16")
    return values


# ---- composing (pure, on images) ---------------------------------------------------------------------------------

@dataclass
class GridCell:
    row: int
    col: int
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the grid image
    checkpoint: str  # row label
    weight: float


@dataclass
class GridLayout:
    row_labels: list[str]
    col_labels: list[str]
    cell_size: tuple[int, int]  # (width, height)
    origin: tuple[int, int]  # top-left of the first cell (label column width, header height)
    size: tuple[int, int]  # whole image (width, height)
    cells: list[GridCell] = field(default_factory=list)

    def cell(self, row: int, col: int) -> GridCell:
        return self.cells[row * len(self.col_labels) + col]

    def to_dict(self) -> dict:
        return asdict(self)


def _font(size: int = 14):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def compose_grid(images: Sequence[Sequence[Any]], row_labels: Sequence[str], col_labels: Sequence[str],
                 weights: Sequence[float] | None = None, *, corner: str = "") -> tuple[Any, GridLayout]:
    """One image: a header row of column labels, a label column, then the cells (all one size)."""
    from PIL import Image, ImageDraw

    rows, cols = len(row_labels), len(col_labels)
    if rows == 0 or cols == 0 or len(images) != rows or any(len(r) != cols for r in images):
        raise ValueError(f"need {rows}×{cols} images")
    cw, ch = images[0][0].size
    font = _font(max(14, min(cw, ch) // 20))  # readable on 512–1024 px cells too
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(t: str) -> tuple[int, int]:
        l, t_, r, b = probe.textbbox((0, 0), t, font=font)
        return r - l, b - t_

    label_w = max(text_size(t)[0] for t in [*row_labels, corner]) + 2 * PAD
    header_h = max(text_size(t)[1] for t in [*col_labels, corner, "Ag"]) + 2 * PAD
    size = (label_w + cols * cw, header_h + rows * ch)
    grid = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(grid)
    if corner:
        draw.text((PAD, PAD), corner, fill=INK, font=font)
    for c, label in enumerate(col_labels):
        w, _ = text_size(label)
        draw.text((label_w + c * cw + max(0, (cw - w) // 2), PAD), label, fill=INK, font=font)
    layout = GridLayout(list(row_labels), list(col_labels), (cw, ch), (label_w, header_h), size)
    for r, label in enumerate(row_labels):
        _, h = text_size(label)
        draw.text((PAD, header_h + r * ch + max(0, (ch - h) // 2)), label, fill=INK, font=font)
        for c in range(cols):
            img = images[r][c]
            if img.size != (cw, ch):
                raise ValueError(f"cell {r},{c} is {img.size}, expected {(cw, ch)}")
            box = (label_w + c * cw, header_h + r * ch, label_w + (c + 1) * cw, header_h + (r + 1) * ch)
            grid.paste(img.convert("RGB"), box[:2])
            layout.cells.append(GridCell(r, c, box, label, float(weights[c]) if weights else float("nan")))
    return grid, layout


# ---- rendering ---------------------------------------------------------------------------------------------------

@dataclass
class GridResult:
    image: Any  # PIL.Image
    layout: GridLayout
    checkpoints: list[Checkpoint]
    weights: list[float]
    seed: int
    prompt: str

    def infotext(self) -> str:
        rows = ", ".join(f"{c.label}: {c.path.name}" for c in self.checkpoints)
        return (f"{self.prompt}\nSeed: {self.seed}, Weights: {', '.join(format_weight(w) for w in self.weights)}, "
                f"Checkpoints: {rows}")


Progress = Callable[[int, int, str], None]


def render_grid(model: Any, output_dir: str | Path, request: GenerateRequest, *, name: str | None = None,
                weights: str | Sequence[float] = DEFAULT_WEIGHTS, lora_dir: str | Path | None = None,
                progress: Progress | None = None) -> GridResult:
    """Render every checkpoint × weight with one seed (the request's, else a random one) into a grid."""
    checkpoints = find_checkpoints(output_dir, name)
    ws = parse_weights(weights)
    job = prepare(request)
    seed = job.seed if job.seed is not None else random_seed()
    extra = resolve_loras(job.loras, lora_dir, model.family) if job.loras else []
    files = []
    for cp in checkpoints:
        lf = read_lora(cp.path)
        check_family(lf, model.family, cp.path.name, cp.path)
        files.append(lf)
    total, done = len(checkpoints) * len(ws), 0
    base_image = None
    images: list[list[Any]] = []
    for cp, lf in zip(checkpoints, files):
        row = []
        for w in ws:
            if w == 0 and base_image is not None:
                image = base_image
            else:
                uses = [*extra, LoraUse(cp.path.stem, cp.path, lf, w, w)]
                image = render_job(model, job, uses, seed=seed).image
                if w == 0:
                    base_image = image
            row.append(image)
            done += 1
            if progress:
                progress(done, total, f"{cp.label}, weight {format_weight(w)}")
        images.append(row)
    grid, layout = compose_grid(images, [c.label for c in checkpoints], [format_weight(w) for w in ws], ws,
                                corner="epoch \\ weight")
    return GridResult(grid, layout, checkpoints, ws, seed, job.source_prompt or job.prompt)
