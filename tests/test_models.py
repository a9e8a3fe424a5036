"""Base models: family facts and detection, offline loading of folders / single files / .ckpt / Hub cache,
the shipped configs and tokenizer, tiny builders and the make-model command."""

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from kohya_lite.cli import main as cli_main
from kohya_lite.errors import UserError
from kohya_lite.models import clip_bpe, families
from kohya_lite.models.families import (base_model_version, config_dir, detect_family_from_keys, modelspec_architecture,
                                        quick_pick, training_scheduler_config)
from kohya_lite.models.detect import read_checkpoint_keys
from kohya_lite.models.load import load_model
from kohya_lite.models.tiny import build_tiny_model


def _state(model):
    return [m.state_dict() for m in (model.unet, model.vae, *model.text_encoders)]


def _same(a, b) -> bool:
    return all(set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(_state(a), _state(b)))


# ---- families ------------------------------------------------------------------------------------

def test_family_facts():
    assert [base_model_version(f, v) for f, v in [("sd1", False), ("sd2", False), ("sd2", True), ("sdxl", False)]] == \
        ["sd_v1", "sd_v2", "sd_v2_v", "sdxl_base_v1-0"]
    assert modelspec_architecture("sd2", False) == "stable-diffusion-v2-512/lora"
    assert modelspec_architecture("sdxl", False, None) == "stable-diffusion-xl-v1-base"
    assert families.default_resolution("sd2", True) == 768 and families.default_resolution("sdxl") == 1024
    assert families.info("sdxl").pipeline_class == "StableDiffusionXLPipeline"
    assert training_scheduler_config(True) == {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                                               "beta_schedule": "scaled_linear", "clip_sample": False,
                                               "prediction_type": "v_prediction"}
    qp = quick_pick("stabilityai/stable-diffusion-2-1")
    assert (qp.family, qp.v_prediction) == ("sd2", True)
    assert qp.flags == {"v2": True, "v_parameterization": True, "sdxl": False}
    assert quick_pick("stabilityai/stable-diffusion-xl-base-1.0").family == "sdxl" and quick_pick("x/y") is None
    assert families.family_from_flags(v2=True, sdxl=True) == "sdxl"


def test_detect_family_from_keys():
    assert detect_family_from_keys(["conditioner.embedders.0.transformer.x", "model.diffusion_model.x"]) == "sdxl"
    assert detect_family_from_keys(["cond_stage_model.model.token_embedding.weight", "model.x"]) == "sd2"
    assert detect_family_from_keys(["cond_stage_model.transformer.x", "model.diffusion_model.x"]) == "sd1"
    assert detect_family_from_keys(["down_blocks.0.resnets.0.conv1.weight"]) is None
    for keys, name in ((["model.diffusion_model.joint_blocks.0.x"], "Stable Diffusion 3"),
                       (["double_blocks.0.img_attn.norm.key_norm.scale"], "FLUX")):
        with pytest.raises(UserError) as e:
            detect_family_from_keys(keys)
        assert name in e.value.message and "not support" in e.value.message
        assert e.value.field == "pretrained_model_name_or_path"
    with pytest.raises(UserError) as e:
        detect_family_from_keys(["lora_unet_a.lora_down.weight", "lora_unet_a.alpha"])
    assert "LoRA" in e.value.message


def test_tiny_single_files_are_detected(tiny_sd1_single_file, tiny_sd2_single_file, tiny_sdxl_single_file):
    for path, family in ((tiny_sd1_single_file, "sd1"), (tiny_sd2_single_file, "sd2"), (tiny_sdxl_single_file, "sdxl")):
        assert detect_family_from_keys(read_checkpoint_keys(path)) == family


# ---- shipped configs and tokenizer -----------------------------------------------------------------

def test_shipped_configs_and_tokenizer():
    for name in ("sd1", "sd2", "sd2-base", "sdxl"):
        folder = families.CONFIGS_DIR / name
        index = json.loads((folder / "model_index.json").read_text())
        for comp, (lib, cls) in ((k, v) for k, v in index.items() if isinstance(v, list)):
            if lib:
                assert (folder / comp).is_dir() or comp.startswith("tokenizer"), (name, comp)
    assert json.loads((config_dir("sd2", True) / "scheduler/scheduler_config.json").read_text())["prediction_type"] == \
        "v_prediction"
    assert json.loads((config_dir("sd2", False) / "scheduler/scheduler_config.json").read_text())["prediction_type"] == \
        "epsilon"
    assert config_dir("sd2", False).name == "sd2-base"
    tok = clip_bpe.load_clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.model_max_length == 77 and len(tok) == 49408
    assert tok("a cat", padding="max_length", max_length=6).input_ids[-1] == 49407
    bang = clip_bpe.load_clip_tokenizer(clip_bpe.pad_token_for("sdxl", 1))
    assert bang("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 0, 0]
    size = sum(p.stat().st_size for p in clip_bpe.TOKENIZER_DIR.iterdir())
    assert size < 2_000_000


# ---- loading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_folder_and_single_file_load_identically(family, request):
    folder = request.getfixturevalue(f"tiny_{family}_dir")
    single = request.getfixturevalue(f"tiny_{family}_single_file")
    flags = families.flags_for(family, family == "sd2")
    a = load_model(folder, **flags)
    b = load_model(single, **flags)
    assert (a.family, a.source, b.family, b.source) == (family, "folder", family, "single_file")
    assert b.config_dir == str(folder)  # the folder the file sits in supplies the configs
    assert _same(a, b)
    assert a.v_prediction == b.v_prediction == (family == "sd2")
    assert a.scheduler_config["prediction_type"] == ("v_prediction" if family == "sd2" else "epsilon")
    assert not a.warnings and not b.warnings
    assert len(a.text_encoders) == len(a.tokenizers) == (2 if family == "sdxl" else 1)
    assert a.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert "single file" in b.detected and "detected from its keys" in b.detected
    assert len(b.model_hash) == 8 and a.model_hash == "IsADirectory"


def test_detected_family_wins_over_flags_with_a_warning(tiny_sdxl_single_file, tiny_sd2_dir):
    m = load_model(tiny_sdxl_single_file, v2=True)
    assert m.family == "sdxl" and any("sdxl=True" in w for w in m.warnings)
    m2 = load_model(tiny_sd2_dir)  # folder scheduler says v_prediction, flags say nothing
    assert m2.family == "sd2" and m2.v_prediction
    assert any("v2=True" in w for w in m2.warnings) and any("v_prediction" in w for w in m2.warnings)


def test_make_pipeline_generates(tiny_sd1_dir):
    model = load_model(tiny_sd1_dir)
    pipe = model.make_pipeline()
    pipe.set_progress_bar_config(disable=True)
    assert pipe.safety_checker is None and pipe.unet is model.unet
    img = pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 64, 64, 3)
    from diffusers import DDPMScheduler

    assert isinstance(model.training_scheduler(), DDPMScheduler)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_ckpt_is_read_weights_only(tiny_sd1_dir, tiny_sd1_single_file, tmp_path):
    from safetensors.torch import load_file

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(tiny_sd1_single_file)), "global_step": 1}, str(ckpt))
    m = load_model(ckpt, config_dir=tiny_sd1_dir)
    assert m.family == "sd1" and m.source == "single_file"
    assert _same(m, load_model(tiny_sd1_dir))

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"model.x": Payload()}}, f)
    with pytest.raises(UserError) as e:
        load_model(evil, config_dir=tiny_sd1_dir)
    assert not (tmp_path / "pwned").exists()
    assert e.value.field == "pretrained_model_name_or_path" and "safetensors" in e.value.fix


def test_vae_override(tiny_sd1_dir, tiny_sdxl_dir):
    m = load_model(tiny_sd1_dir, vae_path=str(tiny_sd1_dir / "vae"))
    assert "VAE from vae" in m.detected
    with pytest.raises(UserError) as e:
        load_model(tiny_sd1_dir, vae_path=str(tiny_sd1_dir / "no-such-vae.safetensors"))
    assert e.value.field == "vae"
    with pytest.raises(UserError) as e:  # a VAE of another architecture
        load_model(tiny_sd1_dir, vae_path=str(families.CONFIGS_DIR / "sd1"))
    assert e.value.field == "vae"


def test_missing_and_bad_models(tmp_path):
    for bad in ("", str(tmp_path / "nope.safetensors"), str(tmp_path / "nope")):
        with pytest.raises(UserError) as e:
            load_model(bad)
        assert e.value.field == "pretrained_model_name_or_path" and e.value.fix
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError):
        load_model(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "empty")
    assert "model_index.json" in e.value.message
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "broken.safetensors")
    assert "download it again" in e.value.fix


def test_quick_pick_absent_from_cache_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError) as e:
        load_model("stabilityai/stable-diffusion-xl-base-1.0", sdxl=True, hf_cache_dir=tmp_path)
    err = e.value
    assert err.field == "pretrained_model_name_or_path"
    assert "not on this computer" in err.message and "quick-pick" in err.message
    assert "hf download stabilityai/stable-diffusion-xl-base-1.0" in err.fix and ".safetensors" in err.fix


def test_hub_id_resolved_from_local_cache(tiny_sd1_dir, tmp_path):
    """A repo already in the HF cache layout (models--org--name/snapshots/<rev>) loads without network."""
    repo = tmp_path / "hub" / "models--kohya-lite-test--tiny-sd1"
    rev = "0" * 40
    shutil.copytree(tiny_sd1_dir, repo / "snapshots" / rev, ignore=shutil.ignore_patterns("*.safetensors*"))
    for sub in ("unet", "vae", "text_encoder"):
        for f in (tiny_sd1_dir / sub).glob("*.safetensors"):
            shutil.copy(f, repo / "snapshots" / rev / sub / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    m = load_model("kohya-lite-test/tiny-sd1", hf_cache_dir=tmp_path / "hub")
    assert m.source == "hub_cache" and m.name == "kohya-lite-test/tiny-sd1" and m.family == "sd1"
    assert "Hugging Face cache" in m.detected
    assert _same(m, load_model(tiny_sd1_dir))


# ---- tiny builder and CLI ------------------------------------------------------------------------

def test_tiny_model_is_deterministic(tmp_path):
    a = build_tiny_model("sd1", tmp_path / "a", seed=1)
    b = build_tiny_model("sd1", tmp_path / "b", seed=1)
    assert (a / "model_index.json").is_file()
    assert _same(load_model(a), load_model(b))


def test_make_model_cli(tmp_path, capsys):
    out = tmp_path / "tiny-xl"
    assert cli_main(["make-model", "--family", "sdxl", str(out), "--single-file", "xl.safetensors", "--seed", "3"]) == 0
    assert "wrote a tiny sdxl model" in capsys.readouterr().out
    m = load_model(out / "xl.safetensors")
    assert m.family == "sdxl" and m.source == "single_file"
    assert _same(m, load_model(out))
    assert cli_main(["make-model", "--family", "sd1", str(tmp_path / "x"), "--single-file", "x.ckpt"]) == 2
    assert ".safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("family,expected", [("sd1", "v1"), ("sd2", "v2"), ("sdxl", "xl_base")])
def test_ldm_writer_produces_the_real_checkpoint_layout(family, expected):
    """The LDM/SGM writer applied to the full-size architectures (meta device) yields keys diffusers recognises
    as the real model type (its sentinel keys), with the published TE layouts."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from kohya_lite.models.ldm import to_ldm_state_dict

    folder = config_dir(family, family == "sd2")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae")))
        tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))]
        if family == "sdxl":
            tes.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2"))))
    sd = to_ldm_state_dict(family, unet, vae, tes)
    assert infer_diffusers_model_type(sd) == expected
    assert detect_family_from_keys(sd) == family
    if family == "sd1":
        assert "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight" in sd
        assert "first_stage_model.decoder.up.3.upsample.conv.weight" in sd
        assert "model.diffusion_model.output_blocks.2.1.conv.weight" in sd
    if family == "sd2":
        assert sd["cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"].shape == (3072, 1024)
    if family == "sdxl":
        assert sd["conditioner.embedders.1.model.text_projection"].shape == (1280, 1280)
        assert "model.diffusion_model.output_blocks.2.2.conv.weight" in sd
        assert "model.diffusion_model.label_emb.0.0.weight" in sd


def test_full_size_sd15_single_file_loads_with_the_shipped_config(tmp_path):
    """A full-size SD1.5-layout checkpoint (zeros, fp16, 2 GB) loads offline through the shipped sd1 config, every
    tensor in place. (~25 s, 2.6 GB RAM; SD2/SDXL were checked the same way by hand: UNet 865.9 M / 2567.5 M.)"""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from kohya_lite.models.ldm import to_ldm_state_dict

    folder = config_dir("sd1")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae")))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))
    sd = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in to_ldm_state_dict("sd1", unet, vae, [te]).items()}
    te_key = "cond_stage_model.transformer.text_model.encoder.layers.5.self_attn.q_proj.weight"
    unet_key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"
    sd[te_key] = torch.full(sd[te_key].shape, 0.5, dtype=torch.float16)
    sd[unet_key] = torch.full(sd[unet_key].shape, 0.25, dtype=torch.float16)
    path = tmp_path / "sd15.safetensors"
    save_file(sd, str(path))
    del sd
    m = load_model(path, dtype=torch.float16)
    assert m.family == "sd1" and m.config_dir == str(config_dir("sd1")) and not m.warnings
    assert sum(p.numel() for p in m.unet.parameters()) == 859_520_964
    assert not any(p.is_meta for mod in (m.unet, m.vae, m.text_encoder) for p in mod.parameters())
    assert torch.all(m.text_encoder.encoder.layers[5].self_attn.q_proj.weight == 0.5)
    assert torch.all(m.unet.up_blocks[3].attentions[2].transformer_blocks[0].attn2.to_k.weight == 0.25)
