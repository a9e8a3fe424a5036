"""`kohya-lite lora info|verify` on a real trained file, an untrained one and a diverged (NaN) one."""

import torch

from kohya_lite.cli import main
from kohya_lite.models.load import load_model
from kohya_lite.network.io import save_lora_file
from kohya_lite.network.lora import LoRANetwork


def test_info_and_verify(tiny_sd1_dir, tmp_path, capsys):
    model = load_model(tiny_sd1_dir)
    net = LoRANetwork.create(model, 4, 2)
    fresh = tmp_path / "fresh.safetensors"
    save_lora_file(fresh, net.kohya_state_dict(), {"ss_output_name": "fresh", "ss_base_model_version": "sd_v1",
                                                   "ss_v2": "False", "modelspec.trigger_phrase": "zkz"})
    assert main(["lora", "info", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "rank / alpha  4 / 2 (scale 0.5)" in out and "zkz" in out and "sd_v1" in out
    assert main(["lora", "verify", str(fresh)]) == 0
    out = capsys.readouterr().out
    n = len(net.kohya_state_dict()) // 3
    assert f"number of LoRA modules: {n}" in out and f"{n} of {n} modules are all zero (not trained" in out
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    trained = tmp_path / "trained.safetensors"
    save_lora_file(trained, net.kohya_state_dict(), {})
    main(["lora", "verify", str(trained)])
    out = capsys.readouterr().out
    assert "not trained" not in out and len(out.strip().splitlines()) == 1 + 2 * n
    assert main(["lora", "info", str(tmp_path / "missing.safetensors")]) == 2

    # a diverged training: NaN/Inf tensors are flagged and the exit code says so
    tensors = net.kohya_state_dict()
    key = sorted(k for k in tensors if k.endswith("lora_up.weight"))[3]
    tensors[key][0, 0] = float("nan")
    tensors[key.replace("lora_up", "lora_down")][0, 0] = float("inf")
    zero = sorted(k for k in tensors if k.endswith("lora_up.weight"))[5]
    tensors[zero].zero_()
    bad = tmp_path / "bad.safetensors"
    save_lora_file(bad, tensors, {}, precision="float")
    assert main(["lora", "verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "2 tensors hold NaN/Inf values" in out and "1 of " in out and zero.rsplit(".", 2)[0] in out
