"""LoRA resize and merge: the effective weight changes are kept (or summed) exactly, one alpha per file."""

import json
import struct

import pytest
import torch

from kohya_lite.cli import main
from kohya_lite.errors import UserError
from kohya_lite.lora_tools import merge_loras, module_delta, module_names, pick_rank, resize_lora
from kohya_lite.models.load import load_model
from kohya_lite.network.io import read_lora_file, save_lora_file
from kohya_lite.network.lora import LoRANetwork


@pytest.fixture(scope="module")
def sd1(tiny_sd1_dir):
    return load_model(tiny_sd1_dir)


def _lora(model, path, seed, rank=4, alpha=2, conv=0):
    torch.manual_seed(seed)
    net = LoRANetwork.create(model, rank, alpha, conv_rank=conv, conv_alpha=alpha)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    save_lora_file(path, net.kohya_state_dict(), {"ss_base_model_version": "sd_v1", "ss_v2": "False",
                                                  "ss_network_dim": str(rank), "ss_training_comment": "orig"},
                   precision="float")
    return path


def _meta(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        return json.loads(fh.read(n))["__metadata__"]


def test_resize_to_full_rank_is_exact_and_lower_rank_approximates(sd1, tmp_path):
    src = _lora(sd1, tmp_path / "a.safetensors", 0, rank=4, alpha=2, conv=2)
    a, _ = read_lora_file(src)
    same = resize_lora(src, tmp_path / "same.safetensors", 4, precision="float")
    b, _ = read_lora_file(same.path)
    assert module_names(a) == module_names(b) and same.alpha == 2.0
    for n in module_names(a):
        torch.testing.assert_close(module_delta(b, n), module_delta(a, n), atol=1e-5, rtol=1e-4)
    small = resize_lora(src, tmp_path / "r2.safetensors", 2, precision="float")
    c, _ = read_lora_file(small.path)
    assert set(small.ranks) == {2} and small.alpha == 1.0  # old_alpha / old_rank × new_rank
    n = module_names(a)[0]
    err2 = (module_delta(c, n) - module_delta(a, n)).norm()
    err1 = (module_delta(read_lora_file(resize_lora(src, tmp_path / "r1.safetensors", 1).path)[0], n)
            - module_delta(a, n)).norm()
    assert 0 < err2 < err1
    meta = _meta(small.path)
    assert meta["ss_network_dim"] == "2" and meta["ss_training_comment"].startswith("dimension is resized from 4 to 2")
    assert "orig" in meta["ss_training_comment"] and len({float(v) for k, v in c.items() if k.endswith(".alpha")}) == 1


def test_dynamic_rank_rules():
    s = torch.tensor([10.0, 5.0, 1.0, 0.1])
    assert pick_rank(s, 4, "sv_ratio", 8) == 2  # values > 10/8
    assert pick_rank(s, 4, "sv_cumulative", 0.9) == 2  # 15/16.1 ≥ 0.9
    assert pick_rank(s, 4, "sv_fro", 0.99) == 2  # (100+25)/126.01 ≥ 0.98
    assert pick_rank(s, 1, "sv_fro", 0.999) == 1 and pick_rank(torch.zeros(3), 4) == 1


def test_dynamic_resize_writes_dynamic_dim(sd1, tmp_path):
    """One module made rank 1, the others full rank 4: sv_fro 0.9 keeps 1 for the first and more for the rest."""
    src = _lora(sd1, tmp_path / "a.safetensors", 1)
    tensors, meta = read_lora_file(src)
    first = module_names(tensors)[0]
    tensors[f"{first}.lora_up.weight"][:, 1:] = 0
    save_lora_file(src, tensors, meta, precision="float")
    res = resize_lora(src, tmp_path / "d.safetensors", 4, method="sv_fro", param=0.9)
    assert sum(res.ranks.values()) == res.modules and min(res.ranks) == 1 and max(res.ranks) > 1
    assert _meta(res.path)["ss_network_dim"] == "Dynamic"
    with pytest.raises(UserError):
        resize_lora(src, tmp_path / "x.safetensors", 4, method="sv_ratio", param=1)


def test_merge_is_the_weighted_sum(sd1, tmp_path):
    a = _lora(sd1, tmp_path / "a.safetensors", 2, rank=4, alpha=2)
    b = _lora(sd1, tmp_path / "b.safetensors", 3, rank=2, alpha=2)
    res = merge_loras([a, b], [0.8, -0.5], tmp_path / "m.safetensors", precision="float")
    ta, tb, tm = read_lora_file(a)[0], read_lora_file(b)[0], read_lora_file(res.path)[0]
    assert set(res.ranks) == {6}
    for n in module_names(ta):
        torch.testing.assert_close(module_delta(tm, n), 0.8 * module_delta(ta, n) - 0.5 * module_delta(tb, n),
                                   atol=1e-5, rtol=1e-4)
    svd = merge_loras([a, b], [0.8, -0.5], tmp_path / "m6.safetensors", new_rank=6, precision="float")
    ts = read_lora_file(svd.path)[0]
    n = module_names(ta)[0]
    torch.testing.assert_close(module_delta(ts, n), module_delta(tm, n), atol=1e-5, rtol=1e-4)


def test_cli_and_bad_input(sd1, tmp_path, capsys):
    a = _lora(sd1, tmp_path / "a.safetensors", 4)
    b = _lora(sd1, tmp_path / "b.safetensors", 5)
    assert main(["lora", "resize", str(a), str(tmp_path / "r.safetensors"), "--rank", "2"]) == 0
    assert "rank 2:" in capsys.readouterr().out
    assert main(["lora", "merge", f"{a}:0.7", str(b), "--out", str(tmp_path / "m.safetensors")]) == 0
    assert main(["lora", "merge", f"{a}:x", str(b), "--out", str(tmp_path / "m2.safetensors")]) == 2
    assert "is not a ratio" in capsys.readouterr().err
    assert main(["lora", "merge", str(a), "--out", str(tmp_path / "m3.safetensors")]) == 2
    meta = _meta(b)
    meta["ss_base_model_version"] = "sdxl_base_v1-0"
    t, _ = read_lora_file(b)
    save_lora_file(tmp_path / "x.safetensors", t, meta)
    with pytest.raises(UserError) as e:
        merge_loras([a, tmp_path / "x.safetensors"], [1, 1], tmp_path / "bad.safetensors")
    assert "different base models" in e.value.message


def test_gui_tools_tab_builds_and_parses(sd1, tmp_path):
    import gradio as gr

    from kohya_lite.ui import lora_tools_tab

    with gr.Blocks():
        lora_tools_tab.build()
    from kohya_lite.lora_tools import parse_merge_inputs

    text = f"{tmp_path}/a.safetensors:0.8\n\n/x/b.safetensors -0.5\n/x/c.safetensors\nC:\\l\\d.safetensors:2\nC:\\e.pt\n"
    files, ratios = parse_merge_inputs(text.splitlines())
    assert files == [f"{tmp_path}/a.safetensors", "/x/b.safetensors", "/x/c.safetensors", "C:\\l\\d.safetensors",
                     "C:\\e.pt"]
    assert ratios == [0.8, -0.5, 1.0, 2.0, 1.0]
    with pytest.raises(UserError) as e:
        parse_merge_inputs(["/x/a.safetensors:abc"])
    assert "item 1" in e.value.message
    src = _lora(sd1, tmp_path / "a.safetensors", 7)
    text = lora_tools_tab.info_text(str(src))
    assert "rank 4 / alpha 2" in text and "sd_v1" in text
