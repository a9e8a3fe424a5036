"""Opening user images safely: EXIF rotation, alpha, grayscale and palette modes → RGB; corrupt files reported."""

from __future__ import annotations

import warnings
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
