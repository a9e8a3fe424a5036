"""What the loop reports after each optimizer step and epoch: `step`/`epoch` events, the tqdm bar, TensorBoard
scalars (under sd-scripts' `<logging_dir>/<name>YYYYmmddHHMMSS/network_train` layout) and the loss averages."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path


class StepReporter:
    def __init__(self, events, *, total_steps: int, epochs: int, initial_step: int, show_bar: bool,
                 logging_dir: str = "", run_name: str = ""):
        from tqdm import tqdm

        self.events, self.total_steps, self.epochs = events, total_steps, epochs
        self.bar = tqdm(total=total_steps, initial=initial_step, disable=not show_bar, desc="steps", dynamic_ncols=True)
        self.board = _tensorboard(logging_dir, run_name) if logging_dir.strip() else None
        self.window: deque[float] = deque(maxlen=100)  # the moving average sd-scripts shows as avr_loss
        self.step_times: deque[float] = deque(maxlen=20)
        self.epoch_losses: list[float] = []
        self.last_time = time.time()
        self.skipped = 0

    def start_epoch(self) -> None:
        self.epoch_losses = []

    def step(self, *, step: int, epoch: int, loss: float, lrs: dict[str, float], skipped: bool = False) -> None:
        now = time.time()
        self.step_times.append(now - self.last_time)
        self.last_time = now
        sec = sum(self.step_times) / len(self.step_times)
        if skipped:
            self.skipped += 1
        else:
            self.window.append(loss)
            self.epoch_losses.append(loss)
        avg = sum(self.window) / len(self.window) if self.window else float("nan")
        lr = lrs.get("unet", next(iter(lrs.values()), 0.0))
        self.bar.update(1)
        self.bar.set_postfix(epoch=f"{epoch}/{self.epochs}", loss=f"{loss:.4f}", avr_loss=f"{avg:.4f}", lr=f"{lr:.2e}")
        if self.board and not skipped:
            self.board.add_scalar("loss/current", loss, step)
            self.board.add_scalar("loss/average", avg, step)
            for part, value in lrs.items():
                self.board.add_scalar(f"lr/{part}", value, step)
        self.events.emit("step", step=step, total_steps=self.total_steps, epoch=epoch, epochs=self.epochs, loss=loss,
                         avg_loss=avg, lr=lr, lrs=lrs, sec_per_step=sec, eta_sec=sec * (self.total_steps - step),
                         skipped=skipped, skipped_total=self.skipped, **memory_in_use())

    def end_epoch(self, *, epoch: int, step: int) -> None:
        avg = sum(self.epoch_losses) / len(self.epoch_losses) if self.epoch_losses else float("nan")
        self.events.emit("epoch", epoch=epoch, epochs=self.epochs, avg_loss=avg, step=step)
        if self.board and self.epoch_losses:
            self.board.add_scalar("loss/epoch_average", avg, epoch)

    def close(self) -> None:
        self.bar.close()
        if self.board:
            self.board.close()


def memory_in_use() -> dict[str, float]:
    """This process's RAM (resident set) and, on a GPU, the memory torch holds, in GB: the panel's live figure."""
    import psutil
    import torch

    out = {"ram_gb": round(psutil.Process().memory_info().rss / 2**30, 2)}
    if torch.cuda.is_available():
        out["vram_gb"] = round(torch.cuda.memory_reserved() / 2**30, 2)
        out["vram_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _tensorboard(logging_dir: str, name: str):
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(logging_dir).expanduser() / f"{name}{time.strftime('%Y%m%d%H%M%S')}" / "network_train"
    return SummaryWriter(str(folder))
