"""Finding and opening the images of a captioning folder.

`find_images` lists the images a captioner works on (.png .jpg .jpeg .webp .bmp, any case, sorted,
optionally recursive). `load_image` opens one read-only as an 8-bit RGB picture the way the
captioners expect it: EXIF rotation applied, transparency composited onto white, grayscale,
16-bit and palette images converted. Images are only ever read, never written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kohya_lite.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def check_folder(folder: str | Path, field: str = "folder") -> Path:
    """The folder as a Path, or a UserError when it is empty, missing or not a folder."""
    if folder is None or not str(folder).strip():
        raise UserError("No image folder given.", field=field,
                        fix="Choose the folder that holds the images to caption.")
    path = Path(folder).expanduser()
    if not path.exists():
        raise UserError(f"Image folder '{path}' does not exist.", field=field, file=str(path),
                        fix="Check the path (typos, a drive that is not mounted) or create the folder.")
    if not path.is_dir():
        raise UserError(f"'{path}' is a file, not a folder.", field=field, file=str(path),
                        fix="Give the folder that contains the images, not a single image.")
    return path


def find_images(folder: str | Path, *, recursive: bool = False, required: bool = True) -> list[Path]:
    """Sorted image paths in `folder` (and its subfolders with `recursive`).

    With `required`, a folder without any image is a UserError; otherwise an empty list.
    """
    root = check_folder(folder)
    candidates = root.rglob("*") if recursive else root.iterdir()
    images = sorted(p for p in candidates if is_image_file(p))
    if required and not images:
        where = "or its subfolders " if recursive else ""
        raise UserError(
            f"No images found in '{root}' {where}(looked for {', '.join(IMAGE_EXTENSIONS)}).",
            field="folder", file=str(root),
            fix="Pick the folder that directly holds the images"
            + ("" if recursive else ", or turn on 'recursive' to include subfolders") + ".",
        )
    return images


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float grayscale -> 8-bit 'L' (PIL's own convert clips instead of scaling)."""
    arr = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    else:
        scaled = arr.astype(np.float64) * (255.0 / 65535.0) if arr.max() > 255 else arr
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 'RGB'; transparent pixels become white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open an image read-only as RGB, EXIF-rotated, alpha over white. Raises on unreadable files."""
    with Image.open(path) as img:
        img.load()  # decode now, so a truncated or corrupt file fails here
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
