"""kohya-style LoRA / LoCon modules and the network that injects them (sd-scripts `networks.lora`).

`LoRAModule` wraps one Linear or Conv2d: `y = org(x) + up(down(x)) · multiplier · alpha/rank`. It is
applied by replacing the original module's `forward`, so module paths and base weights stay as they
are (gradient checkpointing and SDPA keep working). `LoRANetwork` finds the same modules sd-scripts
adapts (lora-file-format §4), names them per §3, and exposes the kohya state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from kohya_lite.errors import UserError
from kohya_lite.network import naming
from kohya_lite.network.base import AdapterNetwork, HookedAdapter, component_of_name, weights_mismatch

UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")


def _alpha_value(alpha: Any, rank: int) -> float:
    if isinstance(alpha, torch.Tensor):
        alpha = float(alpha.detach().float().item())
    return float(rank) if alpha is None or alpha == 0 else float(alpha)


class LoRAModule(HookedAdapter):
    """One LoRA adapter around `org_module` (Linear, or Conv2d with any kernel: down keeps the kernel,
    stride and padding; up is 1×1)."""

    def __init__(self, lora_name: str, org_module: nn.Module, *, rank: int, alpha: float | None = None,
                 multiplier: float = 1.0, dropout: float = 0.0, rank_dropout: float = 0.0,
                 module_dropout: float = 0.0, frozen_down: bool = False):
        super().__init__(org_module)
        self.lora_name = lora_name
        self.lora_dim = int(rank)
        weight = org_module.weight
        factory = {"device": weight.device, "dtype": torch.float32}
        if isinstance(org_module, nn.Conv2d):
            self.lora_down = nn.Conv2d(org_module.in_channels, rank, org_module.kernel_size, org_module.stride,
                                       org_module.padding, bias=False, **factory)
            self.lora_up = nn.Conv2d(rank, org_module.out_channels, (1, 1), (1, 1), bias=False, **factory)
        elif isinstance(org_module, nn.Linear):
            self.lora_down = nn.Linear(org_module.in_features, rank, bias=False, **factory)
            self.lora_up = nn.Linear(rank, org_module.out_features, bias=False, **factory)
        else:
            raise TypeError(f"LoRA supports Linear and Conv2d, not {type(org_module).__name__} ({lora_name})")
        if frozen_down:  # LoRA-FA (sd-scripts networks.lora_fa): down is a fixed random projection, as in the paper
            fan_in = org_module.in_channels if isinstance(org_module, nn.Conv2d) else org_module.in_features
            nn.init.normal_(self.lora_down.weight, std=math.sqrt(2.0 / (fan_in + rank)))
            self.lora_down.weight.requires_grad_(False)
        else:
            nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        alpha = _alpha_value(alpha, rank)
        self.scale = alpha / self.lora_dim
        self.register_buffer("alpha", torch.tensor(alpha, device=weight.device))
        self.multiplier = multiplier
        self.dropout = dropout or 0.0
        self.rank_dropout = rank_dropout or 0.0
        self.module_dropout = module_dropout or 0.0

    @property
    def is_conv(self) -> bool:
        return isinstance(self.lora_down, nn.Conv2d)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        org_forward = self._org_forward or type(self.org_module).forward.__get__(self.org_module)
        out = org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return out
        if self.training and self.module_dropout and torch.rand(1).item() < self.module_dropout:
            return out
        lx = self.lora_down(x.to(self.lora_down.weight.dtype))
        if self.training and self.dropout:
            lx = nn.functional.dropout(lx, p=self.dropout)
        scale = self.scale
        if self.training and self.rank_dropout:
            mask = torch.rand((lx.size(0), self.lora_dim), device=lx.device) > self.rank_dropout
            if lx.dim() == 3:
                mask = mask.unsqueeze(1)
            elif lx.dim() == 4:
                mask = mask.unsqueeze(-1).unsqueeze(-1)
            lx = lx * mask.to(lx.dtype)
            scale = scale / (1.0 - self.rank_dropout)
        lx = self.lora_up(lx)
        return out + (lx * (self.multiplier * scale)).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha/rank)·up@down, shaped like the original weight (without the multiplier)."""
        return delta_weight(self.lora_down.weight, self.lora_up.weight, self.scale)


def delta_weight(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """The weight change of one LoRA module (lora-file-format §5): Linear, 1×1 and k×k convs."""
    down, up = down.float(), up.float()
    if down.dim() == 2:
        return up @ down * scale
    if down.shape[2:] == (1, 1):
        return (up[:, :, 0, 0] @ down[:, :, 0, 0]).unsqueeze(2).unsqueeze(3) * scale
    return nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3) * scale


# ---- finding the modules to adapt ---------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str  # kohya module name
    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    path: str  # module path inside the component (what named_modules() says)
    module: nn.Module
    conv3x3: bool  # a k×k (k>1) conv: uses conv_dim/conv_alpha

    @property
    def is_unet(self) -> bool:
        return self.component == naming.UNET


def _unet_layout(unet: nn.Module) -> dict:
    cfg = getattr(unet, "config", {})
    get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
    up_types = get("up_block_types", None) or ()
    return {
        "layers_per_block": int(get("layers_per_block", 2) or 2),
        "up_blocks_with_attention": [i for i, t in enumerate(up_types) if "CrossAttn" in t],
    }


def unet_targets(unet: nn.Module, family: str, *, conv: bool = False) -> list[Target]:
    """UNet modules sd-scripts adapts: Linear and 1×1 Conv2d inside Transformer2DModel; with `conv`
    also every Linear/Conv2d inside ResnetBlock2D, Downsample2D and Upsample2D."""
    classes = UNET_TARGETS + (UNET_CONV_TARGETS if conv else ())
    layout = _unet_layout(unet)
    out: list[Target] = []
    for name, module in unet.named_modules():
        if type(module).__name__ not in classes:
            continue
        for child_name, child in module.named_modules():
            if not isinstance(child, (nn.Linear, nn.Conv2d)) or not child_name:
                continue
            is_3x3 = isinstance(child, nn.Conv2d) and tuple(child.kernel_size) != (1, 1)
            if is_3x3 and not conv:
                continue
            path = f"{name}.{child_name}"
            out.append(Target(naming.unet_lora_name(path, family, **layout), naming.UNET, path, child, is_3x3))
    return out


def te_root(text_encoder: nn.Module) -> nn.Module:
    """The CLIP text transformer, whether or not the model has a `text_model` level (transformers ≥ 5.6)."""
    return getattr(text_encoder, "text_model", text_encoder)


def text_encoder_targets(text_encoder: nn.Module, prefix: str) -> list[Target]:
    """q/k/v/out_proj and fc1/fc2 of every CLIP layer, named with the fixed template (§3.4)."""
    component = naming.te_component(prefix)
    root = te_root(text_encoder)
    base = "text_model." if root is not text_encoder else ""
    out: list[Target] = []
    for name, module in root.named_modules():
        if type(module).__name__ not in TE_TARGETS:
            continue
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                path = f"{name}.{child_name}"
                out.append(Target(naming.te_lora_name_from_path(path, prefix), component, base + path, child, False))
    return out


def find_targets(unet: nn.Module | None, text_encoders: Iterable[nn.Module], family: str, *, conv: bool = False,
                 train_unet: bool = True, train_text_encoder: bool = True) -> list[Target]:
    """Every module a LoRA network would adapt, TE modules first (sd-scripts order)."""
    targets: list[Target] = []
    if train_text_encoder:
        for prefix, te in zip(naming.te_prefixes(family), text_encoders):
            targets += text_encoder_targets(te, prefix)
    if train_unet and unet is not None:
        targets += unet_targets(unet, family, conv=conv)
    return targets


class ModuleIndex:
    """kohya module name → the model's Linear/Conv2d: the trainer's own targets (LoCon included), then any
    other module the name points to (other trainers adapt e.g. `time_embedding`)."""

    def __init__(self, model: Any):
        self.model = model
        targets = find_targets(model.unet, model.text_encoders, model.family, conv=True)
        self.targets = {t.name: t.module for t in targets}
        cfg = getattr(model.unet, "config", None)
        self.layers_per_block = int(getattr(cfg, "layers_per_block", 2) or 2) if cfg is not None else 2

    def get(self, name: str, *, norms: bool = False) -> torch.nn.Module | None:
        """The layer `name` points to; with `norms` also LayerNorm/GroupNorm (LyCORIS `train_norm` modules)."""
        if name in self.targets:
            return self.targets[name]
        try:
            target = naming.parse_lora_name(name, layers_per_block=self.layers_per_block)
        except ValueError:
            return None
        if target.component == naming.UNET:
            root = self.model.unet
        else:
            index = 1 if target.component == naming.TEXT_ENCODER_2 else 0
            if index >= len(self.model.text_encoders):
                return None
            root = te_root(self.model.text_encoders[index])
        try:
            module = root.get_submodule(target.path)
        except AttributeError:
            return None
        kinds = (torch.nn.Linear, torch.nn.Conv2d) + ((torch.nn.LayerNorm, torch.nn.GroupNorm) if norms else ())
        return module if isinstance(module, kinds) else None


# ---- the network -------------------------------------------------------------------------------

@dataclass
class LoadResult:
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # modules of the network absent from the file
    unexpected: list[str] = field(default_factory=list)  # modules in the file the network lacks


class LoRANetwork(AdapterNetwork):
    """All LoRA modules of one model. Its `state_dict()` is the kohya layout:
    `<name>.lora_down.weight`, `<name>.lora_up.weight`, `<name>.alpha`."""

    def __init__(self, modules: Iterable[LoRAModule], family: str, *, multiplier: float = 1.0,
                 components: Mapping[str, str] | None = None):
        modules = list(modules)
        components = dict(components or {})
        super().__init__([(m.lora_name, m, components.get(m.lora_name) or component_of_name(m.lora_name))
                          for m in modules], family, multiplier=multiplier)
        self.supports_loraplus = not any(not lora.lora_down.weight.requires_grad for lora in modules)

    # -- construction --
    @classmethod
    def create(cls, model: Any, rank: int, alpha: float | None = None, *, conv_rank: int = 0,
               conv_alpha: float | None = None, train_unet: bool = True, train_text_encoder: bool = True,
               dropout: float = 0.0, rank_dropout: float = 0.0, module_dropout: float = 0.0,
               multiplier: float = 1.0, frozen_down: bool = False) -> "LoRANetwork":
        """A fresh network (down: kaiming-uniform, up: zeros → a no-op until trained) on `model`
        (a LoadedModel, or anything with `family`, `unet` and `text_encoders`). `frozen_down` makes it LoRA-FA:
        down is normal-initialised and never trained, only up learns."""
        if rank <= 0:
            raise UserError(f"network_dim must be at least 1 (got {rank})", field="network_dim",
                            fix="use 4–32 for most LoRAs; 8 is the kohya_ss default")
        targets = find_targets(model.unet, model.text_encoders, model.family, conv=conv_rank > 0,
                               train_unet=train_unet, train_text_encoder=train_text_encoder)
        conv_alpha = alpha if conv_alpha is None else conv_alpha
        modules = []
        for t in targets:
            r, a = (conv_rank, conv_alpha) if t.conv3x3 else (rank, alpha)
            modules.append(LoRAModule(t.name, t.module, rank=r, alpha=a, multiplier=multiplier, dropout=dropout,
                                      rank_dropout=rank_dropout, module_dropout=module_dropout,
                                      frozen_down=frozen_down))
        return cls(modules, model.family, multiplier=multiplier, components={t.name: t.component for t in targets})

    @classmethod
    def from_weights(cls, model: Any, tensors: Mapping[str, torch.Tensor], *, multiplier: float = 1.0,
                     frozen_down: bool = False, **dropouts: float) -> "LoRANetwork":
        """A network shaped like a kohya state dict (rank and alpha per module from the file, conv modules
        included; sd-scripts `dim_from_weights`), with the file's weights loaded."""
        names = {k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight")}
        any_conv = any(tensors[f"{n}.lora_down.weight"].dim() == 4 and
                       tuple(tensors[f"{n}.lora_down.weight"].shape[2:]) != (1, 1) for n in names)
        targets = {t.name: t for t in find_targets(model.unet, model.text_encoders, model.family, conv=any_conv)}
        unknown = sorted(names - set(targets))
        if unknown:
            raise UserError(
                f"{len(unknown)} LoRA modules in the weights do not exist in this {model.family} model "
                f"(first: {unknown[0]})", field="network_weights",
                fix="use a LoRA made for the same base model family (SD1.x, SD2.x or SDXL)")
        modules = []
        for name in sorted(names):
            down = tensors[f"{name}.lora_down.weight"]
            alpha = tensors.get(f"{name}.alpha")
            modules.append(LoRAModule(name, targets[name].module, rank=down.shape[0], alpha=alpha,
                                      multiplier=multiplier, frozen_down=frozen_down, **dropouts))
        net = cls(modules, model.family, multiplier=multiplier,
                  components={n: targets[n].component for n in names})
        net.load_kohya_state_dict(tensors, strict=True)
        return net

    # -- parameters --
    def unet_parameters(self) -> list[nn.Parameter]:
        return [p for lora in self.unet_loras for p in lora.parameters()]

    def text_encoder_parameters(self) -> list[nn.Parameter]:
        return [p for lora in self.text_encoder_loras for p in lora.parameters()]

    def lora_up_parameters(self, part: str | None = None) -> list[nn.Parameter]:
        """`lora_up` weights (LoRA+ gives them a higher LR); part = 'unet', 'text_encoder' or None (all)."""
        loras = {"unet": self.unet_loras, "text_encoder": self.text_encoder_loras}.get(part, list(self.loras()))
        return [lora.lora_up.weight for lora in loras]

    # -- kohya state dict --
    def load_kohya_state_dict(self, tensors: Mapping[str, torch.Tensor], *, strict: bool = True) -> LoadResult:
        """Load kohya-layout weights (as `read_lora_file` returns them). Shapes must match; with `strict`,
        missing or unknown modules are a UserError too. A missing alpha means alpha = rank."""
        result = LoadResult()
        file_names = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
        mine = {lora.lora_name: lora for lora in self.loras()}
        result.unexpected = sorted(file_names - set(mine))
        result.missing = sorted(set(mine) - file_names)
        for name in sorted(file_names & set(mine)):
            lora = mine[name]
            down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
            if down is None or up is None:
                result.missing.append(name)
                continue
            if down.shape != lora.lora_down.weight.shape or up.shape != lora.lora_up.weight.shape:
                raise UserError(
                    f"LoRA weights for {name} have rank {down.shape[0]} and shape {tuple(down.shape)}, "
                    f"the network has rank {lora.lora_dim} and shape {tuple(lora.lora_down.weight.shape)}",
                    field="network_weights",
                    fix="set network_dim (and conv_dim) to the file's rank, or tick 'dim_from_weights'")
            with torch.no_grad():
                lora.lora_down.weight.copy_(down)
                lora.lora_up.weight.copy_(up)
                alpha = _alpha_value(tensors.get(f"{name}.alpha"), lora.lora_dim)
                lora.alpha.fill_(alpha)
                lora.scale = alpha / lora.lora_dim
            result.loaded += 1
        if strict and (result.missing or result.unexpected):
            raise weights_mismatch("LoRA", result.missing, result.unexpected,
                                   fix="use weights trained on the same model family with the same LoRA type, "
                                       "or tick 'dim_from_weights'")
        return result

    # -- max-norm regularisation --
    @torch.no_grad()
    def apply_max_norm(self, max_norm: float, device: torch.device | str | None = None) -> tuple[int, float]:
        """sd-scripts `scale_weight_norms`: for each module with ‖ΔW‖ > max_norm, scale up and down by
        sqrt(max_norm/‖ΔW‖). Returns (keys scaled, mean norm after scaling)."""
        keys_scaled, norms = 0, []
        for lora in self.loras():
            down, up = lora.lora_down.weight, lora.lora_up.weight
            if device is not None:
                down, up = down.to(device), up.to(device)
            updown = delta_weight(down, up, float(lora.alpha) / lora.lora_dim)
            norm = updown.norm().clamp(min=max_norm / 2)
            desired = torch.clamp(norm, max=max_norm)
            ratio = (desired / norm).item()
            if ratio != 1:
                keys_scaled += 1
                lora.lora_up.weight.mul_(ratio ** 0.5)
                lora.lora_down.weight.mul_(ratio ** 0.5)
            norms.append(updown.norm().item() * ratio)
        return keys_scaled, (sum(norms) / len(norms) if norms else 0.0)
