"""What every adapter network (LoRA, LyCORIS, DyLoRA) shares: its modules split into text-encoder and UNet
parts, each tagged with its component; one multiplier for all; the state dict in the file layout."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

import torch
from torch import nn

from kohya_lite.network import naming


class AdapterNetwork(nn.Module):
    """`modules` are (kohya name, module, component) triples; modules are registered under their kohya name,
    so `state_dict()` is the file layout (`<name>.<tensor>`)."""

    def __init__(self, modules: Iterable[tuple[str, nn.Module, str]], family: str, *, multiplier: float = 1.0):
        super().__init__()
        self.family = family
        self.multiplier = multiplier
        self._component: dict[str, str] = {}
        self.text_encoder_loras: list[nn.Module] = []
        self.unet_loras: list[nn.Module] = []
        for name, module, component in modules:
            self.add_module(name, module)
            self._component[name] = component
            (self.unet_loras if component == naming.UNET else self.text_encoder_loras).append(module)

    def apply(self) -> "AdapterNetwork":
        """Route the adapted modules through their adapters (idempotent)."""
        for lora in self.loras():
            lora.apply_to()
        return self

    def restore(self) -> None:
        """Undo `apply`: the model behaves exactly as before."""
        for lora in self.loras():
            lora.restore()

    def loras(self) -> Iterator[nn.Module]:
        yield from self.text_encoder_loras
        yield from self.unet_loras

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = multiplier
        for lora in self.loras():
            lora.multiplier = multiplier

    def component_of(self, lora_name: str) -> str:
        return self._component.get(lora_name) or component_of_name(lora_name)

    def module_counts(self) -> dict[str, int]:
        return dict(Counter(self.component_of(lora.lora_name) for lora in self.loras()))

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Every module's tensors under `<name>.<tensor>`, detached, on the CPU."""
        out = {}
        for k, v in self.state_dict().items():
            v = v.detach().to("cpu")
            out[k] = (v.to(dtype) if dtype is not None else v).contiguous()
        return out


def component_of_name(name: str) -> str:
    """'unet', 'text_encoder' or 'text_encoder_2' from a kohya module name's prefix."""
    if name.startswith(naming.UNET_PREFIX + "_"):
        return naming.UNET
    return naming.te_component(naming.split_prefix(name)[0])
