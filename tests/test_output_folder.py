"""The output folder: the files a run name has there (check warns, the page asks), moving them aside, the next
free name, and the lock that refuses a second run on the same folder (stale locks of ended processes do not)."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from kohya_lite import output_folder
from kohya_lite.config import TrainingConfig
from kohya_lite.errors import UserError
from kohya_lite.output_folder import LOCK_NAME, OutputLock


def _run_files(folder, name="zkz"):
    folder.mkdir(parents=True, exist_ok=True)
    for f in (f"{name}.safetensors", f"{name}-000001.safetensors", f"{name}-step00000012.safetensors",
              f"{name}_other.safetensors", "notes.txt"):
        (folder / f).write_bytes(b"x")
    (folder / f"{name}-step00000012-state").mkdir()
    return folder


def test_files_of_a_name_move_aside_and_free_name(tmp_path):
    out = _run_files(tmp_path / "model")
    names = [p.name for p in output_folder.files_of(out, "zkz")]
    assert names == ["zkz-000001.safetensors", "zkz-step00000012-state", "zkz-step00000012.safetensors",
                     "zkz.safetensors"], "only this name's LoRA files and states"
    assert output_folder.free_name(out, "zkz") == "zkz_2"
    (out / "zkz_2.safetensors").write_bytes(b"x")
    assert output_folder.free_name(out, "zkz") == "zkz_3" and output_folder.free_name(out, "zkz_2") == "zkz_3"
    dest, moved = output_folder.move_aside(out, "zkz")
    assert len(moved) == 4 and not output_folder.files_of(out, "zkz")
    assert sorted(p.name for p in dest.iterdir()) == sorted(names), "moved, not deleted"
    assert dest.parent.name.startswith("."), "hidden: the library and the grid skip it"
    assert (out / "zkz_other.safetensors").is_file() and (out / "notes.txt").is_file()


def test_check_warns_before_a_run_overwrites_files_of_its_name(tmp_path):
    from kohya_lite.check import run_check

    out = _run_files(tmp_path / "model")
    cfg = TrainingConfig().replace(output_dir=str(out), output_name="zkz")
    warn = [p for p in run_check(cfg).warnings if p.field == "output_name"]
    assert len(warn) == 1 and "already holds 4 files of 'zkz'" in warn[0].message and "overwrites" in warn[0].message
    assert not [p for p in run_check(cfg.replace(output_name="new")).problems if p.field == "output_name"]
    assert not [p for p in run_check(cfg.replace(resume="last")).problems if p.field == "output_name"], \
        "continuing the run is expected to find its files"


def test_a_second_lock_on_the_folder_is_refused_and_released(tmp_path):
    out = tmp_path / "model"
    with OutputLock(out) as lock:
        info = json.loads(lock.path.read_text())
        assert info["pid"] == psutil.Process().pid
        with pytest.raises(UserError, match="in use by another training") as exc:
            OutputLock(out).acquire()
        assert exc.value.field == "output_dir" and "stop it, or choose another output folder" in exc.value.fix
    assert not (out / LOCK_NAME).exists() and not out.exists(), "released; the empty folder it made is gone"


def test_stale_locks_do_not_block(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": ended.pid, "host": output_folder.socket.gethostname()}))
    assert output_folder.holder(out) is None
    with OutputLock(out):
        pass
    # a recycled pid: this very process, but started at another time than the lock says
    me = psutil.Process()
    (out / LOCK_NAME).write_text(json.dumps({"pid": me.pid, "host": output_folder.socket.gethostname(),
                                             "process_started": me.create_time() - 3600}))
    assert output_folder.holder(out) is None
    with OutputLock(out):
        pass
    assert (out / LOCK_NAME).exists() is False


def test_train_refuses_a_folder_another_run_holds(tmp_path):
    """`engine.train.train` (the CLI's and the worker's way in) takes the lock before anything else."""
    from kohya_lite.engine.train import train

    out = tmp_path / "model"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({
            "pid": other.pid, "host": output_folder.socket.gethostname(), "started": 0,
            "process_started": psutil.Process(other.pid).create_time(), "command": "kohya-lite train"}))
        with pytest.raises(UserError, match=f"is in use by another training \\(process {other.pid}"):
            train(TrainingConfig().replace(output_dir=str(out)))
    finally:
        other.kill()
        other.wait()
    assert (out / LOCK_NAME).exists(), "the other run's lock is left alone"
