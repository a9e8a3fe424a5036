"""The images of a captioning folder: `find_images` lists them (sorted, optionally recursive) with a plain
error for a missing or empty folder. Opening them is `kohya_lite.media.load_rgb`, as for training."""

from __future__ import annotations

from pathlib import Path

from kohya_lite.errors import UserError
from kohya_lite.media import IMAGE_EXTENSIONS, list_images


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
    images = list_images(root, recursive=recursive)
    if required and not images:
        where = "or its subfolders " if recursive else ""
        raise UserError(
            f"No images found in '{root}' {where}(looked for {', '.join(IMAGE_EXTENSIONS)}).",
            field="folder", file=str(root),
            fix="Pick the folder that directly holds the images"
            + ("" if recursive else ", or turn on 'recursive' to include subfolders") + ".",
        )
    return images
