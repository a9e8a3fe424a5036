"""WD14 tagging with onnxruntime (kohya's `finetune/tag_images_by_wd14_tagger.py`, ONNX path).

Preprocessing (`preprocess_wd14`): RGB (alpha over white) -> BGR -> centred white pad to a square
(`pad_left = pad_x // 2`, `pad_top = pad_y // 2`) -> resize to the model's input size (448) with
INTER_AREA when the square is larger, INTER_LANCZOS4 otherwise -> float32 0-255, NHWC. The input
size and name come from the model; a model with a fixed batch dimension sets the batch size (a short
last batch is padded). Providers: CUDA, ROCm, CPU, whichever are available, in that order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from kohya_lite.captioning.model_files import ModelKind, resolve_model_folder
from kohya_lite.captioning.result import CaptionResult, Progress
from kohya_lite.captioning.runner import plan_run, run_batches
from kohya_lite.captioning.wd14_tags import TagRules, TagTable, load_tag_table, parse_tag_replacement
from kohya_lite.captioning.writer import CaptionWriter, normalize_extension
from kohya_lite.errors import UserError
from kohya_lite.media import load_rgb

DEFAULT_WD14_MODEL = "SmilingWolf/wd-v1-4-convnextv2-tagger-v2"
WD14_MODELS = (  # the kohya_ss GUI's list
    "SmilingWolf/wd-v1-4-convnext-tagger-v2",
    "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
    "SmilingWolf/wd-v1-4-vit-tagger-v2",
    "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
    "SmilingWolf/wd-v1-4-moat-tagger-v2",
    "SmilingWolf/wd-swinv2-tagger-v3",
    "SmilingWolf/wd-vit-tagger-v3",
    "SmilingWolf/wd-convnext-tagger-v3",
    "SmilingWolf/wd-eva02-large-tagger-v3",
)
WD14_CAPTION_EXTENSIONS = (".cap", ".caption", ".txt", ".wd14.txt")  # GUI choices
WD14_MODEL = ModelKind(label="WD14 tagger", required=(("model.onnx",), ("selected_tags.csv",)),
                       download_files=("model.onnx", "selected_tags.csv"))
DEFAULT_IMAGE_SIZE = 448
PROVIDER_ORDER = ("CUDAExecutionProvider", "ROCMExecutionProvider", "CPUExecutionProvider")


@dataclass
class WD14Options:
    """kohya_ss GUI defaults (WD14 Captioning tab)."""

    model: str = DEFAULT_WD14_MODEL  # Hugging Face id (cache only) or a local folder
    model_dir: str = ""  # folder with model.onnx + selected_tags.csv (or kohya's <dir>/<owner_name>/)
    caption_extension: str = ".txt"
    batch_size: int = 1
    general_threshold: float = 0.35
    character_threshold: float = 0.35
    undesired_tags: str = ""
    tag_replacement: str = ""
    remove_underscore: bool = True
    character_tag_expand: bool = False
    character_tags_first: bool = False
    always_first_tags: str = ""
    use_rating_tags: bool = False
    use_rating_tags_as_last_tag: bool = False
    caption_separator: str = ", "
    prefix: str = ""
    postfix: str = ""
    append_tags: bool = False
    overwrite: bool = False
    recursive: bool = False
    workers: int = 2  # image-loading threads

    def validate(self) -> None:
        self.caption_extension = normalize_extension(self.caption_extension)
        if int(self.batch_size) < 1:
            raise UserError(f"batch_size must be at least 1 (got {self.batch_size}).", field="batch_size")
        for name in ("general_threshold", "character_threshold"):
            if float(getattr(self, name)) < 0:
                raise UserError(f"{name} must be 0 or more (got {getattr(self, name)}); "
                                "above 1 turns the category off.", field=name, fix="Use 0.35.")
        if not self.caption_separator or not self.caption_separator.strip():
            raise UserError("The caption separator must contain a visible character.", field="caption_separator",
                            fix="Use ', '.")
        if int(self.workers) < 0:
            raise UserError("workers must be 0 or more.", field="workers")
        parse_tag_replacement(self.tag_replacement)  # raises on a malformed pair

    def rules(self, table: TagTable) -> TagRules:
        return TagRules.build(
            table, general_threshold=self.general_threshold, character_threshold=self.character_threshold,
            undesired_tags=self.undesired_tags, tag_replacement=self.tag_replacement,
            remove_underscore=self.remove_underscore, character_tag_expand=self.character_tag_expand,
            character_tags_first=self.character_tags_first, always_first_tags=self.always_first_tags,
            use_rating_tags=self.use_rating_tags, use_rating_tags_as_last_tag=self.use_rating_tags_as_last_tag,
            caption_separator=self.caption_separator,
        )


def preprocess_wd14(image: Image.Image, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """RGB PIL image -> float32 [size, size, 3] BGR 0-255, kohya's padding and resampling."""
    arr = np.asarray(image.convert("RGB"))[:, :, ::-1]  # RGB -> BGR
    side = max(arr.shape[:2])
    pad_x, pad_y = side - arr.shape[1], side - arr.shape[0]
    pad_l, pad_t = pad_x // 2, pad_y // 2
    arr = np.pad(arr, ((pad_t, pad_y - pad_t), (pad_l, pad_x - pad_l), (0, 0)), mode="constant", constant_values=255)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LANCZOS4
    arr = cv2.resize(np.ascontiguousarray(arr), (size, size), interpolation=interpolation)
    return arr.astype(np.float32)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("WD14 tagging needs onnxruntime, which is not installed", field="model",
                        fix="run ./setup.sh (setup.bat on Windows) again; it installs onnxruntime, or "
                            "onnxruntime-gpu where an NVIDIA GPU is present") from None
    return onnxruntime


def pick_providers(available: list[str] | None = None) -> list[str]:
    ort = _onnxruntime()
    available = ort.get_available_providers() if available is None else available
    return [p for p in PROVIDER_ORDER if p in available] or list(available)


class WD14Tagger:
    """A loaded WD14 ONNX model and its tag table; `predict(batch)` -> scores [N, K]."""

    def __init__(self, session, table: TagTable, folder: Path):
        self.session, self.table, self.folder = session, table, folder
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        shape = list(model_input.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        known = len(shape) == 4 and isinstance(shape[1], int) and shape[1] > 0
        self.image_size = shape[1] if known else DEFAULT_IMAGE_SIZE

    @classmethod
    def load(cls, model: str = DEFAULT_WD14_MODEL, model_dir: str | Path | None = None) -> "WD14Tagger":
        ort = _onnxruntime()

        folder = resolve_model_folder(WD14_MODEL, model, model_dir)
        table = load_tag_table(folder / "selected_tags.csv")
        try:
            session = ort.InferenceSession(str(folder / "model.onnx"), providers=pick_providers())
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"Could not load the WD14 model '{folder / 'model.onnx'}': {exc}", field="model",
                            file=str(folder / "model.onnx"),
                            fix="The file looks damaged; download it again.") from None
        tagger = cls(session, table, folder)
        outputs = session.get_outputs()[0].shape
        if len(outputs) == 2 and isinstance(outputs[1], int) and outputs[1] != len(table):
            raise UserError(f"The WD14 model outputs {outputs[1]} scores but selected_tags.csv lists "
                            f"{len(table)} tags.", file=str(folder / "selected_tags.csv"),
                            fix="Use the selected_tags.csv from the same model.")
        return tagger

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def batch_size_for(self, wanted: int) -> int:
        return self.fixed_batch or int(wanted)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if self.fixed_batch and n < self.fixed_batch:  # pad a short last batch
            batch = np.concatenate([batch, np.zeros((self.fixed_batch - n, *batch.shape[1:]), batch.dtype)])
        scores = self.session.run(None, {self.input_name: batch})[0]
        return scores[:n]


def caption_wd14(folder: str | Path, options: WD14Options | None = None, *, progress: Progress | None = None,
                 tagger: WD14Tagger | None = None) -> CaptionResult:
    """Tag every image in `folder`; existing captions kept unless `overwrite` (or merged with `append_tags`).

    `result.tag_counts` counts, per tag, the images it was given to. Pass a loaded `tagger` to reuse it.
    """
    options = options or WD14Options()
    options.validate()
    writer = CaptionWriter(ext=options.caption_extension, overwrite=options.overwrite, append=options.append_tags,
                           prefix=options.prefix, postfix=options.postfix, separator=options.caption_separator)
    plan = plan_run("wd14", folder, writer, recursive=options.recursive)
    if not plan.todo:
        return plan.finish()
    tagger = tagger or WD14Tagger.load(options.model, options.model_dir or None)
    rules = options.rules(tagger.table)
    batch_size = tagger.batch_size_for(options.batch_size)
    if batch_size != int(options.batch_size):
        plan.result.notes.append(f"batch size {options.batch_size} -> {batch_size}: the model has a fixed batch size")
    counts = plan.result.tag_counts

    def prepare(path: Path) -> np.ndarray:
        return preprocess_wd14(load_rgb(path), tagger.image_size)

    def infer(arrays: list[np.ndarray]) -> list[str]:
        captions = []
        for scores in tagger.predict(np.stack(arrays)):
            tags = rules.select(scores)
            counts.update(tags)
            captions.append(options.caption_separator.join(tags))
        return captions

    return run_batches(plan, writer=writer, prepare=prepare, infer=infer, batch_size=batch_size,
                       workers=int(options.workers), progress=progress,
                       empty_reason="no tag scored above the thresholds (nothing to write)")


def format_tag_frequency(counts: Counter, limit: int | None = None) -> str:
    """kohya's report: 'Tag frequencies:' then 'tag: n' lines, most frequent first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if limit is not None:
        items = items[:limit]
    return "\n".join(["Tag frequencies:"] + [f"{tag}: {n}" for tag, n in items])
