"""Small kohya LoRA files for tests: a `LoRANetwork` on a loaded (tiny) model with random up/down weights,
saved with `save_lora_file` (rank 4, alpha 2: alpha ≠ rank so scale bugs show)."""

from __future__ import annotations

from pathlib import Path

import torch

from kohya_lite.network.io import save_lora_file
from kohya_lite.network.lora import LoRANetwork

RANK, ALPHA = 4, 2.0


def random_network(model, *, seed: int, rank: int = RANK, alpha: float = ALPHA, scale: float = 0.3,
                   conv: bool = False) -> LoRANetwork:
    net = LoRANetwork.create(model, rank, alpha, conv_rank=rank if conv else 0, conv_alpha=alpha)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in net.loras():
            lora.lora_down.weight.copy_(torch.randn(lora.lora_down.weight.shape, generator=g) * scale)
            lora.lora_up.weight.copy_(torch.randn(lora.lora_up.weight.shape, generator=g) * scale)
    return net


def write_lora(model, path: Path, *, seed: int, metadata: dict | None = None, conv: bool = False,
               **kw) -> Path:
    """A random kohya LoRA file for `model` (fp32, so comparisons are exact). Default metadata names the
    model's family and `ss_output_name` = the file stem."""
    from kohya_lite.models import families

    net = random_network(model, seed=seed, conv=conv, **kw)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(kw.get("rank", RANK)),
            "ss_network_alpha": str(kw.get("alpha", ALPHA)),
            "ss_base_model_version": families.base_model_version(model.family, model.v_prediction),
            "ss_output_name": Path(path).stem}
    if metadata is not None:
        meta = metadata
    save_lora_file(path, net.kohya_state_dict(), meta, precision="float")
    return Path(path)
