"""What every adapter network (LoRA, LyCORIS, DyLoRA) shares: its modules split into text-encoder and UNet
parts, each tagged with its component; one multiplier for all; the state dict in the file layout."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

import torch
from torch import nn

from kohya_lite.errors import UserError
from kohya_lite.network import naming


class HookedAdapter(nn.Module):
    """An adapter module around `org_module` that takes over its forward while applied. The base module is kept
    in a tuple, so it is not registered as a child (and not saved with the adapter)."""

    def __init__(self, org_module: nn.Module):
        super().__init__()
        self._org = (org_module,)
        self._org_forward = None
        self._had_own_forward = False

    @property
    def org_module(self) -> nn.Module:
        return self._org[0]

    @property
    def applied(self) -> bool:
        return self._org_forward is not None

    def apply_to(self) -> None:
        """Route the original module's forward through this adapter (idempotent)."""
        if self._org_forward is None:
            org = self.org_module
            self._had_own_forward = "forward" in vars(org)
            self._org_forward = org.forward
            org.forward = self.forward

    def restore(self) -> None:
        """Undo `apply_to`: the original module behaves exactly as before."""
        if self._org_forward is not None:
            org = self.org_module
            if self._had_own_forward:
                org.forward = self._org_forward
            else:
                vars(org).pop("forward", None)
            self._org_forward = None


def weights_mismatch(kind: str, missing: list[str], unexpected: list[str], fix: str) -> UserError:
    """The error for a weights file whose modules do not match the network (`kind`: 'LoRA', 'LyCORIS')."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} network modules are not in the file (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} file modules are not in the network (first: {unexpected[0]})")
    return UserError(f"the {kind} weights do not match the network: " + "; ".join(parts), field="network_weights",
                     fix=fix)


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

    supports_loraplus = True
    UP_PARAMETERS = ("lora_up",)  # parameter names LoRA+ gives the higher learning rate

    def optimizer_param_groups(self, unet_lr: float | None, text_encoder_lr: float | None, *,
                               loraplus_lr_ratio: float = 0.0, loraplus_unet_lr_ratio: float = 0.0,
                               loraplus_text_encoder_lr_ratio: float = 0.0) -> list[dict]:
        """Optimizer groups as sd-scripts builds them: text encoder and UNet apart, each split with LoRA+ into
        the up parameters at lr·ratio and the rest; frozen parameters (LoRA-FA's downs) stay out; groups whose
        LR is 0/None are dropped."""
        groups = []
        for part, loras, lr, ratio in (
            ("textencoder", self.text_encoder_loras, text_encoder_lr,
             loraplus_text_encoder_lr_ratio or loraplus_lr_ratio),
            ("unet", self.unet_loras, unet_lr, loraplus_unet_lr_ratio or loraplus_lr_ratio),
        ):
            if not loras or not lr:
                continue
            ratio = ratio if self.supports_loraplus else 0.0
            plain, plus = [], []
            for lora in loras:
                for pname, p in lora.named_parameters():
                    if p.requires_grad:
                        is_up = ratio and any(u in pname for u in self.UP_PARAMETERS)
                        (plus if is_up else plain).append(p)
            if plain:
                groups.append({"name": part, "params": plain, "lr": lr})
            if plus:
                groups.append({"name": f"{part}_plus", "params": plus, "lr": lr * ratio})
        return groups

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
