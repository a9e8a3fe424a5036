"""`kohya-lite generate` and `kohya-lite grid`: images with LoRAs from the command line.

    kohya-lite generate --model PATH [--lora-dir DIR] "prompt <lora:x:0.8>" [--negative …] [--steps 20]
        [--cfg 7] [--seed N] [--width W] [--height H] [--sampler euler_a] --out FILE.png
    kohya-lite grid OUTPUT_DIR --model PATH --prompt "…" [--name NAME] [--weights 0,0.5,0.8,1,-1]
        [--seed N] [--steps 20] --out grid.png

Both live here (one CLI module, as `cli.COMMAND_MODULES` lists it); the work is in `kohya_lite.generate`
and `kohya_lite.grid`.
"""

from __future__ import annotations

import json

from kohya_lite.library import DEFAULT_LORA_DIR


def _model_args(parser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="base model: a diffusers folder, a .safetensors/.ckpt file or a cached Hub id")
    parser.add_argument("--v2", action="store_true", help="SD2 single file that cannot be detected")
    parser.add_argument("--v-parameterization", action="store_true", help="v-prediction model (SD2 768-v)")
    parser.add_argument("--sdxl", action="store_true", help="SDXL single file that cannot be detected")
    parser.add_argument("--device", default="auto", help="auto (the GPU in half precision when there is one), cpu, "
                        "cuda or cuda:N")
    parser.add_argument("--lora-dir", default=str(DEFAULT_LORA_DIR), metavar="DIR",
                        help=f"LoRA library folder for <lora:NAME:WEIGHT> tags (default {DEFAULT_LORA_DIR})")


def _render_args(parser, *, steps: int) -> None:
    from kohya_lite.prompts import SAMPLERS
    from kohya_lite.generate import DEFAULT_CFG, DEFAULT_SAMPLER

    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--steps", type=int, default=steps, help=f"sampling steps (default {steps})")
    parser.add_argument("--cfg", type=float, default=DEFAULT_CFG, help=f"CFG scale (default {DEFAULT_CFG:g})")
    parser.add_argument("--seed", type=int, default=-1, help="seed (default -1: random, printed)")
    parser.add_argument("--width", type=int, default=None, help="width in pixels (default: the model's size)")
    parser.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's size)")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"one of {', '.join(SAMPLERS)} (default "
                                                                     f"{DEFAULT_SAMPLER})")
    parser.add_argument("--clip-skip", type=int, default=1, help="CLIP skip (default 1)")
    parser.add_argument("--out", required=True, metavar="FILE", help="image to write (.png keeps the settings)")


def register(subparsers) -> None:
    gen = subparsers.add_parser(
        "generate", help="generate an image with <lora:NAME:WEIGHT> tags (A1111 syntax)",
        description="Generate one image. LoRAs are applied with A1111 tags in the prompt: <lora:NAME> "
                    "(weight 1), <lora:NAME:0.8>, <lora:NAME:TE:UNET>; NAME is a file in the LoRA folder. kohya "
                    "options after the prompt (--n, --s, --d, --l, --w, --h, --ss) work too.")
    gen.add_argument("prompt", help="the prompt, with any number of <lora:NAME:WEIGHT> tags")
    _model_args(gen)
    _render_args(gen, steps=20)
    gen.set_defaults(func=run_generate)

    grid = subparsers.add_parser(
        "grid", help="render a training run's epoch checkpoints × LoRA weights into one grid image",
        description="Find name-000001.safetensors … name.safetensors in OUTPUT_DIR and render one seeded "
                    "prompt for every checkpoint (rows) at every weight (columns).")
    grid.add_argument("output_dir", metavar="OUTPUT_DIR", help="the training output folder")
    grid.add_argument("--prompt", required=True, help="the prompt (LoRA tags in it apply to every cell)")
    grid.add_argument("--name", default=None, help="output name, when the folder holds several trainings")
    grid.add_argument("--weights", default="0,0.5,0.8,1", help="comma-separated weights, negative allowed (default 0,0.5,0.8,1; write "
                           "--weights=-1,0,1 when the list starts with a minus)")
    grid.add_argument("--layout", default=None, metavar="FILE.json", help="also write the cell layout as JSON")
    _model_args(grid)
    _render_args(grid, steps=20)
    grid.set_defaults(func=run_grid)


def _request(args, prompt: str):
    from kohya_lite.generate import GenerateRequest

    return GenerateRequest(prompt=prompt, negative=args.negative, steps=args.steps, cfg_scale=args.cfg,
                           seed=args.seed, width=args.width, height=args.height, sampler=args.sampler,
                           clip_skip=args.clip_skip)


def _load(args):
    from kohya_lite.generate import inference_placement, place_for_inference
    from kohya_lite.models.load import load_model

    device, dtype = inference_placement(args.device)  # a bad --device fails before the (slow) model load
    model = load_model(args.model, v2=args.v2, v_parameterization=args.v_parameterization, sdxl=args.sdxl)
    return place_for_inference(model, device, dtype)


def run_generate(args) -> int:
    from kohya_lite.generate import check_output_path, generate, prepare, save_image

    out = check_output_path(args.out)
    request = _request(args, args.prompt)
    prepare(request)  # fail on a bad prompt before the (slow) model load
    result = generate(_load(args), request, lora_dir=args.lora_dir)
    save_image(result.image, out, parameters=result.infotext())
    for w in result.warnings:
        print(f"warning: {w}")
    loras = "; ".join(f"{u.name} ×{u.weight_text()} ({u.path})" for u in result.loras) or "none"
    print(f"wrote {out} ({result.width}x{result.height}, seed {result.seed}); LoRAs: {loras}")
    return 0


def run_grid(args) -> int:
    from kohya_lite.generate import check_output_path, prepare, save_image
    from kohya_lite.grid import find_checkpoints, parse_weights, render_grid

    out = check_output_path(args.out)
    request = _request(args, args.prompt)
    prepare(request)
    parse_weights(args.weights)
    checkpoints = find_checkpoints(args.output_dir, args.name)
    print(f"{len(checkpoints)} checkpoints: {', '.join(c.path.name for c in checkpoints)}")
    result = render_grid(_load(args), args.output_dir, request, name=args.name, weights=args.weights,
                         lora_dir=args.lora_dir,
                         progress=lambda done, total, what: print(f"  [{done}/{total}] {what}", flush=True))
    save_image(result.image, out, parameters=result.infotext())
    if args.layout:
        from kohya_lite.fileio import write_bytes_atomic

        write_bytes_atomic(args.layout, json.dumps(result.layout.to_dict(), indent=2).encode())
    w, h = result.layout.size
    print(f"wrote {out} ({len(result.layout.row_labels)} rows × {len(result.layout.col_labels)} columns, "
          f"{w}x{h}, seed {result.seed})")
    return 0
