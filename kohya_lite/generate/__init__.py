"""Generate images with LoRAs: A1111-style `<lora:NAME:WEIGHT>` prompt tags on a loaded base model.

- `tags`: the prompt-tag grammar and request checking (pure);
- `merge`: LoRA files → weight changes, merged and restored exactly;
- `render`: one image for a job, its infotext, writing it;
- `placement`: device/dtype policy and the model kept between clicks.
"""

from kohya_lite.generate.merge import LoraUse, UsedLora, check_family, lora_deltas, merged_loras, read_lora, resolve_loras
from kohya_lite.generate.placement import MODEL_CACHE, ModelCache, inference_placement, place_for_inference
from kohya_lite.generate.render import GenerateResult, check_output_path, generate, render_job, save_image
from kohya_lite.generate.tags import (GenerateRequest, Job, LoraTag, TaggedPrompt, parse_lora_tags, prepare,
                                      random_seed, sampler_name, split_inline_options)
from kohya_lite.prompts import DEFAULT_CFG, DEFAULT_SAMPLER, DEFAULT_STEPS

__all__ = [
    "DEFAULT_CFG", "DEFAULT_SAMPLER", "DEFAULT_STEPS", "GenerateRequest", "GenerateResult", "Job", "LoraTag", "LoraUse",
    "MODEL_CACHE", "ModelCache", "TaggedPrompt", "UsedLora", "check_family", "check_output_path", "generate",
    "inference_placement", "lora_deltas", "merged_loras", "parse_lora_tags", "place_for_inference", "prepare",
    "random_seed", "read_lora", "render_job", "resolve_loras", "sampler_name", "save_image", "split_inline_options",
]
