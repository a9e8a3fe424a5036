"""Pre-flight speed on a folder of large images: seconds per 1,000 images for `kohya-lite check`.

    .venv/bin/python benchmarks/bench_check.py [--images 200] [--width 4000] [--height 3000] [--repeats 3] [--compare 20]

Writes `--images` copies of a photo-like image (half JPEG, half PNG, captioned) into a temporary `N_name` folder and a
config pointing at it, then times the real pre-flight (`check.run_check`: config rules, model path, captions,
and every image from its header, without decoding pixels), best of `--repeats`. With `--compare N` it also
times a full pixel decode (`image_problem` below, what check did before) on N of the images, for
scale. The files were just written, so they are read from the page cache: the figures are CPU cost, not disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kohya_lite.check import run_check  # noqa: E402
from kohya_lite.config import TrainingConfig  # noqa: E402
from kohya_lite.media import check_image  # noqa: E402
from timing import best_of  # noqa: E402


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



def make_images(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """One photo-like JPEG and one PNG (smooth gradients with mild noise, which compress like photos), copied
    to `count` captioned files, half of each kind (check reads every file, so copies cost what originals do)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None] * np.linspace(0.5, 1, height, dtype=np.float32)[:, None, None]
    pixels = np.clip(ramp * rng.integers(40, 200, 3) + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    originals = {".jpg": folder / "original.jpg", ".png": folder / "original.png"}
    Image.fromarray(pixels).save(originals[".jpg"], quality=90)
    Image.fromarray(pixels).save(originals[".png"], compress_level=1)
    paths = []
    for i in range(count):
        suffix = ".jpg" if i % 2 == 0 else ".png"
        path = folder / f"img_{i:04d}{suffix}"
        shutil.copyfile(originals[suffix], path)
        path.with_suffix(".txt").write_text("zkz object, photo", encoding="utf-8")
        paths.append(path)
    for original in originals.values():
        original.unlink()
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", type=int, default=20, help="images to fully decode for comparison (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "model").mkdir()
        (root / "model" / "model_index.json").write_text("{}")
        start = time.perf_counter()
        paths = make_images(root / "img" / "5_zkz object", args.images, args.width, args.height)
        made = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        cfg = TrainingConfig(pretrained_model_name_or_path=str(root / "model"), train_data_dir=str(root / "img"),
                             output_dir=str(root / "out"), output_name="bench", optimizer="AdamW")
        result = run_check(cfg)
        assert result.ok and len(result.dataset.train[0].images) == args.images, [p.format() for p in result.problems]

        print(f"{args.images} images {args.width}x{args.height} (half JPEG, half PNG), {size_mb:.0f} MB, "
              f"made in {made:.0f} s; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        seconds = best_of(args.repeats, lambda: run_check(cfg))
        print(f"check (headers only):     {seconds:7.3f} s  = {seconds / args.images * 1000:8.2f} s per 1,000 images")
        for suffix in (".jpg", ".png"):
            some = [p for p in paths if p.suffix == suffix]
            t = best_of(args.repeats, lambda: [check_image(p) for p in some])
            mb = sum(p.stat().st_size for p in some) / len(some) / 1e6
            print(f"  of which {suffix[1:].upper()} ({mb:4.1f} MB each): {t / len(some) * 1000:8.2f} s per 1,000 images")
        if args.compare:
            some = paths[: args.compare]
            full = best_of(1, lambda: [image_problem(p) for p in some])
            print(f"full decode ({len(some)} images): {full:7.3f} s  = {full / len(some) * 1000:8.2f} s per 1,000 images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
