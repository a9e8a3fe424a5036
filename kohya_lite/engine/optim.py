"""Optimizers and LR schedulers by kohya's names, with `optimizer_args` parsed as kohya does."""

from __future__ import annotations

import math
from typing import Any

import torch

from kohya_lite.config import known_optimizer, parse_kv_args
from kohya_lite.errors import UserError


def build_optimizer(name: str, param_groups: list[dict[str, Any]], lr: float, args_text: str = "") -> torch.optim.Optimizer:
    opt = known_optimizer(name)
    if opt is None:
        raise UserError(f"unknown optimizer '{name}'", field="optimizer", fix="choose AdamW, AdamW8bit, Lion, Prodigy, …")
    kwargs = parse_kv_args(args_text, "optimizer_args")
    if "betas" in kwargs and isinstance(kwargs["betas"], (list, tuple)):
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    if opt == "Prodigy" or opt.startswith("DAdapt"):
        lrs = {g.get("lr", lr) for g in param_groups} - {0}
        if len(lrs) > 1:
            raise UserError(f"{opt} needs the same learning rate for every part, got {sorted(lrs)}", field="text_encoder_lr",
                            fix="set learning_rate, unet_lr and text_encoder_lr to the same value (1.0 is usual)")
    try:
        return _construct(opt, param_groups, lr, kwargs)
    except TypeError as exc:
        raise UserError(f"optimizer_args do not fit {opt}: {exc}", field="optimizer_args",
                        fix=f"remove or rename the arguments {opt} does not take") from None


def _bnb():
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError or a broken CUDA setup
        raise UserError(f"8-bit optimizers need bitsandbytes, which failed to load ({exc})", field="optimizer",
                        fix="run ./setup.sh again, or choose AdamW") from None
    return bnb


def _construct(opt: str, groups: list[dict], lr: float, kw: dict) -> torch.optim.Optimizer:
    if opt == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, **kw)
    if opt == "SGDNesterov":
        kw.setdefault("momentum", 0.9)
        return torch.optim.SGD(groups, lr=lr, nesterov=True, **kw)
    if opt in ("AdamW8bit", "PagedAdamW8bit", "PagedAdamW", "PagedAdamW32bit", "Lion8bit", "PagedLion8bit", "SGDNesterov8bit"):
        bnb = _bnb()
        if opt == "SGDNesterov8bit":
            kw.setdefault("momentum", 0.9)
            return bnb.optim.SGD8bit(groups, lr=lr, nesterov=True, **kw)
        return getattr(bnb.optim, opt)(groups, lr=lr, **kw)
    if opt == "Lion":
        from lion_pytorch import Lion

        return Lion(groups, lr=lr, **kw)
    if opt == "Prodigy":
        from prodigyopt import Prodigy

        return Prodigy(groups, lr=lr, **kw)
    if opt.startswith("DAdapt"):
        import dadaptation

        cls = {"DAdaptation": "DAdaptAdam", "DAdaptAdam": "DAdaptAdam", "DAdaptAdaGrad": "DAdaptAdaGrad",
               "DAdaptAdan": "DAdaptAdan", "DAdaptLion": "DAdaptLion", "DAdaptSGD": "DAdaptSGD"}[opt]
        return getattr(dadaptation, cls)(groups, lr=lr, **kw)
    if opt == "Adafactor":
        from transformers.optimization import Adafactor

        kw.setdefault("relative_step", True)
        if kw["relative_step"]:
            kw.setdefault("scale_parameter", True)
            kw.setdefault("warmup_init", False)
            for g in groups:
                g.pop("lr", None)
            return Adafactor(groups, lr=None, **kw)
        return Adafactor(groups, lr=lr, **kw)
    raise AssertionError(opt)


def warmup_steps(total_steps: int, lr_warmup_percent: int, lr_warmup_steps: int) -> int:
    """kohya_ss: the absolute override wins, else int(percent / 100 × total)."""
    if lr_warmup_steps > 0:
        return lr_warmup_steps
    return int(lr_warmup_percent / 100 * total_steps)


def lr_lambda(name: str, total_steps: int, warmup: int, num_cycles: int = 1, power: float = 1.0):
    """LR multiplier per step, the formulas diffusers' get_scheduler uses (so resume is exact and pure)."""
    total = max(1, total_steps)

    def f(step: int) -> float:
        if name == "constant":
            return 1.0
        if step < warmup:
            return step / max(1, warmup)
        if name == "constant_with_warmup":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if name == "linear":
            return max(0.0, 1.0 - progress)
        if name == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        if name == "cosine_with_restarts":
            if progress >= 1.0:
                return 0.0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((max(1, num_cycles) * progress) % 1.0))))
        if name == "polynomial":
            lr_end_ratio = 1e-7
            if step > total:
                return lr_end_ratio
            decay = (1 - lr_end_ratio) * (1 - progress) ** power + lr_end_ratio
            return decay
        raise UserError(f"unknown lr_scheduler '{name}'", field="lr_scheduler", fix="choose cosine, constant, linear, …")

    return f


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup: int,
                    num_cycles: int = 1, power: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    if name == "constant" and warmup:
        raise UserError("the 'constant' scheduler cannot warm up", field="lr_warmup", fix="set warmup to 0 or use constant_with_warmup")
    fn = lr_lambda(name, total_steps, warmup, num_cycles, power)
    fn(0)  # validates the name
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def describe_optimizer(optimizer: torch.optim.Optimizer, args_text: str) -> str:
    """sd-scripts' ss_optimizer form: module.Class(args)."""
    cls = type(optimizer)
    s = f"{cls.__module__}.{cls.__name__}"
    return f"{s}({','.join(args_text.split())})" if args_text.strip() else s


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    out = []
    for g in optimizer.param_groups:
        lr = g.get("lr") or 0.0
        d = g.get("d")  # Prodigy / DAdapt report d·lr
        out.append(float(lr * d) if d else float(lr))
    return out
