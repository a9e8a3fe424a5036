"""Config ↔ page mapping: every TrainingConfig field has a widget, values survive the widgets' own
(post|pre)process and a save → load round trip, and real kohya_ss files load into the page values.

Builds the real gradio Blocks in-process (no server) and calls the real handlers by api_name.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from kohya_lite.config import TrainingConfig, config_json, load_config
from kohya_lite.ui.fields import CONFIG_FIELDS, FIELD_ORDER, FIELD_SPECS, SECTIONS, from_values, to_values

DATA = Path(__file__).parent / "data" / "kohya_ss-configs"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import os

    os.environ["KOHYA_LITE_HOME"] = str(tmp_path_factory.mktemp("home"))
    from kohya_lite.ui.app import build_app

    return build_app(worker=None)


def handler(app, api_name):
    fns = [f for f in app.fns.values() if f.api_name == api_name]
    assert len(fns) == 1, api_name
    return fns[0].fn


def through_widgets(app, values):
    """What the browser would send back after showing `values`."""
    page = app.kohya_page
    return [page.widgets[n].preprocess(page.widgets[n].postprocess(v)) for n, v in zip(FIELD_ORDER, values)]


def changed_config() -> TrainingConfig:
    """A config where every field differs from its default (choices stay valid choices)."""
    spec = {s.name: s for s in FIELD_SPECS}
    cfg = TrainingConfig()
    for f in dataclasses.fields(TrainingConfig):
        if f.name == "extra":
            continue
        v = getattr(cfg, f.name)
        choices = spec[f.name].choices
        if choices:
            values = [c[1] if isinstance(c, tuple) else c for c in choices]
            new = next(c for c in values if c != v)
        elif isinstance(v, bool):
            new = not v
        elif isinstance(v, int):
            new = v + 3
        elif isinstance(v, float):
            new = v * 2 + 0.25
        elif f.name == "sample_prompts":
            new = "zkz woman --w 512 --h 512\nzkz woman smiling --d 7"
        else:
            new = f"{v}-changed" if v else f"/some/{f.name}"
        setattr(cfg, f.name, new)
    cfg.extra = {"block_dims": "1,2,3", "custom_key_kept": True}
    return cfg


def test_every_config_field_has_exactly_one_widget(app):
    assert sorted(FIELD_ORDER) == sorted(CONFIG_FIELDS) and len(FIELD_ORDER) == len(set(FIELD_ORDER))
    page = app.kohya_page
    assert set(page.widgets) == set(CONFIG_FIELDS)
    for spec in FIELD_SPECS:
        w = page.widgets[spec.name]
        assert w.elem_id == f"f-{spec.name}" and w.label == spec.label and spec.section in SECTIONS


def test_widget_defaults_are_the_config_defaults(app):
    page = app.kohya_page
    defaults = TrainingConfig()
    for name in FIELD_ORDER:
        assert page.widgets[name].value == getattr(defaults, name), name


def test_values_survive_the_widgets(app):
    cfg = changed_config()
    back = from_values(through_widgets(app, to_values(cfg)), cfg.extra)
    assert back.to_dict() == cfg.to_dict()
    assert back.extra == cfg.extra


def test_save_then_load_restores_every_field(app, tmp_path):
    cfg = changed_config()
    extra = dict(cfg.extra)
    path = tmp_path / "round.json"
    out = handler(app, "save_config")(str(path), extra, *through_widgets(app, to_values(cfg)))
    assert "Saved" in out[app.kohya_page.config_status]
    saved = json.loads(path.read_text())
    assert saved["custom_key_kept"] is True and saved["block_dims"] == "1,2,3", "unknown keys are written back"
    assert list(saved) == sorted(saved)

    # load over a page at defaults: every field comes back
    out = handler(app, "load_config")(str(path), {}, *to_values(TrainingConfig()))
    page = app.kohya_page
    loaded = from_values(through_widgets(app, [out[page.widgets[n]] for n in FIELD_ORDER]), out[page.extra])
    assert loaded.to_dict() == cfg.to_dict()
    assert out[page.dirty] == "" and "round.json" in out[page.config_status]


def test_load_is_a_merge_over_the_page(app, tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"network_dim": 32, "learning_rate": None, "optimizer": "Prodigy"}))
    page_values = TrainingConfig(output_dir="/keep/me", learning_rate=0.5, network_dim=4)
    out = handler(app, "load_config")(str(path), {}, *to_values(page_values))
    w = app.kohya_page.widgets
    assert out[w["network_dim"]] == 32 and out[w["optimizer"]] == "Prodigy"
    assert out[w["output_dir"]] == "/keep/me", "a key missing from the file keeps the page's value"
    assert out[w["learning_rate"]] == 0.5, "null keeps the page's value"


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_real_kohya_ss_files_load_into_the_page(app, name):
    expected, report = load_config(DATA / name)
    out = handler(app, "load_config")(str(DATA / name), {}, *to_values(TrainingConfig()))
    page = app.kohya_page
    shown = through_widgets(app, [out[page.widgets[n]] for n in FIELD_ORDER])
    assert from_values(shown, out[page.extra]).to_dict() == expected.to_dict()
    assert set(out[page.extra]) == set(report.unknown_keys)
    if report.unknown_keys:
        assert "kohya-lite does not use" in out[page.config_status]


def test_full_saved_config_values_on_the_page(app):
    out = handler(app, "load_config")(str(DATA / "full-saved-config_test_locon-AdamW8bit.json"), {},
                                      *to_values(TrainingConfig()))
    w = app.kohya_page.widgets
    raw = json.loads((DATA / "full-saved-config_test_locon-AdamW8bit.json").read_text())
    assert out[w["LoRA_type"]] == "Kohya LoCon" == raw["LoRA_type"]
    assert (out[w["network_dim"]], out[w["conv_dim"]]) == (16, 16)
    assert out[w["sample_every_n_steps"]] == 25 and out[w["sample_prompts"]] == raw["sample_prompts"]
    assert out[w["caption_extension"]] == ""


def test_load_errors_are_shown_not_raised(app, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    page = app.kohya_page
    out = handler(app, "load_config")(str(bad), {}, *to_values(TrainingConfig()))
    text = next(v for k, v in out.items() if getattr(k, "elem_id", "") == "cfg-message")
    assert "not valid JSON" in text and "Fix" in text
    assert page.widgets["network_dim"] not in out, "a failed load changes no field"

    out = handler(app, "save_config")("", {}, *to_values(TrainingConfig()))
    assert any("Save as" in str(v) for v in out.values())


def test_config_json_of_page_matches_cli_format(app):
    cfg = changed_config()
    text = config_json(from_values(to_values(cfg), cfg.extra))
    assert text == config_json(cfg)


def test_open_preset_keeps_path_and_save_as_sets_it(app, tmp_path):
    from kohya_lite.paths import preset_path
    from kohya_lite.ui.page import DIRTY_TEXT

    page = app.kohya_page
    preset = preset_path("CPU demo (tiny model)")
    out = handler(app, "open_config")(str(preset), {}, *to_values(TrainingConfig(output_dir="/mine")))
    w = page.widgets
    assert out[w["max_resolution"]] == "64,64" and out[w["output_dir"]] == "/mine"
    assert page.config_path not in out, "a preset does not change the config path (kohya_ss)"
    assert out[page.dirty] == DIRTY_TEXT and "Applied preset" in out[page.config_status]

    target = tmp_path / "sub" / "new_name"  # no suffix: .json is added
    values = [out[w[n]] for n in FIELD_ORDER]
    out = handler(app, "save_config_as")(str(target), out[page.extra], *values)
    assert out[page.config_path] == str(target.with_suffix(".json"))
    assert load_config(target.with_suffix(".json"))[0].max_resolution == "64,64"
    assert out[page.dirty] == ""


def test_ignored_fields_are_greyed_with_the_reason(app):
    from kohya_lite.config import NOT_IMPLEMENTED

    page = app.kohya_page
    for name, why in NOT_IMPLEMENTED.items():
        widget = page.widgets[name]
        assert widget.interactive is False and why in (widget.info or ""), name
    assert page.widgets["learning_rate"].interactive is not False
