"""Generate with `<lora:NAME:WEIGHT>` tags: tag parsing, merging (exact, reversible, additive, signed),
agreement with diffusers' own multi-adapter LoRA loading, clear errors, and the CLI."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from kohya_lite import cli
from kohya_lite.errors import UserError
from kohya_lite.generate import (GenerateRequest, LoraTag, generate, merged_loras, parse_lora_tags, prepare,
                                 resolve_loras, split_inline_options)
from kohya_lite.models.load import load_model
from kohya_lite.network.lora import LoRANetwork
from lora_helpers import write_lora

SIZE, STEPS = 64, 3


def _req(prompt: str, **kw) -> GenerateRequest:
    kw = {"steps": STEPS, "width": SIZE, "height": SIZE, "seed": 7, "negative": "blurry", **kw}
    return GenerateRequest(prompt=prompt, **kw)


def _px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def model(tiny_sd1_dir):
    return load_model(tiny_sd1_dir)


@pytest.fixture(scope="module")
def lora_dir(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("Lora")
    write_lora(model, d / "alpha.safetensors", seed=1)
    write_lora(model, d / "styles" / "beta.safetensors", seed=2)
    return d


def _snapshot(model) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, m in [("unet", model.unet), *((f"te{i}", te) for i, te in enumerate(model.text_encoders))]:
        out.update({f"{prefix}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:3]


# ---- tag parsing (pure) -------------------------------------------------------------------------------------

def test_parse_many_tags_default_negative_and_whitespace():
    p = parse_lora_tags("a cat, <lora:alpha:0.8>, red hat <lora:beta> <LORA: my style : -1.5 >,  sunny")
    assert p.prompt == "a cat, red hat, sunny"
    assert [(t.name, t.te_weight, t.unet_weight) for t in p.loras] == [
        ("alpha", 0.8, 0.8), ("beta", 1.0, 1.0), ("my style", -1.5, -1.5)]
    assert p.loras[0].text == "<lora:alpha:0.8>"
    # A1111's two-weight form (text encoder first) and named weights
    te_unet = parse_lora_tags("<lora:x:0.25:1.5> x")
    assert te_unet.loras == (LoraTag("x", 0.25, 1.5, "<lora:x:0.25:1.5>"),) and te_unet.prompt == "x"
    named = parse_lora_tags("<lora:x:unet=0.5> <lora:y:te=0:unet=-1>").loras
    assert [(t.te_weight, t.unet_weight) for t in named] == [(1.0, 0.5), (0.0, -1.0)]
    # duplicates are kept (their weights add); a prompt without tags is untouched
    assert len(parse_lora_tags("<lora:a:1><lora:a:0.5>").loras) == 2
    assert parse_lora_tags("  (masterpiece:1.2),  cat  ") == parse_lora_tags("(masterpiece:1.2),  cat")
    assert parse_lora_tags("(masterpiece:1.2),  cat").prompt == "(masterpiece:1.2),  cat"
    assert parse_lora_tags("<lora:only:1>").prompt == ""


@pytest.mark.parametrize("text,words", [
    ("<lora:x:abc>", "not a weight"), ("<lora::1>", "no LoRA name"), ("<lora: :1>", "no LoRA name"),
    ("cat <lora:x:0.5", "unclosed"), ("<lora:x<lora:y:1>", "unclosed"), ("<lora:x:1:2:3>", "3 weights"),
    ("<lora:x:dyn=4>", "dyn"), ("<lora:x:nan>", "not a weight"), ("<lora:x:>", "not a weight"),
])
def test_parse_malformed_tags(text, words):
    with pytest.raises(UserError) as err:
        parse_lora_tags(text)
    assert words in err.value.message and err.value.field == "prompt" and err.value.fix


def test_inline_kohya_options_override_the_request():
    text, opts = split_inline_options("zkz dog <lora:a:1> --n low quality --s 12 --d 5 --l 4.5 --w 100 --h 72 --ss ddim")
    assert text == "zkz dog <lora:a:1>"
    assert opts == {"negative": "low quality", "steps": 12, "seed": 5, "cfg_scale": 4.5, "width": 96, "height": 72,
                    "sampler": "ddim"}
    job = prepare(GenerateRequest("zkz dog <lora:a:0.5> --s 3 --d 9", negative="x", steps=30, seed=1))
    assert (job.prompt, job.steps, job.seed, job.negative, job.loras[0].weight) == ("zkz dog", 3, 9, "x", 0.5)
    with pytest.raises(UserError, match="--s abc"):
        prepare(GenerateRequest("dog --s abc"))


@pytest.mark.parametrize("kw,field", [
    ({"prompt": "   "}, "prompt"), ({"prompt": "a", "steps": 0}, "steps"), ({"prompt": "a", "sampler": "magic"}, "sampler"),
    ({"prompt": "a", "negative": "<lora:x:1>"}, "negative"), ({"prompt": "a", "width": 20}, "width"),
    ({"prompt": "a", "cfg_scale": -1}, "cfg_scale"),
])
def test_prepare_rejects_bad_values(kw, field):
    with pytest.raises(UserError) as err:
        prepare(GenerateRequest(**kw))
    assert err.value.field == field


# ---- merging -------------------------------------------------------------------------------------------------

def _network_deltas(model, path) -> dict[int, tuple[torch.nn.Module, torch.Tensor]]:
    """ΔW per model module, computed independently with LoRANetwork (not the generate code)."""
    net = LoRANetwork.from_weights(model, load_file(str(path)))
    return {id(l.org_module): (l.org_module, l.delta_weight().reshape(l.org_module.weight.shape)) for l in net.loras()}


def test_merge_is_the_signed_sum_and_restores_exactly(model, lora_dir):
    base = _snapshot(model)
    uses = resolve_loras(parse_lora_tags("<lora:alpha:0.7> <lora:beta:-0.4:1.3>").loras, lora_dir, "sd1")
    da, db = _network_deltas(model, lora_dir / "alpha.safetensors"), _network_deltas(model, uses[1].path)
    te_modules = {id(m) for te in model.text_encoders for m in te.modules()}
    with merged_loras(model, uses) as used:
        assert [(u.name, u.modules) for u in used] == [("alpha", len(da)), ("beta", len(db))]
        worst = 0.0
        for key, (module, d1) in da.items():
            w2 = -0.4 if key in te_modules else 1.3
            expected = 0.7 * d1 + w2 * db[key][1]
            original = base_weight(base, model, module)
            worst = max(worst, (module.weight - original - expected).abs().max().item())
        assert worst < 1e-5
    _assert_same(base, _snapshot(model))
    # a negative weight moves every weight the other way
    with merged_loras(model, resolve_loras([LoraTag("alpha", 0.5, 0.5)], lora_dir, "sd1")):
        plus = {k: v.clone() for k, v in _snapshot(model).items()}
    with merged_loras(model, resolve_loras([LoraTag("alpha", -0.5, -0.5)], lora_dir, "sd1")):
        minus = _snapshot(model)
    changed = [k for k in base if not torch.equal(plus[k], base[k])]
    assert len(changed) == len(da)
    for k in changed:
        torch.testing.assert_close(plus[k] - base[k], -(minus[k] - base[k]), atol=1e-6, rtol=0)
    _assert_same(base, _snapshot(model))


def base_weight(base: dict, model, module) -> torch.Tensor:
    for prefix, root in [("unet", model.unet), *((f"te{i}", te) for i, te in enumerate(model.text_encoders))]:
        for name, m in root.named_modules():
            if m is module:
                return base[f"{prefix}.{name}.weight"]
    raise KeyError(module)


def test_weights_come_back_after_an_error(model, lora_dir):
    base = _snapshot(model)
    with pytest.raises(RuntimeError):
        with merged_loras(model, resolve_loras([LoraTag("alpha")], lora_dir, "sd1")):
            now = _snapshot(model)
            assert sum(not torch.equal(now[k], base[k]) for k in base) > 50
            raise RuntimeError("render failed")
    _assert_same(base, _snapshot(model))


# ---- generating ---------------------------------------------------------------------------------------------

def test_generate_weight_zero_sum_and_negative(model, lora_dir):
    base = _snapshot(model)
    plain = generate(model, _req("a cat"), lora_dir=lora_dir)
    assert plain.image.size == (SIZE, SIZE) and plain.seed == 7 and plain.loras == []
    zero = generate(model, _req("a cat <lora:alpha:0>"), lora_dir=lora_dir)
    assert np.array_equal(_px(zero.image), _px(plain.image))
    assert zero.loras[0].modules == 0
    a = _px(generate(model, _req("a cat <lora:alpha:0.8>"), lora_dir=lora_dir).image)
    b = _px(generate(model, _req("a cat <lora:beta:0.8>"), lora_dir=lora_dir).image)
    both = generate(model, _req("a cat <lora:alpha:0.8>, <lora:beta:0.8>"), lora_dir=lora_dir)
    assert [u.name for u in both.loras] == ["alpha", "beta"]
    ab = _px(both.image)
    for other in (a, b, _px(plain.image)):
        assert np.abs(ab - other).max() > 10
    neg = _px(generate(model, _req("a cat <lora:alpha:-0.8>"), lora_dir=lora_dir).image)
    assert np.abs(neg - a).max() > 10 and np.abs(neg - _px(plain.image)).max() > 10
    _assert_same(base, _snapshot(model))

    # both together == the base model with the summed deltas added by hand
    da = _network_deltas(model, lora_dir / "alpha.safetensors")
    db = _network_deltas(model, lora_dir / "styles" / "beta.safetensors")
    with torch.no_grad():
        for key, (module, d) in da.items():
            module.weight += 0.8 * d + 0.8 * db[key][1]
    try:
        by_hand = _px(generate(model, _req("a cat"), lora_dir=lora_dir).image)
    finally:
        with torch.no_grad():
            for key, (module, _) in da.items():
                module.weight.copy_(base_weight(base, model, module))
    assert np.abs(by_hand - ab).max() <= 1
    _assert_same(base, _snapshot(model))


def test_random_seed_is_reported_and_reproduces(model, lora_dir):
    r = generate(model, _req("a cat <lora:alpha:0.5>", seed=-1, steps=2), lora_dir=lora_dir)
    again = generate(model, _req("a cat <lora:alpha:0.5>", seed=r.seed, steps=2), lora_dir=lora_dir)
    assert np.array_equal(_px(r.image), _px(again.image))
    info = r.infotext()
    assert info.startswith("a cat <lora:alpha:0.5>\nNegative prompt: blurry\n")
    assert f"Seed: {r.seed}" in info and "Sampler: Euler a" in info and "Size: 64x64" in info


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_matches_diffusers_multi_adapter(model, lora_dir, tiny_sd1_dir):
    """Our merged output equals diffusers' own peft LoRA path: load_lora_weights + set_adapters([a, b], [w1, w2])."""
    import diffusers
    import transformers
    from diffusers import StableDiffusionPipeline

    from kohya_lite.prompts import make_scheduler

    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    logging.getLogger("peft").setLevel(logging.ERROR)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd1_dir), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_dir / "alpha.safetensors"), adapter_name="alpha")
    pipe.load_lora_weights(str(lora_dir / "styles" / "beta.safetensors"), adapter_name="beta")
    w1, w2 = 0.9, -0.6
    pipe.set_adapters(["alpha", "beta"], [w1, w2])

    def theirs(seed: int):
        pipe.scheduler = make_scheduler("euler_a")
        return _px(pipe("a cat", negative_prompt="blurry", num_inference_steps=STEPS, guidance_scale=7.0,
                        width=SIZE, height=SIZE, generator=torch.Generator().manual_seed(seed)).images[0])

    ours = _px(generate(model, _req(f"a cat <lora:alpha:{w1}> <lora:beta:{w2}>", cfg_scale=7.0), lora_dir=lora_dir).image)
    plain = _px(generate(model, _req("a cat", cfg_scale=7.0), lora_dir=lora_dir).image)
    reference = theirs(7)
    assert np.abs(reference - plain).max() > 20  # the LoRAs matter …
    assert np.abs(ours - reference).max() <= 2  # … and both tools agree
    assert np.abs(ours - reference).mean() < 0.05


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_locon_and_sdxl_match_diffusers(family, request, tmp_path):
    """3×3-conv (LoCon) modules, and SDXL's SGM names with two text encoders, merge as diffusers applies them."""
    import diffusers
    import transformers

    from kohya_lite.prompts import make_scheduler

    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    folder = request.getfixturevalue(f"tiny_{family}_dir")
    local = load_model(folder)
    path = write_lora(local, tmp_path / "locon.safetensors", seed=3, conv=True)
    req = _req("a cat <lora:locon:0.7>", cfg_scale=7.0)
    ours = _px(generate(local, req, lora_dir=tmp_path).image)
    cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
    extra = {} if family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                         "requires_safety_checker": False}
    pipe = cls.from_pretrained(str(folder), local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(path), adapter_name="locon")
    pipe.set_adapters(["locon"], [0.7])
    pipe.scheduler = make_scheduler("euler_a")
    reference = _px(pipe("a cat", negative_prompt="blurry", num_inference_steps=STEPS, guidance_scale=7.0, width=SIZE,
                         height=SIZE, generator=torch.Generator().manual_seed(7)).images[0])
    plain = _px(generate(local, _req("a cat", cfg_scale=7.0), lora_dir=tmp_path).image)
    assert np.abs(reference - plain).max() > 20
    assert np.abs(ours - reference).max() <= 2 and np.abs(ours - reference).mean() < 0.05


# ---- errors ----------------------------------------------------------------------------------------------------

def test_unknown_lora_lists_close_matches(model, lora_dir):
    with pytest.raises(UserError) as err:
        generate(model, _req("a cat <lora:alpah:1>"), lora_dir=lora_dir)
    assert "no LoRA named 'alpah'" in err.value.message and "close matches: alpha" in err.value.message
    with pytest.raises(UserError, match="does not exist"):
        generate(model, _req("a cat <lora:alpha:1>"), lora_dir=lora_dir / "missing")


def test_wrong_family_loras_are_refused(model, lora_dir, tmp_path):
    tensors = load_file(str(lora_dir / "alpha.safetensors"))
    # SDXL by metadata
    save_file(tensors, str(tmp_path / "xl_meta.safetensors"), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    # SDXL by keys (te1/te2 prefixes), no metadata
    xl = {k.replace("lora_te_", "lora_te2_"): v for k, v in tensors.items()}
    save_file(xl, str(tmp_path / "xl_keys.safetensors"))
    # SD2 by metadata, and by TE width (1024-wide q_proj, no metadata)
    save_file(tensors, str(tmp_path / "sd2_meta.safetensors"), metadata={"ss_base_model_version": "sd_v2"})
    wide = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 1024),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(1024, 4),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(2.0)}
    save_file(wide, str(tmp_path / "sd2_wide.safetensors"))
    base = _snapshot(model)
    for stem, want in (("xl_meta", "Stable Diffusion XL"), ("xl_keys", "Stable Diffusion XL"),
                       ("sd2_meta", "Stable Diffusion 2.x"), ("sd2_wide", "Stable Diffusion 2.x")):
        with pytest.raises(UserError) as err:
            generate(model, _req(f"a cat <lora:{stem}:1>"), lora_dir=tmp_path)
        msg = err.value.message
        assert f"made for {want}" in msg and "the model is Stable Diffusion 1.x" in msg, msg
        assert err.value.fix
    _assert_same(base, _snapshot(model))


def test_family_check_trusts_metadata_and_strong_key_hints():
    from kohya_lite.generate import check_family
    from kohya_lite.network.io import LoraFile

    def lf(family, source):
        return LoraFile({}, {}, family, source, "kohya")

    check_family(lf("sd1", "keys"), "sd2", "x")  # 'sd1' from keys is only the default guess: shapes decide
    check_family(lf("sd2", "metadata"), "sd2", "x")
    for lora, model_family in ((lf("sd1", "metadata"), "sd2"), (lf("sd2", "keys"), "sd1"), (lf("sd1", "keys"), "sdxl"),
                               (lf("sdxl", "keys"), "sd1")):
        with pytest.raises(UserError, match="was made for"):
            check_family(lora, model_family, "x")


def test_shape_mismatch_is_a_clear_error(model, lora_dir, tmp_path):
    tensors = load_file(str(lora_dir / "alpha.safetensors"))
    key = next(k for k in tensors if k.endswith("attn2_to_k.lora_down.weight"))
    tensors[key] = torch.zeros(4, 48)  # cross-attention width 48: another model
    save_file(tensors, str(tmp_path / "odd.safetensors"))
    (tmp_path / "alpha.safetensors").write_bytes((lora_dir / "alpha.safetensors").read_bytes())
    base = _snapshot(model)
    with pytest.raises(UserError, match="does not fit this Stable Diffusion 1.x model"):
        generate(model, _req("a cat <lora:alpha:1> <lora:odd:1>"), lora_dir=tmp_path)
    _assert_same(base, _snapshot(model))


# ---- CLI -------------------------------------------------------------------------------------------------------

def test_cli_generate_writes_png_with_parameters(tiny_sd1_dir, lora_dir, tmp_path, capsys):
    out = tmp_path / "out" / "cat.png"
    rc = cli.main(["generate", "--model", str(tiny_sd1_dir), "--lora-dir", str(lora_dir),
                   "a cat <lora:alpha:0.6> <lora:beta:-0.3>", "--negative", "blurry", "--steps", "2", "--seed", "3",
                   "--width", "64", "--height", "64", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "seed 3" in stdout and "alpha ×0.6" in stdout and "beta ×-0.3" in stdout
    with Image.open(out) as img:
        assert img.size == (64, 64)
        assert "Seed: 3" in img.text["parameters"] and "<lora:alpha:0.6>" in img.text["parameters"]
    rc = cli.main(["generate", "--model", str(tiny_sd1_dir), "--lora-dir", str(lora_dir), "a cat <lora:nope:1>",
                   "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "no LoRA named 'nope'" in err and "Traceback" not in err
    assert cli.main(["generate", "--model", str(tiny_sd1_dir), "a <lora:x", "--out", str(tmp_path / "y.png")]) == 2
    assert "unclosed" in capsys.readouterr().err


def test_cli_device_option(tiny_sd1_dir, lora_dir, tmp_path, capsys):
    """--device cpu renders in fp32 on the CPU; a CUDA device on a machine without one is a plain error,
    given before the model loads."""
    import torch

    from kohya_lite.generate import inference_placement

    assert inference_placement("cpu") == (torch.device("cpu"), torch.float32)
    rc = cli.main(["generate", "--model", str(tiny_sd1_dir), "--device", "cpu", "a cat", "--steps", "1",
                   "--width", "64", "--height", "64", "--out", str(tmp_path / "c.png")])
    assert rc == 0 and (tmp_path / "c.png").is_file()
    capsys.readouterr()
    if not torch.cuda.is_available():
        rc = cli.main(["generate", "--model", str(tiny_sd1_dir), "--device", "cuda", "a cat",
                       "--out", str(tmp_path / "g.png")])
        err = capsys.readouterr().err
        assert rc == 2 and "no usable NVIDIA GPU" in err and "Traceback" not in err
    rc = cli.main(["generate", "--model", str(tiny_sd1_dir), "--device", "toaster", "a cat", "--out", str(tmp_path / "t.png")])
    assert rc == 2 and "not a device" in capsys.readouterr().err
