"""`lora merge-to-model`: the merged checkpoint equals diffusers' fuse_lora on the same model, loads through our
single-file loader and diffusers' from_single_file, generates like the LoRAs applied at run time, trains, and
refuses what it cannot do (a file none of whose modules fit, another family, a bad output). LyCORIS files:
tests/test_lycoris.py."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dataset_helpers import make_images, tiny_config
from kohya_lite.cli import main
from kohya_lite.errors import UserError
from kohya_lite.generate import GenerateRequest, generate
from kohya_lite.library import read_metadata
from kohya_lite.models.load import load_model
from kohya_lite.tools.merge_to_model import merge_to_model, output_format
from lora_helpers import write_lora

RATIO_A, RATIO_B = 0.7, -0.4


def _quiet():
    import diffusers
    import transformers

    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()


def _weights(unet, text_encoders) -> dict[str, torch.Tensor]:
    out = {f"unet.{k}": v.detach().float().clone() for k, v in unet.state_dict().items()}
    for i, te in enumerate(text_encoders):
        root = getattr(te, "text_model", te)
        out.update({f"te{i}.{k}": v.detach().float().clone() for k, v in root.state_dict().items()
                    if not k.endswith("position_ids")})
    return out


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _config_only(src, dst):
    """A config-only copy of a diffusers folder (what our single-file loader reads beside a checkpoint)."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".txt"):
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
    return dst


@pytest.fixture(scope="module")
def setup(tiny_sd1_dir, tmp_path_factory):
    _quiet()
    root = tmp_path_factory.mktemp("mtm")
    base = load_model(tiny_sd1_dir)
    loras = root / "Lora"
    a = write_lora(base, loras / "a.safetensors", seed=1)
    b = write_lora(base, loras / "b.safetensors", seed=2, conv=True, rank=2, alpha=1.0)  # LoCon: 3×3 convs too
    out = _config_only(tiny_sd1_dir, root / "merged") / "merged.safetensors"
    progress = []
    res = merge_to_model(tiny_sd1_dir, [(a, RATIO_A), (b, RATIO_B)], out, precision="float",
                         progress=lambda d, t, w: progress.append((d, t, w)))
    return {"root": root, "base": base, "a": a, "b": b, "out": out, "res": res, "progress": progress,
            "loras": loras}


def test_merged_checkpoint_equals_diffusers_fuse_lora(setup, tiny_sd1_dir):
    from diffusers import StableDiffusionPipeline

    res, out = setup["res"], setup["out"]
    assert res.format == "single_file" and res.family == "sd1" and out.is_file()
    assert [m.modules for m in res.loras] == [len(load_model_names(setup["a"])), len(load_model_names(setup["b"]))]
    assert setup["progress"][-1][0] == setup["progress"][-1][1] and len(setup["progress"]) > 10

    # diffusers: each LoRA fused at its ratio into a fresh copy of the same model
    pipe = load_model(tiny_sd1_dir).make_pipeline()
    before = _weights(pipe.unet, [pipe.text_encoder])
    for name, path, ratio in (("a", setup["a"], RATIO_A), ("b", setup["b"], RATIO_B)):
        pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.fuse_lora(lora_scale=ratio, adapter_names=[name])
        pipe.unload_lora_weights()
    fused = _weights(pipe.unet, [pipe.text_encoder])
    assert _max_diff(fused, before) > 1e-3  # the LoRAs do change the model

    ours = load_model(out)  # our single-file loader (the configs beside the file)
    assert ours.source == "single_file" and ours.family == "sd1"
    assert _max_diff(_weights(ours.unet, ours.text_encoders), fused) < 1e-5
    theirs = StableDiffusionPipeline.from_single_file(str(out), config=str(out.parent), local_files_only=True,
                                                      safety_checker=None, requires_safety_checker=False)
    assert _max_diff(_weights(theirs.unet, [theirs.text_encoder]), fused) < 1e-5
    meta = read_metadata(out)
    assert meta["modelspec.architecture"] == "stable-diffusion-v1" and "a.safetensors" in meta["modelspec.merged_from"]


def load_model_names(path):
    from kohya_lite.network.io import load_lora

    return load_lora(path).module_names()


def test_merged_checkpoint_generates_like_the_loras_and_trains(setup, tmp_path):
    from kohya_lite.config import merge_config
    from kohya_lite.engine.train import train

    req = dict(steps=3, width=64, height=64, seed=11, negative="blurry")
    merged = load_model(setup["out"])
    with_tags = generate(setup["base"], GenerateRequest(prompt=f"a red cube <lora:a:{RATIO_A}> <lora:b:{RATIO_B}>",
                                                        **req), lora_dir=setup["loras"])
    plain = generate(setup["base"], GenerateRequest(prompt="a red cube", **req), lora_dir=setup["loras"])
    from_merged = generate(merged, GenerateRequest(prompt="a red cube", **req), lora_dir=setup["loras"])
    px = [np.asarray(r.image.convert("RGB")).astype(int) for r in (with_tags, plain, from_merged)]
    assert np.abs(px[2] - px[0]).max() <= 2, "the merged model renders what the LoRAs render at run time"
    assert np.abs(px[1] - px[0]).max() > 10, "…which differs from the base model"

    make_images(tmp_path / "img" / "2_zkz object", 2)
    cfg, _ = merge_config(tiny_config(setup["out"], tmp_path, epoch=1, max_train_steps=2, save_every_n_epochs=0,
                                      train_batch_size=1))
    result = train(cfg, progress_bar=False)
    assert result.status == "done" and result.steps == 2 and result.final_path.is_file()


def test_diffusers_folder_output_and_fp16(setup, tiny_sd1_dir, tmp_path):
    out = tmp_path / "merged-folder"
    res = merge_to_model(tiny_sd1_dir, [(setup["a"], RATIO_A)], out, precision="fp16")
    assert res.format == "diffusers" and (out / "model_index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder left behind"
    folder = load_model(out, dtype=torch.float16)
    assert folder.source == "folder" and next(folder.unet.parameters()).dtype == torch.float16
    single = tmp_path / "m16.safetensors"
    merge_to_model(tiny_sd1_dir, [(setup["a"], RATIO_A)], single, precision="fp16")
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    with pytest.raises(UserError) as e:
        merge_to_model(tiny_sd1_dir, [(setup["a"], 1.0)], out)
    assert "not empty" in e.value.message
    merge_to_model(tiny_sd1_dir, [(setup["a"], 0.0)], out, overwrite=True, precision="float")
    unchanged = load_model(out)
    base = setup["base"]
    assert _max_diff(_weights(unchanged.unet, unchanged.text_encoders), _weights(base.unet, base.text_encoders)) == 0


def test_refusals(setup, tiny_sd1_dir, tmp_path, capsys):
    ly = tmp_path / "loha.safetensors"
    save_file({"lora_unet_a.hada_w1_a": torch.zeros(2, 4), "lora_unet_a.hada_w1_b": torch.zeros(4, 2)}, str(ly))
    with pytest.raises(UserError) as e:  # a LoHa for layers this model does not have
        merge_to_model(tiny_sd1_dir, [(ly, 1.0)], tmp_path / "x.safetensors")
    assert "none of the 1 modules of 'loha.safetensors'" in e.value.message and e.value.field == "loras"
    xl = write_lora(setup["base"], tmp_path / "xl.safetensors", seed=3,
                    metadata={"ss_base_model_version": "sdxl_base_v1-0"})  # the metadata names the family
    with pytest.raises(UserError) as e:
        merge_to_model(tiny_sd1_dir, [(xl, 1.0)], tmp_path / "x.safetensors")
    assert "Stable Diffusion XL" in e.value.message
    with pytest.raises(UserError):
        output_format(tmp_path / "x.ckpt")
    with pytest.raises(UserError):
        merge_to_model(tiny_sd1_dir, [], tmp_path / "x.safetensors")
    single = tiny_sd1_dir / "tiny-sd1.safetensors"
    with pytest.raises(UserError) as e:
        merge_to_model(single, [(setup["a"], 1.0)], single)
    assert "replace the base model" in e.value.message
    assert not (tmp_path / "x.safetensors").exists()
    # the CLI: FILE:RATIO items, one summary line, errors as one block with exit 2
    out = tmp_path / "cli.safetensors"
    assert main(["lora", "merge-to-model", str(tiny_sd1_dir), f"{setup['a']}:0.5", "--out", str(out)]) == 0
    assert "wrote checkpoint" in capsys.readouterr().out and out.is_file()
    assert main(["lora", "merge-to-model", str(tiny_sd1_dir), str(ly), "--out", str(out)]) == 2
    assert "none of the 1 modules" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["sdxl", "sd2"])
def test_other_families_match_fuse_lora_too(family, request, tmp_path):
    """SDXL (SGM names, two text encoders) and SD2 (OpenCLIP layout, v-prediction) checkpoints."""
    _quiet()
    model_dir = request.getfixturevalue(f"tiny_{family}_dir")
    base = load_model(model_dir)
    lora = write_lora(base, tmp_path / "l.safetensors", seed=6, conv=True)
    out = _config_only(model_dir, tmp_path / "merged") / "m.safetensors"
    res = merge_to_model(model_dir, [(lora, 0.6)], out, precision="float")
    assert res.family == family and res.loras[0].skipped == []
    pipe = base.make_pipeline()
    tes = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    pipe.load_lora_weights(str(lora), adapter_name="x")
    pipe.fuse_lora(lora_scale=0.6)
    pipe.unload_lora_weights()
    merged = load_model(out, v_parameterization=family == "sd2")
    assert merged.family == family
    assert _max_diff(_weights(merged.unet, merged.text_encoders), _weights(pipe.unet, tes)) < 1e-5
    if family == "sd2":
        assert read_metadata(out)["modelspec.prediction_type"] == "v"
