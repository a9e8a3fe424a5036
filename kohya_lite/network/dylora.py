"""Kohya DyLoRA (sd-scripts `networks.dylora`): a LoRA whose rank can be cut afterwards at any multiple of `unit`.

Each module holds its rank as `rank` separate rows of down (1×in, or 1×in×k×k for a 3×3 conv) and columns of up
(out×1). In training every forward picks a block b ∈ {0, unit, 2·unit, …} at random and only that block's rows
and columns learn (the others are frozen for the step, so the optimizer leaves them alone); the whole rank is
used and the output is scaled by alpha/rank · √(rank / (b + unit)). Out of training (samples, Generate) the
module is a plain LoRA of its full rank (that factor is 1 there; sd-scripts keeps drawing b in sampling too).

The file is plain kohya LoRA (`lora_down.weight`, `lora_up.weight`, `alpha`; 1×1 convs as [r, in, 1, 1]) with
`ss_network_module = networks.dylora`, so every LoRA tool reads it. Targets are sd-scripts' (Transformer2DModel,
plus ResnetBlock2D/Downsample2D/Upsample2D when conv_dim is set, which must then equal the rank; 3×3 convs use
the network rank and alpha). On SDXL the text encoders are named `lora_te1_`/`lora_te2_` like every kohya LoRA
(sd-scripts' dylora names both `lora_te_`, which collides).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from kohya_lite.errors import UserError
from kohya_lite.network.base import AdapterNetwork, HookedAdapter
from kohya_lite.network.lora import LoadResult, _alpha_value, find_targets


class DyLoRAModule(HookedAdapter):
    def __init__(self, lora_name: str, org_module: nn.Module, *, rank: int, alpha: float | None, unit: int = 1,
                 multiplier: float = 1.0):
        super().__init__(org_module)
        if rank % unit:
            raise UserError(f"the rank {rank} is not a multiple of the DyLoRA unit {unit}", field="unit",
                            fix="make network_dim a multiple of the unit (e.g. rank 16, unit 4)")
        self.lora_name, self.lora_dim, self.unit = lora_name, int(rank), int(unit)
        weight = org_module.weight
        kw = {"device": weight.device, "dtype": torch.float32}
        self.is_conv = isinstance(org_module, nn.Conv2d)
        self.is_conv3x3 = self.is_conv and tuple(org_module.kernel_size) != (1, 1)
        if self.is_conv:
            in_dim, out_dim = org_module.in_channels, org_module.out_channels
            self.stride, self.padding = org_module.stride, org_module.padding
        else:
            in_dim, out_dim = org_module.in_features, org_module.out_features
        a_shape = (1, in_dim, *org_module.kernel_size) if self.is_conv3x3 else (1, in_dim)
        b_shape = (out_dim, 1, 1, 1) if self.is_conv3x3 else (out_dim, 1)
        self.lora_A = nn.ParameterList([nn.Parameter(torch.empty(a_shape, **kw)) for _ in range(rank)])
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(b_shape, **kw)) for _ in range(rank)])
        for row in self.lora_A:
            nn.init.kaiming_uniform_(row, a=math.sqrt(5))
        alpha = _alpha_value(alpha, rank)
        self.scale = alpha / self.lora_dim
        self.register_buffer("alpha", torch.tensor(alpha, device=weight.device))
        self.multiplier = multiplier

    def _pick_block(self) -> int:
        """Training: the block whose rows learn this step (the rest are frozen); returns its first rank."""
        b = int(torch.randint(0, self.lora_dim, (1,)).item())
        b -= b % self.unit
        for i, (pa, pb) in enumerate(zip(self.lora_A, self.lora_B)):
            on = b <= i < b + self.unit
            pa.requires_grad_(on)
            pb.requires_grad_(on)
        return b

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        org_forward = self._org_forward or type(self.org_module).forward.__get__(self.org_module)
        out = org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return out
        factor = 1.0
        if self.training:
            b = self._pick_block()
            factor = math.sqrt(self.lora_dim / (b + self.unit))
        down = torch.cat(tuple(self.lora_A), dim=0)
        up = torch.cat(tuple(self.lora_B), dim=1)
        h = x.to(down.dtype)
        if self.is_conv3x3:
            h = nn.functional.conv2d(h, down, stride=self.stride, padding=self.padding)
            h = nn.functional.conv2d(h, up)
        elif self.is_conv:
            h = nn.functional.conv2d(h, down[:, :, None, None], stride=self.stride, padding=self.padding)
            h = nn.functional.conv2d(h, up[:, :, None, None])
        else:
            h = nn.functional.linear(nn.functional.linear(h, down), up)
        return out + (h * (self.scale * factor * self.multiplier)).to(out.dtype)

    # the kohya layout
    def down_weight(self) -> torch.Tensor:
        w = torch.cat(tuple(self.lora_A), dim=0)
        return w[:, :, None, None] if self.is_conv and not self.is_conv3x3 else w

    def up_weight(self) -> torch.Tensor:
        w = torch.cat(tuple(self.lora_B), dim=1)
        return w[:, :, None, None] if self.is_conv and not self.is_conv3x3 else w

    @torch.no_grad()
    def load(self, down: torch.Tensor, up: torch.Tensor, alpha: Any) -> None:
        if self.is_conv and not self.is_conv3x3:
            down, up = down.flatten(1), up.flatten(1)
        if down.shape[0] != self.lora_dim or down.shape[1:] != self.lora_A[0].shape[1:] \
                or up.shape != (self.lora_B[0].shape[0], self.lora_dim, *self.lora_B[0].shape[2:]):
            raise UserError(f"DyLoRA weights for {self.lora_name} have rank {down.shape[0]} and shape "
                            f"{tuple(down.shape)}, the network has rank {self.lora_dim}", field="network_weights",
                            fix="set network_dim to the file's rank, or tick 'dim_from_weights'")
        for i in range(self.lora_dim):
            self.lora_A[i].copy_(down[i:i + 1])
            self.lora_B[i].copy_(up[:, i:i + 1])
        a = _alpha_value(alpha, self.lora_dim)
        self.alpha.fill_(a)
        self.scale = a / self.lora_dim


class DyLoRANetwork(AdapterNetwork):
    """All DyLoRA modules of one model, with the engine's network interface."""

    UP_PARAMETERS = ("lora_B",)  # the up columns

    def __init__(self, modules: Iterable[DyLoRAModule], family: str, components: Mapping[str, str]):
        super().__init__([(m.lora_name, m, components[m.lora_name]) for m in modules], family)

    @classmethod
    def create(cls, model: Any, rank: int, alpha: float | None, *, unit: int = 1, conv: bool = False,
               train_unet: bool = True, train_text_encoder: bool = True) -> "DyLoRANetwork":
        targets = find_targets(model.unet, model.text_encoders, model.family, conv=conv, train_unet=train_unet,
                               train_text_encoder=train_text_encoder)
        modules = [DyLoRAModule(t.name, t.module, rank=rank, alpha=alpha, unit=unit) for t in targets]
        return cls(modules, model.family, {t.name: t.component for t in targets})

    @classmethod
    def from_weights(cls, model: Any, tensors: Mapping[str, torch.Tensor], *, unit: int = 1) -> "DyLoRANetwork":
        names = {k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight")}
        targets = {t.name: t for t in find_targets(model.unet, model.text_encoders, model.family, conv=True)}
        unknown = sorted(names - set(targets))
        if unknown:
            raise UserError(f"{len(unknown)} LoRA modules in the weights do not exist in this {model.family} model "
                            f"(first: {unknown[0]})", field="network_weights",
                            fix="use a LoRA made for the same base model family (SD1.x, SD2.x or SDXL)")
        modules = []
        for name in sorted(names):
            down = tensors[f"{name}.lora_down.weight"]
            modules.append(DyLoRAModule(name, targets[name].module, rank=down.shape[0],
                                        alpha=tensors.get(f"{name}.alpha"), unit=unit))
        net = cls(modules, model.family, {n: targets[n].component for n in names})
        net.load_kohya_state_dict(tensors)
        return net

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The plain LoRA layout of the full rank (the blocks joined): what a DyLoRA file holds."""
        out = {}
        for m in self.loras():
            for suffix, t in (("lora_down.weight", m.down_weight()), ("lora_up.weight", m.up_weight()),
                              ("alpha", m.alpha)):
                t = t.detach().to("cpu")
                out[f"{m.lora_name}.{suffix}"] = (t.to(dtype) if dtype is not None else t).contiguous()
        return out

    def load_kohya_state_dict(self, tensors: Mapping[str, torch.Tensor], *, strict: bool = True) -> LoadResult:
        result = LoadResult()
        names = {k.partition(".")[0] for k in tensors}
        mine = {m.lora_name: m for m in self.loras()}
        result.unexpected = sorted(names - set(mine))
        result.missing = sorted(set(mine) - names)
        if strict and (result.missing or result.unexpected):
            first = (result.missing or result.unexpected)[0]
            raise UserError(f"the DyLoRA weights do not match the network ({len(result.missing)} modules missing, "
                            f"{len(result.unexpected)} unknown; first: {first})", field="network_weights",
                            fix="use weights trained on the same model family with the same settings, or tick "
                                "'dim_from_weights'")
        for name in sorted(names & set(mine)):
            down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
            if down is None or up is None:
                result.missing.append(name)
                continue
            mine[name].load(down, up, tensors.get(f"{name}.alpha"))
            result.loaded += 1
        return result

    def apply_max_norm(self, max_norm: float, device: torch.device | str | None = None) -> tuple[int, float]:
        """sd-scripts' DyLoRA network has no max-norm regularisation (check says scale_weight_norms is ignored)."""
        return 0, 0.0
