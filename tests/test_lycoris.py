"""LyCORIS types through the real lycoris-lora library, plus LoRA-FA and Kohya DyLoRA.

- names and tensor names equal what lycoris' own kohya wrapper makes on the full-size SD1.5 and SDXL architectures
  (meta device), mapped to the names sd-scripts writes (SGM UNet on SDXL, `text_model_` TE names);
- a trained network's file reloads through lycoris' `create_lycoris_from_weights` onto the same model and gives
  the same weight change (1e-5, fp32), also through our reader (Generate) and through resume / dim_from_weights;
- kohya_ss JSON configs (the legacy "LoCon" type included) train end to end on tiny SD1 and SDXL;
- Generate with `<lora:loha_file:0.8>` changes the image, weight 0 is the base bit for bit;
- info/verify, the library and the tools handle LyCORIS files or say what does not apply.
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import toml
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dataset_helpers import make_images, tiny_config, write_config
from kohya_lite.cli import main as cli_main
from kohya_lite.config import TrainingConfig, load_config, merge_config
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.train import train
from kohya_lite.errors import UserError
from kohya_lite.models.load import load_model
from kohya_lite.models import sgm
from kohya_lite.network import naming
from kohya_lite.network.factory import build_network
from kohya_lite.library import lora_file_info
from kohya_lite.network.io import load_lora, read_lora_file, save_lora_file
from kohya_lite.network.lora import te_root
from kohya_lite.network.lycoris import LycorisNetwork, lycoris_deltas, network_args
from kohya_lite.network.metadata import lora_metadata
from test_naming import _meta_model

# tensor names per module of each algorithm (lycoris' own, as sd-scripts + lycoris write them)
SUFFIXES = {
    "locon": {"lora_down.weight", "lora_up.weight", "alpha"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "ia3": {"weight", "on_input"},
}


@pytest.fixture(autouse=True)
def _quiet_lycoris():
    logging.getLogger("LyCORIS").setLevel(logging.ERROR)


# ---- names on the full-size architectures ------------------------------------------------------------------

def _reference_preset(tmp_path) -> str:
    """lycoris' builtin 'full' preset as a .toml, without the Anima-only TimestepEmbedding class: with it, lycoris
    4.1 selects time_embedding.linear_1/2 twice on SD UNets (pinned below)."""
    from lycoris.config import PRESET

    preset = copy.deepcopy(PRESET["full"])
    preset["unet_target_module"] = [m for m in preset["unet_target_module"] if m != "TimestepEmbedding"]
    path = tmp_path / "full.toml"
    path.write_text(toml.dumps(preset))
    return str(path)


def _sd_scripts_name(name: str, family: str) -> str | None:
    """A wrapper name on our diffusers models → the name sd-scripts writes (None: not in sd-scripts' SDXL UNet)."""
    prefix, rest = naming.split_prefix(name)
    if prefix != naming.UNET_PREFIX:
        return name if rest.startswith("text_model_") else f"{prefix}_text_model_{rest}"  # transformers-5 CLIP
    if family != "sdxl":
        return name
    path = naming.underscore_to_path(rest)
    if not path.startswith(("down_blocks.", "mid_block.", "up_blocks.")):
        return None  # conv_in/conv_out/time embedding: plain Conv/Sequential modules in sd-scripts' SGM UNet
    return naming.to_kohya(naming.UNET_PREFIX, sgm.diffusers_to_sgm(path))


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_names_and_tensors_equal_the_lycoris_kohya_wrapper(family, tmp_path):
    from lycoris import kohya

    m = _meta_model(family)
    preset = _reference_preset(tmp_path)
    shapes = {}
    algos = [("locon", "LyCORIS/LoCon"), ("loha", "LyCORIS/LoHa")]
    if family == "sd1":  # tensor names do not depend on the architecture: LoKr on SD1 only
        algos.append(("lokr", "LyCORIS/LoKr"))
    for algo, lora_type in algos:
        cfg = TrainingConfig(LoRA_type=lora_type, network_dim=8, network_alpha=4, conv_dim=4, conv_alpha=2,
                             sdxl=family == "sdxl")
        ours = LycorisNetwork.create(cfg, m)
        te = m.text_encoders if family == "sdxl" else m.text_encoders[0]
        ref = kohya.create_network(1.0, 8, 4.0, None, te, m.unet, **dict(network_args(cfg), preset=preset))
        expected = {}
        for lora in ref.text_encoder_loras + ref.unet_loras:
            name = _sd_scripts_name(lora.lora_name, family)
            if name:
                expected[name] = {k: tuple(v.shape) for k, v in lora.state_dict().items()}
        got: dict[str, dict] = {}
        for key, value in ours.state_dict().items():
            name, _, suffix = key.partition(".")
            got.setdefault(name, {})[suffix] = tuple(value.shape)
        assert got == expected, (algo, sorted(set(got) ^ set(expected))[:5])
        counts = ours.module_counts()
        if family == "sd1":  # LoCon's 278 UNet modules (test_naming) + conv_in, conv_out, time_embedding ×2
            assert counts == {"unet": 282, "text_encoder": 72}
        else:
            assert counts == {"unet": 788, "text_encoder": 72, "text_encoder_2": 192}
        if algo in SUFFIXES:
            assert all(set(s) == SUFFIXES[algo] for s in got.values())
        if algo == "lokr":
            assert all("alpha" in s and any(k.startswith("lokr_w1") for k in s) for s in got.values())
        shapes[algo] = got
    if family == "sdxl":  # sd-scripts' SGM UNet (library/sdxl_original_unet.py), read independently of `naming`
        for name, shape in (("lora_unet_input_blocks_1_0_in_layers_2", (4, 320, 3, 3)),
                            ("lora_unet_input_blocks_3_0_op", (4, 320, 3, 3)),
                            ("lora_unet_input_blocks_4_0_skip_connection", (8, 320, 1, 1)),
                            ("lora_unet_output_blocks_2_2_conv", (4, 1280, 3, 3)),
                            ("lora_unet_output_blocks_5_2_conv", (4, 640, 3, 3)),
                            ("lora_unet_output_blocks_8_0_emb_layers_1", (8, 1280))):
            assert shapes["locon"][name]["lora_down.weight"] == shape, name
        assert not any(n.startswith(("lora_unet_time_embed", "lora_unet_label_emb", "lora_unet_out_",
                                     "lora_unet_input_blocks_0_")) for n in shapes["locon"])
        assert "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2" in shapes["locon"]


def test_lycoris_41_full_preset_selects_time_embedding_twice_on_sd_unets():
    """Why `diffusers_preset` drops TimestepEmbedding when the time_embedding names are listed (fails once
    lycoris fixes it; the adaptation can then go)."""
    from lycoris import kohya

    m = _meta_model("sd1")
    with pytest.raises(AssertionError, match="duplicated lora name: lora_unet_time_embedding_linear_1"):
        kohya.create_network(1.0, 4, 1.0, None, None, m.unet, algo="locon", preset="full")


# ---- a trained network's file, reloaded ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd1(tiny_sd1_dir):
    return load_model(tiny_sd1_dir)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir):
    return load_model(tiny_sdxl_dir)


def _trained(cfg_dict: dict, model, seed: int = 0):
    """The network the engine builds for a kohya_ss-style config, with changed ('trained') weights."""
    cfg, _ = merge_config({"network_dim": 4, "network_alpha": 2, "conv_dim": 4, "conv_alpha": 2,
                           "sdxl": model.family == "sdxl", **cfg_dict})
    net = build_network(cfg, model).network
    net.apply()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return cfg, net


def _library_reload(model, tensors: dict) -> dict:
    """The file's modules rebuilt by lycoris' `create_lycoris_from_weights` on each model part, by our name.
    (The generic wrapper names modules `lycoris_<path>`, so the file's kohya names are renamed to the paths
    they stand for.) iA3 is rebuilt with the library's module class: lycoris 4.1's loader fails on it."""
    from lycoris.modules.ia3 import IA3Module
    from lycoris.wrapper import create_lycoris_from_weights

    parts = {naming.UNET: model.unet}
    parts.update({naming.te_component(p): te_root(te) for p, te in zip(naming.te_prefixes(model.family),
                                                                        model.text_encoders)})
    by_part: dict[str, dict] = {}
    back: dict[str, str] = {}
    for key, value in tensors.items():
        name, _, suffix = key.partition(".")
        target = naming.parse_lora_name(name)
        lyco = "lycoris_" + target.path.replace(".", "_")
        back[f"{target.component}/{lyco}"] = name
        by_part.setdefault(target.component, {})[f"{lyco}.{suffix}"] = value
    out = {}
    for component, sd in by_part.items():
        if any(k.endswith(".on_input") for k in sd):
            with pytest.raises(TypeError):  # lycoris 4.1: make_module_from_state_dict takes 1 tensor, gets 2
                create_lycoris_from_weights(1.0, None, parts[component], weights_sd=sd)
            for key in [k for k in sd if k.endswith(".weight")]:
                lyco = key.partition(".")[0]
                org = parts[component].get_submodule(naming.parse_lora_name(back[f"{component}/{lyco}"]).path)
                module = IA3Module(lyco, org, 1, train_on_input=bool(int(sd[f"{lyco}.on_input"])))
                module.weight.data.copy_(sd[key])
                out[back[f"{component}/{lyco}"]] = module
            continue
        net, _ = create_lycoris_from_weights(1.0, None, parts[component], weights_sd=sd)
        for lora in net.loras:
            out[back[f"{component}/{lora.lora_name}"]] = lora
    return out


def _merged_change(module) -> torch.Tensor:
    w = module.org_weight
    return module.get_merged_weight(1.0, shape=w.shape, device=w.device)[0].detach().float() - w.float()


CASES = [
    ("sd1", {"LoRA_type": "LyCORIS/LoCon"}),
    ("sd1", {"LoRA_type": "LyCORIS/LoCon", "dora_wd": True, "use_tucker": True}),
    ("sd1", {"LoRA_type": "LyCORIS/LoHa"}),
    ("sd1", {"LoRA_type": "LyCORIS/LoKr", "factor": 4}),
    ("sd1", {"LoRA_type": "LyCORIS/iA3"}),
    ("sd1", {"LoRA_type": "LyCORIS/Native Fine-Tuning", "train_norm": True}),
    ("sd1", {"LoRA_type": "LyCORIS/Diag-OFT", "rescaled": True}),
    ("sd1", {"LoRA_type": "LyCORIS/GLoRA"}),
    ("sdxl", {"LoRA_type": "LyCORIS/LoCon", "dora_wd": True}),
    ("sdxl", {"LoRA_type": "LyCORIS/LoHa"}),
    ("sdxl", {"LoRA_type": "LyCORIS/LoKr"}),
    ("sdxl", {"LoRA_type": "LyCORIS/iA3"}),
]


@pytest.mark.parametrize("family, changes", CASES, ids=[f"{f}-{c['LoRA_type'].split('/')[1]}"
                                                         + ("-DoRA" if c.get("dora_wd") else "") for f, c in CASES])
def test_file_reloads_through_lycoris_with_the_same_weight_change(family, changes, tmp_path, request):
    model = request.getfixturevalue(family)
    cfg, net = _trained(changes, model)
    trained = net.module_deltas(1.0)
    path = tmp_path / "ly.safetensors"
    meta = save_lora_file(path, net.kohya_state_dict(), lora_metadata(cfg, family=model.family), precision="float")
    net.restore()
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"])["algo"] == network_args(cfg)["algo"]

    tensors = load_file(str(path))
    reloaded = _library_reload(model, tensors)
    assert set(reloaded) == set(trained)
    for name, module in reloaded.items():
        torch.testing.assert_close(_merged_change(module), trained[name][0], atol=1e-5, rtol=0, msg=name)

    # the Generate path (our reader), at another multiplier
    lf = load_lora(path, allow_lycoris=True)
    plain = set(SUFFIXES["locon"]) >= {k.partition(".")[2] for k in tensors}  # a LoCon without Tucker/DoRA
    assert lf.is_lycoris is not plain and lf.family == model.family
    deltas, skipped = lycoris_deltas(model, lf.tensors, unet_multiplier=0.5, te_multiplier=0.5)
    assert not skipped and {d.name for d in deltas} == set(trained)
    half = net.module_deltas(0.5)
    for d in deltas:
        torch.testing.assert_close(d.weight, half[d.name][0], atol=1e-5, rtol=0)
        if d.bias is not None:
            torch.testing.assert_close(d.bias, half[d.name][1], atol=1e-5, rtol=0)

    # resume (load into a fresh network of the same config) and dim_from_weights
    fresh = build_network(cfg, model).network
    fresh.load_kohya_state_dict(tensors)
    rebuilt = LycorisNetwork.from_weights(model, tensors)
    for other in (fresh, rebuilt):
        for name, (dw, _) in other.module_deltas(1.0).items():
            torch.testing.assert_close(dw, trained[name][0], atol=1e-5, rtol=0)


def test_network_weights_of_another_kind_are_refused(sd1, tmp_path):
    cfg, net = _trained({"LoRA_type": "LyCORIS/LoHa"}, sd1)
    path = tmp_path / "loha.safetensors"
    save_lora_file(path, net.kohya_state_dict(), {}, precision="float")
    net.restore()
    with pytest.raises(UserError, match="another kind"):
        build_network(cfg.replace(LoRA_type="LyCORIS/LoCon", network_weights=str(path)), sd1)
    with pytest.raises(UserError, match="not supported by this tool"):
        build_network(cfg.replace(LoRA_type="Standard", network_weights=str(path)), sd1)
    # dim_from_weights: the file decides the modules, even for another LyCORIS type and rank
    built = build_network(cfg.replace(LoRA_type="LyCORIS/LoCon", network_dim=16, network_weights=str(path),
                                      dim_from_weights=True), sd1)
    assert built.network.module_counts() == net.module_counts() and "from the file" in built.notes[0]
    assert {type(m).__name__ for m in built.network.loras()} == {"LohaModule"}
    from kohya_lite.check import _check_network_weights, CheckResult

    r = CheckResult()
    _check_network_weights(cfg.replace(LoRA_type="Standard", network_weights=str(path)), r)
    assert r.errors and "LyCORIS/LoHa" in r.errors[0].fix


# ---- end to end from kohya_ss configs ----------------------------------------------------------------------

E2E = [
    ("sd1", {"LoRA_type": "LoCon"}, "locon"),  # legacy kohya_ss type: LyCORIS/LoCon
    ("sd1", {"LoRA_type": "LyCORIS/LoHa", "LyCORIS_preset": "full", "use_tucker": "True"}, "loha"),
    ("sd1", {"LoRA_type": "LyCORIS/LoKr", "factor": "4", "use_cp": False, "decompose_both": False}, "lokr"),
    ("sd1", {"LoRA_type": "LyCORIS/iA3", "train_on_input": True}, "ia3"),
    ("sd1", {"LoRA_type": "LyCORIS/LoCon", "dora_wd": True}, "dora"),
    ("sd1", {"LoRA_type": "LoRA-FA"}, "lora_fa"),
    ("sd1", {"LoRA_type": "Kohya DyLoRA", "conv_dim": 4, "unit": 2}, "dylora"),
    ("sdxl", {"LoRA_type": "LyCORIS/LoCon"}, "locon"),
    ("sdxl", {"LoRA_type": "LyCORIS/LoHa"}, "loha"),
    ("sdxl", {"LoRA_type": "LyCORIS/LoKr", "factor": -1}, "lokr"),
    ("sdxl", {"LoRA_type": "LyCORIS/iA3"}, "ia3"),
    ("sdxl", {"LoRA_type": "LyCORIS/LoCon", "dora_wd": "true"}, "dora"),
]


@pytest.mark.parametrize("family, changes, kind", E2E, ids=[f"{f}-{k}" for f, _, k in E2E])
def test_trains_from_a_kohya_ss_config(family, changes, kind, tmp_path, request):
    model_dir = request.getfixturevalue(f"tiny_{family}_dir")
    size = 64 if family == "sd1" else 128
    make_images(tmp_path / "img" / "1_zkz object", 2, size=(size, size))
    cfg_dict = tiny_config(model_dir, tmp_path, **{
        "epoch": 1, "save_every_n_epochs": 0, "sdxl": family == "sdxl", "max_resolution": f"{size},{size}",
        "max_bucket_reso": 256, "save_precision": "float", "LyCORIS_preset": "full", "conv_dim": 2, "conv_alpha": 1,
        **changes})
    cfg, report = load_config(write_config(tmp_path / "cfg.json", cfg_dict))
    if changes["LoRA_type"] == "LoCon":
        assert cfg.LoRA_type == "LyCORIS/LoCon" and any("LoCon" in r for r in report.renamed)
    result = train(cfg, events=EventWriter(), progress_bar=False)
    assert result.status == "done" and result.steps == 1
    tensors = load_file(str(result.final_path))
    with safe_open(str(result.final_path), "pt") as f:
        meta = f.metadata()
    names = {k.partition(".")[0] for k in tensors}
    suffixes = {k.partition(".")[2] for k in tensors}
    assert all(torch.isfinite(v).all() for v in tensors.values())
    if family == "sdxl":
        assert any(n.startswith("lora_unet_input_blocks_") for n in names)
        assert any(n.startswith("lora_te1_text_model_") for n in names)
        assert any(n.startswith("lora_te2_text_model_") for n in names)
    else:
        assert any(n.startswith("lora_unet_down_blocks_") for n in names)
        assert any(n.startswith("lora_te_text_model_") for n in names)
    if kind in ("lora_fa", "dylora"):
        assert suffixes == SUFFIXES["locon"]
        assert meta["ss_network_module"] == {"lora_fa": "networks.lora_fa", "dylora": "networks.dylora"}[kind]
        conv = [k for k, v in tensors.items() if k.endswith("lora_down.weight") and v.dim() == 4 and v.shape[-1] == 3]
        assert bool(conv) == (kind == "dylora")
        return
    args = json.loads(meta["ss_network_args"])
    assert meta["ss_network_module"] == "lycoris.kohya" and args["preset"] == "full"
    trained_key = {"locon": "lora_up.weight", "dora": "lora_up.weight", "loha": "hada_w2_a", "lokr": "lokr_w2",
                   "ia3": "weight"}[kind]
    if kind == "dora":
        assert args["dora_wd"] == "True" and suffixes == SUFFIXES["locon"] | {"dora_scale"}
    elif kind == "lokr":
        assert args["factor"] == ("4" if family == "sd1" else "-1") and "lokr_w1" in suffixes
        trained_key = next(s for s in ("lokr_w2", "lokr_w2_b") if s in suffixes)
    elif kind == "loha":
        tucker = "use_tucker" in changes  # then the 3×3 convs get a Tucker core
        assert ("hada_t1" in suffixes) is tucker and args["use_tucker"] == str(tucker)
    else:
        assert SUFFIXES[kind] <= suffixes
    assert args["algo"] == {"dora": "locon"}.get(kind, kind)
    moved = [k for k, v in tensors.items() if k.endswith(trained_key) and v.abs().max() > 0]
    assert moved, "the trained tensors moved away from their zero start"


def test_resume_and_network_weights_continue_a_loha(tiny_sd1_dir, tmp_path):
    make_images(tmp_path / "img" / "1_zkz object", 2)
    base = tiny_config(tiny_sd1_dir, tmp_path, LoRA_type="LyCORIS/LoHa", epoch=1, train_batch_size=1,
                       save_every_n_epochs=0, save_every_n_steps=1, save_state=True, save_precision="float")
    cfg, _ = merge_config(base)
    first = train(cfg, events=EventWriter(), progress_bar=False)
    state = tmp_path / "model" / "zkz-step00000001-state"
    assert first.status == "done" and first.steps == 2 and state.is_dir()
    events = []
    resumed = train(cfg.replace(output_dir=str(tmp_path / "resumed"), resume=str(state)),
                    events=EventWriter(listener=events.append), progress_bar=False)
    assert resumed.status == "done" and any("resumed from" in e.get("message", "") for e in events)

    again = cfg.replace(output_dir=str(tmp_path / "again"), network_weights=str(first.final_path),
                        learning_rate=1e-12, unet_lr=1e-12, text_encoder_lr=1e-12, save_every_n_steps=0,
                        save_state=False)
    out = train(again, events=EventWriter(), progress_bar=False)
    before, after = load_file(str(first.final_path)), load_file(str(out.final_path))
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=1e-6, rtol=1e-4)


# ---- Generate, info, library, tools -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loha_dir(sd1, tmp_path_factory):
    d = tmp_path_factory.mktemp("Lora")
    for name, changes in (("loha_file", {"LoRA_type": "LyCORIS/LoHa"}),
                          ("full_norm", {"LoRA_type": "LyCORIS/Native Fine-Tuning", "train_norm": True})):
        cfg, net = _trained(changes, sd1, seed=3)
        save_lora_file(d / f"{name}.safetensors", net.kohya_state_dict(),
                       lora_metadata(cfg, family="sd1", trigger_phrase="zkz"), precision="float")
        net.restore()
    return d


def _snapshot(model) -> dict:
    out = {}
    for prefix, m in [("unet", model.unet), *((f"te{i}", te) for i, te in enumerate(model.text_encoders))]:
        out.update({f"{prefix}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
    return out


def test_generate_with_a_loha_file(sd1, loha_dir):
    from kohya_lite.generate import GenerateRequest, generate

    def px(prompt):
        req = GenerateRequest(prompt=prompt, steps=2, width=64, height=64, seed=5)
        return np.asarray(generate(sd1, req, lora_dir=loha_dir).image.convert("RGB")).astype(np.int16)

    before = _snapshot(sd1)
    base = px("a cat")
    assert np.array_equal(px("a cat <lora:loha_file:0>"), base)
    changed = px("a cat <lora:loha_file:0.8>")
    assert np.abs(changed - base).max() > 0
    assert np.abs(px("a cat <lora:full_norm:1>") - base).max() > 0  # weights and biases (norm, full) merged
    after = _snapshot(sd1)
    assert all(torch.equal(before[k], after[k]) for k in before), "weights and biases restored exactly"


def test_merge_to_model_bakes_in_a_loha_and_a_native_fine_tune(sd1, loha_dir, tiny_sd1_dir, tmp_path):
    """`lora merge-to-model` with LyCORIS files: the merged model renders what the files render at run time in
    Generate (weights, biases and norm layers), and ratio 0 leaves the model as it was."""
    from kohya_lite.generate import GenerateRequest, generate
    from kohya_lite.tools.merge_to_model import merge_to_model

    def px(model, prompt):
        req = GenerateRequest(prompt=prompt, steps=2, width=64, height=64, seed=5)
        return np.asarray(generate(model, req, lora_dir=loha_dir).image.convert("RGB")).astype(np.int16)

    loha, full = loha_dir / "loha_file.safetensors", loha_dir / "full_norm.safetensors"
    out = tmp_path / "merged"
    res = merge_to_model(tiny_sd1_dir, [(loha, 0.8), (full, 1.0)], out, precision="float")
    assert [m.modules for m in res.loras] == [len(load_lora(loha, allow_lycoris=True).module_names()),
                                               len(load_lora(full, allow_lycoris=True).module_names())]
    assert not res.warnings
    merged = load_model(out)
    at_run_time = px(sd1, "a cat <lora:loha_file:0.8> <lora:full_norm:1>")
    assert np.abs(px(merged, "a cat") - at_run_time).max() <= 2
    assert np.abs(px(sd1, "a cat") - at_run_time).max() > 10, "the files change the picture"
    norms = {k: v for k, v in merged.unet.state_dict().items() if "norm" in k and k.endswith("bias")}
    base_norms = sd1.unet.state_dict()
    assert any(not torch.equal(v, base_norms[k]) for k, v in norms.items()), "norm layers merged too"

    # a LoHa of the same family but other layer sizes (the demo's base): one message, here and in Generate
    from kohya_lite.demo import base_model_path

    with pytest.raises(UserError) as err:
        merge_to_model(base_model_path(), [(loha, 1.0)], tmp_path / "other.safetensors")
    assert "does not fit this model's layer" in err.value.message and err.value.field == "loras"
    assert "made for this base model" in err.value.problem.fix and not (tmp_path / "other.safetensors").exists()
    with pytest.raises(UserError) as err:
        px(load_model(base_model_path()), "a cat <lora:loha_file:1>")
    assert "does not fit this model's layer" in err.value.message and err.value.field == "prompt"

    res0 = merge_to_model(tiny_sd1_dir, [(loha, 0.0)], tmp_path / "zero", precision="float")
    assert res0.loras[0].modules == 0 and res0.weights_changed == 0
    zero = load_model(tmp_path / "zero")
    assert all(torch.equal(v, sd1.unet.state_dict()[k]) for k, v in zero.unet.state_dict().items())


def test_info_verify_library_and_tools_on_a_loha_file(loha_dir, tmp_path, capsys):
    from kohya_lite.library import list_library
    from kohya_lite.lora_tools import merge_loras, resize_lora

    path = loha_dir / "loha_file.safetensors"
    info = lora_file_info(path)
    assert (info.algo, info.family, info.rank, info.alpha) == ("LoHa", "sd1", 4, 2.0)
    assert info.modules["unet"] > 0 and info.modules["text_encoder"] > 0
    assert cli_main(["lora", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "LyCORIS LoHa (lycoris.kohya)" in out and "rank / alpha  4 / 2" in out
    assert cli_main(["lora", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"number of LoRA modules: {sum(info.modules.values())}" in out and ".hada_w1_a," in out
    assert "not trained" not in out

    entries = {e.name: e for e in list_library(loha_dir)}
    e = entries["loha_file"]
    assert (e.error, e.algo, e.family, e.rank, e.alpha) == ("", "LoHa", "sd1", 4, 2.0)
    assert "LoHa" in e.row()[2] and entries["full_norm"].algo.startswith("Native fine-tuning")

    for call in (lambda: resize_lora(path, tmp_path / "r.safetensors", 2),
                 lambda: merge_loras([path, path], [1, 1], tmp_path / "m.safetensors"),
                 lambda: read_lora_file(path)):
        with pytest.raises(UserError) as err:
            call()
        assert "LyCORIS" in err.value.message and "take plain LoRA / LoCon files only" in err.value.fix


# ---- kohya_ss's args, the page, LoRA-FA and DyLoRA ------------------------------------------------------------

def test_network_args_are_kohya_ss_strings():
    lokr = TrainingConfig(LoRA_type="LyCORIS/LoKr", conv_dim=8, conv_alpha=4.0, factor=8, loraplus_lr_ratio=16)
    assert " ".join(f"{k}={v}" for k, v in network_args(lokr).items()) == (
        "preset=full conv_dim=8 conv_alpha=4 use_tucker=False rank_dropout=0 bypass_mode=False dora_wd=False "
        "module_dropout=0 factor=8 use_cp=False use_scalar=False decompose_both=False rank_dropout_scale=False "
        "algo=lokr train_norm=False loraplus_lr_ratio=16")
    assert network_args(TrainingConfig(LoRA_type="LyCORIS/iA3")) == {
        "preset": "full", "conv_dim": "1", "conv_alpha": "1", "train_on_input": "True", "algo": "ia3"}
    assert network_args(TrainingConfig(LoRA_type="LyCORIS/Diag-OFT", constrain=0.5))["constraint"] == "0.5"
    from kohya_lite.network.metadata import network_args as meta_args, network_module

    dy = TrainingConfig(LoRA_type="Kohya DyLoRA", network_dim=8, conv_dim=8, unit=4)
    assert (network_module(dy), meta_args(dy)) == ("networks.dylora", {"conv_dim": "8", "conv_alpha": "1", "unit": "4"})
    assert network_module(TrainingConfig(LoRA_type="LoRA-FA")) == "networks.lora_fa"


def test_preset_names_and_preset_files_in_check(tmp_path):
    from lycoris.config import PRESET

    from kohya_lite.check import CheckResult, _check_lycoris
    from kohya_lite.config import LYCORIS_BUILTIN_PRESETS

    assert set(LYCORIS_BUILTIN_PRESETS) == set(PRESET)
    good, bad, empty = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "empty.toml"
    good.write_text('enable_conv = true\nunet_target_module = ["Transformer2DModel"]\n')
    bad.write_text("enable_conv = = true\n")
    empty.write_text("title = 'x'\n")
    for path, ok in ((good, True), (bad, False), (empty, False), (tmp_path / "missing.toml", False)):
        r = CheckResult()
        _check_lycoris(TrainingConfig(LoRA_type="LyCORIS/LoHa", LyCORIS_preset=str(path)), r)
        assert r.ok is ok and all(p.field == "LyCORIS_preset" for p in r.problems), (path, r.problems)
    # the good file trains: its one class is all the network gets
    m = _meta_model("sd1")
    net = LycorisNetwork.create(TrainingConfig(LoRA_type="LyCORIS/LoHa", LyCORIS_preset=str(good)), m)
    assert net.module_counts() == {"unet": 192}  # no TE class listed: the text encoders are left alone


def test_page_shows_each_types_fields_like_kohya_ss():
    from kohya_lite.ui.fields import SPEC_BY_NAME, TYPE_FIELDS, shown_for

    assert set(TYPE_FIELDS) <= set(SPEC_BY_NAME)
    assert shown_for("factor", "LyCORIS/LoKr") and not shown_for("factor", "LyCORIS/LoHa")
    assert shown_for("dora_wd", "LyCORIS/LoHa") and not shown_for("dora_wd", "Standard")
    assert shown_for("LyCORIS_preset", "LyCORIS/iA3") and not shown_for("LyCORIS_preset", "Kohya LoCon")
    assert not shown_for("network_dim", "LyCORIS/iA3") and shown_for("network_dim", "LyCORIS/LoHa")
    assert shown_for("conv_dim", "Kohya LoCon") and not shown_for("conv_dim", "Standard")
    assert shown_for("unit", "Kohya DyLoRA") and shown_for("learning_rate", "LyCORIS/iA3")


def test_lora_fa_trains_only_up(sd1):
    cfg, _ = merge_config({"LoRA_type": "LoRA-FA", "network_dim": 4, "loraplus_lr_ratio": 16})
    net = build_network(cfg, sd1).network
    groups = net.optimizer_param_groups(1e-4, 5e-5, loraplus_lr_ratio=16)
    ups = {id(m.lora_up.weight) for m in net.loras()}
    assert [g["name"] for g in groups] == ["textencoder", "unet"]  # sd-scripts' lora_fa has no LoRA+
    assert all(id(p) in ups for g in groups for p in g["params"])
    assert not any(m.lora_down.weight.requires_grad for m in net.loras())
    assert not any(k.startswith("lora_unet") and v.dim() == 4 and v.shape[-1] == 3
                   for k, v in net.kohya_state_dict().items())


def test_kohya_dylora_trains_one_block_per_step_and_saves_plain_lora(sd1):
    from kohya_lite.network.lora import delta_weight

    cfg, _ = merge_config({"LoRA_type": "Kohya DyLoRA", "network_dim": 4, "network_alpha": 2, "conv_dim": 4,
                           "unit": 2})
    net = build_network(cfg, sd1).network
    module = next(m for m in net.unet_loras if m.is_conv3x3)
    org = module.org_module
    x = torch.randn(1, org.in_channels, 8, 8)
    net.apply()
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in module.lora_B:
                p.normal_()
        module.train()
        org(x).sum().backward()
        trained = [i for i, p in enumerate(module.lora_A) if p.grad is not None]
        assert trained in ([0, 1], [2, 3])
        module.eval()
        sd = net.kohya_state_dict()
        name = module.lora_name
        assert sd[f"{name}.lora_down.weight"].shape == (4, org.in_channels, 3, 3)
        assert sd[f"{name}.lora_up.weight"].shape == (org.out_channels, 4, 1, 1)
        dw = delta_weight(sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"], 0.5)
        expected = torch.nn.functional.conv2d(x, org.weight + dw, org.bias, org.stride, org.padding)
        torch.testing.assert_close(org(x), expected, atol=1e-5, rtol=1e-4)
    finally:
        net.restore()
    again = build_network(cfg, sd1).network
    again.load_kohya_state_dict(sd)
    for k, v in again.kohya_state_dict().items():
        assert torch.equal(v, sd[k]), k
