"""`lora extract`: from (base, base + a known rank-r ΔW) the LoRA's ΔW comes back; a higher rank is lossless, a
lower one is not; the text encoder is skipped when it did not change; metadata; refusals; the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from kohya_lite.cli import main
from kohya_lite.errors import UserError
from kohya_lite.library import read_metadata
from kohya_lite.lora_tools import module_delta
from kohya_lite.models.load import load_model
from kohya_lite.network.io import read_lora_file
from kohya_lite.network.lora import find_targets
from kohya_lite.tools.extract import clamp_value, extract_lora, svd_factor

R = 2  # the rank of the known change


def _known_change(model, *, seed: int, text_encoder: bool = True) -> dict[str, torch.Tensor]:
    """Add a random rank-R ΔW to every LoCon target of `model` (in place); returns {kohya name: ΔW}."""
    g = torch.Generator().manual_seed(seed)
    deltas = {}
    with torch.no_grad():
        for t in find_targets(model.unet, model.text_encoders, model.family, conv=True):
            if not text_encoder and not t.is_unet:
                continue
            w = t.module.weight
            up = torch.randn(w.shape[0], R, generator=g) * 0.2
            down = torch.randn(R, w[0].numel(), generator=g) * 0.2
            d = (up @ down).reshape(w.shape)
            w.add_(d)
            deltas[t.name] = d
    return deltas


@pytest.fixture(scope="module")
def tuned(tiny_sd1_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    model = load_model(tiny_sd1_dir)
    deltas = _known_change(model, seed=0)
    model.make_pipeline().save_pretrained(str(root / "tuned"))
    unet_only = load_model(tiny_sd1_dir)
    unet_deltas = _known_change(unet_only, seed=1, text_encoder=False)
    unet_only.make_pipeline().save_pretrained(str(root / "tuned-unet"))
    return {"root": root, "dir": root / "tuned", "deltas": deltas, "unet_dir": root / "tuned-unet",
            "unet_deltas": unet_deltas, "base": load_model(tiny_sd1_dir), "model": load_model(root / "tuned")}


def _overall(path, deltas) -> float:
    """‖extracted ΔW − ΔW‖ / ‖ΔW‖ over all modules together."""
    tensors, _ = read_lora_file(path)
    err = sum(((module_delta(tensors, n) - d) ** 2).sum().item() for n, d in deltas.items())
    return (err / sum((d ** 2).sum().item() for d in deltas.values())) ** 0.5


def _worst(path, deltas, names=None) -> float:
    tensors, _ = read_lora_file(path)
    names = names or sorted(deltas)
    worst = 0.0
    for n in names:
        err = (module_delta(tensors, n) - deltas[n]).abs().max().item() / deltas[n].abs().max().item()
        worst = max(worst, err)
    return worst


def test_extract_recovers_a_known_change(tiny_sd1_dir, tuned, tmp_path):
    out = tmp_path / "x.safetensors"
    steps = []
    res = extract_lora(tiny_sd1_dir, tuned["dir"], out, rank=R, conv_rank=R, clamp_quantile=1.0, precision="float",
                       progress=lambda d, t, w: steps.append((d, t)))
    deltas = tuned["deltas"]
    tensors, _ = read_lora_file(out)
    assert {k.rsplit(".", 2)[0] for k in tensors if k.endswith("lora_down.weight")} == set(deltas)
    assert res.text_encoder_extracted and res.modules["text_encoder"] == sum(n.startswith("lora_te_") for n in deltas) and res.unchanged == 0
    assert _worst(out, deltas) < 1e-4
    assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {float(R)}, "one alpha per file"
    assert steps[-1][0] == steps[-1][1] > 0

    # the same models, already loaded (as the page may hold them)
    higher = extract_lora(tuned["base"], tuned["model"], tmp_path / "x8.safetensors", rank=8, conv_rank=8,
                          clamp_quantile=1.0, precision="float")
    assert higher.rank == 8 and _worst(higher.path, deltas) < 1e-4, "a higher rank is lossless"
    lower = extract_lora(tuned["base"], tuned["model"], tmp_path / "x1.safetensors", rank=1, conv_rank=1,
                         clamp_quantile=1.0, precision="float")
    assert _worst(lower.path, deltas) > 0.05, "rank 1 cannot hold a rank-2 change"
    clamped = extract_lora(tuned["base"], tuned["model"], tmp_path / "xc.safetensors", rank=R, conv_rank=R,
                           precision="float")  # the default 0.99 quantile clips the largest values
    assert _worst(clamped.path, deltas) > 1e-4 and 1e-4 < _overall(clamped.path, deltas) < 0.2

    meta = read_metadata(out)
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == str(R)
    assert float(meta["ss_network_alpha"]) == R and meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": str(R), "conv_alpha": str(float(R))}
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["modelspec.title"] == "x"
    assert "sshs_model_hash" in meta


def test_unchanged_text_encoder_is_left_out(tiny_sd1_dir, tuned, tmp_path, capsys):
    out = tmp_path / "u.safetensors"
    assert main(["lora", "extract", "--base", str(tiny_sd1_dir), "--tuned", str(tuned["unet_dir"]), "--out", str(out),
                 "--rank", "4", "--clamp-quantile", "1", "--precision", "float"]) == 0
    printed = capsys.readouterr().out
    assert "text encoder is the same" in printed and "UNet only" in printed
    tensors, _ = read_lora_file(out)
    names = {k.rsplit(".", 2)[0] for k in tensors if k.endswith("lora_down.weight")}
    assert names and all(n.startswith("lora_unet_") for n in names)
    # without --conv-rank only the attention-block modules are extracted (no 3×3 convs)
    unet_deltas = tuned["unet_deltas"]
    m = load_model(tiny_sd1_dir)
    assert names == {t.name for t in find_targets(m.unet, [], "sd1", conv=False, train_text_encoder=False)}
    assert _worst(out, unet_deltas, sorted(names)) < 1e-4


def test_svd_factor_and_clamp():
    g = torch.Generator().manual_seed(3)
    d = torch.randn(16, 2, generator=g) @ torch.randn(2, 8, generator=g)
    down, up, k = svd_factor(d, 4, alpha=4.0)
    assert k == 4 and down.shape == (4, 8) and up.shape == (16, 4)
    torch.testing.assert_close((4.0 / k) * up @ down, d, atol=1e-5, rtol=1e-5)
    down, up, k = svd_factor(d, 32, alpha=32.0)  # the rank is capped by the matrix: the scale is folded into up
    assert k == 8
    torch.testing.assert_close((32.0 / k) * up @ down, d, atol=1e-5, rtol=1e-5)
    assert clamp_value(torch.tensor([1.0, -5.0]), torch.tensor([2.0]), 1.0) is None
    assert clamp_value(torch.tensor([1.0, -5.0]), torch.tensor([2.0]), 0.5) == 2.0  # |values| quantile: sign-blind


def test_refusals(tiny_sd1_dir, tiny_sdxl_dir, tuned, tmp_path):
    with pytest.raises(UserError) as e:
        extract_lora(tiny_sd1_dir, tiny_sd1_dir, tmp_path / "a.safetensors")
    assert "same" in e.value.message
    with pytest.raises(UserError) as e:
        extract_lora(tuned["base"], tiny_sd1_dir / "tiny-sd1.safetensors", tmp_path / "a.safetensors")
    assert "identical" in e.value.message
    with pytest.raises(UserError) as e:
        extract_lora(tuned["base"], tiny_sdxl_dir, tmp_path / "a.safetensors")
    assert "Stable Diffusion XL" in e.value.message
    with pytest.raises(UserError):
        extract_lora(tiny_sd1_dir, tiny_sdxl_dir, tmp_path / "a.ckpt")
    with pytest.raises(UserError):
        extract_lora(tiny_sd1_dir, tiny_sdxl_dir, tmp_path / "a.safetensors", clamp_quantile=1.5)
    with pytest.raises(UserError) as e:
        extract_lora(tuned["base"], tmp_path / "missing", tmp_path / "a.safetensors")
    assert e.value.message.startswith("tuned model:")
    assert not (tmp_path / "a.safetensors").exists()
