"""Sample images during training, without disturbing it.

Prompts come from `sample_prompts`: the text itself (written to `<output_dir>/sample/prompt.txt` once and
re-read at each sampling, so edits during a run take effect) or the path of an existing prompt file.
RNG state, train/eval mode and device placement are saved and restored around every sampling.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from kohya_lite.config import TrainingConfig
from kohya_lite.engine.checkpoints import capture_rng, restore_rng
from kohya_lite.fileio import atomic_path
from kohya_lite.engine.events import EventWriter
from kohya_lite.prompts import SamplePrompt, make_scheduler, parse_prompts, sample_filename
from kohya_lite.engine.text import encode_sd, encode_sdxl
from kohya_lite.errors import UserError
from kohya_lite.textfile import read_text


def prompt_source(cfg: TrainingConfig, out_dir: Path) -> Path:
    text = cfg.sample_prompts.strip()
    if "\n" not in text and Path(text).expanduser().is_file():
        return Path(text).expanduser()
    path = out_dir / "sample" / "prompt.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cfg.sample_prompts.rstrip("\n") + "\n", encoding="utf-8")
    return path


@torch.no_grad()
def encode_prompt_pair(model, prompt: str, negative: str, *, clip_skip: int = 1, max_token_length: int = 75) -> dict:
    """Pipeline kwargs (prompt_embeds & co.) computed the way training conditions the UNet."""
    tes, toks = model.text_encoders, model.tokenizers
    if model.family == "sdxl":
        emb, pooled = encode_sdxl(tes[0], tes[1], toks[0], toks[1], [prompt, negative], max_token_length=max_token_length)
        return {"prompt_embeds": emb[:1], "negative_prompt_embeds": emb[1:], "pooled_prompt_embeds": pooled[:1],
                "negative_pooled_prompt_embeds": pooled[1:]}
    emb = encode_sd(tes[0], toks[0], [prompt, negative], clip_skip=clip_skip, max_token_length=max_token_length)
    return {"prompt_embeds": emb[:1], "negative_prompt_embeds": emb[1:]}


def render(model, sp: SamplePrompt, *, sampler: str, generator: torch.Generator, clip_skip: int = 1,
           max_token_length: int = 75, device: torch.device | str = "cpu"):
    """One PIL image for a parsed prompt with the model as it is now (LoRA applied or not)."""
    pipe = model.make_pipeline(make_scheduler(sp.sampler or sampler, v_prediction=model.v_prediction))
    pipe.set_progress_bar_config(disable=True)
    kwargs = encode_prompt_pair(model, sp.prompt, sp.negative, clip_skip=clip_skip, max_token_length=max_token_length)
    dtype = next(model.unet.parameters()).dtype
    kwargs = {k: v.to(device, dtype) for k, v in kwargs.items()}
    latents = pipe(width=sp.width, height=sp.height, num_inference_steps=sp.steps, guidance_scale=sp.cfg_scale,
                   generator=generator, output_type="latent", **kwargs).images
    return decode_latents(model.vae, latents, pipe.image_processor)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, image_processor):
    """Latents → a PIL image, decoded in the VAE's own dtype and device (SDXL's fp32 'no half' VAE next to a
    half-precision UNet would otherwise fail on mixed dtypes)."""
    param = next(vae.parameters())
    image = vae.decode(latents.to(param.device, param.dtype) / vae.config.scaling_factor).sample
    return image_processor.postprocess(image.float(), output_type="pil")[0]


def samples_due(cfg: TrainingConfig, *, step: int, epoch_end: int | None = None) -> bool:
    """sd-scripts' sampling schedule: step 0 only with sample_at_first; at an epoch's end every
    sample_every_n_epochs; after a step every sample_every_n_steps unless an epoch interval is set (epochs win)."""
    if not cfg.sample_prompts.strip():
        return False
    if epoch_end is not None:
        return cfg.sample_every_n_epochs > 0 and epoch_end % cfg.sample_every_n_epochs == 0
    if step == 0:
        return cfg.sample_at_first
    return cfg.sample_every_n_epochs <= 0 < cfg.sample_every_n_steps and step % cfg.sample_every_n_steps == 0


class TrainingSampler:
    def __init__(self, cfg: TrainingConfig, model, network, out_dir: Path, events: EventWriter, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.cfg, self.model, self.network, self.events = cfg, model, network, events
        self.device, self.dtype = device, dtype
        self.out_dir = out_dir / "sample"
        self.source = prompt_source(cfg, out_dir)
        parse_prompts(read_text(self.source, what="sample prompt file", field="sample_prompts"))  # fail early on a bad prompt line

    def due(self, *, step: int, epoch_end: int | None = None) -> bool:
        return samples_due(self.cfg, step=step, epoch_end=epoch_end)

    def sample(self, *, step: int, epoch: int) -> list[Path]:
        try:
            prompts = parse_prompts(read_text(self.source, what="sample prompt file", field="sample_prompts"))
        except (UserError, OSError) as exc:
            self.events.emit("warning", message=f"samples skipped: {exc}", field="sample_prompts")
            return []
        state = capture_rng()
        modes = [(m, m.training) for m in (self.model.unet, *self.model.text_encoders, self.network)]
        # the VAE (after latent caching) and the text encoders (after caching their outputs) may wait on the CPU
        parked = [(m, next(m.parameters()).device) for m in (self.model.vae, *self.model.text_encoders)]
        written: list[Path] = []
        try:
            for m, _ in modes:
                m.eval()
            for m, _ in parked:
                m.to(self.device)
            stamp = time.strftime("%Y%m%d%H%M%S")
            for i, sp in enumerate(prompts):
                seed = sp.seed if sp.seed is not None else random.randint(0, 2**31 - 1)
                gen = torch.Generator(device="cpu").manual_seed(seed)
                image = render(self.model, sp, sampler=self.cfg.sample_sampler, generator=gen, clip_skip=self.cfg.clip_skip,
                               max_token_length=self.cfg.max_token_length, device=self.device)
                name = sample_filename(self.cfg.output_name, step=step,
                                       epoch=epoch if self.cfg.sample_every_n_epochs > 0 and step else None,
                                       index=i, timestamp=stamp, seed=sp.seed)
                path = self.out_dir / name
                with atomic_path(path) as tmp:
                    image.save(tmp, format="PNG")
                written.append(path)
                self.events.emit("sample", path=path, prompt=sp.prompt, step=step, epoch=epoch, index=i, seed=seed)
        finally:
            for m, device in parked:
                m.to(device)
            for m, was_training in modes:
                m.train(was_training)
            restore_rng(state)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return written

    def close(self) -> None:
        pass
