"""Optimizers by kohya name with parsed args; schedulers with warmup as a percentage."""

import pytest
import torch

from kohya_lite.config import parse_kv_args
from kohya_lite.engine.optim import build_optimizer, build_scheduler, describe_optimizer, warmup_steps
from kohya_lite.errors import UserError


def _groups():
    a = torch.nn.Parameter(torch.randn(64, 64))
    b = torch.nn.Parameter(torch.randn(8, 8))
    return [{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 5e-4}]


@pytest.mark.parametrize("name, args", [
    ("AdamW", "weight_decay=0.01 betas=0.9,0.99"), ("AdamW8bit", "weight_decay=0.01"), ("Lion", ""),
    ("SGDNesterov", ""), ("Prodigy", "decouple=True weight_decay=0.45 d_coef=2 use_bias_correction=True safeguard_warmup=True"),
    ("DAdaptAdam", ""), ("Adafactor", "scale_parameter=False relative_step=False warmup_init=False"), ("adamw", ""),
    ("PagedAdamW8bit", ""), ("Lion8bit", ""),
])
def test_optimizers_step(name, args):
    groups = _groups()
    if name in ("Prodigy", "DAdaptAdam"):
        groups[1]["lr"] = groups[0]["lr"]
    before = [g["params"][0].detach().clone() for g in groups]
    opt = build_optimizer(name, groups, 1e-3, args)
    for key, value in parse_kv_args(args, "optimizer_args").items():  # every argument reached the optimizer
        expected = tuple(value) if isinstance(value, (list, tuple)) else value
        got = opt.param_groups[0][key]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == expected, (name, key)
    for g in groups:
        (g["params"][0] ** 2).sum().backward()
    opt.step()
    assert any(not torch.equal(b, g["params"][0]) for b, g in zip(before, opt.param_groups))
    assert "." in describe_optimizer(opt, args)


def test_adamw8bit_state_is_8bit_for_large_tensors():
    groups = _groups()
    opt = build_optimizer("AdamW8bit", groups, 1e-3)
    for g in groups:
        (g["params"][0] ** 2).sum().backward()
    opt.step()
    state = opt.state[groups[0]["params"][0]]
    assert state["state1"].dtype == torch.uint8


def test_bad_optimizer_inputs():
    with pytest.raises(UserError) as e:
        build_optimizer("Nope", _groups(), 1e-3)
    assert e.value.field == "optimizer"
    with pytest.raises(UserError) as e:
        build_optimizer("Prodigy", _groups(), 1.0)
    assert e.value.field == "text_encoder_lr"
    with pytest.raises(UserError) as e:
        build_optimizer("AdamW", _groups(), 1e-3, "not_an_arg=3")
    assert e.value.field == "optimizer_args"


def _lrs(name, total, warmup, lr=1.0, **kw):
    """The LR before each of `total` optimizer steps and after the last."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, name, total, warmup, **kw)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out + [opt.param_groups[0]["lr"]]


def test_warmup_and_schedules():
    assert warmup_steps(200, 10, 0) == 20 and warmup_steps(200, 10, 7) == 7
    f = _lrs("cosine", 100, 10)
    assert f[0] == 0 and f[5] == 0.5 and f[10] == 1.0 and abs(f[55] - 0.5) < 1e-9 and f[100] < 1e-9
    assert _lrs("linear", 100, 0)[50] == 0.5
    r = _lrs("cosine_with_restarts", 100, 0, num_cycles=2)
    assert abs(r[50] - 1.0) < 1e-9 and r[25] < 0.51
    assert _lrs("constant", 100, 0)[77] == 1.0
    p = _lrs("polynomial", 100, 0, power=2.0)
    assert abs(p[50] - 0.25) < 1e-6
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UserError) as e:
        build_scheduler(opt, "constant", 100, 10)
    assert e.value.field == "lr_warmup"
    with pytest.raises(UserError):
        build_scheduler(opt, "bogus", 100, 0)


def test_polynomial_lr_end_is_absolute():
    """sd-scripts passes lr_scheduler_args to diffusers' polynomial schedule: lr_end is an LR, not a ratio."""
    lrs = _lrs("polynomial", 10, 0, lr=1e-3, args_text="lr_end=1e-4")
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx(1e-4 + (1e-3 - 1e-4) * 0.5)


def test_custom_scheduler_class_with_args():
    lrs = _lrs("cosine", 30, 0, scheduler_type="CosineAnnealingLR", args_text="T_max=30")
    assert lrs[15] == pytest.approx(0.5) and lrs[30] == pytest.approx(0.0, abs=1e-9)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for bad, field in (("os.system", "lr_scheduler_type"), ("NoSuchLR", "lr_scheduler_type"),
                       ("CosineAnnealingLR", "lr_scheduler_args")):
        with pytest.raises(UserError) as e:
            build_scheduler(opt, "cosine", 30, 0, scheduler_type=bad)
        assert e.value.field == field
    with pytest.raises(UserError) as e:
        build_scheduler(opt, "linear", 30, 0, args_text="nonsense=1")
    assert e.value.field == "lr_scheduler_args"


def test_adafactor_defaults_get_the_adafactor_schedule():
    """relative_step=True (Adafactor's default) has no LR of its own: sd-scripts pairs it with AdafactorSchedule."""
    groups = _groups()
    opt = build_optimizer("Adafactor", groups, 1e-3, "")
    sched = build_scheduler(opt, "cosine", 10, 0)
    assert type(sched).__name__ == "AdafactorSchedule"
    for g in groups:
        (g["params"][0] ** 2).sum().backward()
    before = groups[0]["params"][0].detach().clone()
    opt.step()
    sched.step()
    assert not torch.equal(before, opt.param_groups[0]["params"][0])
    assert all(lr > 0 for lr in sched.get_last_lr())
    with pytest.raises(UserError) as e:
        build_scheduler(build_optimizer("Adafactor", _groups(), 1e-3, ""), "cosine", 10, 2)
    assert e.value.field == "lr_warmup"


def test_dadaptation_is_the_preprint_adam():
    groups = _groups()
    groups[1]["lr"] = groups[0]["lr"] = 1.0
    assert type(build_optimizer("DAdaptation", groups, 1.0)).__name__ == "DAdaptAdamPreprint"
