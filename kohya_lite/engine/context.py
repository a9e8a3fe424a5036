"""Where and how a run computes: accelerate's Accelerator, the device, the precision and weight dtype, the seed
and the noise generator, the output folder.

Precision follows `mixed_precision`: fp16 and bf16 on a GPU (bf16 falls back to fp16 where the GPU lacks
it), bf16 on a CPU too (accelerate's CPU autocast, so the half-precision paths run anywhere); fp16 on a CPU
is not what PyTorch's CPU autocast does: it trains in bf16 where the CPU computes it natively, else in fp32,
with a warning either way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(requested: str, *, cuda: bool, cuda_bf16: bool = True,
                      cpu_bf16: bool = False) -> tuple[str, str | None]:
    """(precision to use, warning or None) for `mixed_precision` on this machine. On a CPU, fp16 (kohya_ss's
    default) becomes bf16 where the CPU computes bf16 natively (AVX512-BF16/AMX: 2–4× faster than fp32), else
    fp32; both with a warning."""
    if requested == "no":
        return "no", None
    if cuda:
        if requested == "bf16" and not cuda_bf16:
            return "fp16", "this GPU has no bf16; training in fp16"
        return requested, None
    if requested == "bf16":
        return "bf16", None
    if cpu_bf16:
        return "bf16", "mixed_precision fp16 needs a GPU; training in bf16, which this CPU computes natively"
    return "no", "mixed_precision fp16 needs a GPU; training in fp32 on the CPU"


def cpu_has_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class RunContext:
    accelerator: object
    device: torch.device
    precision: str  # "no" | "fp16" | "bf16"
    weight_dtype: torch.dtype  # frozen base weights (UNet, text encoders)
    network_dtype: torch.dtype  # LoRA weights: fp32, or half with full_fp16 / full_bf16
    seed: int
    noise_generator: torch.Generator  # CPU generator for noise and timesteps, per process
    out_dir: Path
    name: str

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def process_index(self) -> int:
        return self.accelerator.process_index

    def autocast(self):
        return self.accelerator.autocast()

    @classmethod
    def create(cls, cfg, *, seed: int | None = None, warn=lambda message, field: None) -> "RunContext":
        """`seed` overrides cfg.seed (a resumed run reuses the one it started with); 0/None draws one."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        cuda = torch.cuda.is_available()
        precision, warning = resolve_precision(cfg.mixed_precision, cuda=cuda,
                                               cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
                                               cpu_bf16=not cuda and cpu_has_bf16())
        if warning:
            warn(warning, "mixed_precision")
        # module_dropout skips whole LoRA modules in some steps: DDP must then allow unused parameters
        ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.module_dropout > 0)
        _forget_earlier_precision(precision)
        accelerator = Accelerator(mixed_precision=precision, kwargs_handlers=[ddp],
                                  dynamo_backend=None if cfg.dynamo_backend in ("", "no") else cfg.dynamo_backend)
        if accelerator.device.type == "cpu" and accelerator.num_processes == 1:
            torch.set_num_threads(max(1, cfg.num_cpu_threads_per_process))
        seed = seed or cfg.seed or random.randint(1, 2**31 - 1)
        set_seed(seed)
        generator = torch.Generator(device="cpu").manual_seed(seed + accelerator.process_index)
        weight_dtype = DTYPES[precision]
        full = (cfg.full_fp16 and precision == "fp16") or (cfg.full_bf16 and precision == "bf16")
        if full and precision == "fp16":
            _allow_fp16_unscale(accelerator)
        out_dir = Path(cfg.output_dir).expanduser()
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(accelerator, accelerator.device, precision, weight_dtype, weight_dtype if full else torch.float32,
                   seed, generator, out_dir, cfg.output_name)


def _forget_earlier_precision(precision: str) -> None:
    """accelerate keeps one AcceleratorState per process and refuses a second Accelerator with another precision.
    A process that trains twice (a notebook, the test suite) resets it; the distributed set-up is kept."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=False)


def _allow_fp16_unscale(accelerator) -> None:
    """full_fp16 keeps the LoRA weights in fp16; torch's GradScaler refuses to unscale fp16 gradients unless told
    it may (what sd-scripts patches in for the same option)."""
    scaler = getattr(accelerator, "scaler", None)
    if scaler is None:
        return
    unscale = scaler._unscale_grads_

    def unscale_allowing_fp16(optimizer, inv_scale, found_inf, allow_fp16):
        return unscale(optimizer, inv_scale, found_inf, True)

    scaler._unscale_grads_ = unscale_allowing_fp16
