"""Finding and opening the images of a captioning folder.

`find_images` lists the images a captioner works on (.png .jpg .jpeg .webp .bmp, any case, sorted,
optionally recursive). `load_image` opens one read-only as an 8-bit RGB picture the way the
captioners expect it: EXIF rotation applied, transparency composited onto white, grayscale,
16-bit and palette images converted. Images are only ever read, never written.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from kohya_lite.errors import UserError
from kohya_lite.media import IMAGE_EXTENSIONS, load_rgb


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


def load_image(path: str | Path) -> Image.Image:
    """Open an image read-only as RGB, EXIF-rotated, alpha over white. Raises on unreadable files."""
    return load_rgb(path)
