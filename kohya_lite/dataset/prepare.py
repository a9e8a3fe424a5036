"""Dataset preparation (kohya_ss "Dreambooth/LoRA folder preparation"): build the training layout by COPYING.

`prepare_dataset` creates, under a destination folder::

    <dest>/img/<repeats>_<instance> <class>/   copies of the training images (+ their caption files)
    <dest>/reg/<reg_repeats>_<class>/          copies of the regularization images (optional)
    <dest>/model/                              output folder
    <dest>/log/                                logging folder

The user's files are only ever read: nothing is moved, deleted or overwritten. All problems (missing
folders, overlapping source and destination, a different file already at a target name) are found
before the first file is copied. Repeats default to `suggest_repeats(number of images)`.
"""

from __future__ import annotations

import filecmp
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kohya_lite.dataset.folders import list_images, parse_folder_name, suggest_repeats
from kohya_lite.errors import UserError

# Files copied along with an image when they sit beside it with the same stem.
CAPTION_EXTENSIONS = (".txt", ".caption", ".cap")
_BAD_NAME_CHARS = set('/\\:*?"<>|')


@dataclass
class PreparedDataset:
    destination: Path
    train_data_dir: Path  # <dest>/img
    reg_data_dir: Path | None  # <dest>/reg, None without reg images
    output_dir: Path  # <dest>/model
    logging_dir: Path  # <dest>/log
    image_folder: Path  # <dest>/img/<repeats>_<instance> <class>
    reg_folder: Path | None
    repeats: int
    reg_repeats: int
    images_copied: int = 0
    captions_copied: int = 0
    reg_images_copied: int = 0
    already_present: int = 0  # identical files left from an earlier run, not copied again
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"Copied {self.images_copied} images and {self.captions_copied} caption files to '{self.image_folder}'."]
        if self.reg_folder:
            lines.append(f"Copied {self.reg_images_copied} regularization images to '{self.reg_folder}'.")
        if self.already_present:
            lines.append(f"{self.already_present} identical files were already there and were left as they are.")
        lines += self.notes
        return "\n".join(lines)


def _clean_words(text: str, field_name: str, what: str) -> str:
    words = " ".join((text or "").split())
    bad = sorted(c for c in set(words) if c in _BAD_NAME_CHARS)
    if bad:
        raise UserError(f"the {what} '{words}' contains {' '.join(bad)}, which cannot be part of a folder name",
                        field=field_name, fix="use plain words, e.g. 'zkz' for the trigger and 'woman' for the class")
    return words


def _folder(path: str | Path | None, field_name: str, what: str, *, must_exist: bool) -> Path | None:
    if path is None or not str(path).strip():
        return None
    p = Path(str(path).strip()).expanduser()
    if must_exist:
        if not p.exists():
            raise UserError(f"{what} '{p}' does not exist", field=field_name, file=str(p), fix="check the path")
        if not p.is_dir():
            raise UserError(f"{what} '{p}' is a file, not a folder", field=field_name, file=str(p),
                            fix="give the folder that holds the images")
    elif p.exists() and not p.is_dir():
        raise UserError(f"{what} '{p}' is a file, not a folder", field=field_name, file=str(p),
                        fix="choose a new or existing folder")
    return p.resolve()


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _sidecars(image: Path) -> list[Path]:
    return [c for ext in CAPTION_EXTENSIONS if (c := image.with_name(image.stem + ext)).is_file()]


def _plan_copies(sources: list[Path], target_dir: Path) -> tuple[list[tuple[Path, Path]], int]:
    """(source, target) pairs still to copy, and how many identical copies exist already.

    A *different* file at a target name is an error: we never overwrite."""
    todo: list[tuple[Path, Path]] = []
    same = 0
    for src in sources:
        dst = target_dir / src.name
        if dst.exists():
            if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
                same += 1
                continue
            raise UserError(f"'{dst}' already exists and differs from '{src}'", field="destination", file=str(dst),
                            fix="choose an empty destination folder; kohya-lite never overwrites files")
        todo.append((src, dst))
    return todo, same


def prepare_dataset(
    *,
    instance_prompt: str,
    class_prompt: str,
    images_dir: str | Path,
    destination: str | Path,
    repeats: int | None = None,
    reg_images_dir: str | Path | None = None,
    reg_repeats: int = 1,
) -> PreparedDataset:
    """Copy the images into kohya's folder layout under `destination` and return where everything went.

    `repeats` None or 0 → `suggest_repeats(len(images))`. Raises UserError (field = the argument name) before
    touching any file when something is wrong."""
    instance = _clean_words(instance_prompt, "instance_prompt", "instance prompt")
    klass = _clean_words(class_prompt, "class_prompt", "class prompt")
    if not instance:
        raise UserError("no instance prompt (trigger word) given", field="instance_prompt",
                        fix="type a rare word that will trigger your subject, e.g. 'zkz'")
    src = _folder(images_dir, "images_dir", "training images folder", must_exist=True)
    if src is None:
        raise UserError("no training images folder given", field="images_dir", fix="choose the folder with your images")
    dest = _folder(destination, "destination", "destination folder", must_exist=False)
    if dest is None:
        raise UserError("no destination folder given", field="destination",
                        fix="choose a new folder for the project, e.g. next to your images")
    reg_src = _folder(reg_images_dir, "reg_images_dir", "regularization images folder", must_exist=True)

    for what, folder, field_name in (("training images", src, "images_dir"), ("regularization images", reg_src, "reg_images_dir")):
        if folder is not None and _overlap(folder, dest):
            raise UserError(f"the destination '{dest}' and the {what} folder '{folder}' overlap", field="destination",
                            file=str(dest), fix="choose a destination outside the image folder (and not one of its parents)")

    images = list_images(src)
    if not images:
        raise UserError(f"no images in '{src}' (looked for .png .jpg .jpeg .webp .bmp)", field="images_dir",
                        file=str(src), fix="choose the folder that holds the images themselves")
    repeats = int(repeats or 0) or suggest_repeats(len(images))
    if repeats < 1:
        raise UserError(f"repeats must be at least 1, got {repeats}", field="repeats", fix="use the suggested value")
    reg_images: list[Path] = []
    if reg_src is not None:
        if not klass:
            raise UserError("regularization images need a class prompt", field="class_prompt",
                            fix="type the class of your subject, e.g. 'woman' or 'dog'")
        reg_images = list_images(reg_src)
        if not reg_images:
            raise UserError(f"no images in '{reg_src}'", field="reg_images_dir", file=str(reg_src),
                            fix="choose a folder of class images, or clear the field")
        if int(reg_repeats) < 1:
            raise UserError(f"regularization repeats must be at least 1, got {reg_repeats}", field="reg_repeats", fix="use 1")

    img_root, reg_root = dest / "img", dest / "reg"
    image_folder = img_root / f"{repeats}_{instance}{' ' + klass if klass else ''}"
    reg_folder = reg_root / f"{int(reg_repeats)}_{klass}" if reg_images else None

    # find every problem before copying anything
    train_files = list(dict.fromkeys(f for im in images for f in (im, *_sidecars(im))))
    train_todo, same = _plan_copies(train_files, image_folder)
    reg_todo: list[tuple[Path, Path]] = []
    if reg_folder is not None:
        reg_todo, reg_same = _plan_copies(reg_images, reg_folder)
        same += reg_same

    result = PreparedDataset(
        destination=dest, train_data_dir=img_root, reg_data_dir=reg_root if reg_folder else None,
        output_dir=dest / "model", logging_dir=dest / "log", image_folder=image_folder, reg_folder=reg_folder,
        repeats=repeats, reg_repeats=int(reg_repeats), already_present=same,
    )
    try:
        for folder in (image_folder, result.output_dir, result.logging_dir, *([reg_folder] if reg_folder else [])):
            folder.mkdir(parents=True, exist_ok=True)
        for s, d in train_todo:
            shutil.copy2(s, d)
            if d.suffix.lower() in CAPTION_EXTENSIONS:
                result.captions_copied += 1
            else:
                result.images_copied += 1
        for s, d in reg_todo:
            shutil.copy2(s, d)
            result.reg_images_copied += 1
    except OSError as exc:
        raise UserError(f"cannot write into '{dest}': {exc.strerror or exc}", field="destination",
                        file=str(getattr(exc, "filename", None) or dest),
                        fix="choose a folder you can write to, on a disk with free space (your images are untouched)") from None

    others = [p.name for p in img_root.iterdir() if p.is_dir() and p != image_folder and parse_folder_name(p.name)]
    if others:
        result.notes.append(f"'{img_root}' also holds {', '.join(sorted(others))} from before; they will be trained too.")
    uncaptioned = sum(1 for im in images if not _sidecars(im))
    if uncaptioned:
        result.notes.append(f"{uncaptioned} of {len(images)} images have no caption file; "
                            f"the folder name '{instance}{' ' + klass if klass else ''}' is used for them.")
    return result
