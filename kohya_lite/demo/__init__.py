"""The built-in demo project (`kohya-lite demo DIR`, `kohya-lite gui --demo`): a LoRA that teaches the
shipped tiny base model a colour it has never drawn.

The base (`base/`, a 64 px SD1 diffusers folder pretrained by `scripts/pretrain_demo_base.py`) draws one
shape in red, green, blue, purple, white or black on a grey background. The demo dataset is 20 orange
shapes captioned "zkz shape"; the "CPU demo (tiny model)" preset trains a LoRA on it in a few minutes on a
CPU, with sample images every epoch that turn orange as it learns.

`ensure_demo(root)` is idempotent: what exists is kept (also the user's edits of demo.json), what is
missing is (re)built. Layout::

    <root>/img/4_zkz shape/        20 PNGs + .txt captions ("zkz shape")
    <root>/model/  <root>/log/     output and logging folders (the LoRA library of the demo)
    <root>/demo.json               the config the page opens and `kohya-lite train` runs
"""

from __future__ import annotations

import random
from pathlib import Path

from kohya_lite.config import TrainingConfig, load_config, save_config
from kohya_lite.errors import UserError

BASE_DIR = Path(__file__).resolve().parent / "base"
DEMO_PRESET = "CPU demo (tiny model)"
TRIGGER = "zkz"
CLASS_TOKEN = "shape"
REPEATS = 4
TRIGGER_FOLDER = f"{REPEATS}_{TRIGGER} {CLASS_TOKEN}"
CAPTION = f"{TRIGGER} {CLASS_TOKEN}"
OUTPUT_NAME = "zkz_demo"
N_IMAGES = 20
IMAGE_SIZE = 64
SEED = 17


def base_model_path() -> Path:
    """The shipped demo base model (a diffusers folder)."""
    if not (BASE_DIR / "model_index.json").is_file():
        raise UserError(f"the demo base model '{BASE_DIR}' is missing", file=str(BASE_DIR),
                        fix="reinstall kohya-lite, or restore kohya_lite/demo/base/ from its sources")
    return BASE_DIR


def write_images(folder: Path) -> None:
    """The demo dataset: N_IMAGES orange shapes (every shape, slightly varied), captioned with the trigger."""
    from kohya_lite.demo import shapes
    from kohya_lite.fileio import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    for i in range(N_IMAGES):
        item = shapes.random_shape_image(rng, shapes.DEMO_DATASET_COLOUR, shapes.SHAPES[i % len(shapes.SHAPES)],
                                         size=IMAGE_SIZE)
        png, txt = folder / f"zkz_{i:02d}.png", folder / f"zkz_{i:02d}.txt"
        if not png.exists():
            with atomic_path(png) as tmp:
                item.image.save(tmp, format="PNG")
        if not txt.exists():
            txt.write_text(CAPTION + "\n", encoding="utf-8")


def demo_config(root: Path, model_path: Path | None = None) -> TrainingConfig:
    """The demo preset with the demo's paths, the shipped base model and a fixed output name."""
    from kohya_lite.paths import preset_path

    preset = preset_path(DEMO_PRESET)
    if not preset.is_file():
        raise UserError(f"the demo preset '{preset}' is missing", file=str(preset),
                        fix="restore presets/ from the kohya-lite sources")
    cfg, _ = load_config(preset, TrainingConfig())
    root = Path(root).resolve()
    return cfg.replace(
        pretrained_model_name_or_path=str(model_path or base_model_path()), model_list="custom", v2=False,
        v_parameterization=False, sdxl=False, train_data_dir=str(root / "img"), reg_data_dir="",
        output_dir=str(root / "model"), logging_dir=str(root / "log"), output_name=OUTPUT_NAME,
    )


def ensure_demo(root: str | Path = "demo") -> tuple[TrainingConfig, Path]:
    """Create what is missing of the demo project under `root`; return its config and the saved config path."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    write_images(root / "img" / TRIGGER_FOLDER)
    for sub in ("model", "log"):
        (root / sub).mkdir(exist_ok=True)
    cfg = demo_config(root)
    path = root / "demo.json"
    if path.is_file():  # keep the user's edits of an earlier demo session
        cfg, _ = load_config(path, cfg)
        if not Path(cfg.pretrained_model_name_or_path).expanduser().exists():  # kohya-lite moved or reinstalled
            cfg = cfg.replace(pretrained_model_name_or_path=str(base_model_path()))
            save_config(cfg, path)
    else:
        save_config(cfg, path)
    return cfg, path


def tab_prompts(cfg: TrainingConfig) -> dict:
    """The Generate and Epoch grid tabs' starting prompts for the demo (they already point at its model, output
    folder and resolution through `ui.tab_defaults`): a prompt that uses the LoRA, at the demo's CFG scale."""
    from kohya_lite.demo.evaluate import CFG

    return {"prompt": f"{CAPTION} <lora:{cfg.output_name}:1>", "grid_prompt": CAPTION, "cfg_scale": CFG}
