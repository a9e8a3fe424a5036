"""`kohya-lite caption blip|wd14|basic FOLDER [options]`: the captioners from the command line.

Flags are the library options in kebab case with kohya_ss GUI defaults. A tqdm bar shows progress;
the run ends with one summary line (plus unreadable images, notes and, for WD14, the tag frequency
report). Problems (missing folder, no images, model not on this computer) exit 2 via UserError.
"""

from __future__ import annotations

import argparse
import sys

from kohya_lite.captioning.result import CaptionResult

_ON_OFF = argparse.BooleanOptionalAction


def _common(p: argparse.ArgumentParser, *, model_default: str | None = None) -> None:
    p.add_argument("folder", help="folder with the images; captions are written beside them")
    p.add_argument("--caption-extension", default=".txt", help="caption file extension (default .txt)")
    p.add_argument("--overwrite", action="store_true", help="replace existing captions (default: keep them)")
    p.add_argument("--recursive", action="store_true", help="include images in subfolders")
    if model_default is not None:
        p.add_argument("--model", "--repo-id", dest="model", default=model_default,
                       help=f"Hugging Face id (local cache only) or a folder (default {model_default})")
        p.add_argument("--model-dir", default="", help="folder holding the model files (wins over --model)")
        p.add_argument("--batch-size", type=int, default=1, help="images per model call (default 1)")
        p.add_argument("--workers", type=int, default=2, help="image-loading threads (default 2)")
        p.add_argument("--prefix", default="", help="text put before each caption, e.g. a trigger word 'lisabp,'")
        p.add_argument("--postfix", default="", help="text put after each caption")


def register(subparsers) -> None:
    from kohya_lite.captioning.blip import DEFAULT_BLIP_MODEL
    from kohya_lite.captioning.wd14 import DEFAULT_WD14_MODEL, WD14_MODELS

    parser = subparsers.add_parser("caption", help="write caption files for a folder of images",
                                   description="Write <image stem><ext> caption files beside each image.")
    kinds = parser.add_subparsers(dest="captioner", metavar="CAPTIONER", required=True)

    blip = kinds.add_parser("blip", help="natural-language captions with BLIP")
    _common(blip, model_default=DEFAULT_BLIP_MODEL)
    blip.add_argument("--beam-search", action=_ON_OFF, default=True,
                      help="beam search (default on); off = nucleus sampling")
    blip.add_argument("--num-beams", type=int, default=1, help="beams for beam search (default 1)")
    blip.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling top-p (default 0.9)")
    blip.add_argument("--max-length", type=int, default=75, help="maximum caption length in tokens (default 75)")
    blip.add_argument("--min-length", type=int, default=5, help="minimum caption length in tokens (default 5)")
    blip.add_argument("--seed", type=int, default=42, help="seed for sampling (default 42)")
    blip.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    blip.set_defaults(func=run_blip)

    wd14 = kinds.add_parser("wd14", help="booru-style tags with a WD14 ONNX tagger",
                            epilog="GUI models: " + ", ".join(WD14_MODELS))
    _common(wd14, model_default=DEFAULT_WD14_MODEL)
    wd14.add_argument("--threshold", type=float, default=0.35, help="default for both thresholds (default 0.35)")
    wd14.add_argument("--general-threshold", type=float, default=None,
                      help="general tags (default: --threshold); >1 disables")
    wd14.add_argument("--character-threshold", type=float, default=None,
                      help="character tags (default: --threshold); >1 disables")
    wd14.add_argument("--undesired-tags", default="", help="tags never written, comma-separated")
    wd14.add_argument("--tag-replacement", default="", help="'src,dst;src2,dst2' (escape with \\, and \\;)")
    wd14.add_argument("--remove-underscore", action=_ON_OFF, default=True,
                      help="'_' -> ' ' in tags longer than 3 chars (default on)")
    wd14.add_argument("--character-tag-expand", action="store_true", help="name_(series) -> name, series")
    wd14.add_argument("--character-tags-first", action="store_true", help="character tags before general tags")
    wd14.add_argument("--always-first-tags", default="", help="tags moved to the front when found, e.g. '1girl,1boy'")
    wd14.add_argument("--use-rating-tags", action="store_true", help="add the rating tag first")
    wd14.add_argument("--use-rating-tags-as-last-tag", action="store_true", help="add the rating tag last")
    wd14.add_argument("--caption-separator", default=", ", help="between tags (default ', ')")
    wd14.add_argument("--append-tags", action="store_true",
                      help="merge new tags into existing captions, no duplicates")
    wd14.add_argument("--frequency-tags", action=_ON_OFF, default=True,
                      help="print the tag frequency report (default on)")
    wd14.set_defaults(func=run_wd14)

    basic = kinds.add_parser("basic", help="the same fixed caption for every image",
                             description="Write a fixed caption. As in kohya_ss, prefix/postfix and find/replace "
                                         "apply only with --overwrite (they then also edit existing captions).")
    _common(basic)
    basic.add_argument("--caption-text", default="", help="the caption to write")
    basic.add_argument("--prefix", default="", help="(with --overwrite) text put before each caption")
    basic.add_argument("--postfix", default="", help="(with --overwrite) text put after each caption")
    basic.add_argument("--find", default="", help="(with --overwrite) text to replace in each caption")
    basic.add_argument("--replace", default="", help="(with --overwrite) replacement text")
    basic.set_defaults(func=run_basic)


class _Bar:
    """progress(done, total) -> a tqdm bar on stderr."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit="img", file=sys.stderr, smoothing=0.0)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(desc: str, fn, folder: str, options) -> CaptionResult:
    bar = _Bar(desc)
    try:
        return fn(folder, options, progress=bar)
    finally:
        bar.close()


def _report(result: CaptionResult) -> int:
    for note in result.notes:
        print(f"note: {note}")
    for path, reason in result.failed:
        print(f"skipped {path}: {reason}")
    print(result.summary())
    return 0


def run_blip(args) -> int:
    from kohya_lite.captioning.blip import BlipOptions, caption_blip

    options = BlipOptions(
        model=args.model, model_dir=args.model_dir, caption_extension=args.caption_extension,
        batch_size=args.batch_size, beam_search=args.beam_search, num_beams=args.num_beams, top_p=args.top_p,
        max_length=args.max_length, min_length=args.min_length, prefix=args.prefix, postfix=args.postfix,
        overwrite=args.overwrite, recursive=args.recursive, seed=args.seed, device=args.device, workers=args.workers,
    )
    return _report(_run("BLIP", caption_blip, args.folder, options))


def run_wd14(args) -> int:
    from kohya_lite.captioning.wd14 import WD14Options, caption_wd14, format_tag_frequency

    options = WD14Options(
        model=args.model, model_dir=args.model_dir, caption_extension=args.caption_extension,
        batch_size=args.batch_size,
        general_threshold=args.threshold if args.general_threshold is None else args.general_threshold,
        character_threshold=args.threshold if args.character_threshold is None else args.character_threshold,
        undesired_tags=args.undesired_tags, tag_replacement=args.tag_replacement,
        remove_underscore=args.remove_underscore, character_tag_expand=args.character_tag_expand,
        character_tags_first=args.character_tags_first, always_first_tags=args.always_first_tags,
        use_rating_tags=args.use_rating_tags, use_rating_tags_as_last_tag=args.use_rating_tags_as_last_tag,
        caption_separator=args.caption_separator, prefix=args.prefix, postfix=args.postfix,
        append_tags=args.append_tags, overwrite=args.overwrite, recursive=args.recursive, workers=args.workers,
    )
    result = _run("WD14", caption_wd14, args.folder, options)
    if args.frequency_tags and result.tag_counts:
        print(format_tag_frequency(result.tag_counts))
    return _report(result)


def run_basic(args) -> int:
    from kohya_lite.captioning.basic import BasicOptions, caption_basic

    options = BasicOptions(
        caption_text=args.caption_text, caption_extension=args.caption_extension, overwrite=args.overwrite,
        prefix=args.prefix, postfix=args.postfix, find_text=args.find, replace_text=args.replace,
        recursive=args.recursive,
    )
    return _report(_run("basic", caption_basic, args.folder, options))
