"""`lora convert`: kohya → diffusers → kohya gives the same file; the diffusers file loads in diffusers like the kohya
one; a file written by diffusers' own save_lora_weights (and a PEFT adapter folder) converts to kohya and works in
our Generate exactly as diffusers' load_lora_weights does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kohya_lite.cli import main
from kohya_lite.errors import UserError
from kohya_lite.generate import GenerateRequest, generate
from kohya_lite.library import read_metadata
from kohya_lite.lora_tools import module_delta
from kohya_lite.models.load import load_model
from kohya_lite.network import naming
from kohya_lite.network.io import load_lora, read_lora_file
from kohya_lite.tools.convert import convert_lora
from lora_helpers import write_lora


def _quiet():
    import diffusers
    import transformers

    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()


def _fused(model_dir, lora_path) -> dict[str, torch.Tensor]:
    pipe = load_model(model_dir).make_pipeline()
    pipe.load_lora_weights(str(lora_path), adapter_name="x")
    pipe.fuse_lora(lora_scale=0.8)
    pipe.unload_lora_weights()
    out = {f"unet.{k}": v.clone() for k, v in pipe.unet.state_dict().items()}
    for i, te in enumerate([pipe.text_encoder] + ([pipe.text_encoder_2] if hasattr(pipe, "text_encoder_2") else [])):
        out.update({f"te{i}.{k}": v.clone() for k, v in te.state_dict().items()})
    return out


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_kohya_diffusers_kohya_round_trip(family, request, tmp_path):
    _quiet()
    model_dir = request.getfixturevalue(f"tiny_{family}_dir")
    model = load_model(model_dir)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0",
            "ss_base_model_version": "sdxl_base_v1-0" if family == "sdxl" else "sd_v1", "ss_v2": "False",
            "ss_output_name": "zkz", "modelspec.trigger_phrase": "zkz object", "ss_tag_frequency": '{"5_zkz": {"a": 1}}'}
    src = write_lora(model, tmp_path / "src.safetensors", seed=4, conv=True, metadata=meta)
    half = tmp_path / "src16.safetensors"
    convert_lora(src, half, to="kohya", precision="fp16")  # a fp16 file stays fp16 through the round trip

    for original in (src, half):
        folder = tmp_path / f"{original.stem}-diffusers"
        d = convert_lora(original, folder)  # auto: kohya → diffusers, a folder gets pytorch_lora_weights.safetensors
        assert d.to == "diffusers" and d.path == folder / "pytorch_lora_weights.safetensors"
        keys = list(load_file(str(d.path)))
        assert all(k.startswith(("unet.", "text_encoder.", "text_encoder_2.")) for k in keys)
        assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
        assert any(".text_model.encoder.layers." in k for k in keys)
        back = convert_lora(d.path, tmp_path / f"{original.stem}-back.safetensors")  # auto: → kohya
        assert back.to == "kohya" and back.source_layout == "peft"
        a, b = load_file(str(original)), load_file(str(back.path))
        assert a.keys() == b.keys()
        assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a), "identical tensors"
        assert read_metadata(original) == read_metadata(back.path), "identical metadata (hashes recomputed alike)"

    # the diffusers file does in diffusers what the kohya file does
    d = tmp_path / "src-diffusers" / "pytorch_lora_weights.safetensors"
    adapter = json.loads(read_metadata(d)["lora_adapter_metadata"])
    assert adapter["unet.r"] == 4 and adapter["unet.lora_alpha"] == 2.0
    k_fused, d_fused = _fused(model_dir, src), _fused(model_dir, d)
    assert k_fused.keys() == d_fused.keys()
    assert max((k_fused[k] - d_fused[k]).abs().max().item() for k in k_fused) < 1e-6


def _randomise_lora(module, g):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def test_diffusers_save_lora_weights_file_works_in_generate(tiny_sd1_dir, tmp_path):
    """A LoRA made with peft and written by diffusers' own save_lora_weights (rank/alpha patterns, TE with another
    rank and alpha), converted to kohya, renders in our Generate what diffusers renders after load_lora_weights."""
    _quiet()
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    src = load_model(tiny_sd1_dir).make_pipeline()
    unet_cfg = LoraConfig(r=4, lora_alpha=2, init_lora_weights="gaussian",
                          target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2", "conv1"],
                          rank_pattern={"ff.net.2": 8}, alpha_pattern={"proj_in": 8})
    src.unet.add_adapter(unet_cfg)
    te_cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "fc1"])
    inject_adapter_in_model(te_cfg, src.text_encoder)
    g = torch.Generator().manual_seed(5)
    _randomise_lora(src.unet, g)
    _randomise_lora(src.text_encoder, g)
    out = tmp_path / "hf"
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=get_peft_model_state_dict(src.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(src.text_encoder),
        unet_lora_adapter_metadata=unet_cfg.to_dict(), text_encoder_lora_adapter_metadata=te_cfg.to_dict())

    library = tmp_path / "Lora"
    res = convert_lora(out, library / "hf.safetensors", family="sd1")
    assert res.to == "kohya" and res.source_layout == "peft" and any("folded" in n for n in res.notes)
    tensors, meta = read_lora_file(library / "hf.safetensors")
    assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {2.0}, "one alpha, patterns folded"
    assert meta["ss_network_dim"] == "Dynamic" and meta["ss_base_model_version"] == "sd_v1"
    assert "lora_adapter_metadata" not in meta

    ref = load_model(tiny_sd1_dir)  # diffusers applies the original file to this one
    pipe = ref.make_pipeline()
    pipe.load_lora_weights(str(out))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    req = dict(steps=3, width=64, height=64, seed=3, negative="")
    theirs = generate(ref, GenerateRequest(prompt="a blue ball", **req), lora_dir=library)
    base = load_model(tiny_sd1_dir)
    ours = generate(base, GenerateRequest(prompt="a blue ball <lora:hf:1>", **req), lora_dir=library)
    plain = generate(base, GenerateRequest(prompt="a blue ball", **req), lora_dir=library)
    px = [np.asarray(r.image.convert("RGB")).astype(int) for r in (theirs, ours, plain)]
    assert np.abs(px[0] - px[1]).max() <= 2
    assert np.abs(px[0] - px[2]).max() > 10


def test_peft_adapter_folder_with_rslora(tiny_sd1_dir, tmp_path):
    """PEFT's own layout (`base_model.model.` keys, alpha in adapter_config.json, rsLoRA scale alpha/√r): every
    converted module's ΔW equals peft's get_delta_weight."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    unet = load_model(tiny_sd1_dir).unet
    cfg = LoraConfig(r=4, lora_alpha=3, use_rslora=True, target_modules=["to_k", "proj_out"])
    inject_adapter_in_model(cfg, unet)
    _randomise_lora(unet, torch.Generator().manual_seed(8))
    folder = tmp_path / "peft"
    folder.mkdir()
    sd = {f"base_model.model.{k}": v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(sd, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(cfg.to_dict(), default=list))
    res = convert_lora(folder, tmp_path / "k.safetensors", family="sd1", precision="float")
    tensors, _ = read_lora_file(res.path)
    checked = 0
    for path, layer in unet.named_modules():
        if isinstance(layer, LoraLayer):
            name = naming.unet_lora_name(path, "sd1")
            torch.testing.assert_close(module_delta(tensors, name), layer.get_delta_weight("default").float(),
                                       atol=1e-6, rtol=1e-5)
            checked += 1
    assert checked == res.modules["unet"] > 0


def test_cli_and_refusals(tiny_sd1_dir, tmp_path, capsys):
    model = load_model(tiny_sd1_dir)
    src = write_lora(model, tmp_path / "a.safetensors", seed=1)
    assert main(["lora", "convert", str(src), str(tmp_path / "d.safetensors"), "--to", "diffusers"]) == 0
    assert "diffusers layout" in capsys.readouterr().out
    assert load_lora(tmp_path / "d.safetensors").layout == "peft"
    assert main(["lora", "convert", str(src), str(src), "--to", "kohya"]) == 2
    assert "replace the source" in capsys.readouterr().err
    with pytest.raises(UserError):
        convert_lora(src, tmp_path / "x.safetensors", to="onnx")
    with pytest.raises(UserError):
        convert_lora(src, tmp_path / "x.bin", to="kohya")
    (tmp_path / "two").mkdir()
    for n in ("a", "b"):
        write_lora(model, tmp_path / "two" / f"{n}.safetensors", seed=2)
    with pytest.raises(UserError) as e:
        convert_lora(tmp_path / "two", tmp_path / "y.safetensors")
    assert "2 .safetensors files" in e.value.message
