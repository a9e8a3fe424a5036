"""kohya LoRA names on the full-size architectures (built on the meta device from the shipped configs, no
weights): module counts of lora-file-format §4, the example keys of §3.5, SGM names for SDXL, and the
inverse mapping. diffusers' own SGM→diffusers key mapper is used as an independent check."""

from functools import cache
from types import SimpleNamespace

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from kohya_lite.models.families import config_dir
from kohya_lite.models import sgm
from kohya_lite.network import naming
from kohya_lite.network.lora import LoRANetwork, find_targets

EXPECTED = {  # family: (UNet modules, TE modules)  — lora-file-format §4
    "sd1": (192, 72),
    "sd2": (192, 138),
    "sdxl": (722, 264),
}
LOCON_UNET = {"sd1": 278, "sdxl": 788}  # + ResnetBlock2D/Downsample2D/Upsample2D children


@cache
def _meta_model(family: str) -> SimpleNamespace:
    """Full-size architecture without weights (read-only: nothing here injects into it)."""
    folder = config_dir(family, v_prediction=family == "sd2")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))]
        if family == "sdxl":
            tes.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2"))))
    return SimpleNamespace(family=family, unet=unet, text_encoders=tes)


@pytest.fixture(params=["sd1", "sd2", "sdxl"])
def full(request):
    return _meta_model(request.param)


@pytest.fixture
def sdxl():
    return _meta_model("sdxl")


def test_module_counts_match_sd_scripts(full):
    targets = find_targets(full.unet, full.text_encoders, full.family)
    unet = [t for t in targets if t.is_unet]
    te = [t for t in targets if not t.is_unet]
    assert (len(unet), len(te)) == EXPECTED[full.family]
    assert len({t.name for t in targets}) == len(targets)  # names are unique
    assert not any(t.conv3x3 for t in targets)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_locon_module_counts(family):
    m = _meta_model(family)
    unet = [t for t in find_targets(m.unet, m.text_encoders, family, conv=True) if t.is_unet]
    assert len(unet) == LOCON_UNET[family]
    assert len({t.name for t in unet}) == len(unet)


def test_sd1_examples_and_shapes():
    m = _meta_model("sd1")
    targets = {t.name: t for t in find_targets(m.unet, m.text_encoders, "sd1", conv=True)}
    for name in [
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te_text_model_encoder_layers_11_mlp_fc2",
        "lora_unet_down_blocks_0_resnets_0_conv1",
        "lora_unet_down_blocks_0_downsamplers_0_conv",
        "lora_unet_up_blocks_0_upsamplers_0_conv",
    ]:
        assert name in targets, name
    assert isinstance(targets["lora_unet_down_blocks_0_attentions_0_proj_in"].module, torch.nn.Conv2d)
    assert targets["lora_unet_down_blocks_0_resnets_0_conv1"].conv3x3
    # 16 Transformer2DModels, 12 modules each, all with diffusers-style paths
    assert all(not sgm.is_sgm_path(naming.underscore_to_path(n[len("lora_unet_"):]))
               for n in targets if n.startswith("lora_unet_"))


def test_sd2_te_has_23_layers_and_linear_projections():
    m = _meta_model("sd2")
    targets = {t.name: t for t in find_targets(m.unet, m.text_encoders, "sd2")}
    assert "lora_te_text_model_encoder_layers_22_mlp_fc2" in targets
    assert "lora_te_text_model_encoder_layers_23_mlp_fc2" not in targets
    assert isinstance(targets["lora_unet_down_blocks_0_attentions_0_proj_in"].module, torch.nn.Linear)
    assert targets["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"].module.in_features == 1024


def test_sdxl_names_are_sgm(sdxl):
    targets = {t.name: t for t in find_targets(sdxl.unet, sdxl.text_encoders, "sdxl")}
    unet_names = [n for n in targets if n.startswith("lora_unet_")]
    assert all(any(b in n for b in ("input_blocks", "middle_block", "output_blocks")) for n in unet_names)
    for name in [
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
        "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2",
        "lora_unet_middle_block_1_transformer_blocks_9_attn1_to_out_0",
        "lora_unet_output_blocks_0_1_proj_in",
        "lora_unet_output_blocks_5_1_transformer_blocks_1_attn2_to_v",
        "lora_te1_text_model_encoder_layers_0_self_attn_k_proj",
        "lora_te1_text_model_encoder_layers_11_mlp_fc2",
        "lora_te2_text_model_encoder_layers_31_mlp_fc1",
    ]:
        assert name in targets, name
    assert "lora_unet_input_blocks_1_1_proj_in" not in targets  # level 0 has no attention
    assert targets["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"].module.in_features == 2048
    assert targets["lora_te2_text_model_encoder_layers_31_mlp_fc1"].module.in_features == 1280
    # TE1 is the flattened transformers-5 CLIPTextModel, TE2 keeps .text_model: both give the template
    assert not hasattr(sdxl.text_encoders[0], "text_model") and hasattr(sdxl.text_encoders[1], "text_model")


def test_sdxl_locon_rows(sdxl):
    targets = {t.name: t for t in find_targets(sdxl.unet, sdxl.text_encoders, "sdxl", conv=True)}
    expected_paths = {
        "lora_unet_input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",
        "lora_unet_input_blocks_4_0_skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
        "lora_unet_input_blocks_4_0_emb_layers_1": "down_blocks.1.resnets.0.time_emb_proj",
        "lora_unet_input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
        "lora_unet_input_blocks_6_0_op": "down_blocks.1.downsamplers.0.conv",
        "lora_unet_middle_block_0_out_layers_3": "mid_block.resnets.0.conv2",
        "lora_unet_middle_block_2_in_layers_2": "mid_block.resnets.1.conv1",
        "lora_unet_output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
        "lora_unet_output_blocks_5_2_conv": "up_blocks.1.upsamplers.0.conv",
        "lora_unet_output_blocks_8_0_skip_connection": "up_blocks.2.resnets.2.conv_shortcut",
    }
    for name, path in expected_paths.items():
        assert targets[name].path == path


def _module_lookup(model):
    lookup = {("unet", n): m for n, m in model.unet.named_modules()}
    for comp, te in zip(("text_encoder", "text_encoder_2"), model.text_encoders):
        root = getattr(te, "text_model", te)
        lookup.update({(comp, n): m for n, m in root.named_modules()})
    return lookup


def test_parse_lora_name_inverts_every_name(full):
    lookup = _module_lookup(full)
    targets = find_targets(full.unet, full.text_encoders, full.family, conv=full.family != "sd2")
    for t in targets:
        parsed = naming.parse_lora_name(t.name)
        assert lookup[(parsed.component, parsed.path)] is t.module, t.name
        assert naming.kohya_name_for(parsed, full.family) == t.name


_LDM_CHILD = {"in_layers_2": "conv1", "out_layers_3": "conv2", "emb_layers_1": "time_emb_proj",
              "skip_connection": "conv_shortcut", "op": "conv"}


def test_sgm_names_map_back_through_diffusers_lora_loader(sdxl):
    """diffusers' `_maybe_map_sgm_blocks_to_diffusers` (what load_lora_weights runs for SDXL files) maps every
    SGM name, LoCon rows included, back to the diffusers module we named it from."""
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    targets = [t for t in find_targets(sdxl.unet, [], "sdxl", conv=True) if t.is_unet]
    assert len(targets) == LOCON_UNET["sdxl"]
    for t in targets:
        (key,) = _maybe_map_sgm_blocks_to_diffusers({f"{t.name}.lora_down.weight": None}, sdxl.unet.config)
        name = key.split(".")[0]
        for sgm_name, diffusers_name in (("input_blocks", "down_blocks"), ("middle_block", "mid_block"),
                                         ("output_blocks", "up_blocks")):
            name = name.replace(sgm_name, diffusers_name)
        for ldm, diffusers_name in _LDM_CHILD.items():
            if name.endswith("_" + ldm):
                name = name[: -len(ldm)] + diffusers_name
        assert name == "lora_unet_" + t.path.replace(".", "_"), t.name


def test_sgm_roundtrip_of_every_unet_parameter():
    for family in ("sd1", "sdxl"):
        m = _meta_model(family)
        cfg = m.unet.config
        with_attn = [i for i, t in enumerate(cfg.up_block_types) if "CrossAttn" in t]
        for key in m.unet.state_dict():
            path = sgm.diffusers_to_sgm(key, layers_per_block=cfg.layers_per_block,
                                        up_blocks_with_attention=with_attn)
            assert sgm.sgm_to_diffusers(path, layers_per_block=cfg.layers_per_block) == key


def test_underscore_path_and_te_normalisation():
    assert naming.underscore_to_path("down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0") == \
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0"
    assert naming.underscore_to_path("input_blocks_4_0_emb_layers_1") == "input_blocks.4.0.emb_layers.1"
    assert naming.underscore_to_path("text_model_encoder_layers_3_self_attn_out_proj") == \
        "text_model.encoder.layers.3.self_attn.out_proj"
    assert naming.normalise_te_name("lora_te1_encoder_layers_0_mlp_fc1", sd1_like=True) == \
        "lora_te_text_model_encoder_layers_0_mlp_fc1"
    assert naming.normalise_te_name("lora_te2_encoder_layers_0_mlp_fc1", sd1_like=False) == \
        "lora_te2_text_model_encoder_layers_0_mlp_fc1"
    t = naming.parse_lora_name("lora_te2_text_model_encoder_layers_5_self_attn_v_proj")
    assert (t.component, t.path) == ("text_encoder_2", "encoder.layers.5.self_attn.v_proj")
    with pytest.raises(ValueError):
        naming.te_lora_name(0, "self_attn.qkv")


def test_network_on_meta_model_has_kohya_state_dict_layout():
    m = _meta_model("sd1")
    net = LoRANetwork.create(m, 8, 1.0)
    keys = list(net.state_dict())
    assert len(keys) == (192 + 72) * 3 == 792
    assert "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight" in keys
    assert tuple(net.state_dict()["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape) == \
        (8, 320, 1, 1)
    assert "lora_te_text_model_encoder_layers_11_mlp_fc2.alpha" in keys
