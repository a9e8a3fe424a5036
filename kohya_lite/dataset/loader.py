"""From folders to training batches: items with captions and buckets, reg balancing, epoch batch order,
pixel transforms and latent caching (memory or disk)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kohya_lite.dataset.buckets import Assignment, BucketSettings
from kohya_lite.dataset.folders import DatasetSummary, caption_or_tokens
from kohya_lite.errors import UserError
from kohya_lite.media import image_size, load_rgb


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
            caption, _ = caption_or_tokens(path, caption_extension, subset.tokens)
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
    """sd-scripts' reg balancing: a first pass takes each reg image with its folder's repeats (it may overshoot
    `target`, and images it does not reach are unused); later passes add one repeat to one image at a time."""
    counts: dict[int, int] = {}
    n, first = 0, True
    while pool and n < target:
        for idx, repeats in pool:
            if first:
                counts[idx] = repeats
                n += repeats
            else:
                counts[idx] += 1
                n += 1
            if n >= target:
                break
        first = False
    return [idx for idx, c in counts.items() for _ in range(c)]


# ---- pixels -------------------------------------------------------------------------------------
def color_augment(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """sd-scripts' color_aug: a third of the time, a hue shift of up to ±8 (OpenCV units) or a gamma of 0.95–1.05."""
    import cv2

    if rng.random() > 0.33:
        return img
    if rng.random() > 0.5:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        shift = rng.uniform(-8, 8) % 180
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.float32) + shift) % 180).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    gamma = rng.uniform(0.95, 1.05)
    return np.clip(img.astype(np.float32) ** gamma, 0, 255).astype(np.uint8)


def load_pixels(item: Item, *, random_crop: bool = False, flip: bool = False, color_aug: bool = False,
                rng: random.Random | None = None) -> torch.Tensor:
    """[3, H, W] in [-1, 1] at the item's bucket size: resized to cover the bucket, cropped (centred, or at a
    random offset with `random_crop`), colour-augmented and mirrored as asked."""
    import cv2

    try:
        img = np.asarray(load_rgb(item.image))  # read-only view; copied below
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError … for damaged files
        raise UserError(f"image '{item.image.name}' cannot be decoded ({exc.__class__.__name__}: {exc})",
                        field="train_data_dir", file=str(item.image),
                        fix="re-save it as PNG or JPEG (or delete it), then train again") from None
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
    img = np.ascontiguousarray(img[top:top + bh, left:left + bw])
    if color_aug and rng is not None:
        img = color_augment(img, rng)
    if flip:
        img = img[:, ::-1]
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1.0


# ---- latent caching -----------------------------------------------------------------------------
def latent_scale(vae) -> int:
    """Pixels per latent pixel: 2^(levels − 1) (8 for every Stable Diffusion VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def vae_fingerprint(vae) -> str:
    """A short id of a VAE's config and weights (a digest of every 8th tensor's first 4 KiB), so latents
    cached with one VAE are never reused with another."""
    h = hashlib.sha1(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for i, (name, tensor) in enumerate(vae.state_dict().items()):
        if i % 8 == 0:
            h.update(name.encode())
            h.update(tensor.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def cache_file(cache_dir: Path, item: Item, vae_id: str) -> Path:
    """The item's latent file: its name carries the image's path, byte size and mtime and the VAE's id, so an
    edited image or another VAE never reuses stale latents."""
    w, h = item.bucket
    st = item.image.stat()
    key = f"{item.image.resolve()}|{st.st_size}|{st.st_mtime_ns}|{vae_id}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir / f"{item.image.stem}_{digest}_{w:04d}x{h:04d}.npz"


@torch.no_grad()
def encode_pixels(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents (scaled by the VAE's scaling factor) of [-1, 1] pixels, computed in the VAE's dtype."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return dist.sample(generator=generator) * vae.config.scaling_factor


@torch.no_grad()
def cache_latents(items: list[Item], vae, *, flip_aug: bool, batch_size: int = 1,
                  cache_dir: Path | None = None, progress: Callable[[int, int], None] | None = None,
                  generator: torch.Generator | None = None) -> None:
    """Encode every item once (and its mirror with flip_aug), keeping fp32 latents on the CPU; reuse/write npz
    files when `cache_dir` is given."""
    scale = latent_scale(vae)
    vae_id = vae_fingerprint(vae) if cache_dir else ""
    todo: list[Item] = []
    for it in items:
        f = cache_file(cache_dir, it, vae_id) if cache_dir else None
        if f and f.is_file():
            try:
                data = np.load(f)
                lat = torch.from_numpy(data["latents"])
                if tuple(lat.shape[-2:]) == (it.bucket[1] // scale, it.bucket[0] // scale) \
                        and (not flip_aug or "latents_flipped" in data):
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
            pixels = torch.stack([load_pixels(it) for it in chunk])
            lat = encode_pixels(vae, pixels, generator).float().cpu()
            flipped = encode_pixels(vae, pixels.flip(-1), generator).float().cpu() if flip_aug else None
            for j, it in enumerate(chunk):
                it.latents = lat[j].clone()
                it.latents_flipped = flipped[j].clone() if flipped is not None else None
                if cache_dir:
                    _write_npz(cache_file(cache_dir, it, vae_id), it)
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
