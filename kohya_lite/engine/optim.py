"""Optimizers and LR schedulers by kohya's names, with `optimizer_args` parsed as kohya does."""

from __future__ import annotations

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

        import dadaptation.experimental as experimental

        if opt in ("DAdaptation", "DAdaptAdamPreprint"):  # sd-scripts: plain "DAdaptation" is the preprint Adam
            return experimental.DAdaptAdamPreprint(groups, lr=lr, **kw)
        if opt == "DAdaptAdanIP":
            return experimental.DAdaptAdanIP(groups, lr=lr, **kw)
        return getattr(dadaptation, opt)(groups, lr=lr, **kw)
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


# Custom scheduler classes (`lr_scheduler_type`) may come from these modules only: a config file must not be able
# to import arbitrary code.
SCHEDULER_MODULES = ("torch.optim.lr_scheduler", "transformers.optimization", "diffusers.optimization")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup: int,
                    num_cycles: int = 1, power: float = 1.0, args_text: str = "",
                    scheduler_type: str = "") -> torch.optim.lr_scheduler.LRScheduler:
    """The LR schedule as sd-scripts builds it (`get_scheduler_fix`): diffusers' schedule functions with
    `lr_scheduler_args` passed through (e.g. `lr_end` for polynomial, an absolute LR), a custom class with
    `lr_scheduler_type`, and transformers' AdafactorSchedule for Adafactor with relative_step.
    The scheduler is stepped once per optimizer step."""
    from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

    kwargs = parse_kv_args(args_text, "lr_scheduler_args")
    if scheduler_type:
        if warmup:
            raise UserError(f"the custom scheduler '{scheduler_type}' cannot warm up", field="lr_warmup",
                            fix="set LR warmup to 0 (warmup belongs to the scheduler's own arguments)")
        return _custom_scheduler(optimizer, scheduler_type, kwargs)
    if _is_relative_adafactor(optimizer):
        from transformers.optimization import AdafactorSchedule

        if warmup:
            raise UserError("Adafactor with relative_step cannot use LR warmup", field="lr_warmup",
                            fix="set warmup to 0, or add 'relative_step=False' to optimizer_args")
        return AdafactorSchedule(optimizer, initial_lr=0.0)
    try:
        kind = SchedulerType(name)
    except ValueError:
        raise UserError(f"unknown lr_scheduler '{name}'", field="lr_scheduler", fix="choose cosine, constant, linear, …") from None
    fn = TYPE_TO_SCHEDULER_FUNCTION[kind]
    if kind in (SchedulerType.CONSTANT, SchedulerType.PIECEWISE_CONSTANT):
        if warmup:
            raise UserError(f"the '{name}' scheduler cannot warm up", field="lr_warmup",
                            fix="set warmup to 0 or use constant_with_warmup")
        call = lambda: fn(optimizer, **kwargs)  # noqa: E731
    elif kind == SchedulerType.CONSTANT_WITH_WARMUP:
        call = lambda: fn(optimizer, num_warmup_steps=warmup, **kwargs)  # noqa: E731
    elif kind == SchedulerType.COSINE_WITH_RESTARTS:
        call = lambda: fn(optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,  # noqa: E731
                          num_cycles=max(1, num_cycles), **kwargs)
    elif kind == SchedulerType.POLYNOMIAL:
        call = lambda: fn(optimizer, num_warmup_steps=warmup, num_training_steps=total_steps, power=power,  # noqa: E731
                          **kwargs)
    else:
        call = lambda: fn(optimizer, num_warmup_steps=warmup, num_training_steps=total_steps, **kwargs)  # noqa: E731
    try:
        return call()
    except (TypeError, ValueError) as exc:
        raise UserError(f"lr_scheduler_args do not fit the '{name}' scheduler: {exc}", field="lr_scheduler_args",
                        fix="remove or rename the arguments this scheduler does not take") from None


def _custom_scheduler(optimizer, scheduler_type: str, kwargs: dict):
    import importlib

    module_name, _, class_name = scheduler_type.rpartition(".")
    module_name = module_name or "torch.optim.lr_scheduler"
    if module_name not in SCHEDULER_MODULES:
        raise UserError(f"lr_scheduler_type '{scheduler_type}' is not from a known scheduler module",
                        field="lr_scheduler_type",
                        fix="use a class of torch.optim.lr_scheduler (e.g. CosineAnnealingLR), or leave it empty")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not isinstance(cls, type):
        raise UserError(f"there is no scheduler '{class_name}' in {module_name}", field="lr_scheduler_type",
                        fix="check the class name's spelling, e.g. CosineAnnealingLR")
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{class_name} does not accept these lr_scheduler_args: {exc}", field="lr_scheduler_args",
                        fix=f"give the arguments {class_name} needs, e.g. 'T_max=30' for CosineAnnealingLR") from None


def _is_relative_adafactor(optimizer) -> bool:
    return type(optimizer).__name__ == "Adafactor" and bool(optimizer.defaults.get("relative_step"))


def describe_optimizer(optimizer: torch.optim.Optimizer, args_text: str) -> str:
    """sd-scripts' ss_optimizer form: module.Class(args), of the optimizer inside accelerate's wrapper."""
    cls = type(getattr(optimizer, "optimizer", optimizer))
    s = f"{cls.__module__}.{cls.__name__}"
    return f"{s}({','.join(args_text.split())})" if args_text.strip() else s


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    out = []
    for g in optimizer.param_groups:
        lr = g.get("lr") or 0.0
        d = g.get("d")  # Prodigy / DAdapt report d·lr
        out.append(float(lr * d) if d else float(lr))
    return out
