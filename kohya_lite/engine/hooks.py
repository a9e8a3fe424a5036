"""What the main process does after an optimizer step and after an epoch: sample images and checkpoints (with
pruning), on sd-scripts' schedule."""

from __future__ import annotations

from kohya_lite.config import TrainingConfig
from kohya_lite.engine import checkpoints as ckpt


class RunHooks:
    def __init__(self, cfg: TrainingConfig, *, writer: ckpt.CheckpointWriter, sampler, total_steps: int,
                 epochs: int, is_main: bool):
        self.cfg, self.writer, self.sampler = cfg, writer, sampler
        self.total_steps, self.epochs, self.is_main = total_steps, epochs, is_main

    def before_training(self, step: int) -> None:
        if self.is_main and self.sampler and step == 0 and self.sampler.due(step=0):
            self.sampler.sample(step=0, epoch=0)

    def after_step(self, step: int, epoch: int) -> None:
        cfg, w = self.cfg, self.writer
        if not self.is_main:
            return
        if self.sampler and self.sampler.due(step=step):
            self.sampler.sample(step=step, epoch=epoch)
        if cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0 and step < self.total_steps:
            w.save(ckpt.step_file(w.name, step), epoch=epoch - 1, step=step, with_state=cfg.save_state)
            ckpt.prune_steps(w.out_dir, w.name, step, keep_steps=cfg.save_last_n_steps,
                             keep_step_states=cfg.save_last_n_steps_state)

    def after_epoch(self, epoch: int, step: int) -> None:
        cfg, w = self.cfg, self.writer
        if not self.is_main:
            return
        if cfg.save_every_n_epochs and epoch % cfg.save_every_n_epochs == 0 and epoch < self.epochs:
            w.save(ckpt.epoch_file(w.name, epoch), epoch=epoch, step=step, with_state=cfg.save_state)
            ckpt.prune(w.out_dir, w.name, keep_epochs=cfg.save_last_n_epochs,
                       keep_epoch_states=cfg.save_last_n_epochs_state)
        if self.sampler and self.sampler.due(step=step, epoch_end=epoch):
            self.sampler.sample(step=step, epoch=epoch)
