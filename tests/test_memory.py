"""The memory estimate `check` prints and the page shows (kohya_lite/models/memory.py): parameter counts from the
model files' headers, how each setting moves it, the CPU loading peak, and the warning when it will not fit.
How close it comes to a measured peak on the full-size architectures is benchmarks/bench_full.py's job."""


import pytest
import torch

from dataset_helpers import make_images, tiny_config
from kohya_lite.check import format_report, run_check
from kohya_lite.config import merge_config
from kohya_lite.models import memory
from kohya_lite.models.load import load_model
from kohya_lite.models.memory import GB, estimate_memory, model_file_bytes, model_params


def _cfg(model, tmp_path, **kw):
    return merge_config(tiny_config(model, tmp_path, **kw))[0]


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.state_dict().values())


@pytest.mark.parametrize("fixture", ["tiny_sd1_dir", "tiny_sdxl_dir", "tiny_sd1_single_file"])
def test_parameter_counts_come_from_the_file_headers(fixture, request):
    path = request.getfixturevalue(fixture)
    family = "sdxl" if "sdxl" in fixture else "sd1"
    counts = model_params(path, family)
    m = load_model(path)
    assert counts["unet"] == _numel(m.unet)
    assert counts["vae"] == _numel(m.vae)
    assert counts["text_encoder"] == pytest.approx(sum(_numel(te) for te in m.text_encoders), rel=0.01)


def test_an_unreadable_model_falls_back_to_the_published_sizes(tmp_path):
    assert model_params(tmp_path / "missing", "sdxl") == memory.FULL_SIZE_PARAMS["sdxl"]
    assert model_file_bytes(tmp_path / "missing") == (0.0, 0.0)


def test_each_setting_moves_the_estimate_the_way_it_should(tiny_sd1_dir, tmp_path):
    def est(**kw):
        return estimate_memory(_cfg(tiny_sd1_dir, tmp_path, **kw), device="cuda", num_images=10)

    base = est(train_batch_size=1)  # rank 4
    assert est(train_batch_size=2).parts["activations"] == pytest.approx(2 * base.parts["activations"])
    assert est(train_batch_size=1, max_resolution="128,128").parts["activations"] == \
        pytest.approx(4 * base.parts["activations"])
    assert est(train_batch_size=1, gradient_checkpointing=True).parts["activations"] < base.parts["activations"]
    uncached = est(train_batch_size=1, cache_latents=False)
    assert uncached.parts["activations"] > base.parts["activations"] and uncached.parts["caches"] == 0
    assert base.parts["caches"] > 0
    half = est(train_batch_size=1, mixed_precision="bf16")
    assert half.parts["weights"] == pytest.approx(base.parts["weights"] / 2)
    assert est(train_batch_size=1, network_dim=16).parts["network"] == pytest.approx(4 * base.parts["network"])
    assert est(train_batch_size=1, optimizer="AdamW8bit").parts["network"] < base.parts["network"]
    unet_only = est(train_batch_size=1, text_encoder_lr="0")
    assert unet_only.parts["network"] < base.parts["network"]


def test_on_a_cpu_loading_the_unet_can_peak_above_training(tiny_sd1_dir, tiny_sd1_single_file, tmp_path):
    """A diffusers folder: the UNet in its dtype next to its file's pages; a single file is read whole."""
    cfg = _cfg(tiny_sd1_dir, tmp_path, mixed_precision="bf16")
    est = estimate_memory(cfg, device="cpu", num_images=10)
    unet_file = (tiny_sd1_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert model_file_bytes(tiny_sd1_dir)[0] == unet_file
    assert est.peaks["loading the model"] == pytest.approx(est.parts["runtime"] + max(
        model_params(tiny_sd1_dir, "sd1")["unet"] * 2 + unet_file,
        est.parts["weights"] + model_file_bytes(tiny_sd1_dir)[1]))
    assert est.total == max([est.training, *est.peaks.values()])
    on_gpu = estimate_memory(cfg, device="cuda", num_images=10)
    assert "loading the model" not in on_gpu.peaks, "a GPU never holds the file"

    single = estimate_memory(_cfg(tiny_sd1_single_file, tmp_path, mixed_precision="bf16"), device="cpu", num_images=10)
    assert single.peaks["loading the model"] == pytest.approx(
        single.parts["runtime"] + tiny_sd1_single_file.stat().st_size + single.parts["weights"])


@pytest.mark.parametrize("resolution,explicit,device,batch", [
    ("512,512", 0, "cuda", 4), ("640,640", 0, "cuda", 2), ("768,768", 0, "cuda", 1), ("1024,1024", 0, "cuda", 1),
    ("256,256", 0, "cuda", 4), ("1024,1024", 3, "cuda", 3), ("256,256", 0, "cpu", 1), ("256,256", 2, "cpu", 2)])
def test_the_automatic_vae_batch_keeps_caching_bounded(tiny_sd1_dir, tmp_path, resolution, explicit, device, batch):
    from kohya_lite.config import vae_batch_of

    cfg = _cfg(tiny_sd1_dir, tmp_path, max_resolution=resolution, vae_batch_size=explicit)
    assert vae_batch_of(cfg, device) == batch


def test_caching_peaks_with_a_vae_batch_in_the_vae_dtype(tiny_sdxl_dir, tmp_path):
    """SDXL's 'no half' VAE encodes in fp32: its transient is twice the half-precision VAE's; four images a batch
    on a GPU unless vae_batch_size says otherwise, never more than there are images. While caching, every
    weight is still on the device."""
    params = model_params(tiny_sdxl_dir, "sdxl")

    def caching(images=10, **kw):
        cfg = _cfg(tiny_sdxl_dir, tmp_path, sdxl=True, max_resolution="128,128", mixed_precision="bf16", **kw)
        est = estimate_memory(cfg, device="cuda", num_images=images)
        vae_bytes = 4 if cfg.sdxl_no_half_vae else 2
        all_weights = (params["unet"] + params["text_encoder"]) * 2 + params["vae"] * vae_bytes
        return est.peaks["caching latents"] - all_weights - est.parts["runtime"]

    fp32 = caching(sdxl_no_half_vae=True)
    assert fp32 == pytest.approx(4 * 128 * 128 * memory.VAE_ENCODE_PER_PIXEL * 4)
    assert caching(sdxl_no_half_vae=False) == pytest.approx(fp32 / 2)
    assert caching(sdxl_no_half_vae=True, vae_batch_size=1) == pytest.approx(fp32 / 4)
    assert caching(images=2, sdxl_no_half_vae=True) == pytest.approx(fp32 / 2)
    uncached = estimate_memory(_cfg(tiny_sdxl_dir, tmp_path, sdxl=True, cache_latents=False), device="cuda",
                               num_images=10)
    assert "caching latents" not in uncached.peaks


def test_the_summary_names_the_loading_peak_only_when_it_is_the_larger():
    est = memory.MemoryEstimate("cpu", {"weights": 2 * GB, "runtime": 0.5 * GB},
                                {"loading the model": 3.5 * GB, "caching latents": 3 * GB})
    assert est.summary() == "about 3.5 GB of RAM while loading the model, 2.5 GB while training (weights 2.0, runtime 0.5 GB)"
    est.peaks = {"caching latents": 2.52 * GB}  # not more than training at the precision shown
    assert est.summary() == "about 2.5 GB of RAM (weights 2.0, runtime 0.5 GB)"
    est.peaks = {"loading the model": 1 * GB}
    assert est.summary() == "about 2.5 GB of RAM (weights 2.0, runtime 0.5 GB)"
    assert memory.MemoryEstimate("cuda", {"weights": 1 * GB}).summary() == "about 1.0 GB of GPU memory (weights 1.0 GB)"


def test_on_a_gpu_what_waits_on_the_cpu_is_not_counted_while_training(tiny_sdxl_dir, tmp_path):
    """Cached latents: the VAE leaves the GPU; a frozen text encoder with static captions: so do the encoders.
    On a CPU everything stays in the same memory."""
    params = model_params(tiny_sdxl_dir, "sdxl")

    def weights(device, **kw):
        cfg = _cfg(tiny_sdxl_dir, tmp_path, sdxl=True, max_resolution="128,128", mixed_precision="bf16",
                   sdxl_no_half_vae=False, **kw)
        return estimate_memory(cfg, device=device, num_images=4).parts["weights"]

    everything = sum(params.values()) * 2
    assert weights("cpu", text_encoder_lr="0") == pytest.approx(everything)
    assert weights("cuda", text_encoder_lr="0.0005", cache_latents=False) == pytest.approx(everything)
    assert weights("cuda", text_encoder_lr="0.0005") == pytest.approx(everything - params["vae"] * 2)
    assert weights("cuda", text_encoder_lr="0") == pytest.approx(params["unet"] * 2)
    assert weights("cuda", text_encoder_lr="0", shuffle_caption=True) == \
        pytest.approx((params["unet"] + params["text_encoder"]) * 2), "captions change: the encoders stay"


def test_check_prints_the_estimate_and_warns_when_it_will_not_fit(tiny_sd1_dir, tmp_path, monkeypatch):
    make_images(tmp_path / "img" / "2_zkz object", 3)
    cfg = _cfg(tiny_sd1_dir, tmp_path)
    r = run_check(cfg)
    assert r.ok and r.memory is not None
    report = format_report(cfg, r)
    assert "Memory" in report and r.memory.summary() in report
    assert not [w for w in r.warnings if "more than the" in w.message]

    monkeypatch.setattr(memory, "free_memory", lambda: ("cpu", 0.001 * GB))  # a machine with 1 MB free
    r = run_check(cfg)
    w = [w for w in r.warnings if "more than the" in w.message]
    assert len(w) == 1 and "0.0 GB of RAM free now" in w[0].message
    assert "lower the batch size" in w[0].fix and w[0].field == "train_batch_size"
