"""Opening user images, the one way training and captioning both use.

`load_rgb` gives an 8-bit RGB picture for any file PIL reads: EXIF rotation applied; transparency
composited onto white; grayscale, palette, CMYK converted; 16-bit and 32-bit integer images *scaled*
to 8 bits (PIL's own `convert` clips them, which turns a 16-bit PNG white); float images mapped from
[0, 1]. Images are only ever read, never written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = 200_000_000  # large photos are fine; absurd ones are still refused

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """A 16/32-bit integer or float single-channel image as 8-bit 'L', scaled rather than clipped."""
    arr = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        scaled = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr
    else:
        scaled = arr * (255.0 / 65535.0) if arr.size and arr.max() > 255 else arr
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image → 'RGB'; transparent pixels become white."""
    if img.mode in _WIDE_INT_MODES or img.mode == "F":
        img = _to_8bit_gray(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB, EXIF-rotated, alpha over white. Raises on unreadable files."""
    with Image.open(path) as img:
        img.load()  # decode now, so a truncated or corrupt file fails here
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
