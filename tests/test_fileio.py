"""Atomic writes and the full-disk path: no partial files, the previous file survives, a plain message."""

import argparse
import errno
import json

import pytest

from dataset_helpers import make_images, tiny_config, write_config
from kohya_lite.engine.events import read_events
from kohya_lite.fileio import atomic_path, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    write_text_atomic(target, "old")
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_full_disk_during_training_is_one_plain_error(tiny_sd1_dir, tmp_path, monkeypatch, capsys):
    from kohya_lite.commands import train as train_cmd
    from kohya_lite.network import io

    make_images(tmp_path / "img" / "2_zkz object", 2)
    config = write_config(tmp_path / "cfg.json", tiny_config(tiny_sd1_dir, tmp_path, epoch=1))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "write_bytes_atomic", no_space)
    events = tmp_path / "events.jsonl"
    code = train_cmd.run(argparse.Namespace(config=str(config), events=str(events), resume=None, no_bar=True,
                                            debug=False))
    assert code == 1
    err = read_events(events)[-1]
    assert err["type"] == "error" and err["message"] == "training failed: the disk is full"
    assert err["field"] == "output_dir" and "free some space" in err["hint"]
    assert not list((tmp_path / "model").glob("*.safetensors"))
    json.dumps(err)


def test_event_log_reads_only_what_was_appended(tmp_path):
    from kohya_lite.engine.events import EventLog, EventWriter

    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    assert log.read() == []
    writer = EventWriter(path)
    writer.emit("start", total_steps=2)
    assert [e["type"] for e in log.read()] == ["start"]
    with open(path, "a", encoding="utf-8") as fh:  # a writer caught mid-line
        fh.write('{"type": "step", "step": 1')
    assert [e["type"] for e in log.read()] == ["start"]
    offset = log._offset
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(', "time": 1}\n')
    events = log.read()
    assert [e["type"] for e in events] == ["start", "step"] and events[1]["step"] == 1
    assert log._offset > offset and log._offset == path.stat().st_size, "only the new bytes were read"
    writer.emit("done")
    writer.close()
    assert [e["type"] for e in log.read()] == ["start", "step", "done"]
    assert read_events(path, since=1)[0]["type"] == "step"
