"""Optimizers by kohya name with parsed args; schedulers with warmup as a percentage."""

import pytest
import torch

from kohya_lite.engine.optim import build_optimizer, build_scheduler, describe_optimizer, lr_lambda, warmup_steps
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


def test_warmup_and_schedules():
    assert warmup_steps(200, 10, 0) == 20 and warmup_steps(200, 10, 7) == 7
    f = lr_lambda("cosine", 100, 10)
    assert f(0) == 0 and f(5) == 0.5 and f(10) == 1.0 and abs(f(55) - 0.5) < 1e-9 and f(100) < 1e-9
    lin = lr_lambda("linear", 100, 0)
    assert lin(50) == 0.5
    r = lr_lambda("cosine_with_restarts", 100, 0, num_cycles=2)
    assert abs(r(50) - 1.0) < 1e-9 and r(25) < 0.51
    assert lr_lambda("constant", 100, 0)(77) == 1.0
    p = lr_lambda("polynomial", 100, 0, power=2.0)
    assert abs(p(50) - 0.25) < 1e-6
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UserError) as e:
        build_scheduler(opt, "constant", 100, 10)
    assert e.value.field == "lr_warmup"
    with pytest.raises(UserError):
        build_scheduler(opt, "bogus", 100, 0)
