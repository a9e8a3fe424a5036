"""Aspect-ratio bucketing exactly as sd-scripts does it (reference §5).

Two assignment paths: with `bucket_no_upscale` every image gets its own downscale-only bucket; without
it, images go to the nearest bucket of a precomputed list, are scaled to cover it and centre-cropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Assignment:
    bucket: tuple[int, int]  # (w, h) the image is cropped to
    resized: tuple[int, int]  # (w, h) the image is resized to before cropping

    @property
    def crop_ltrb(self) -> tuple[int, int, int, int]:
        """Centre crop box inside the resized image."""
        (bw, bh), (rw, rh) = self.bucket, self.resized
        left, top = (rw - bw) // 2, (rh - bh) // 2
        return left, top, left + bw, top + bh


def snap_bucket_range(min_reso: int, max_reso: int, steps: int) -> tuple[int, int]:
    """min rounded down, max rounded up, to multiples of `steps` (sd-scripts warns and does this)."""
    return min_reso - min_reso % steps, max_reso + (-max_reso) % steps


def make_bucket_list(resolution: tuple[int, int], min_reso: int, max_reso: int, steps: int) -> list[tuple[int, int]]:
    """sd-scripts' `make_bucket_resolutions`: sorted, de-duplicated (w, h) buckets with area ≤ W×H."""
    max_area = resolution[0] * resolution[1]
    side = int(math.sqrt(max_area)) // steps * steps
    buckets = {(side, side)}
    w = min_reso
    while w <= max_reso:
        h = min(max_reso, (max_area // w) // steps * steps)
        if h >= min_reso:
            buckets.add((w, h))
            buckets.add((h, w))
        w += steps
    return sorted(buckets)


def _round_to_steps(x: float, steps: int) -> int:
    x = int(x + 0.5)
    return x - x % steps


def assign_no_upscale(size: tuple[int, int], max_area: int, steps: int) -> Assignment:
    """Downscale-only: the image keeps its aspect; the bucket is its size floored to `steps`."""
    w, h = size
    ar = w / h
    if w * h > max_area:
        rw = math.sqrt(max_area * ar)
        rh = max_area / rw
        bw_a = _round_to_steps(rw, steps)
        bh_a = _round_to_steps(bw_a / ar, steps)
        err_a = abs(bw_a / bh_a - ar) if bh_a else math.inf
        bh_b = _round_to_steps(rh, steps)
        bw_b = _round_to_steps(bh_b * ar, steps)
        err_b = abs(bw_b / bh_b - ar) if bh_b else math.inf
        if err_a < err_b:
            resized = (bw_a, int(bw_a / ar + 0.5))
        else:
            resized = (int(bh_b * ar + 0.5), bh_b)
    else:
        resized = (w, h)
    if min(resized) < steps:  # tiny image: never pad; scale up just enough to cover one step
        scale = steps / min(w, h)
        resized = (max(steps, math.ceil(w * scale)), max(steps, math.ceil(h * scale)))
    rw_, rh_ = resized
    bucket = (rw_ - rw_ % steps, rh_ - rh_ % steps)
    return Assignment(bucket, resized)


def assign_to_list(size: tuple[int, int], buckets: list[tuple[int, int]]) -> Assignment:
    """Nearest aspect ratio in the list; scale to cover the bucket, then centre-crop (may upscale)."""
    w, h = size
    if (w, h) in buckets:
        return Assignment((w, h), (w, h))
    ar = w / h
    bucket = min(buckets, key=lambda b: abs(b[0] / b[1] - ar))  # first one on ties
    bucket_ar = bucket[0] / bucket[1]
    scale = bucket[1] / h if ar > bucket_ar else bucket[0] / w
    resized = (int(w * scale + 0.5), int(h * scale + 0.5))
    return Assignment(bucket, resized)


@dataclass(frozen=True)
class BucketSettings:
    resolution: tuple[int, int]
    enable_bucket: bool = True
    min_reso: int = 256
    max_reso: int = 2048
    steps: int = 64
    no_upscale: bool = True

    def assign(self, size: tuple[int, int]) -> Assignment:
        if not self.enable_bucket:
            return assign_to_list(size, [self.resolution])
        if self.no_upscale:
            return assign_no_upscale(size, self.resolution[0] * self.resolution[1], self.steps)
        lo, hi = snap_bucket_range(self.min_reso, self.max_reso, self.steps)
        return assign_to_list(size, make_bucket_list(self.resolution, lo, hi, self.steps))


def conditioning_crop_ltrb(bucket: tuple[int, int], original_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """sd-scripts' `get_crop_ltrb`, the box SDXL's crop conditioning is computed from: the image scaled to fit
    *inside* the bucket, centred (left/top floor-divided, as floats)."""
    (bw, bh), (ow, oh) = bucket, original_size
    image_ar = ow / oh
    if bw / bh > image_ar:
        rw, rh = bh * image_ar, float(bh)
    else:
        rw, rh = float(bw), bw / image_ar
    left, top = (bw - rw) // 2, (bh - rh) // 2
    return left, top, left + rw, top + rh


def sdxl_crop_top_left(bucket: tuple[int, int], original_size: tuple[int, int], flipped: bool) -> tuple[int, int]:
    """(top, left) for SDXL's `crops_coords_top_left`; a flipped image measures left from the right edge."""
    left, top, right, _ = conditioning_crop_ltrb(bucket, original_size)
    if flipped:
        left = bucket[0] - right
    return int(top), int(left)
