"""From folders to training batches: items with captions and buckets, reg balancing, epoch batch order,
pixel transforms and latent caching (memory or disk)."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kohya_lite.dataset.buckets import Assignment, BucketSettings
from kohya_lite.dataset.folders import DatasetSummary, read_caption
from kohya_lite.dataset.images import image_size, load_rgb


@dataclass
class Item:
    image: Path
    caption: str
    subset: str  # folder name
    is_reg: bool
    size: tuple[int, int]  # original (w, h) after EXIF rotation
    assignment: Assignment
    latents: torch.Tensor | None = None  # cached [4, h/8, w/8]
    latents_flipped: torch.Tensor | None = None

    @property
    def bucket(self) -> tuple[int, int]:
        return self.assignment.bucket


@dataclass
class TrainingSet:
    items: list[Item]  # distinct images
    samples: list[int]  # item index per sample per epoch (repeats applied, reg balanced)

    @property
    def num_train_samples(self) -> int:
        return sum(1 for i in self.samples if not self.items[i].is_reg)

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        counts: dict[tuple[int, int], int] = {}
        for i in self.samples:
            b = self.items[i].bucket
            counts[b] = counts.get(b, 0) + 1
        return dict(sorted(counts.items()))

    def mean_ar_error(self) -> float:
        errs = [abs(it.bucket[0] / it.bucket[1] - it.size[0] / it.size[1]) for it in self.items]
        return float(sum(errs) / len(errs)) if errs else 0.0

    def batches_per_epoch(self, batch_size: int) -> int:
        return sum(math.ceil(c / batch_size) for c in self.bucket_counts().values())

    def epoch_batches(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        """Batches of sample positions, each from one bucket; shuffled with random.seed(seed + epoch)."""
        rng = random.Random(seed + epoch)
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for pos, i in enumerate(self.samples):
            by_bucket.setdefault(self.items[i].bucket, []).append(pos)
        batches = []
        for bucket in sorted(by_bucket):
            positions = by_bucket[bucket]
            rng.shuffle(positions)
            batches += [positions[k:k + batch_size] for k in range(0, len(positions), batch_size)]
        rng.shuffle(batches)
        return batches


def build_training_set(summary: DatasetSummary, buckets: BucketSettings, caption_extension: str) -> TrainingSet:
    """Items, repeats and reg balancing for a dataset whose images `check.run_check` has already verified
    (it drops unreadable images from the summary and warns about each), so no image is decoded here."""
    items: list[Item] = []
    train_samples: list[int] = []
    reg_pool: list[tuple[int, int]] = []  # (item index, repeats)
    for subset in summary.subsets:
        for path in subset.images:
            caption, _ = read_caption(path, caption_extension, subset.tokens)
            size = image_size(path)
            items.append(Item(path, caption, subset.name, subset.is_reg, size, buckets.assign(size)))
            idx = len(items) - 1
            if subset.is_reg:
                reg_pool.append((idx, subset.repeats))
            else:
                train_samples += [idx] * subset.repeats
    samples = list(train_samples)
    if reg_pool and train_samples:
        samples += balance_reg(reg_pool, len(train_samples))
    return TrainingSet(items, samples)


def balance_reg(pool: list[tuple[int, int]], target: int) -> list[int]:
    """sd-scripts: reg samples fill exactly `target` slots, repeated round-robin one image at a time."""
    out: list[int] = []
    while len(out) < target:
        for idx, repeats in pool:
            for _ in range(repeats):
                if len(out) >= target:
                    break
                out.append(idx)
    return out


# ---- pixels -------------------------------------------------------------------------------------
def load_pixels(item: Item, *, random_crop: bool = False, flip: bool = False,
                rng: random.Random | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """[3, H, W] in [-1, 1] at the item's bucket size, and the crop's (top, left) for SDXL conditioning."""
    import cv2

    img = np.asarray(load_rgb(item.image))  # read-only view; copied below
    rw, rh = item.assignment.resized
    h, w = img.shape[:2]
    if (w, h) != (rw, rh):
        interp = cv2.INTER_AREA if rw * rh < w * h else cv2.INTER_LANCZOS4
        img = cv2.resize(img, (rw, rh), interpolation=interp)
    bw, bh = item.bucket
    if random_crop and rng is not None:
        left, top = rng.randint(0, rw - bw), rng.randint(0, rh - bh)
    else:
        left, top = (rw - bw) // 2, (rh - bh) // 2
    img = img[top:top + bh, left:left + bw]
    if flip:
        img = img[:, ::-1]
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1.0
    return t, (top, left)


# ---- latent caching -----------------------------------------------------------------------------
def cache_file(cache_dir: Path, item: Item, family: str) -> Path:
    w, h = item.bucket
    digest = hashlib.sha1(str(item.image.resolve()).encode()).hexdigest()[:10]
    suffix = "sdxl" if family == "sdxl" else "sd"
    return cache_dir / f"{item.image.stem}_{digest}_{w:04d}x{h:04d}_{suffix}.npz"


@torch.no_grad()
def encode_pixels(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return dist.sample(generator=generator) * vae.config.scaling_factor


@torch.no_grad()
def cache_latents(items: list[Item], vae, *, flip_aug: bool, family: str, batch_size: int = 1,
                  cache_dir: Path | None = None, progress: Callable[[int, int], None] | None = None,
                  generator: torch.Generator | None = None) -> None:
    """Encode every item once (and its mirror with flip_aug), keeping latents on the CPU; reuse/write npz files."""
    todo: list[Item] = []
    for it in items:
        f = cache_file(cache_dir, it, family) if cache_dir else None
        if f and f.is_file():
            try:
                data = np.load(f)
                lat = torch.from_numpy(data["latents"])
                if tuple(lat.shape[-2:]) == (it.bucket[1] // 8, it.bucket[0] // 8) and (not flip_aug or "latents_flipped" in data):
                    it.latents = lat
                    it.latents_flipped = torch.from_numpy(data["latents_flipped"]) if flip_aug else None
                    continue
            except Exception:
                pass  # unreadable cache: re-encode
        todo.append(it)
    by_bucket: dict[tuple[int, int], list[Item]] = {}
    for it in todo:
        by_bucket.setdefault(it.bucket, []).append(it)
    done = 0
    for group in by_bucket.values():
        for k in range(0, len(group), max(1, batch_size)):
            chunk = group[k:k + batch_size]
            pixels = torch.stack([load_pixels(it)[0] for it in chunk])
            lat = encode_pixels(vae, pixels, generator).float().cpu()
            flipped = encode_pixels(vae, pixels.flip(-1), generator).float().cpu() if flip_aug else None
            for j, it in enumerate(chunk):
                it.latents = lat[j].clone()
                it.latents_flipped = flipped[j].clone() if flipped is not None else None
                if cache_dir:
                    _write_npz(cache_file(cache_dir, it, family), it)
            done += len(chunk)
            if progress:
                progress(done, len(todo))


def _write_npz(path: Path, item: Item) -> None:
    from kohya_lite.fileio import atomic_path

    arrays = {"latents": item.latents.numpy(), "original_size": np.array(item.size),
              "crop_ltrb": np.array(item.assignment.crop_ltrb)}
    if item.latents_flipped is not None:
        arrays["latents_flipped"] = item.latents_flipped.numpy()
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
