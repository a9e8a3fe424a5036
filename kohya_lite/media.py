"""User images and their caption files, the one way the dataset, the pre-flight check and captioning all use.

- Discovery: `IMAGE_EXTENSIONS`, `is_image`, `list_images` (sorted, hidden files skipped, optionally recursive).
- Headers only: `image_size` (after EXIF rotation) and `check_image` (size and integrity without decoding pixels).
- Loading: `load_rgb` gives an 8-bit RGB picture for any file PIL reads: EXIF rotation applied; transparency
composited onto white; grayscale, palette, CMYK converted; 16-bit and 32-bit integer images *scaled*
to 8 bits (PIL's own `convert` clips them, which turns a 16-bit PNG white); float images mapped from
[0, 1].
- Captions: `caption_path`, `read_caption` (a caption file's text, via `textfile`), `count_tags`.
Images and captions are only ever read here, never written.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kohya_lite.textfile import read_text

Image.MAX_IMAGE_PIXELS = 200_000_000  # large photos are fine; absurd ones are still refused

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


# ---- discovery -------------------------------------------------------------------------------------------
def is_image(path: Path) -> bool:
    """An image file by its extension (any case), not hidden."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The folder's image files, sorted (with `recursive`, its subfolders' too)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_image(p) and p.is_file())


def image_size(path: str | Path) -> tuple[int, int]:
    """Size after EXIF rotation, without decoding pixels."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# ---- pre-flight: headers only ---------------------------------------------------------------------
LARGE_SIDE = 8192  # px; larger images are still used (downscaled to their bucket), but decode slowly
LARGE_PIXELS = 64_000_000
MIN_SIDE = 8
_TAIL = 65536  # bytes searched for a JPEG's end-of-image marker (some cameras append data after it)


@dataclass(frozen=True)
class ImageCheck:
    """What `check_image` found: the stored size (before EXIF rotation), or why the image is unusable."""

    size: tuple[int, int] | None = None
    problem: str | None = None

    @property
    def is_large(self) -> bool:
        return self.size is not None and (max(self.size) > LARGE_SIDE or self.size[0] * self.size[1] > LARGE_PIXELS)


def check_image(path: str | Path) -> ImageCheck:
    """Size and integrity without decoding pixels: the header gives the size; PNG chunk CRCs (`verify`, which
    does not inflate the data), a JPEG's end-of-image marker and a WebP's RIFF length catch truncated and
    damaged files. Only a JPEG without its end marker is decoded (at 1/8 scale) to tell truncation from
    trailing data, and a BMP or other rare format up to LARGE_PIXELS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: large images are reported below
            with Image.open(path) as im:
                size, fmt = im.size, (im.format or "").upper()
                if min(size) < MIN_SIDE:
                    return ImageCheck(size, f"is too small ({size[0]}×{size[1]})")
                if fmt == "PNG":
                    im.verify()
                elif fmt in ("JPEG", "MPO"):
                    if not _has_jpeg_end(path):
                        im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                        im.load()
                elif fmt == "WEBP":
                    problem = _webp_length_problem(path)
                    if problem:
                        return ImageCheck(size, problem)
                elif size[0] * size[1] <= LARGE_PIXELS:
                    im.load()
    except UnidentifiedImageError:
        return ImageCheck(None, "is not an image PIL can read (corrupt or unsupported format)")
    except Image.DecompressionBombError as exc:
        return ImageCheck(None, f"is too large to open safely ({exc})")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return ImageCheck(None, f"cannot be decoded ({exc.__class__.__name__}: {exc})")
    return ImageCheck(size)


def _has_jpeg_end(path: str | Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - _TAIL))
        return b"\xff\xd9" in f.read()


def _webp_length_problem(path: str | Path) -> str | None:
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return "is not a WebP file (no RIFF/WEBP header)"
    declared = int.from_bytes(head[4:8], "little") + 8
    actual = p.stat().st_size
    if actual < declared:
        return f"is truncated ({actual:,} of {declared:,} bytes)"
    return None


# ---- loading ---------------------------------------------------------------------------------------------


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


# ---- caption files ---------------------------------------------------------------------------------------
def caption_path(image: str | Path, ext: str = ".txt") -> Path:
    """`photo1.png` → `photo1.txt` (or the given extension)."""
    image = Path(image)
    return image.with_name(image.stem + ext)


def read_caption(path: str | Path, *, field: str | None = None, notes: list[str] | None = None) -> str:
    """A caption file's text without a BOM, CRLF or trailing whitespace; UserError naming the file when it is not
    UTF-8 text (`kohya_lite.textfile`)."""
    return read_text(path, what="caption file", field=field, notes=notes).replace("\r\n", "\n").rstrip()


def count_tags(captions: Iterable[str]) -> Counter:
    """kohya's tag frequency: each caption split on ',', tags stripped and lower-cased, empty ones skipped."""
    counts: Counter = Counter()
    for caption in captions:
        counts.update(t for t in (tag.strip().lower() for tag in caption.split(",")) if t)
    return counts
