"""Opening user images safely: EXIF rotation, alpha, grayscale and palette modes → RGB; corrupt files reported."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # large photos are fine; absurd ones are still refused


def load_rgb(path: str | Path) -> Image.Image:
    """RGB image with EXIF orientation applied; transparent areas composited onto white."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        return im.convert("RGB")


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
