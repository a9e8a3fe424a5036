"""Checkpoints: output names as sd-scripts writes them, training-state folders (pickle-free, atomic), pruning,
finding a state to resume, and `CheckpointWriter`, which saves the LoRA file only when its weights are finite.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kohya_lite.engine import statefile
from kohya_lite.errors import UserError
from kohya_lite.fileio import replace

TRAIN_STATE = "train_state.json"  # written last: its presence marks a complete state folder
STATE_FORMAT = 2  # 1 was kohya-lite 0.1's pickled optimizer.bin / scheduler.bin / random_states.pkl


def epoch_file(name: str, epoch: int) -> str:
    return f"{name}-{epoch:06d}.safetensors"


def step_file(name: str, step: int) -> str:
    return f"{name}-step{step:08d}.safetensors"


def final_file(name: str) -> str:
    return f"{name}.safetensors"


def state_dir_for(model_file: str) -> str:
    """`name-000002.safetensors` → `name-000002-state`; final `name.safetensors` → `name-state`."""
    return model_file.removesuffix(".safetensors") + "-state"


@dataclass
class TrainState:
    epoch: int  # epochs completed
    step: int  # optimizer steps completed
    seed: int = 0  # the run's seed (a resumed run draws the same batches and noise)

    def to_json(self) -> str:
        return json.dumps({"current_epoch": self.epoch, "current_step": self.step, "seed": self.seed,
                           "format": STATE_FORMAT})


def save_state(folder: Path, *, network_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler, state: TrainState, rng: dict | None = None) -> Path:
    """Write network, optimizer, scheduler, RNG and counters into `folder`, atomically (tmp dir + rename).
    Nothing is pickled: tensors go to safetensors, the rest to JSON."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in network_state.items()}, str(tmp / "network.safetensors"))
    statefile.save_tree(tmp, "optimizer", optimizer.state_dict())
    statefile.save_tree(tmp, "scheduler", scheduler.state_dict())
    statefile.save_tree(tmp, "rng", rng if rng is not None else capture_rng())
    with open(tmp / TRAIN_STATE, "w") as fh:
        fh.write(state.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        replace(folder, old)
    replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


@dataclass
class LoadedState:
    folder: Path
    network_state: dict[str, torch.Tensor]
    optimizer_state: dict
    scheduler_state: dict
    rng: dict
    state: TrainState
    extra: dict = field(default_factory=dict)


def load_state(folder: str | os.PathLike) -> LoadedState:
    from safetensors.torch import load_file

    folder = Path(folder)
    marker = folder / TRAIN_STATE
    if not marker.is_file():
        raise UserError(f"'{folder}' is not a complete training state (no {TRAIN_STATE})", field="resume", file=str(folder),
                        fix="pick a '<name>-…-state' folder written with save_state on, or use 'last'")
    try:
        data = json.loads(marker.read_text())
        state = TrainState(int(data["current_epoch"]), int(data["current_step"]), int(data.get("seed", 0)))
    except (ValueError, KeyError, TypeError):
        raise UserError(f"'{marker}' is damaged", field="resume", file=str(marker),
                        fix="resume from another state folder, or start again") from None
    if not (folder / "optimizer.json").is_file():
        raise UserError(
            f"'{folder}' was saved by kohya-lite 0.1, whose state files are Python pickles that could run code "
            "when loaded; it is not loaded", field="resume", file=str(folder),
            fix="continue from that run's LoRA file instead: set network_weights to it and train again")
    try:
        return LoadedState(
            folder=folder,
            network_state=load_file(str(folder / "network.safetensors")),
            optimizer_state=statefile.load_tree(folder, "optimizer"),
            scheduler_state=statefile.load_tree(folder, "scheduler"),
            rng=statefile.load_tree(folder, "rng"),
            state=state,
        )
    except (statefile.StateFormatError, OSError) as exc:
        raise UserError(f"training state '{folder}' cannot be read: {exc}", field="resume", file=str(folder),
                        fix="resume from another state folder, or start again") from None


def capture_rng(noise_generator: torch.Generator | None = None) -> dict:
    """The global RNG states (python, numpy, torch, cuda) and the run's noise generator, as one dict."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rng: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys, int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = list(torch.cuda.get_rng_state_all())
    if noise_generator is not None:
        rng["noise_generator"] = noise_generator.get_state()
    return rng


def restore_rng(rng: dict, noise_generator: torch.Generator | None = None) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if noise_generator is not None and "noise_generator" in rng:
        noise_generator.set_state(rng["noise_generator"])


def find_last_state(output_dir: str | os.PathLike, output_name: str) -> Path | None:
    """The complete state folder with the most steps done, or None."""
    best: tuple[int, Path] | None = None
    root = Path(output_dir)
    if not root.is_dir():
        return None
    for d in root.glob(f"{output_name}-*state"):
        marker = d / TRAIN_STATE
        if d.is_dir() and marker.is_file():
            try:
                step = int(json.loads(marker.read_text())["current_step"])
            except (ValueError, KeyError, json.JSONDecodeError):
                continue
            if best is None or step > best[0]:
                best = (step, d)
    return best[1] if best else None


def _numbered(output_dir: Path, name: str, kind: str, state: bool) -> list[tuple[int, Path]]:
    """(number, path) of the epoch (`kind` 'epoch') or step files / state folders of run `name`."""
    prefix = f"{name}-step" if kind == "step" else f"{name}-"
    width = 8 if kind == "step" else 6
    suffix = "-state" if state else ".safetensors"
    out = []
    for p in output_dir.glob(f"{prefix}*{suffix}"):
        number = p.name[len(prefix):len(p.name) - len(suffix)]
        if len(number) == width and number.isdigit():
            out.append((int(number), p))
    return sorted(out)


def prune(output_dir: Path, name: str, *, keep_epochs: int = 0, keep_epoch_states: int = 0) -> list[Path]:
    """Delete all but the newest `keep_epochs` epoch files and `keep_epoch_states` epoch states (0 keeps all;
    a state count of 0 falls back to `keep_epochs`, as in sd-scripts)."""
    removed = []
    for keep, state in ((keep_epochs, False), (keep_epoch_states or keep_epochs, True)):
        if keep > 0:
            for _, old in _numbered(output_dir, name, "epoch", state)[:-keep]:
                shutil.rmtree(old) if state else old.unlink()
                removed.append(old)
    return removed


def prune_steps(output_dir: Path, name: str, step: int, *, keep_steps: int = 0, keep_step_states: int = 0) -> list[Path]:
    """sd-scripts' save_last_n_steps: keep the step files (and states) of the last N *steps*, i.e. those numbered
    ≥ step − N; a state count of 0 falls back to `keep_steps`; 0 keeps everything."""
    removed = []
    for keep, state in ((keep_steps, False), (keep_step_states or keep_steps, True)):
        if keep > 0:
            for number, old in _numbered(output_dir, name, "step", state):
                if number < step - keep:
                    shutil.rmtree(old) if state else old.unlink()
                    removed.append(old)
    return removed


class NonFiniteWeights(Exception):
    def __init__(self, count: int, total: int):
        super().__init__(f"{count} of {total} tensors are not finite")
        self.count, self.total = count, total


def count_nonfinite(tensors: dict[str, torch.Tensor]) -> int:
    return sum(1 for v in tensors.values() if v.is_floating_point() and not bool(torch.isfinite(v).all()))


class CheckpointWriter:
    """Writes the run's LoRA files and training states. A LoRA whose tensors are not all finite is never
    written: `save` raises `NonFiniteWeights`, and `last_good` keeps naming the newest file that was."""

    def __init__(self, out_dir: Path, name: str, *, network, save_precision: str,
                 metadata: Callable[[int, int], dict], events, state_parts: Callable[[], dict]):
        self.out_dir, self.name, self.network, self.save_precision = out_dir, name, network, save_precision
        self.metadata, self.events, self.state_parts = metadata, events, state_parts
        self.saved: list[Path] = []
        self.last_good: Path | None = None

    def save(self, filename: str, *, epoch: int, step: int, with_state: bool) -> Path:
        from kohya_lite.network.io import save_lora_file

        from kohya_lite.network.io import PRECISIONS

        tensors = self.network.kohya_state_dict()
        bad = count_nonfinite({k: v.to(PRECISIONS.get(self.save_precision, v.dtype)) for k, v in tensors.items()})
        if bad:
            raise NonFiniteWeights(bad, len(tensors))
        path = self.out_dir / filename
        save_lora_file(path, tensors, self.metadata(epoch, step), precision=self.save_precision)
        self.saved.append(path)
        self.last_good = path
        self.events.emit("checkpoint", path=path, epoch=epoch, step=step)
        if with_state:
            self.save_state(filename, epoch=epoch, step=step, tensors=tensors)
        return path

    def save_state(self, filename: str, *, epoch: int, step: int, tensors: dict | None = None) -> Path:
        parts = self.state_parts()
        folder = self.out_dir / state_dir_for(filename)
        save_state(folder, network_state=tensors if tensors is not None else self.network.kohya_state_dict(),
                   optimizer=parts["optimizer"], scheduler=parts["scheduler"],
                   state=TrainState(epoch, step, parts["seed"]), rng=parts["rng"])
        return folder
