"""Epoch × weight grid: finding checkpoints, composing the labelled image, rendering on the tiny model, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kohya_lite import cli
from kohya_lite.errors import UserError
from kohya_lite.generate import GenerateRequest, generate
from kohya_lite.grid import (checkpoint_names, compose_grid, find_checkpoints, parse_weights, render_grid)
from kohya_lite.models.load import load_model
from lora_helpers import write_lora

SIZE = 64


@pytest.fixture(scope="module")
def model(tiny_sd1_dir):
    return load_model(tiny_sd1_dir)


@pytest.fixture(scope="module")
def run_dir(model, tmp_path_factory):
    """A training output folder as sd-scripts leaves it, plus a second training's file."""
    d = tmp_path_factory.mktemp("out")
    write_lora(model, d / "zkz-000002.safetensors", seed=12)
    write_lora(model, d / "zkz-000001.safetensors", seed=11)
    write_lora(model, d / "zkz.safetensors", seed=13)
    write_lora(model, d / "zkz-step00000040.safetensors", seed=14)
    (d / "zkz-000001-state").mkdir()
    (d / "zkz-000001-state" / "network.safetensors").write_bytes(b"")
    (d / "sample").mkdir()
    return d


def test_find_checkpoints_order_and_names(run_dir, tmp_path):
    cps = find_checkpoints(run_dir)
    assert [(c.path.name, c.label) for c in cps] == [
        ("zkz-000001.safetensors", "epoch 1"), ("zkz-000002.safetensors", "epoch 2"), ("zkz.safetensors", "final")]
    other = tmp_path / "two"
    other.mkdir()
    for f in ("zkz-000001.safetensors", "zkz.safetensors"):
        (other / f).write_bytes((run_dir / f).read_bytes())
    (other / "my-lora-000003.safetensors").write_bytes(b"")
    assert checkpoint_names(other) == ["my-lora", "zkz"]
    with pytest.raises(UserError) as err:
        find_checkpoints(other)
    assert "2 trainings: my-lora, zkz" in err.value.message and "--name" in err.value.fix
    assert [c.epoch for c in find_checkpoints(other, "my-lora")] == [3]
    with pytest.raises(UserError, match="no checkpoints named 'x'"):
        find_checkpoints(other, "x")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="no LoRA checkpoints"):
        find_checkpoints(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        find_checkpoints(tmp_path / "missing")


def test_parse_weights():
    assert parse_weights("0, 0.5,0.8 1,-1") == [0.0, 0.5, 0.8, 1.0, -1.0]
    assert parse_weights([1, -0.5]) == [1.0, -0.5]
    for bad in ("", "0,a", ",".join("1" * 17)):
        with pytest.raises(UserError):
            parse_weights(bad)


def test_compose_grid_layout():
    colours = [[Image.new("RGB", (40, 30), (r * 80, c * 60, 0)) for c in range(3)] for r in range(2)]
    grid, layout = compose_grid(colours, ["epoch 1", "final"], ["0", "0.5", "-1"], [0, 0.5, -1], corner="e \\ w")
    ox, oy = layout.origin
    assert grid.size == layout.size == (ox + 3 * 40, oy + 2 * 30) and ox > 20 and oy > 8
    assert len(layout.cells) == 6 and layout.cell(1, 2).box == (ox + 80, oy + 30, ox + 120, oy + 60)
    assert layout.cell(1, 2).weight == -1 and layout.cell(1, 2).checkpoint == "final"
    arr = np.asarray(grid)
    for cell in layout.cells:
        x0, y0, x1, y1 = cell.box
        assert (arr[y0:y1, x0:x1] == (cell.row * 80, cell.col * 60, 0)).all()
    # labels are drawn: dark pixels in the header and in the label column, white elsewhere outside the cells
    assert (arr[:oy, ox:] < 128).any() and (arr[oy:, :ox] < 128).any()
    assert json.loads(json.dumps(layout.to_dict()))["row_labels"] == ["epoch 1", "final"]
    with pytest.raises(ValueError):
        compose_grid(colours, ["a"], ["0", "1", "2"])


def test_render_grid(model, run_dir):
    req = GenerateRequest("a cat", negative="blurry", steps=2, width=SIZE, height=SIZE, seed=5)
    seen = []
    res = render_grid(model, run_dir, req, weights="0,1,-0.5", progress=lambda d, t, what: seen.append((d, t, what)))
    lay = res.layout
    assert lay.row_labels == ["epoch 1", "epoch 2", "final"] and lay.col_labels == ["0", "1", "-0.5"]
    assert len(lay.cells) == 9 and lay.cell_size == (SIZE, SIZE)
    assert res.image.size == lay.size == (lay.origin[0] + 3 * SIZE, lay.origin[1] + 3 * SIZE)
    assert seen[-1][:2] == (9, 9) and seen[0][2] == "epoch 1, weight 0"
    arr = np.asarray(res.image).astype(int)

    def cell(r, c):
        x0, y0, x1, y1 = lay.cell(r, c).box
        return arr[y0:y1, x0:x1]

    # weight 0 is the base model: identical in every row, and equal to a plain generation with the seed
    plain = np.asarray(generate(model, req).image).astype(int)
    for r in range(3):
        assert np.array_equal(cell(r, 0), plain)
    # other weights differ between checkpoints and from the base
    assert np.abs(cell(0, 1) - cell(1, 1)).max() > 10 and np.abs(cell(1, 1) - cell(2, 1)).max() > 10
    assert np.abs(cell(0, 1) - plain).max() > 10 and np.abs(cell(0, 2) - cell(0, 1)).max() > 10
    assert res.seed == 5 and "Seed: 5" in res.infotext() and "zkz-000001.safetensors" in res.infotext()


def test_cli_grid(tiny_sd1_dir, run_dir, tmp_path, capsys):
    out, layout = tmp_path / "grid.png", tmp_path / "grid.json"
    rc = cli.main(["grid", str(run_dir), "--model", str(tiny_sd1_dir), "--prompt", "a cat", "--weights", "0,1",
                   "--seed", "3", "--steps", "1", "--width", "64", "--height", "64", "--out", str(out),
                   "--layout", str(layout)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(layout.read_text())
    with Image.open(out) as img:
        assert list(img.size) == data["size"] and "Seed: 3" in img.text["parameters"]
    assert len(data["cells"]) == 6 and data["col_labels"] == ["0", "1"]
    assert "3 checkpoints" in capsys.readouterr().out
    assert cli.main(["grid", str(tmp_path), "--model", str(tiny_sd1_dir), "--prompt", "x", "--out",
                     str(tmp_path / "g.png")]) == 2
    assert "no LoRA checkpoints" in capsys.readouterr().err
