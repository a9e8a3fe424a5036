"""Step arithmetic: the kohya_ss GUI estimate and the engine's epoch/step override rules."""

from __future__ import annotations

import math
from dataclasses import dataclass


def gui_total_steps(num_train_images: int, epochs: int, batch_size: int, grad_accum: int = 1, with_reg: bool = False) -> int:
    """kohya_ss: ceil(images×repeats / batch / grad_accum × epochs × (2 with reg))."""
    if num_train_images <= 0 or epochs <= 0:
        return 0
    reg_factor = 2 if with_reg else 1
    return math.ceil(num_train_images / max(1, batch_size) / max(1, grad_accum) * epochs * reg_factor)


@dataclass(frozen=True)
class StepPlan:
    """How long a run is, and which setting decided it."""

    num_images: int  # distinct training images
    samples_per_epoch: int  # images × repeats (× 2 with reg)
    batches_per_epoch: int
    steps_per_epoch: int  # optimizer steps
    epochs: int
    total_steps: int
    decided_by: str  # "epoch" | "max_train_epochs" | "max_train_steps"
    batch_size: int
    grad_accum: int
    with_reg: bool

    def summary(self, repeats_text: str = "") -> str:
        reg = " × 2 (reg)" if self.with_reg else ""
        ga = f" ÷ grad-accum {self.grad_accum}" if self.grad_accum > 1 else ""
        base = f"{self.num_images} images{repeats_text}"
        if self.decided_by == "max_train_steps":
            return (f"{self.total_steps:,} steps (max_train_steps) = {self.epochs} epochs of {self.steps_per_epoch:,} steps; "
                    f"{base}{reg} ÷ batch {self.batch_size}{ga}")
        epochs_src = "max_train_epochs" if self.decided_by == "max_train_epochs" else "epochs"
        return (f"{base} × {self.epochs} {epochs_src}{reg} ÷ batch {self.batch_size}{ga} = {self.total_steps:,} steps")


def plan_steps(
    *,
    num_images: int,
    num_train_samples: int,
    batch_size: int,
    epoch: int,
    max_train_epochs: int = 0,
    max_train_steps: int = 0,
    grad_accum: int = 1,
    with_reg: bool = False,
    batches_per_epoch: int | None = None,
) -> StepPlan:
    """Resolve epochs and total optimizer steps.

    `batches_per_epoch` is the engine's Σ ceil(bucket count / batch) once buckets are known; without it the
    GUI estimate samples / batch (rounded up) is used. Override rules (sd-scripts): `max_train_epochs` > 0
    wins, then `max_train_steps` > 0 (epochs = ceil(steps / steps_per_epoch)), else the GUI's `epoch`.
    """
    batch_size = max(1, batch_size)
    grad_accum = max(1, grad_accum)
    samples = num_train_samples * (2 if with_reg else 1)
    if batches_per_epoch is None:
        batches_per_epoch = math.ceil(samples / batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum) if batches_per_epoch else 0
    if max_train_epochs > 0:
        epochs, decided = max_train_epochs, "max_train_epochs"
        total = epochs * steps_per_epoch
    elif max_train_steps > 0:
        decided = "max_train_steps"
        total = max_train_steps
        epochs = math.ceil(total / steps_per_epoch) if steps_per_epoch else 0
    else:
        epochs, decided = max(1, epoch), "epoch"
        total = epochs * steps_per_epoch
    return StepPlan(num_images, samples, batches_per_epoch, steps_per_epoch, epochs, total, decided,
                    batch_size, grad_accum, with_reg)
