"""The built-in demo project (`kohya-lite gui --demo`): a tiny SD1 model, six generated captioned images and
the "CPU demo (tiny model)" preset pointing at them, so Train model works at once on a CPU.

`ensure_demo(root)` is idempotent: what exists is kept, what is missing is (re)built. Layout::

    demo/tiny-sd1/                 the tiny model (built once by kohya_lite.models.tiny)
    demo/img/5_zkz object/         6 PNGs + .txt captions
    demo/model/  demo/log/         output and logging folders
    demo/demo.json                 the config the page opens
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageDraw

from kohya_lite.config import TrainingConfig, load_config, save_config
from kohya_lite.errors import UserError

DEMO_PRESET = "CPU demo (tiny model)"
TRIGGER_FOLDER = "5_zkz object"
N_IMAGES = 6
IMAGE_SIZE = 64
_COLORS = [((200, 40, 40), "red"), ((40, 160, 60), "green"), ((40, 70, 200), "blue"),
           ((220, 180, 30), "yellow"), ((150, 60, 180), "purple"), ((30, 170, 170), "teal")]


def _ensure_model(root: Path) -> Path:
    out = root / "tiny-sd1"
    if out.is_dir() and any(out.iterdir()):
        return out
    from kohya_lite.models.tiny import build_tiny_model  # heavy (torch, diffusers): only when building

    tmp = root / ".tiny-sd1.building"
    shutil.rmtree(tmp, ignore_errors=True)  # our own half-built folder from an interrupted run
    built = build_tiny_model("sd1", tmp)
    built_path = Path(built) if isinstance(built, (str, Path)) else tmp
    if built_path != tmp:  # the builder chose its own location: use that
        return built_path
    tmp.rename(out)
    return out


def _ensure_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (rgb, name) in enumerate(_COLORS[:N_IMAGES]):
        png, txt = folder / f"zkz_{i:02d}.png", folder / f"zkz_{i:02d}.txt"
        if not png.exists():
            im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (235, 230, 220) if i % 2 else (60, 60, 70))
            draw = ImageDraw.Draw(im)
            m = 8 + 3 * i
            shape = (m, m, IMAGE_SIZE - m // 2, IMAGE_SIZE - m // 2)
            (draw.ellipse if i % 3 else draw.rectangle)(shape, fill=rgb)
            im.save(png)
        if not txt.exists():
            txt.write_text(f"zkz object, a {name} {'disc' if i % 3 else 'block'}\n", encoding="utf-8")


def demo_config(root: Path, model_path: Path) -> TrainingConfig:
    """The demo preset with the demo's paths, sample images every epoch and a fixed output name."""
    from kohya_lite.ui.files import preset_path

    preset = preset_path(DEMO_PRESET)
    if not preset.is_file():
        raise UserError(f"the demo preset '{preset}' is missing", file=str(preset),
                        fix="restore presets/ from the kohya-lite sources")
    cfg, _ = load_config(preset, TrainingConfig())
    return cfg.replace(
        pretrained_model_name_or_path=str(model_path), model_list="custom", v2=False, v_parameterization=False,
        sdxl=False, train_data_dir=str(root / "img"), reg_data_dir="", output_dir=str(root / "model"),
        logging_dir=str(root / "log"), output_name="zkz_demo", sample_every_n_epochs=1, sample_every_n_steps=0,
        sample_sampler="euler_a", sample_prompts="zkz object --w 64 --h 64 --s 8 --d 1",
    )


def ensure_demo(root: str | Path = "demo") -> tuple[TrainingConfig, Path]:
    """Create what is missing of the demo project under `root`; return its config and the saved config path."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    model = _ensure_model(root)
    _ensure_images(root / "img" / TRIGGER_FOLDER)
    for sub in ("model", "log"):
        (root / sub).mkdir(exist_ok=True)
    cfg = demo_config(root, model)
    path = root / "demo.json"
    if path.is_file():  # keep the user's edits of an earlier demo session
        cfg, _ = load_config(path, cfg)
    else:
        save_config(cfg, path)
    return cfg, path
