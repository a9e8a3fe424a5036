"""Dataset items → training batches, through a torch DataLoader (so image decoding can run in workers).

An epoch's batch order comes from `TrainingSet.epoch_batches` (seeded by the run's seed and the epoch), so it is
the same whether or not the run was resumed or uses workers. Each process of a multi-process run takes every
n-th batch. `BatchMaker` turns a batch of sample positions into latents (cached) or pixels, processed captions,
per-sample loss weights and SDXL's size/crop conditioning; its randomness is seeded per batch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from kohya_lite.dataset.buckets import sdxl_crop_top_left
from kohya_lite.dataset.captions import CaptionSettings, process_caption
from kohya_lite.dataset.loader import TrainingSet, load_pixels
from kohya_lite.errors import Problem, UserError


@dataclass
class Batch:
    positions: list[int]  # sample positions in the epoch
    latents: torch.Tensor | None  # [B, 4, h, w] fp32 when latents are cached
    pixels: torch.Tensor | None  # [B, 3, H, W] in [-1, 1] otherwise
    captions: list[str]
    weights: torch.Tensor  # [B] per-sample loss weight (prior_loss_weight for regularization images)
    time_ids: torch.Tensor | None  # [B, 6] SDXL: original (h, w), crop (top, left), target (h, w)
    problem: Problem | None = None  # an image that could not be read (raised by the training process)


@dataclass(frozen=True)
class AugmentSettings:
    flip: bool = False
    random_crop: bool = False
    color: bool = False


class BatchMaker(torch.utils.data.Dataset):
    """Indexed by (epoch, positions) keys; returns one `Batch`."""

    def __init__(self, data: TrainingSet, *, seed: int, cached: bool, captions: CaptionSettings,
                 augment: AugmentSettings, prior_loss_weight: float = 1.0, sdxl: bool = False):
        self.data, self.seed, self.cached = data, seed, cached
        self.captions, self.augment = captions, augment
        self.prior_loss_weight, self.sdxl = prior_loss_weight, sdxl

    def __len__(self) -> int:  # not used for indexing; keys come from EpochSampler
        return len(self.data.samples)

    def __getitem__(self, key: tuple[int, tuple[int, ...]]) -> Batch:
        epoch, positions = key
        items = [self.data.items[self.data.samples[p]] for p in positions]
        rng = random.Random(hash((self.seed, epoch, positions)))
        flips = [self.augment.flip and rng.random() < 0.5 for _ in items]
        latents = pixels = None
        if self.cached:
            latents = torch.stack([it.latents_flipped if f else it.latents for it, f in zip(items, flips)])
        else:
            try:
                pixels = torch.stack([load_pixels(it, random_crop=self.augment.random_crop, flip=f,
                                                  color_aug=self.augment.color, rng=rng) for it, f in zip(items, flips)])
            except UserError as exc:  # a worker process cannot raise it whole: hand it over as data
                return Batch(list(positions), None, None, [], torch.zeros(0), None, problem=exc.problem)
        captions = [process_caption(it.caption, self.captions, rng=rng, epoch=epoch) for it in items]
        weights = torch.tensor([self.prior_loss_weight if it.is_reg else 1.0 for it in items])
        time_ids = None
        if self.sdxl:
            time_ids = torch.tensor([[it.size[1], it.size[0], *sdxl_crop_top_left(it.bucket, it.size, f),
                                      it.bucket[1], it.bucket[0]] for it, f in zip(items, flips)], dtype=torch.float32)
        return Batch(list(positions), latents, pixels, captions, weights, time_ids)


class EpochSampler(torch.utils.data.Sampler):
    """Yields this process's batch keys for the current epoch, from batch `skip` on (resume)."""

    def __init__(self, data: TrainingSet, batch_size: int, seed: int, process_index: int = 0, num_processes: int = 1):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.process_index, self.num_processes = process_index, num_processes
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def batches(self) -> list[tuple[int, ...]]:
        order = self.data.epoch_batches(self.epoch, self.batch_size, self.seed)
        shard = order[self.process_index::self.num_processes]
        per_process = math.ceil(len(order) / self.num_processes)
        shard += order[:per_process - len(shard)]  # even out the last round, as accelerate does
        return [tuple(b) for b in shard]

    def __iter__(self):
        for positions in self.batches()[self.skip:]:
            yield self.epoch, positions

    def __len__(self) -> int:
        return max(0, math.ceil(self.data.batches_per_epoch(self.batch_size) / self.num_processes) - self.skip)


def _as_is(batch: Batch) -> Batch:
    return batch


def make_loader(maker: BatchMaker, sampler: EpochSampler, *, workers: int = 0,
                persistent: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over whole batches; `workers` processes decode images ahead of the training step. It seeds its
    workers from a generator of its own, so using workers leaves the global RNG (dropout) as it was."""
    return torch.utils.data.DataLoader(maker, sampler=sampler, batch_size=None, collate_fn=_as_is,
                                       num_workers=workers, persistent_workers=persistent and workers > 0,
                                       generator=torch.Generator().manual_seed(maker.seed))
