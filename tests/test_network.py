"""LoRA modules and network semantics (sd-scripts networks.lora), kohya state dicts, max-norm, metadata."""

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from kohya_lite.config import TrainingConfig
from kohya_lite.errors import UserError
from kohya_lite.models.load import load_model
from kohya_lite.network.lora import LoRAModule, LoRANetwork
from kohya_lite.network.metadata import (MINIMUM_KEYS, lora_metadata, minimum_metadata, modelspec_metadata,
                                         network_args, ss_metadata)

REFERENCE = Path(__file__).parent / "data" / "sd-scripts-metadata-example.txt"  # copied from shared/reference


@pytest.fixture(scope="module")
def sd1(tiny_sd1_dir):
    return load_model(tiny_sd1_dir)


def _randomise(net: LoRANetwork, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in net.loras():
            lora.lora_up.weight.copy_(torch.randn(lora.lora_up.weight.shape, generator=g) * 0.1)


# ---- LoRAModule ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: nn.Linear(16, 12), lambda: nn.Conv2d(8, 6, 1),
                                  lambda: nn.Conv2d(8, 6, 3, stride=2, padding=1)])
def test_module_init_forward_and_restore(make):
    torch.manual_seed(0)
    org = make()
    x = torch.randn(2, 5, 16) if isinstance(org, nn.Linear) else torch.randn(2, 8, 9, 9)
    base = org(x)
    lora = LoRAModule("lora_unet_x", org, rank=4, alpha=2)
    assert torch.all(lora.lora_up.weight == 0) and lora.scale == 0.5
    bound = 1 / math.sqrt(lora.lora_down.weight[0].numel())  # kaiming_uniform(a=√5) bound
    assert lora.lora_down.weight.abs().max() <= bound + 1e-6
    lora.apply_to()
    assert torch.equal(org(x), base)  # fresh network is a no-op
    nn.init.normal_(lora.lora_up.weight)
    lora.multiplier = 0.7
    expected = base + 0.7 * 0.5 * lora.lora_up(lora.lora_down(x))
    assert torch.allclose(org(x), expected, atol=1e-6)
    # ΔW agrees with the forward (weight-space merge = function-space adapter)
    merged = make()
    merged.load_state_dict(org.state_dict())
    with torch.no_grad():
        merged.weight += 0.7 * lora.delta_weight()
    assert torch.allclose(merged(x), org(x), atol=1e-5)
    lora.restore()
    assert torch.equal(org(x), base) and "forward" not in vars(org)


def test_alpha_zero_or_none_means_rank():
    assert LoRAModule("a", nn.Linear(4, 4), rank=4, alpha=0).scale == 1.0
    assert LoRAModule("a", nn.Linear(4, 4), rank=4, alpha=None).scale == 1.0
    assert float(LoRAModule("a", nn.Linear(4, 4), rank=4, alpha=None).alpha) == 4.0


def test_dropouts_only_in_training():
    torch.manual_seed(0)
    org = nn.Linear(16, 16)
    lora = LoRAModule("a", org, rank=8, alpha=8, dropout=0.5, rank_dropout=0.5, module_dropout=0.5)
    nn.init.normal_(lora.lora_up.weight)
    lora.apply_to()
    x = torch.randn(4, 3, 16)
    lora.eval()
    a, b = org(x), org(x)
    assert torch.equal(a, b)
    lora.train()
    outs = [org(x) for _ in range(8)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    # module_dropout=1 always skips the adapter
    lora2 = LoRAModule("b", nn.Linear(16, 16), rank=4, module_dropout=1.0)
    nn.init.normal_(lora2.lora_up.weight)
    lora2.apply_to()
    lora2.train()
    assert torch.equal(lora2.org_module(x), nn.Linear.forward(lora2.org_module, x))


# ---- LoRANetwork on the tiny model --------------------------------------------------------------

def test_network_targets_and_apply_restore(sd1):
    net = LoRANetwork.create(sd1, 4, 2)
    counts = net.module_counts()
    assert counts == {"unet": 72, "text_encoder": 6 * sd1.text_encoder.config.num_hidden_layers}
    unet_only = LoRANetwork.create(sd1, 4, 2, train_text_encoder=False)
    assert unet_only.module_counts() == {"unet": 72} and not unet_only.text_encoder_parameters()
    locon = LoRANetwork.create(sd1, 4, 2, conv_rank=2, conv_alpha=1)
    conv3 = [l for l in locon.unet_loras if l.is_conv and l.lora_down.kernel_size == (3, 3)]
    assert conv3 and all(l.lora_dim == 2 and l.scale == 0.5 for l in conv3)
    assert all(l.lora_dim == 4 for l in locon.unet_loras if not l.is_conv or l.lora_down.kernel_size == (1, 1))

    sample = torch.randn(1, 4, 8, 8)
    ids = sd1.tokenizer(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        cond = sd1.text_encoder(ids)[0]
        base = sd1.unet(sample, 10, cond).sample
    _randomise(net)
    net.apply()
    with torch.no_grad():
        cond2 = sd1.text_encoder(ids)[0]
        changed = sd1.unet(sample, 10, cond2).sample
        net.set_multiplier(0.0)
        zero = sd1.unet(sample, 10, sd1.text_encoder(ids)[0]).sample
    assert not torch.allclose(base, changed) and torch.allclose(zero, base, atol=1e-6)
    net.restore()
    with torch.no_grad():
        assert torch.equal(sd1.unet(sample, 10, cond).sample, base)
    # module paths and base weights untouched
    assert not any("lora" in n for n, _ in sd1.unet.named_parameters())


def test_gradient_checkpointing_keeps_lora_gradients(tiny_sd1_dir):
    model = load_model(tiny_sd1_dir)
    net = LoRANetwork.create(model, 4, 4, train_text_encoder=False)
    _randomise(net)
    net.apply()
    model.unet.requires_grad_(False)
    torch.manual_seed(0)
    x, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    grads = []
    for ckpt in (False, True):
        if ckpt:
            model.unet.enable_gradient_checkpointing()
        model.unet.train()
        net.zero_grad(set_to_none=True)
        loss = model.unet(x, torch.tensor([10, 500]), cond).sample.pow(2).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in net.unet_parameters()])
        assert all(g is not None for g in grads[-1])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
    assert all(p.grad is None for p in model.unet.parameters())


def test_kohya_state_dict_roundtrip_and_from_weights(sd1):
    net = LoRANetwork.create(sd1, 4, 2, conv_rank=2, conv_alpha=2)
    _randomise(net, seed=3)
    sd = net.kohya_state_dict()
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in sd)
    assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"].dim() == 0
    other = LoRANetwork.create(sd1, 4, 2, conv_rank=2, conv_alpha=2)
    res = other.load_kohya_state_dict(sd)
    assert res.loaded == len(sd) // 3 and not res.missing and not res.unexpected
    assert all(torch.equal(a, b) for a, b in zip(sd.values(), other.kohya_state_dict().values()))
    # shapes from the file (dim_from_weights), per-module alpha kept
    sd2 = dict(sd)
    sd2["lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"] = torch.tensor(1.0)
    rebuilt = LoRANetwork.from_weights(sd1, sd2)
    assert rebuilt.module_counts() == net.module_counts()
    assert rebuilt.get_submodule("lora_te_text_model_encoder_layers_0_mlp_fc1").scale == 0.25
    # rank mismatch → UserError naming network_weights
    wrong = LoRANetwork.create(sd1, 8, 2, conv_rank=2, conv_alpha=2)
    with pytest.raises(UserError) as e:
        wrong.load_kohya_state_dict(sd)
    assert e.value.field == "network_weights" and "rank" in e.value.message
    partial = LoRANetwork.create(sd1, 4, 2)
    with pytest.raises(UserError):
        partial.load_kohya_state_dict(sd, strict=True)
    assert partial.load_kohya_state_dict(sd, strict=False).unexpected


def test_apply_max_norm(sd1):
    net = LoRANetwork.create(sd1, 4, 4, train_text_encoder=False)
    _randomise(net)
    with torch.no_grad():
        for lora in net.unet_loras[:5]:
            lora.lora_up.weight.mul_(100)
    norms = [l.delta_weight().norm().item() for l in net.unet_loras]
    limit = sorted(norms)[-6] * 1.01
    scaled, mean = net.apply_max_norm(limit)
    assert scaled == sum(n > limit for n in norms) >= 5
    after = [l.delta_weight().norm().item() for l in net.unet_loras]
    assert max(after) <= limit * 1.0001
    assert mean == pytest.approx(sum(after) / len(after), rel=1e-4)


def test_optimizer_param_groups_and_loraplus(sd1):
    net = LoRANetwork.create(sd1, 4, 4)
    groups = net.optimizer_param_groups(1e-4, 5e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("textencoder", 5e-5), ("unet", 1e-4)]
    plus = net.optimizer_param_groups(1e-4, 0, loraplus_unet_lr_ratio=16)
    assert [(g["name"], g["lr"]) for g in plus] == [("unet", 1e-4), ("unet_plus", 1.6e-3)]
    ups = {id(p) for p in net.lora_up_parameters("unet")}
    assert {id(p) for p in plus[1]["params"]} == ups and not ups & {id(p) for p in plus[0]["params"]}
    total = sum(len(g["params"]) for g in net.optimizer_param_groups(1, 1))
    assert total == len(list(net.parameters()))


# ---- metadata ------------------------------------------------------------------------------------

def _reference_fields():
    out = {}
    for line in REFERENCE.read_text().splitlines():
        if " = " in line and not line.startswith("#"):
            k, v = line.split(" = ", 1)
            out[k] = v
    return out


def test_ss_metadata_has_every_sd_scripts_field_in_its_format():
    ref = _reference_fields()
    cfg = TrainingConfig(output_name="lora", network_dim=8, network_alpha=8, learning_rate=1e-4, unet_lr=0,
                         text_encoder_lr=0, mixed_precision="no", max_resolution="256,256", enable_bucket=False,
                         clip_skip=0, max_token_length=0, cache_latents=False, lr_scheduler="constant", seed=42,
                         optimizer="AdamW")
    meta = ss_metadata(cfg, session_id=97079653, training_started_at=1795631961.633982, steps=6, epoch=1,
                       num_train_images=32, num_batches_per_epoch=32, num_epochs=1, max_train_steps=6,
                       optimizer="torch.optim.adamw.AdamW", sd_model_name="sd15-random",
                       dataset_dirs={"4_zkz object": {"n_repeats": 4, "img_count": 8}},
                       tag_frequency={"4_zkz object": {"zkz object": 8}}, training_finished_at=1795632039.579612)
    ss_ref = {k: v for k, v in ref.items() if k.startswith("ss_")}
    missing = set(ss_ref) - set(meta)
    assert missing <= {"ss_sd_model_hash", "ss_new_sd_model_hash"}  # written only for a model file
    assert all(isinstance(v, str) for v in meta.values())
    same = [k for k in ss_ref if k in meta and not k.startswith(("ss_tag_frequency",))]
    diffs = {k: (meta[k], ss_ref[k]) for k in same if meta[k] != ss_ref[k]}
    assert diffs == {}
    assert json.loads(meta["ss_dataset_dirs"]) == {"4_zkz object": {"n_repeats": 4, "img_count": 8}}
    with pytest.raises(TypeError):
        ss_metadata(cfg, not_a_field=1)


def test_gui_defaults_and_network_args():
    cfg = TrainingConfig(LoRA_type="Kohya LoCon", conv_dim=16, conv_alpha=8, rank_dropout=0.1, v2=True,
                         v_parameterization=True, noise_offset=0.05)
    assert network_args(cfg) == {"conv_dim": "16", "conv_alpha": "8", "rank_dropout": "0.1"}
    meta = ss_metadata(cfg)
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "16", "conv_alpha": "8", "rank_dropout": "0.1"}
    assert meta["ss_base_model_version"] == "sd_v2_v" and meta["ss_v2"] == "True"
    assert meta["ss_network_alpha"] == "1.0" and meta["ss_network_dim"] == "8"
    assert meta["ss_noise_offset"] == "0.05" and meta["ss_min_snr_gamma"] == "None"
    assert meta["ss_resolution"] == "(512, 512)" and meta["ss_min_bucket_reso"] == "256"
    assert meta["ss_text_encoder_lr"] == "0.0001" and meta["ss_clip_skip"] == "1"
    assert "ss_network_args" not in ss_metadata(TrainingConfig())
    assert set(MINIMUM_KEYS) - {"ss_network_args"} <= set(minimum_metadata(ss_metadata(TrainingConfig())))


def test_modelspec():
    ms = modelspec_metadata(family="sdxl", title="zkz", timestamp=0, trigger_phrase="zkz object")
    assert ms["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert ms["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert ms["modelspec.resolution"] == "1024x1024" and ms["modelspec.prediction_type"] == "epsilon"
    assert ms["modelspec.sai_model_spec"] == "1.0.1" and ms["modelspec.trigger_phrase"] == "zkz object"
    assert ms["modelspec.implementation_version"].startswith("kohya-lite/")
    v = modelspec_metadata(family="sd2", v_prediction=True, resolution="768,768", clip_skip=2,
                           timestep_range=(100, 900))
    assert v["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora" and v["modelspec.prediction_type"] == "v"
    assert v["modelspec.implementation"] == "diffusers" and v["modelspec.encoder_layer"] == "2"
    assert v["modelspec.timestep_range"] == "100,900" and "modelspec.author" not in v
    assert modelspec_metadata(family="sd1")["modelspec.architecture"] == "stable-diffusion-v1/lora"
    full = lora_metadata(TrainingConfig(metadata_title="T", metadata_author="me"), family="sdxl")
    assert full["ss_base_model_version"] == "sdxl_base_v1-0" and full["ss_v2"] == "False"
    assert full["modelspec.title"] == "T" and full["modelspec.author"] == "me"
    assert abs(time.time() - float(full["ss_training_started_at"])) < 60


def test_training_metadata_from_engine_objects(sd1, tiny_sd1_single_file):
    from types import SimpleNamespace

    from kohya_lite.network.metadata import training_metadata

    def item(folder, caption, reg=False):
        return SimpleNamespace(subset=folder, caption=caption, is_reg=reg)

    items = [item("5_zkz object", "zkz object, Red"), item("5_zkz object", "zkz object"), item("1_object", "", True)]
    data = SimpleNamespace(items=items, samples=[0] * 5 + [1] * 5 + [2],
                           bucket_counts=lambda: {(64, 64): 11}, mean_ar_error=lambda: 0.0)
    cfg = TrainingConfig(output_name="zkz", max_resolution="64,64")
    meta = training_metadata(cfg, model=sd1, data=data, session_id=7, started_at=100.0, steps=12, epoch=2,
                             num_epochs=2, total_steps=12, batches_per_epoch=6, warmup=1,
                             optimizer_desc="torch.optim.adamw.AdamW", seed=42, precision="no")
    assert meta["ss_num_train_images"] == "10" and meta["ss_num_reg_images"] == "1"
    assert json.loads(meta["ss_dataset_dirs"]) == {"5_zkz object": {"n_repeats": 5, "img_count": 2}}
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {"1_object": {"n_repeats": 1, "img_count": 1}}
    assert json.loads(meta["ss_tag_frequency"]) == {"5_zkz object": {"zkz object": 2, "red": 1}}
    assert json.loads(meta["ss_bucket_info"])["buckets"]["0"] == {"resolution": [64, 64], "count": 11}
    assert meta["ss_sd_model_hash"] == "IsADirectory" and meta["ss_mixed_precision"] == "no"
    assert meta["ss_steps"] == "12" and meta["ss_seed"] == "42" and meta["modelspec.title"] == "zkz"
    single = load_model(tiny_sd1_single_file)
    meta2 = training_metadata(cfg, model=single, session_id=7, started_at=100.0, steps=1, epoch=1, num_epochs=1,
                              total_steps=1, batches_per_epoch=1, warmup=0, optimizer_desc="x", seed=1)
    assert meta2["ss_sd_model_name"] == tiny_sd1_single_file.name and len(meta2["ss_new_sd_model_hash"]) == 64
