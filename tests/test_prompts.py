"""Sample-prompt parsing: every option, defaults, comments, odd order and case, bad values."""

import pytest

from kohya_lite.prompts import (
    canonical_sampler, make_scheduler, parse_prompt_line, parse_prompts, sample_filename,
)
from kohya_lite.errors import UserError


def test_every_option():
    p = parse_prompt_line("zkz dog, sitting --n low quality, worst --w 768 --h 512 --d 1 --l 7 --s 20 --ss k_euler", 3)
    assert (p.prompt, p.negative, p.width, p.height, p.seed, p.cfg_scale, p.steps, p.sampler) == (
        "zkz dog, sitting", "low quality, worst", 768, 512, 1, 7.0, 20, "k_euler")


def test_defaults():
    p = parse_prompt_line("zkz dog")
    assert (p.negative, p.width, p.height, p.seed, p.cfg_scale, p.steps, p.sampler) == ("", 512, 512, None, 7.5, 30, None)


def test_odd_order_case_and_clamping():
    p = parse_prompt_line("a cat --S 5000 --W 515 --H 10 --L 3.5 --D 42 --N blurry")
    assert (p.steps, p.width, p.height, p.cfg_scale, p.seed, p.negative) == (1000, 512, 64, 3.5, 42, "blurry")
    assert parse_prompt_line("x --s 0").steps == 1
    assert parse_prompt_line("x --g 3.5 --fs 1").prompt == "x", "Flux/SD3 options are ignored"
    assert parse_prompt_line("well-known--style cat").prompt == "well-known--style cat", "' --' only starts options"


def test_comments_and_blank_lines():
    text = "# header\n\nfirst --d 1\n   \n  # indented comment\nsecond --w 256\n"
    ps = parse_prompts(text)
    assert [(p.prompt, p.line) for p in ps] == [("first", 3), ("second", 6)]


@pytest.mark.parametrize("line, needle", [
    ("cat --w wide", "--w wide"), ("cat --d 1.5", "--d 1.5"), ("cat --l x", "--l x"),
    ("cat --s", "--s"), ("cat --zz 1", "unknown option '--zz'"), ("--w 512", "no prompt"),
])
def test_bad_values_name_the_line(line, needle):
    with pytest.raises(UserError) as e:
        parse_prompts("ok line\n" + line)
    assert "line 2" in e.value.message and needle in e.value.message and e.value.field == "sample_prompts"


def test_samplers():
    assert canonical_sampler("k_euler_a") == "euler_a" and canonical_sampler("DPMSolver++") == "dpmsolver++"
    assert canonical_sampler("whatever") == "ddim"

    for name, cls in [("euler_a", "EulerAncestralDiscreteScheduler"), ("ddim", "DDIMScheduler"),
                      ("k_dpm_2_a", "KDPM2AncestralDiscreteScheduler"), ("dpmsolver++", "DPMSolverMultistepScheduler"),
                      ("lms", "LMSDiscreteScheduler"), ("heun", "HeunDiscreteScheduler"), ("pndm", "PNDMScheduler")]:
        s = make_scheduler(name, v_prediction=True)
        assert type(s).__name__ == cls and s.config.prediction_type == "v_prediction"
        assert s.config.beta_schedule == "scaled_linear"
    assert make_scheduler("dpmsolver").config.algorithm_type == "dpmsolver"


def test_sample_filename():
    assert sample_filename("mylora", step=0, epoch=3, index=0, timestamp="20240501123000", seed=1) == \
        "mylora_e000003_00_20240501123000_1.png"
    assert sample_filename("", step=123, epoch=None, index=2, timestamp="20240501123000", seed=None) == \
        "000123_02_20240501123000.png"
