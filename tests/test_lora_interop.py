"""Interop of the files kohya-lite writes (lora-file-format §16): diffusers round trip with fused-weight check
(T1), A1111/ComfyUI key-map emulation (T2), metadata and hashes (T3), plus reading other layouts."""

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save, save_file

from kohya_lite.config import TrainingConfig
from kohya_lite.errors import UserError
from kohya_lite.models.families import modelspec_architecture
from kohya_lite.models.ldm import to_ldm_state_dict
from kohya_lite.models.load import load_model
from kohya_lite.library import lora_file_info
from kohya_lite.network.io import (file_model_hash, load_lora, lora_hashes, read_lora_file,
                                   save_lora_file)
from kohya_lite.network.lora import LoRANetwork, delta_weight
from kohya_lite.network.metadata import lora_metadata

RANK, ALPHA = 4, 2.0  # alpha ≠ rank so scale bugs show


def _quiet():
    import transformers
    import diffusers

    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()


def _header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        return n, json.loads(fh.read(n))


def _random_network(model, *, conv: bool, seed: int = 0) -> LoRANetwork:
    net = LoRANetwork.create(model, RANK, ALPHA, conv_rank=RANK if conv else 0, conv_alpha=ALPHA)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in net.loras():
            lora.lora_down.weight.copy_(torch.randn(lora.lora_down.weight.shape, generator=g) * 0.2)
            lora.lora_up.weight.copy_(torch.randn(lora.lora_up.weight.shape, generator=g) * 0.2)
    return net


def _write(model, tmp_path: Path, name: str, *, conv: bool) -> tuple[Path, LoRANetwork, dict]:
    net = _random_network(model, conv=conv)
    cfg = TrainingConfig(output_name=name, network_dim=RANK, network_alpha=ALPHA, sdxl=model.family == "sdxl",
                         LoRA_type="Kohya LoCon" if conv else "Standard", conv_dim=RANK, conv_alpha=ALPHA)
    meta = lora_metadata(cfg, family=model.family, v_prediction=model.v_prediction,
                         tag_frequency={"5_zkz object": {"zkz object": 5, "red": 2}})
    path = tmp_path / f"{name}.safetensors"
    written = save_lora_file(path, net.kohya_state_dict(), meta, precision="float")
    return path, net, written


def _peft_layers(module) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in module.modules())


def _diffusers_module_lookup(pipe, family: str) -> dict:
    """kohya name → module, built from the pipeline's own named_modules() (independent of kohya-lite's naming):
    '.'→'_', `text_model_` restored for the flattened CLIPTextModel, diffusers' SGM mapper for SDXL."""
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    lookup = {}
    for name, mod in pipe.unet.named_modules():
        lookup["lora_unet_" + name.replace(".", "_")] = mod
    tes = [("lora_te1" if family == "sdxl" else "lora_te", pipe.text_encoder)]
    if family == "sdxl":
        tes.append(("lora_te2", pipe.text_encoder_2))
    for prefix, te in tes:
        root = getattr(te, "text_model", te)
        for name, mod in root.named_modules():
            lookup[f"{prefix}_text_model_" + name.replace(".", "_")] = mod

    def resolve(kohya_name: str):
        if family == "sdxl" and kohya_name.startswith("lora_unet_"):
            (key,) = _maybe_map_sgm_blocks_to_diffusers({kohya_name + ".x": None}, pipe.unet.config)
            kohya_name = key.split(".")[0]
            for a, b in (("input_blocks", "down_blocks"), ("middle_block", "mid_block"), ("output_blocks", "up_blocks")):
                kohya_name = kohya_name.replace(a, b)
            for a, b in (("in_layers_2", "conv1"), ("out_layers_3", "conv2"), ("emb_layers_1", "time_emb_proj"),
                         ("skip_connection", "conv_shortcut")):
                kohya_name = re.sub(f"_{a}$", f"_{b}", kohya_name)
            kohya_name = re.sub(r"_op$", "_conv", kohya_name)
        return lookup[kohya_name]

    return resolve


def _run(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, generator=g, output_type="np").images


@pytest.mark.parametrize("family,conv", [("sd1", False), ("sd1", True), ("sdxl", False), ("sdxl", True)])
def test_t1_diffusers_round_trip(family, conv, tmp_path, request):
    _quiet()
    model_dir = request.getfixturevalue(f"tiny_{family}_dir")
    model = load_model(model_dir)
    path, net, meta = _write(model, tmp_path, f"{family}-lora", conv=conv)  # (not applied: the model stays clean)

    # key set: exactly the triplets, §3 names, SGM for SDXL
    n, header = _header(path)
    keys = [k for k in header if k != "__metadata__"]
    names = {k.split(".")[0] for k in keys}
    assert len(keys) == 3 * len(names)
    assert all(f"{m}.{s}" in header for m in names for s in ("lora_down.weight", "lora_up.weight", "alpha"))
    unet_names = [m for m in names if m.startswith("lora_unet_")]
    if family == "sdxl":
        assert all(re.match(r"lora_unet_(input_blocks|middle_block|output_blocks)_", m) for m in unet_names)
        assert {m.split("_text_model")[0] for m in names if not m.startswith("lora_unet")} == {"lora_te1", "lora_te2"}
    else:
        assert all(re.match(r"lora_unet_(down_blocks|mid_block|up_blocks)_", m) for m in unet_names)
        assert {m.split("_text_model")[0] for m in names if not m.startswith("lora_unet")} == {"lora_te"}

    pipe = model.make_pipeline()
    pipe.set_progress_bar_config(disable=True)
    base = _run(pipe)
    base_weights = {}
    resolve = _diffusers_module_lookup(pipe, family)
    for m in names:
        base_weights[m] = resolve(m).weight.detach().clone()

    pipe.load_lora_weights(str(path), adapter_name="a")
    counts = net.module_counts()
    assert _peft_layers(pipe.unet) == counts["unet"]
    assert _peft_layers(pipe.text_encoder) == counts["text_encoder"]
    if family == "sdxl":
        assert _peft_layers(pipe.text_encoder_2) == counts["text_encoder_2"]
    with_lora = _run(pipe)
    assert abs(with_lora - base).max() > 1e-3
    pipe.set_adapters(["a"], [0.0])
    assert abs(_run(pipe) - base).max() < 1e-5
    scale = 0.7
    pipe.set_adapters(["a"], [scale])
    unfused = _run(pipe)
    pipe.set_adapters(["a"], [1.0])
    pipe.fuse_lora(lora_scale=scale)
    assert abs(_run(pipe) - unfused).max() < 1e-4
    pipe.unload_lora_weights()
    tensors = load_file(str(path))
    worst = 0.0
    for m in names:
        expected = scale * delta_weight(tensors[f"{m}.lora_down.weight"], tensors[f"{m}.lora_up.weight"],
                                        float(tensors[f"{m}.alpha"]) / tensors[f"{m}.lora_down.weight"].shape[0])
        fused = resolve(m).weight.detach()
        worst = max(worst, (fused - base_weights[m] - expected.reshape(fused.shape)).abs().max().item())
    assert worst < 1e-6, worst


def test_t2_keymap_emulation(tiny_sdxl_dir, tiny_sd1_dir):
    """A1111/ComfyUI: SDXL `lora_unet_X` → `diffusion_model.X` must exist in the SGM checkpoint; SD1 names must be
    diffusers module paths; TE names must exist after `lora_te(1|2)_text_model_…` → `text_model.…`."""
    for model_dir in (tiny_sdxl_dir, tiny_sd1_dir):
        model = load_model(model_dir)
        net = LoRANetwork.create(model, RANK, ALPHA, conv_rank=RANK)
        names = [l.lora_name for l in net.loras()]
        if model.family == "sdxl":
            ldm = to_ldm_state_dict("sdxl", model.unet, model.vae, model.text_encoders)
            sgm_modules = {k[len("model.diffusion_model."):].rsplit(".", 1)[0].replace(".", "_")
                           for k in ldm if k.startswith("model.diffusion_model.")}
            for n in names:
                if n.startswith("lora_unet_"):
                    assert n[len("lora_unet_"):] in sgm_modules, n
        else:
            unet_modules = {p.replace(".", "_") for p, _ in model.unet.named_modules()}
            assert all(n[len("lora_unet_"):] in unet_modules for n in names if n.startswith("lora_unet_"))
        for prefix, te in zip(("lora_te1", "lora_te2") if model.family == "sdxl" else ("lora_te",),
                              model.text_encoders):
            root = getattr(te, "text_model", te)
            modules = {"text_model_" + p.replace(".", "_") for p, _ in root.named_modules()}
            for n in names:
                if n.startswith(prefix + "_text_model"):
                    assert n[len(prefix) + 1:] in modules, n


def test_t3_metadata_and_hashes(tiny_sd1_dir, tmp_path):
    model = load_model(tiny_sd1_dir)
    net = _random_network(model, conv=False)
    cfg = TrainingConfig(output_name="zkz", network_dim=RANK, network_alpha=ALPHA)
    meta = lora_metadata(cfg, family="sd1", dataset_dirs={"5_zkz object": {"n_repeats": 5, "img_count": 4}},
                         tag_frequency={"5_zkz object": {"zkz object": 4}},
                         bucket_info={"buckets": {"0": {"resolution": [64, 64], "count": 20}}, "mean_img_ar_error": 0.0})
    path = tmp_path / "zkz.safetensors"
    written = save_lora_file(path, net.kohya_state_dict(), meta, precision="fp16")
    n, header = _header(path)
    file_meta = header["__metadata__"]
    assert file_meta == written
    assert all(isinstance(v, str) for v in file_meta.values())
    for key in ("ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency", "ss_bucket_info"):
        json.loads(file_meta[key])
    assert file_meta["ss_base_model_version"] == "sd_v1" and file_meta["ss_v2"] == "False"
    assert file_meta["ss_network_module"] == "networks.lora" and file_meta["ss_network_dim"] == "4"
    assert file_meta["ss_network_alpha"] == "2.0"
    assert file_meta["modelspec.architecture"] == modelspec_architecture("sd1") == "stable-diffusion-v1/lora"
    assert all(header[k]["dtype"] == "F16" for k in header if k != "__metadata__")  # alphas too
    data = path.read_bytes()
    assert file_meta["sshs_model_hash"] == hashlib.sha256(data[8 + n:]).hexdigest() == file_model_hash(path)
    tensors = load_file(str(path))
    buf = save(tensors, {k: v for k, v in file_meta.items() if k.startswith("ss_")})
    assert file_meta["sshs_legacy_hash"] == hashlib.sha256(buf[0x100000:0x110000]).hexdigest()[:8]
    assert lora_hashes(tensors, file_meta) == {k: file_meta[k] for k in ("sshs_model_hash", "sshs_legacy_hash")}
    # no temp files left behind, and a failed write keeps the old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zkz.safetensors"]
    with pytest.raises(ValueError):
        save_lora_file(path, {"bundle_emb.x": torch.zeros(1)}, {}, precision="fp16")
    assert path.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["zkz.safetensors"]


def test_legacy_hash_of_a_large_file(tmp_path):
    """Over 1 MiB the legacy hash covers real bytes (not the empty-slice e3b0c442)."""
    tensors = {"lora_unet_a.lora_down.weight": torch.randn(64, 4096), "lora_unet_a.lora_up.weight": torch.randn(4096, 64),
               "lora_unet_a.alpha": torch.tensor(4.0)}
    meta = save_lora_file(tmp_path / "big.safetensors", tensors, {"ss_network_dim": "64"}, precision="float")
    assert meta["sshs_legacy_hash"] != "e3b0c442"
    small = save_lora_file(tmp_path / "s.safetensors", {k: v[:1] if v.dim() else v for k, v in tensors.items()},
                           {}, precision="fp16")
    assert small["sshs_legacy_hash"] == "e3b0c442"


def test_info_and_trigger_words(tiny_sdxl_dir, tmp_path):
    path, net, meta = _write(load_model(tiny_sdxl_dir), tmp_path, "xl", conv=True)
    info = lora_file_info(path)
    assert info.family == "sdxl" and info.family_source == "metadata" and info.layout == "kohya"
    assert info.rank == RANK and info.alpha == ALPHA and info.scale == 0.5
    assert info.modules == net.module_counts() and info.conv_modules > 0
    assert info.trigger_words == ["zkz object", "red"]
    assert info.base_model_version == "sdxl_base_v1-0" and info.sshs_model_hash == meta["sshs_model_hash"]
    # without metadata the family comes from the keys
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(path)), str(bare))
    assert lora_file_info(bare).family == "sdxl" and lora_file_info(bare).family_source == "keys"


def test_reads_peft_layout_back(tiny_sd1_dir, tiny_sdxl_dir, tmp_path):
    """A file written by diffusers' save_lora_weights (peft keys, transformers-5 TE paths) reads back as the
    kohya file it came from: same names (SGM for SDXL), tensors and alpha."""
    _quiet()
    from peft.utils import get_peft_model_state_dict

    for model_dir in (tiny_sd1_dir, tiny_sdxl_dir):
        model = load_model(model_dir)
        path, net, _ = _write(model, tmp_path, f"{model.family}-k", conv=False)
        pipe = model.make_pipeline()
        pipe.load_lora_weights(str(path), adapter_name="a")
        out = tmp_path / f"{model.family}-peft"
        kw = {"unet_lora_layers": get_peft_model_state_dict(pipe.unet, adapter_name="a"),
              "unet_lora_adapter_metadata": pipe.unet.peft_config["a"].to_dict()}
        if model.family == "sdxl":
            kw.update(text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder, adapter_name="a"),
                      text_encoder_2_lora_layers=get_peft_model_state_dict(pipe.text_encoder_2, adapter_name="a"),
                      text_encoder_lora_adapter_metadata=pipe.text_encoder.peft_config["a"].to_dict(),
                      text_encoder_2_lora_adapter_metadata=pipe.text_encoder_2.peft_config["a"].to_dict())
        else:
            kw.update(text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder, adapter_name="a"),
                      text_encoder_lora_adapter_metadata=pipe.text_encoder.peft_config["a"].to_dict())
        type(pipe).save_lora_weights(str(out), **kw)
        peft_file = out / "pytorch_lora_weights.safetensors"
        assert any(".lora_A." in k for k in load_file(str(peft_file)))
        lf = load_lora(peft_file, family=model.family)
        assert lf.layout == "peft"
        original = net.kohya_state_dict()
        assert set(lf.tensors) == set(original)
        for k, v in original.items():
            assert torch.equal(lf.tensors[k].float(), v.float()), k
        # the family is also found without help (SDXL: text_encoder_2 present; SD1: widths)
        assert load_lora(peft_file).family == model.family


def test_normalises_other_kohya_spellings(tmp_path):
    """diffusers' convert_state_dict_to_kohya writes lora_te1_ on SD1, no text_model_ under transformers 5,
    diffusers names for SDXL, and tools may omit alpha."""
    def down():
        return torch.randn(4, 32)

    def up():
        return torch.randn(32, 4)

    sd1 = {"lora_te1_encoder_layers_0_self_attn_q_proj.lora_down.weight": down(),
           "lora_te1_encoder_layers_0_self_attn_q_proj.lora_up.weight": up(),
           "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": down(),
           "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": up()}
    save_file(sd1, str(tmp_path / "a.safetensors"))
    tensors, _ = read_lora_file(tmp_path / "a.safetensors")
    assert sorted(tensors) == sorted([
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha",
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"])
    assert float(tensors["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"]) == 4.0  # missing alpha → rank
    xl = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": down(),
          "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": up(),
          "lora_unet_up_blocks_0_attentions_2_proj_out.lora_down.weight": down(),
          "lora_unet_up_blocks_0_attentions_2_proj_out.lora_up.weight": up(),
          "lora_te2_encoder_layers_3_mlp_fc1.lora_down.weight": down(),
          "lora_te2_encoder_layers_3_mlp_fc1.lora_up.weight": up()}
    save_file(xl, str(tmp_path / "b.safetensors"))
    lf = load_lora(tmp_path / "b.safetensors")
    assert lf.family == "sdxl" and lf.module_names() == [
        "lora_te2_text_model_encoder_layers_3_mlp_fc1",
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
        "lora_unet_output_blocks_2_1_proj_out"]


@pytest.mark.parametrize("key", ["lora_unet_a.hada_w1_a", "lora_unet_a.lokr_w1", "lora_unet_a.lora_mid.weight",
                                 "lora_unet_a.dora_scale", "lora_unet_a.diff", "lora_unet_a.oft_blocks"])
def test_lycoris_files_are_refused(key, tmp_path):
    sd = {"lora_unet_a.lora_down.weight": torch.zeros(2, 4), "lora_unet_a.lora_up.weight": torch.zeros(4, 2),
          key: torch.zeros(2)}
    save_file(sd, str(tmp_path / "ly.safetensors"))
    with pytest.raises(UserError) as e:
        read_lora_file(tmp_path / "ly.safetensors", field_name="network_weights")
    assert "not supported" in e.value.message and e.value.field == "network_weights"


def test_not_a_lora_and_missing_files(tmp_path):
    save_file({"model.diffusion_model.x.weight": torch.zeros(2)}, str(tmp_path / "ckpt.safetensors"))
    with pytest.raises(UserError):
        read_lora_file(tmp_path / "ckpt.safetensors")
    with pytest.raises(UserError) as e:
        read_lora_file(tmp_path / "nope.safetensors", field_name="network_weights")
    assert e.value.field == "network_weights"
    mixed = {"lora_unet_a.lora_down.weight": torch.zeros(2, 4), "lora_unet_a.lora_up.weight": torch.zeros(4, 2),
             "bundle_emb.x.string_to_param.*": torch.zeros(2)}
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(UserError) as e:
        read_lora_file(tmp_path / "mixed.safetensors")
    assert "embeddings" in e.value.fix
