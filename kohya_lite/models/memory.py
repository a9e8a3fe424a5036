"""How much memory a training run needs, before it starts: what `check` prints and the page shows.

Pure arithmetic (no torch): parameter counts come from the model files' safetensors headers (the shipped
full-size counts for .ckpt files), the rest from the config.

    weights       UNet + text encoders + VAE in the weight dtype (the SDXL 'no half' VAE in fp32); on a GPU
                  without the VAE once latents are cached and without frozen text encoders once their outputs
                  are cached (both wait on the CPU)
    network       LoRA parameters × (weight + gradient + optimizer state) bytes
    activations   what the UNet keeps for backward: batch × latent pixels × a per-family constant × bytes,
                  less with gradient checkpointing; plus the VAE encoder's peak when latents are not cached
    caches        cached latents (and text-encoder outputs)
    runtime       the Python process (CPU) or the CUDA context (GPU)

Two phases before training can peak above it, and the estimate is the largest of the three:
    loading the model   on a CPU, while a model file is converted to the weight dtype its pages are mapped into
                        the process too (the UNet's file next to the UNet for a diffusers folder, the whole file
                        for a single checkpoint)
    caching latents     the VAE encoder's transient for one VAE batch (`config.vae_batch_of`) in the
                        VAE's dtype (fp32 for SDXL's 'no half' VAE), next to the weights

The per-family activation constants were measured on the full-size architectures (benchmarks/bench_full.py
prints the estimate next to the measured peak); they are calibrated for the CPU and scaled for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GB = 1024**3

# full-size parameter counts (the published architectures), used when a file's header cannot be read
FULL_SIZE_PARAMS = {
    "sd1": {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863},
    "sd2": {"unet": 865_910_724, "text_encoder": 340_387_840, "vae": 83_653_863},
    "sdxl": {"unet": 2_567_463_684, "text_encoder": 817_720_320, "vae": 83_653_863},
}
# LoRA parameters per unit of rank on the full-size architectures (sd-scripts' target modules: Σ in+out)
LORA_PER_RANK = {
    "sd1": {"unet": 423_936, "text_encoder": 165_888},
    "sd2": {"unet": 432_128, "text_encoder": 423_936},
    "sdxl": {"unet": 2_659_840, "text_encoder": 903_168},
}
# floats the UNet keeps for backward per latent pixel and sample (fp32 on a CPU), and the share left with
# gradient checkpointing; the VAE encoder's transient peak per image pixel
ACTIVATIONS_PER_LATENT_PIXEL = {"sd1": 230_000, "sd2": 260_000, "sdxl": 330_000}
CHECKPOINTED_SHARE = {"sd1": 0.5, "sd2": 0.5, "sdxl": 0.25}
VAE_ENCODE_PER_PIXEL = 1_500  # floats
RUNTIME_BYTES = {"cpu": 0.45 * GB, "cuda": 0.6 * GB}
DTYPE_BYTES = {"no": 4, "fp16": 2, "bf16": 2}


@dataclass
class MemoryEstimate:
    device: str
    parts: dict[str, float] = field(default_factory=dict)  # name → bytes, while training
    peaks: dict[str, float] = field(default_factory=dict)  # phase before training ('loading the model', …) → bytes

    @property
    def training(self) -> float:
        return sum(self.parts.values())

    @property
    def total(self) -> float:
        return max([self.training, *self.peaks.values()])

    @property
    def total_gb(self) -> float:
        return self.total / GB

    def summary(self) -> str:
        where = "GPU memory" if self.device == "cuda" else "RAM"
        parts = ", ".join(f"{k} {v / GB:.1f}" for k, v in self.parts.items() if v >= 0.05 * GB)
        phase, peak = max(self.peaks.items(), key=lambda kv: kv[1], default=("", 0.0))
        if round(peak / GB, 1) > round(self.training / GB, 1):  # a phase worth naming at the shown precision
            return (f"about {self.total_gb:.1f} GB of {where} while {phase}, "
                    f"{self.training / GB:.1f} GB while training ({parts} GB)")
        return f"about {self.total_gb:.1f} GB of {where} ({parts} GB)"


def model_params(path: str | Path, family: str) -> dict[str, int]:
    """Parameters of the UNet, the text encoder(s) and the VAE, from safetensors headers (a diffusers folder's
    components or a single file's key prefixes); the full-size counts when the files cannot be read."""
    from kohya_lite.models.safetensors_file import DamagedFile, read_header

    p = Path(str(path)).expanduser()
    counts = {"unet": 0, "text_encoder": 0, "vae": 0}
    try:
        if p.is_dir():
            for comp, key in (("unet", "unet"), ("text_encoder", "text_encoder"), ("text_encoder_2", "text_encoder"),
                              ("vae", "vae")):
                for f in sorted((p / comp).glob("*.safetensors")):
                    counts[key] += _header_params(read_header(f))
        elif p.suffix.lower() == ".safetensors":
            for name, n in _header_entries(read_header(p)):
                if name.startswith("model.diffusion_model."):
                    counts["unet"] += n
                elif name.startswith("first_stage_model."):
                    counts["vae"] += n
                elif name.startswith(("cond_stage_model.", "conditioner.")):
                    counts["text_encoder"] += n
    except (OSError, DamagedFile):
        pass
    if not counts["unet"]:
        return dict(FULL_SIZE_PARAMS[family])
    return counts


def model_file_bytes(path: str | Path) -> tuple[float, float]:
    """(bytes of the largest UNet file a diffusers folder loads, bytes of the largest other component file);
    (0, 0) when nothing can be read. A single checkpoint: see `estimate_memory`."""
    p = Path(str(path)).expanduser()
    try:
        if p.is_dir():
            def largest(sub: str) -> float:
                files = sorted((p / sub).glob("*.safetensors"))
                plain = [f for f in files if ".fp16." not in f.name]  # the loader prefers these over the fp16 variant
                return max((f.stat().st_size for f in plain or files), default=0)

            return float(largest("unet")), float(max(largest(s) for s in ("text_encoder", "text_encoder_2", "vae")))
    except OSError:
        pass
    return 0.0, 0.0


def _header_entries(header: dict):
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for d in info.get("shape", []):
                n *= int(d)
            yield name, n


def _header_params(header: dict) -> int:
    return sum(n for _, n in _header_entries(header))


def estimate_memory(cfg, plan=None, *, device: str = "cpu", params: dict[str, int] | None = None,
                    num_images: int | None = None) -> MemoryEstimate:
    """The peak memory of training `cfg` (a TrainingConfig) on `device` ('cpu' or 'cuda')."""
    from kohya_lite.config import latents_cached, parse_resolution, te_lr_of, unet_lr_of, vae_batch_of
    from kohya_lite.dataset.captions import text_outputs_cached

    family = cfg.family
    params = params or model_params(cfg.pretrained_model_name_or_path, family)
    full = FULL_SIZE_PARAMS[family]
    scale = params["unet"] / full["unet"]  # a smaller (or tiny) model: scale the per-architecture constants
    precision = cfg.mixed_precision if device == "cuda" else ("bf16" if cfg.mixed_precision != "no" else "no")
    wbytes = DTYPE_BYTES[precision]
    vae_bytes = 4 if family == "sdxl" and cfg.sdxl_no_half_vae else wbytes
    all_weights = (params["unet"] + params["text_encoder"]) * wbytes + params["vae"] * vae_bytes
    cached = latents_cached(cfg)
    weights = all_weights
    if device == "cuda":  # what leaves the GPU once its outputs are cached (the engine's setup)
        if cached:
            weights -= params["vae"] * vae_bytes
        if text_outputs_cached(cfg):
            weights -= params["text_encoder"] * wbytes
    parts: dict[str, float] = {"weights": weights}
    rank = max(1, cfg.network_dim)
    lora = 0.0
    if unet_lr_of(cfg) > 0:
        lora += LORA_PER_RANK[family]["unet"] * rank * scale
    if te_lr_of(cfg) > 0:
        lora += LORA_PER_RANK[family]["text_encoder"] * rank * (params["text_encoder"] / full["text_encoder"])
    state = 2 if "8bit" in cfg.optimizer.lower() else 8 if cfg.optimizer.lower() not in ("sgdnesterov", "lion") else 4
    net_bytes = 2 if (cfg.full_fp16 or cfg.full_bf16) else 4
    parts["network"] = lora * (net_bytes * 2 + state)
    w, h = parse_resolution(cfg.max_resolution)
    batch = max(1, cfg.train_batch_size)
    latent_pixels = (w // 8) * (h // 8)
    act_bytes = 2 if precision != "no" else 4
    share = CHECKPOINTED_SHARE[family] if cfg.gradient_checkpointing else 1.0
    parts["activations"] = batch * latent_pixels * ACTIVATIONS_PER_LATENT_PIXEL[family] * scale * act_bytes * share
    if not cached:
        parts["activations"] += batch * w * h * VAE_ENCODE_PER_PIXEL * act_bytes
    images = num_images if num_images is not None else (plan.num_images if plan else 0)
    parts["caches"] = images * latent_pixels * 4 * 4 * (2 if cfg.flip_aug else 1) if cached else 0.0
    parts["runtime"] = RUNTIME_BYTES["cuda" if device == "cuda" else "cpu"]
    peaks: dict[str, float] = {}
    if device != "cuda":  # a GPU loads on the CPU first: its memory never holds the file
        source = Path(str(cfg.pretrained_model_name_or_path)).expanduser()
        unet_file, other_file = model_file_bytes(source)
        if source.is_file():  # a single file is read whole
            peaks["loading the model"] = parts["runtime"] + source.stat().st_size + all_weights
        elif unet_file:  # the UNet loads first, then the smaller components
            peaks["loading the model"] = parts["runtime"] + max(params["unet"] * wbytes + unet_file,
                                                                all_weights + other_file)
    if cached:
        vae_batch = vae_batch_of(cfg, device)
        if images:
            vae_batch = min(vae_batch, images)
        peaks["caching latents"] = (parts["runtime"] + all_weights
                                    + vae_batch * w * h * VAE_ENCODE_PER_PIXEL * vae_bytes)
    return MemoryEstimate(device, parts, peaks)


def free_memory() -> tuple[str, float | None]:
    """('cuda', free bytes of the first GPU) where nvidia-smi answers, else ('cpu', available RAM); None unknown.
    Asks nvidia-smi rather than torch, so the pre-flight check stays light."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout.split()
            if out:
                return "cuda", float(out[0]) * 1024**2
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    try:
        import psutil

        return "cpu", float(psutil.virtual_memory().available)
    except Exception:
        return "cpu", None
