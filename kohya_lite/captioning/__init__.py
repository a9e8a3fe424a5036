"""Captioning: BLIP, WD14 and basic captioners, one shared caption writer, manual-editor helpers.

Every captioner takes a folder, an options dataclass (kohya_ss GUI defaults) and an optional
`progress(done, total)` callback, and returns a `CaptionResult`. Existing captions are left alone
unless `overwrite` (or, for WD14, `append_tags`) is on. Models are only looked up locally.
"""

from kohya_lite.captioning.basic import BasicOptions, caption_basic
from kohya_lite.captioning.blip import DEFAULT_BLIP_MODEL, BlipCaptioner, BlipOptions, caption_blip
from kohya_lite.captioning.editor import (CaptionPage, ImageCaption, add_tags, list_images_with_captions,
                                          save_caption, search_replace, tag_frequency)
from kohya_lite.captioning.images import find_images
from kohya_lite.captioning.result import CaptionResult, Progress
from kohya_lite.captioning.wd14 import (DEFAULT_WD14_MODEL, WD14_CAPTION_EXTENSIONS, WD14_MODELS, WD14Options,
                                        WD14Tagger, caption_wd14, format_tag_frequency, preprocess_wd14)
from kohya_lite.captioning.writer import compose_caption, merge_tags
from kohya_lite.media import IMAGE_EXTENSIONS, caption_path, load_rgb

__all__ = [
    "BasicOptions", "BlipCaptioner", "BlipOptions", "CaptionPage", "CaptionResult", "DEFAULT_BLIP_MODEL",
    "DEFAULT_WD14_MODEL", "IMAGE_EXTENSIONS", "ImageCaption", "Progress", "WD14Options", "WD14Tagger",
    "WD14_CAPTION_EXTENSIONS", "WD14_MODELS", "add_tags", "caption_basic", "caption_blip", "caption_path",
    "caption_wd14", "compose_caption", "find_images", "format_tag_frequency", "list_images_with_captions",
    "load_rgb", "merge_tags", "preprocess_wd14", "save_caption", "search_replace", "tag_frequency",
]
