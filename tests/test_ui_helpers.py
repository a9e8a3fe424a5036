"""The page's plain-Python helpers: event fold (RunView/RunMonitor), model-type detection, the live step
summary, the server path picker listing, recent files, and the demo project."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from kohya_lite.errors import UserError
from kohya_lite.ui.run_view import RunMonitor, RunView, fmt_duration

EVENTS = [
    {"type": "start", "time": 1, "total_steps": 30, "epochs": 3, "steps_per_epoch": 10, "images": 6, "buckets": 1,
     "device": "cpu", "precision": "no"},
    *[{"type": "step", "time": 2 + i, "step": i, "total_steps": 30, "epoch": 1 + (i - 1) // 10, "loss": 0.5 / i,
       "avg_loss": 0.4, "lr": 1e-3, "sec_per_step": 0.25, "eta_sec": (30 - i) * 0.25} for i in range(1, 16)],
    {"type": "epoch", "time": 20, "epoch": 1, "avg_loss": 0.3},
    {"type": "checkpoint", "time": 21, "path": "/out/zkz-000001.safetensors", "epoch": 1, "step": 10},
    {"type": "sample", "time": 22, "path": "/out/sample/zkz_e000001_00.png", "prompt": "zkz object", "step": 10},
    {"type": "warning", "time": 23, "message": "cache_latents off"},
    {"type": "log", "time": 24, "message": "hello"},
]


def test_run_view_folds_events():
    v = RunView(run_id="r1", state="running")
    for ev in EVENTS:
        v.apply(ev)
    assert (v.step, v.total_steps, v.epochs, v.epoch) == (15, 30, 3, 2)
    assert v.percent == 50
    line = v.stats_line()
    assert "step 15/30" in line and "epoch 2/3" in line and "4.00 it/s" in line and "ETA 0:04" in line
    assert "loss 0.0333" in line
    assert v.checkpoints == ["/out/zkz-000001.safetensors"] and v.samples[0][0].endswith(".png")
    assert "warning: cache_latents off" in v.log_text() and "hello" in v.log_text()
    assert len(v.plot_points()) == 15 and v.plot_points()[0] == (1, 0.5, 0.4)

    v.apply({"type": "stopped", "time": 30, "path": "/out/zkz-step00000015.safetensors", "step": 15})
    assert v.checkpoints[-1].endswith("step00000015.safetensors") and "stopped at step 15" in v.log_text()
    v.apply({"type": "done", "time": 31, "path": "/out/zkz.safetensors"})
    v.state = "done"
    assert v.percent == 100 and v.checkpoints[-1] == "/out/zkz.safetensors"


def test_run_notes_say_what_was_saved_and_offer_resume(tmp_path):
    state = tmp_path / "zkz-step00000015-state"
    state.mkdir()
    v = RunView(run_id="r1", state="running")
    for ev in EVENTS:
        v.apply(ev)
    assert "Stop* saves a checkpoint" in v.note()
    v.state = "stopping"
    assert "Stop now (kill)* ends at once and saves nothing" in v.note()
    v.apply({"type": "stopped", "time": 30, "path": str(tmp_path / "zkz-step00000015.safetensors"), "step": 15,
             "state": str(state)})
    v.state = "stopped"
    note = v.note()
    assert "Stopped at step 15" in note and "zkz-step00000015.safetensors" in note
    assert "zkz-step00000015-state/" in note and "**Resume** continues" in note and v.can_resume
    state.rmdir()
    assert not v.can_resume and "Resume" not in v.note(), "no Resume without the state folder"

    killed = RunView(run_id="r2", state="running")
    for ev in EVENTS:
        killed.apply(ev)
    killed.state = "stopped"  # the worker's state after Stop now (kill): no `stopped` event came
    assert "killed): nothing was saved at the stop" in killed.note() and "zkz-000001.safetensors" in killed.note()
    assert not killed.can_resume
    resumed = RunView(run_id="r3", state="running")
    resumed.apply({"type": "start", "total_steps": 30, "epochs": 3, "resumed_at": 15})
    assert resumed.step == 15 and "resumed at step 15" in resumed.note()


def test_loss_chart_svg():
    from kohya_lite.ui.chart import loss_svg, step_ticks

    assert 'data-points="0"' in loss_svg([])
    one = loss_svg([(1, 0.7, None)])
    assert one.count("<circle") == 2 and "<polyline" not in one, "one step still draws (a dot per series)"
    assert ">loss</text>" in one and ">average</text>" in one, "legend"
    many = loss_svg([(i, 1 / i, 0.5) for i in range(1, 6)])
    assert many.count("<polyline") == 2
    import re

    ticks = re.findall(r'class="kl-xtick"[^>]*>([^<]*)<', many)
    assert ticks and all(t.isdigit() for t in ticks), ticks
    assert step_ticks(0, 3) == [0, 1, 2, 3] and all(t == int(t) for t in step_ticks(1, 10_000))


def test_markdown_escaping_keeps_the_whole_message():
    from kohya_lite.errors import Problem
    from kohya_lite.ui.safe import md_escape, problem_line

    p = Problem("folder 'cats' has no '<repeats>_' prefix and is skipped", field="train_data_dir",
                file="/x/img/cats", fix="rename it to e.g. '10_cats' (10 repeats)")
    line = problem_line(p)
    assert r"'\<repeats\>\_'" in line and "*Fix:* rename it to e.g. '10\\_cats' (10 repeats)" in line
    assert line.startswith("- ❌ **Image folder (containing training images subfolders)**: ")
    assert "(`train_data_dir`)" not in line, "the label, not the internal key"
    assert problem_line(Problem("bad", field="lora_dir"), {"lora_dir": "LoRA folder"}).startswith("- ❌ **LoRA folder**")
    assert problem_line(Problem("bad", field="gen_thing")).startswith("- ❌ **Gen thing**")
    assert md_escape("C:\\a_b *c*") == "C:\\\\a\\_b \\*c\\*"


def test_blank_number_boxes_are_problems_not_defaults():
    from kohya_lite.config import TrainingConfig
    from kohya_lite.ui.fields import FIELD_ORDER, blank_numbers, from_values, to_values

    values = to_values(TrainingConfig())
    values[FIELD_ORDER.index("learning_rate")] = None
    values[FIELD_ORDER.index("epoch")] = ""
    problems = blank_numbers(values)
    assert [p.field for p in problems] == ["epoch", "learning_rate"]
    assert problems[1].message == "the box is empty (or not a number)" and "0.0001" in problems[1].fix
    with pytest.raises(UserError, match="Epoch: the box is empty .*and 1 more"):
        from_values(values)
    assert from_values(values, strict=False).learning_rate == TrainingConfig().learning_rate, "the base of a Load"


def test_error_event_is_plain_words():
    v = RunView(run_id="r", state="error")
    v.apply({"type": "error", "time": 1, "message": "CUDA out of memory", "field": "train_batch_size",
             "hint": "lower the batch size"})
    text = v.error_text()
    assert "Training failed" in text and "CUDA out of memory" in text and "lower the batch size" in text
    assert "Traceback" not in text


def test_fmt_duration():
    assert fmt_duration(65) == "1:05" and fmt_duration(3725) == "1:02:05" and fmt_duration(None) == "–"


class FakeStatus:
    def __init__(self, run_id, state, output_dir=None):
        self.run_id, self.state, self.output_dir = run_id, state, output_dir
        self.returncode, self.log_path = 1, "/runs/x/log.txt"


class RecordingWorker:
    """Records what the monitor asks; serves a fixed event list (the real Worker is tested by its owner)."""

    def __init__(self):
        self.status_obj = FakeStatus(None, "idle")
        self.events_list: list[dict] = []
        self.since_asked: list[int] = []

    def status(self):
        return self.status_obj

    def events(self, since=0):
        self.since_asked.append(since)
        return self.events_list[since:]


def test_monitor_reads_only_new_events_and_resets_per_run():
    w = RecordingWorker()
    m = RunMonitor(w)
    assert m.refresh().run_id is None and m.view.stats_line() == "No training run yet."
    w.status_obj = FakeStatus("r1", "running", "/out")
    w.events_list = EVENTS[:5]
    assert m.refresh().step == 4
    w.events_list = EVENTS[:8]
    assert m.refresh().step == 7
    assert w.since_asked == [0, 5]
    assert m.output_dir == "/out"
    w.status_obj = FakeStatus("r2", "error")
    w.events_list = []
    v = m.refresh()
    assert v.run_id == "r2" and v.step == 0 and w.since_asked[-1] == 0
    assert "exit code 1" in v.error_text() and "/runs/x/log.txt" in v.error_text()


# ---- model detection --------------------------------------------------------------------------
def _checkpoint(path: Path, keys: list[str]) -> Path:
    save_file({k: np.zeros((1,), np.float32) for k in keys}, str(path))
    return path


@pytest.mark.parametrize("keys, v2, sdxl, name", [
    (["conditioner.embedders.0.transformer.x", "model.diffusion_model.input_blocks.0.0.weight"], False, True, "SDXL"),
    (["cond_stage_model.model.transformer.x", "model.diffusion_model.y"], True, False, "SD 2.x"),
    (["cond_stage_model.transformer.x", "model.diffusion_model.y"], False, False, "SD 1.x"),
])
def test_detect_family_from_checkpoint_keys(tmp_path, keys, v2, sdxl, name):
    from kohya_lite.models.detect import detect_model

    det = detect_model(str(_checkpoint(tmp_path / "m.safetensors", keys)))
    assert det.flags == {"v2": v2, "sdxl": sdxl} and det.model_list == "custom" and name in det.note


def test_detect_quick_picks_folders_and_refusals(tmp_path):
    from kohya_lite.models.detect import detect_model

    det = detect_model("stabilityai/stable-diffusion-2-1")
    assert det.flags == {"v2": True, "v_parameterization": True, "sdxl": False}
    assert det.model_list == "stabilityai/stable-diffusion-2-1"
    assert detect_model("") is None and detect_model(str(tmp_path / "nope.safetensors")) is None

    folder = tmp_path / "xl"
    (folder / "unet").mkdir(parents=True)
    (folder / "text_encoder_2").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps({"addition_embed_type": "text_time"}))
    assert detect_model(str(folder)).flags == {"v2": False, "sdxl": True}

    lora = _checkpoint(tmp_path / "l.safetensors", ["lora_unet_down_blocks_0.lora_up.weight"])
    with pytest.raises(UserError):
        detect_model(str(lora))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    assert "Cannot read" in detect_model(str(junk)).note


# ---- live step summary ------------------------------------------------------------------------
def _dataset(root: Path, folders: dict[str, int]) -> Path:
    for name, n in folders.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16)).save(root / name / f"{i}.png")
    return root


def test_step_summary_line(tmp_path):
    from kohya_lite.ui.lora_tab import step_summary

    img = _dataset(tmp_path / "img", {"6_zkz woman": 34})
    assert step_summary(str(img), "", ".txt", 1, 10, 0, 0, 1) == \
        "**34 images × 6 repeats × 10 epochs ÷ batch 1 = 2,040 steps**"
    reg = _dataset(tmp_path / "reg", {"1_woman": 5})
    assert "× 2 (reg)" in step_summary(str(img), str(reg), ".txt", 1, 10, 0, 0, 1)
    assert "4,080 steps" in step_summary(str(img), str(reg), ".txt", 1, 10, 0, 0, 1)
    over = step_summary(str(img), "", ".txt", 1, 10, 0, 500, 1)
    assert "500 steps (max\\_train\\_steps)" in over and "overrides Epoch" in over
    assert "overrides Epoch" in step_summary(str(img), "", ".txt", 1, 10, 3, 0, 1)
    assert "does not exist" in step_summary(str(tmp_path / "nope"), "", ".txt", 1, 1, 0, 0, 1)
    assert "Set the image folder" in step_summary("", "", ".txt", 1, 1, 0, 0, 1)
    assert step_summary(str(img), "", ".txt", 1, "", 0, 0, 1) == "_Epoch is empty: enter a number to see the steps._"
    assert "Train batch size is empty" in step_summary(str(img), "", ".txt", None, 1, 0, 0, 1)


def test_the_page_and_check_show_one_step_plan_text(tmp_path):
    """The line under Parameters, the line after Check and `kohya-lite check`'s Steps line are one text."""
    from kohya_lite.check import format_report, run_check, step_plan_text
    from kohya_lite.config import TrainingConfig
    from kohya_lite.ui.lora_tab import step_summary

    img = _dataset(tmp_path / "img", {"3_zkz object": 6})
    cfg = TrainingConfig().replace(train_data_dir=str(img), output_dir=str(tmp_path / "out"), epoch=3,
                                   train_batch_size=2)
    result = run_check(cfg)
    text = step_plan_text(result.dataset, result.plan)
    assert text == "6 images × 3 repeats × 3 epochs ÷ batch 2 = 27 steps"
    assert f"  {text}\n" in format_report(cfg, result)
    assert step_summary(str(img), "", ".txt", 2, 3, 0, 0, 1) == f"**{text}**"


# ---- files: picker, recent, presets -----------------------------------------------------------
def test_browse_choices_and_recent(tmp_path, monkeypatch):
    from kohya_lite import paths
    from kohya_lite.ui import files

    monkeypatch.setenv("KOHYA_LITE_HOME", str(tmp_path / "home"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "b.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    labels = [lbl for lbl, _ in files.browse_choices(tmp_path, "model")]
    assert any("sub/" in lbl for lbl in labels) and any("a.safetensors" in lbl for lbl in labels)
    assert not any("b.txt" in lbl for lbl in labels) and not any(".hidden" in lbl for lbl in labels)
    assert not any("a.safetensors" in lbl for lbl in (l for l, _ in files.browse_choices(tmp_path, "dir")))
    assert files.browse_start(str(tmp_path / "sub" / "missing" / "x.json")) == (tmp_path / "sub").resolve()

    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    files.add_recent(cfg)
    files.add_recent(cfg)
    assert files.recent_configs() == [cfg.resolve()]
    choices = files.open_choices()
    assert ("preset: CPU demo (tiny model)", str(paths.preset_path("CPU demo (tiny model)"))) in choices
    assert choices[-1] == (f"recent: {cfg.resolve()}", str(cfg.resolve()))


def test_demo_project_is_idempotent(tmp_path):
    from kohya_lite.check import run_check
    from kohya_lite.demo import BASE_DIR, ensure_demo, shapes

    cfg, path = ensure_demo(tmp_path / "demo")
    root = (tmp_path / "demo").resolve()
    imgs = sorted((root / "img" / "4_zkz shape").glob("*.png"))
    assert 12 <= len(imgs) <= 20 and all(p.with_suffix(".txt").read_text() == "zkz shape\n" for p in imgs)
    assert all(shapes.is_orange(Image.open(p)) for p in imgs), "the demo dataset is orange shapes"
    assert cfg.pretrained_model_name_or_path == str(BASE_DIR), "the shipped base model"
    assert (cfg.output_dir, cfg.logging_dir) == (str(root / "model"), str(root / "log"))
    assert cfg.optimizer == "AdamW" and cfg.max_resolution == "64,64", "the CPU demo preset is applied"
    assert cfg.min_snr_gamma > 0 and cfg.text_encoder_lr > 0 and cfg.sample_every_n_epochs == 1
    assert path.is_file()
    result = run_check(cfg)
    assert result.ok, [p.format() for p in result.errors]
    assert result.plan.total_steps == len(imgs) * 4 * cfg.epoch // cfg.train_batch_size

    stamp = imgs[0].stat().st_mtime_ns
    cfg2, _ = ensure_demo(tmp_path / "demo")
    assert cfg2.to_dict() == cfg.to_dict()
    assert stamp == imgs[0].stat().st_mtime_ns, "nothing rebuilt"

    # the user's edits of demo.json are kept; a base model path that no longer exists is repointed
    edited = json.loads(path.read_text())
    edited.update(epoch=9, pretrained_model_name_or_path=str(tmp_path / "old-install" / "base"))
    path.write_text(json.dumps(edited))
    cfg3, _ = ensure_demo(tmp_path / "demo")
    assert cfg3.epoch == 9 and cfg3.pretrained_model_name_or_path == str(BASE_DIR)
    assert json.loads(path.read_text())["pretrained_model_name_or_path"] == str(BASE_DIR)


def test_demo_command_writes_the_project_and_prints_its_config(tmp_path, capsys):
    from kohya_lite.cli import main

    assert main(["demo", str(tmp_path / "d")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == str((tmp_path / "d" / "demo.json").resolve())
    assert json.loads(Path(last).read_text())["output_name"] == "zkz_demo"
    assert main(["check", last]) == 0, "kohya-lite check passes the demo config"


def test_gui_command_flags():
    from kohya_lite.cli import build_parser
    from kohya_lite.commands.gui import _auth

    args = build_parser().parse_args(["gui"])
    assert (args.listen, args.port, args.auth, args.share, args.demo, args.inbrowser) == (
        "127.0.0.1", 7860, None, False, False, False)
    args = build_parser().parse_args(["gui", "--listen", "0.0.0.0", "--port", "7861", "--auth", "ann:pw:x",
                                      "--share", "--demo", "--inbrowser"])
    assert (args.listen, args.port, args.share, args.demo, args.inbrowser) == ("0.0.0.0", 7861, True, True, True)
    assert _auth(args.auth) == ("ann", "pw:x")
    for bad in ("nopass", ":pw", "user:"):
        with pytest.raises(UserError):
            _auth(bad)


def test_safe_turns_errors_into_sentences(caplog):
    import gradio as gr

    from kohya_lite.ui.safe import safe

    box = object()

    @safe(message=box)
    def user_problem():
        raise UserError("image folder 'x' does not exist", field="train_data_dir", fix="check the path")

    @safe(message=box)
    def bug():
        raise KeyError("oops")

    text = user_problem()[box]
    assert "**Image folder (containing training images subfolders)**" in text and "*Fix:* check the path" in text
    with caplog.at_level("ERROR", logger="kohya_lite.ui"):
        text = bug()[box]
    assert "Something went wrong: KeyError" in text and "log" in text and "Traceback" not in text
    assert "Traceback" in caplog.text, "the traceback goes to the log"

    @safe()
    def no_box():
        raise ValueError("bad")

    with pytest.raises(gr.Error) as err:
        no_box()
    assert "ValueError: bad" in err.value.message and "Traceback" not in err.value.message


def test_run_view_shows_caching_then_live_memory():
    v = RunView(run_id="r2", state="running")
    v.apply({"type": "progress", "time": 1, "phase": "caching latents", "done": 3, "total": 12})
    assert v.percent == 25 and v.stats_line().startswith("caching latents 3/12")
    v.apply({"type": "progress", "time": 2, "phase": "caching latents", "done": 12, "total": 12})
    v.apply({"type": "start", "time": 3, "total_steps": 4, "epochs": 1})
    v.apply({"type": "step", "time": 4, "step": 1, "total_steps": 4, "epoch": 1, "loss": 0.1, "ram_gb": 2.5,
             "vram_gb": 6.25})
    line = v.stats_line()
    assert v.percent == 25 and "caching" not in line and "RAM 2.5 GB" in line and "VRAM 6.2 GB" in line
