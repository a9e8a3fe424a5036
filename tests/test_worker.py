"""Run control through the real worker: a child process, live events, graceful Stop, SIGKILL + resume,
2-process accelerate, errors that leave the worker usable."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dataset_helpers import make_images, tiny_config
from kohya_lite.config import merge_config
from kohya_lite.errors import UserError
from kohya_lite.worker import Worker


def cfg_for(model, root, **kw):
    cfg, _ = merge_config(tiny_config(model, root, **kw))
    return cfg


def wait_for(worker, predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        evs = worker.events()
        if predicate(evs):
            return evs
        if not worker.status().active:
            return worker.events()
        time.sleep(0.1)
    raise AssertionError(f"timed out; log:\n{worker.log_tail()}")


@pytest.fixture
def dataset(tmp_path):
    make_images(tmp_path / "img" / "4_zkz object", 4)
    return tmp_path


def test_run_to_completion_and_refuse_second_start(tiny_sd1_dir, dataset, tmp_path):
    w = Worker(tmp_path / "runs")
    assert w.status().state == "idle"
    cfg = cfg_for(tiny_sd1_dir, dataset, epoch=2)
    run_id = w.start(cfg)
    assert w.status().active and w.status().run_id == run_id
    with pytest.raises(UserError) as e:
        w.start(cfg)
    assert "already in progress" in e.value.message
    st = w.wait(240)
    assert st.state == "done", w.log_tail()
    types = [e["type"] for e in w.events()]
    assert types[-1] == "done" and "start" in types and "step" in types
    assert all("time" in e for e in w.events())
    assert (dataset / "model" / "zkz.safetensors").is_file()
    assert [e["step"] for e in w.events(since=len(types) - 1)] == [16]  # 4 images × 4 repeats ÷ 2 × 2 epochs
    # a new Worker (e.g. the server restarted) reattaches to the last run
    w2 = Worker(tmp_path / "runs")
    assert w2.status().run_id == run_id and w2.status().state == "done"


def test_graceful_stop_saves_step_checkpoint(tiny_sd1_dir, dataset, tmp_path):
    w = Worker(tmp_path / "runs")
    w.start(cfg_for(tiny_sd1_dir, dataset, epoch=50, save_every_n_epochs=0))
    wait_for(w, lambda evs: sum(e["type"] == "step" for e in evs) >= 3)
    t0 = time.time()
    assert "stopping" in w.stop()
    st = w.wait(60)
    assert st.state == "stopped", w.log_tail()
    assert time.time() - t0 < 30
    stopped = w.events()[-1]
    assert stopped["type"] == "stopped"
    path = Path(stopped["path"])
    assert path.name == f"zkz-step{stopped['step']:08d}.safetensors"
    tensors = load_file(path)
    assert tensors and all(k.startswith("lora_") for k in tensors)
    assert Path(stopped["state"]).is_dir(), "the training state is saved so the run can resume"


def test_error_event_and_worker_stays_usable(tiny_sd1_dir, dataset, tmp_path):
    w = Worker(tmp_path / "runs")
    with pytest.raises(UserError) as e:  # pre-flight: nothing starts
        w.start(cfg_for(dataset / "missing-model", dataset))
    assert e.value.field == "pretrained_model_name_or_path" and w.status().state == "idle"
    make_images(dataset / "img1" / "1_zkz object", 1)
    nan = cfg_for(tiny_sd1_dir, dataset, train_data_dir=str(dataset / "img1"), train_batch_size=1, epoch=6,
                  learning_rate="1e38", unet_lr="1e38", text_encoder_lr="1e38", lr_scheduler="constant_with_warmup",
                  lr_warmup_steps=3)
    w.start(nan)
    st = w.wait(240)
    assert st.state == "error"
    err = w.events()[-1]
    assert err["type"] == "error" and err["field"] == "learning_rate" and "NaN" in err["message"] and err["hint"]
    w.start(cfg_for(tiny_sd1_dir, dataset, epoch=1, output_dir=str(dataset / "out2")))
    assert w.wait(240).state == "done"


def _final(path):
    return {k: v.float() for k, v in load_file(path).items()}


def test_sigkill_then_resume_matches_uninterrupted(tiny_sd1_dir, dataset, tmp_path):
    common = dict(epoch=4, save_every_n_epochs=1, save_state=True, save_precision="float", network_dropout=0.1)
    ref = Worker(tmp_path / "runs_ref")
    ref.start(cfg_for(tiny_sd1_dir, dataset, output_dir=str(tmp_path / "ref"), **common))
    assert ref.wait(300).state == "done", ref.log_tail()

    w = Worker(tmp_path / "runs")
    cfg = cfg_for(tiny_sd1_dir, dataset, output_dir=str(tmp_path / "out"), **common)
    w.start(cfg)
    wait_for(w, lambda evs: any(e["type"] == "checkpoint" and e["epoch"] == 2 for e in evs)
             and sum(e["type"] == "step" for e in evs) >= 20)
    os.killpg(w.status().pid, signal.SIGKILL)
    w.wait(30)
    out = tmp_path / "out"
    assert not list(out.glob(".*tmp*")) or all(p.is_dir() for p in out.glob(".*tmp*"))
    for f in out.glob("*.safetensors"):
        load_file(f)  # no truncated file
    assert not (out / "zkz.safetensors").exists()
    w.start(cfg, resume="last")
    assert w.wait(300).state == "done", w.log_tail()
    evs = w.events()
    start = next(e for e in evs if e["type"] == "start")
    assert start["resumed_at"] >= 16 and start["total_steps"] == 32
    assert [e["step"] for e in evs if e["type"] == "step"][-1] == 32
    a, b = _final(tmp_path / "ref" / "zkz.safetensors"), _final(out / "zkz.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_two_process_accelerate_run(tiny_sd1_dir, dataset, tmp_path):
    w = Worker(tmp_path / "runs")
    w.start(cfg_for(tiny_sd1_dir, dataset, epoch=2, num_processes=2, num_cpu_threads_per_process=1, module_dropout=0.2))
    st = w.wait(300)
    assert st.state == "done", w.log_tail()
    evs = w.events()
    start = [e for e in evs if e["type"] == "start"]
    assert len(start) == 1, "only the main process writes events"
    # 16 samples, batch 2 → 8 batches per epoch → 4 per process
    assert start[0]["steps_per_epoch"] == 4 and start[0]["total_steps"] == 8
    assert len([e for e in evs if e["type"] == "checkpoint"]) == 2
    assert sorted(p.name for p in (dataset / "model").glob("*.safetensors")) == ["zkz-000001.safetensors", "zkz.safetensors"]
    assert "accelerate" in Path(st.log_path).read_text().splitlines()[0]
