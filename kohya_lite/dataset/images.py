"""Opening user images safely: EXIF rotation, alpha, grayscale and palette modes → RGB; corrupt files reported."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from kohya_lite.media import load_rgb  # noqa: F401  (the one image loader, re-exported)



def image_problem(path: str | Path) -> str | None:
    """None when the image can be decoded, else a short reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                im.load()
                if im.width < 8 or im.height < 8:
                    return f"too small ({im.width}×{im.height})"
    except UnidentifiedImageError:
        return "not an image PIL can read (corrupt or unsupported format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"cannot be decoded ({exc.__class__.__name__}: {exc})"
    return None


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
