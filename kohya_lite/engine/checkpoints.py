"""Output names as sd-scripts writes them, atomic state folders, pruning, and finding a state to resume."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kohya_lite.errors import UserError

TRAIN_STATE = "train_state.json"  # written last: its presence marks a complete state folder


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

    def to_json(self) -> str:
        return json.dumps({"current_epoch": self.epoch, "current_step": self.step})


def save_state(folder: Path, *, network_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler, state: TrainState, extra: dict | None = None) -> Path:
    """Write network, optimizer, scheduler, RNG and counters into `folder`, atomically (tmp dir + rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in network_state.items()}, str(tmp / "network.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.bin")
    torch.save(scheduler.state_dict(), tmp / "scheduler.bin")
    torch.save(capture_rng(), tmp / "random_states.pkl")
    if extra:
        (tmp / "extra.json").write_text(json.dumps(extra))
    with open(tmp / TRAIN_STATE, "w") as fh:
        fh.write(state.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
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
    extra: dict


def load_state(folder: str | os.PathLike) -> LoadedState:
    from safetensors.torch import load_file

    folder = Path(folder)
    marker = folder / TRAIN_STATE
    if not marker.is_file():
        raise UserError(f"'{folder}' is not a complete training state (no {TRAIN_STATE})", field="resume", file=str(folder),
                        fix="pick a '<name>-…-state' folder written with save_state on, or use 'last'")
    data = json.loads(marker.read_text())
    extra_file = folder / "extra.json"
    return LoadedState(
        folder=folder,
        network_state=load_file(str(folder / "network.safetensors")),
        optimizer_state=torch.load(folder / "optimizer.bin", weights_only=False),
        scheduler_state=torch.load(folder / "scheduler.bin", weights_only=False),
        rng=torch.load(folder / "random_states.pkl", weights_only=False),
        state=TrainState(int(data["current_epoch"]), int(data["current_step"])),
        extra=json.loads(extra_file.read_text()) if extra_file.is_file() else {},
    )


def capture_rng() -> dict:
    """The global RNG states (python, numpy, torch, cuda) as one dict."""
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


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


def prune(output_dir: Path, name: str, *, keep_epochs: int = 0, keep_epoch_states: int = 0) -> list[Path]:
    """Delete all but the newest `keep` epoch files / states (0 keeps everything)."""
    removed = []
    for keep, pattern, is_state in ((keep_epochs, f"{name}-[0-9]*.safetensors", False),
                                    (keep_epoch_states, f"{name}-[0-9]*-state", True)):
        if keep <= 0:
            continue
        items = sorted(p for p in output_dir.glob(pattern) if p.name[len(name) + 1:len(name) + 7].isdigit())
        for old in items[:-keep]:
            shutil.rmtree(old) if is_state else old.unlink()
            removed.append(old)
    return removed
