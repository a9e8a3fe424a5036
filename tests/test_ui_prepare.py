"""Dataset preparation (Utilities → Dataset preparation): copies, never moves; refuses overlaps; repeats."""

from pathlib import Path

import pytest
from PIL import Image

from kohya_lite.dataset.folders import scan_dataset, suggest_repeats
from kohya_lite.dataset.prepare import prepare_dataset
from kohya_lite.errors import UserError


def make_images(folder: Path, n: int, captions: bool = True, size=(32, 24)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"im{i:02d}.png"
        Image.new("RGB", size, (i * 20 % 255, 40, 90)).save(p)
        if captions:
            (folder / f"im{i:02d}.txt").write_text(f"zkz woman, pose {i}\n")
        out.append(p)
    (folder / "notes.md").write_text("not an image")  # left behind: neither image nor caption
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_copies_images_and_captions_without_touching_sources(tmp_path):
    src = tmp_path / "photos"
    make_images(src, 5)
    before = snapshot(src)
    res = prepare_dataset(instance_prompt="zkz", class_prompt="woman", images_dir=src, destination=tmp_path / "proj",
                          repeats=12)

    assert snapshot(src) == before, "the user's files are read only: nothing moved, changed or deleted"
    folder = tmp_path / "proj" / "img" / "12_zkz woman"
    assert res.image_folder == folder.resolve()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"im{i:02d}.png" for i in range(5)] + [f"im{i:02d}.txt" for i in range(5)])
    assert (folder / "im03.txt").read_text() == "zkz woman, pose 3\n"
    assert (res.images_copied, res.captions_copied) == (5, 5)
    for sub in ("model", "log"):
        assert (tmp_path / "proj" / sub).is_dir()
    assert res.train_data_dir == (tmp_path / "proj" / "img").resolve() and res.reg_data_dir is None
    # the result is a valid kohya layout
    ds = scan_dataset(str(res.train_data_dir))
    assert ds.num_train_images == 5 * 12 and ds.train[0].captioned == 5 and ds.train[0].tokens == "zkz woman"


def test_regularization_images_and_repeats_suggestion(tmp_path):
    make_images(tmp_path / "photos", 12, captions=False)
    make_images(tmp_path / "class", 3, captions=False)
    res = prepare_dataset(instance_prompt="  zkz ", class_prompt="woman", images_dir=tmp_path / "photos",
                          destination=tmp_path / "proj", repeats=0, reg_images_dir=tmp_path / "class", reg_repeats=2)
    assert res.repeats == suggest_repeats(12) == 25
    assert res.image_folder.name == "25_zkz woman"
    assert res.reg_folder == (tmp_path / "proj" / "reg" / "2_woman").resolve()
    assert len(list(res.reg_folder.glob("*.png"))) == 3 and res.reg_images_copied == 3
    assert any("no caption file" in n for n in res.notes)
    assert (tmp_path / "photos" / "im00.png").is_file() and (tmp_path / "class" / "im00.png").is_file()


@pytest.mark.parametrize("dest", ["photos", "photos/project", "."])
def test_refuses_overlapping_source_and_destination(tmp_path, dest):
    make_images(tmp_path / "photos", 2)
    before = snapshot(tmp_path)
    with pytest.raises(UserError) as err:
        prepare_dataset(instance_prompt="zkz", class_prompt="woman", images_dir=tmp_path / "photos",
                        destination=tmp_path / dest)
    assert err.value.field == "destination" and "overlap" in err.value.message
    assert snapshot(tmp_path) == before, "nothing is created when the destination is refused"


def test_refuses_reg_folder_overlapping_destination(tmp_path):
    make_images(tmp_path / "photos", 2)
    make_images(tmp_path / "proj" / "class", 2)
    with pytest.raises(UserError) as err:
        prepare_dataset(instance_prompt="zkz", class_prompt="woman", images_dir=tmp_path / "photos",
                        destination=tmp_path / "proj", reg_images_dir=tmp_path / "proj" / "class")
    assert err.value.field == "destination"


def test_rerun_is_idempotent_and_never_overwrites(tmp_path):
    make_images(tmp_path / "photos", 3)
    kw = dict(instance_prompt="zkz", class_prompt="woman", images_dir=tmp_path / "photos",
              destination=tmp_path / "proj", repeats=10)
    prepare_dataset(**kw)
    again = prepare_dataset(**kw)
    assert again.images_copied == 0 and again.already_present == 6

    target = tmp_path / "proj" / "img" / "10_zkz woman" / "im01.txt"
    target.write_text("edited by the user\n")
    with pytest.raises(UserError) as err:
        prepare_dataset(**kw)
    assert err.value.field == "destination" and "already exists" in err.value.message
    assert target.read_text() == "edited by the user\n"


@pytest.mark.parametrize("kw, field", [
    (dict(instance_prompt=""), "instance_prompt"),
    (dict(instance_prompt="a/b"), "instance_prompt"),
    (dict(images_dir="missing"), "images_dir"),
    (dict(images_dir="empty"), "images_dir"),
    (dict(destination=""), "destination"),
    (dict(reg_images_dir="photos2", class_prompt=""), "class_prompt"),
])
def test_problems_name_the_field(tmp_path, kw, field):
    make_images(tmp_path / "photos", 2)
    make_images(tmp_path / "photos2", 1)
    (tmp_path / "empty").mkdir()
    args = dict(instance_prompt="zkz", class_prompt="woman", images_dir=tmp_path / "photos",
                destination=tmp_path / "proj")
    for k, v in kw.items():
        args[k] = (tmp_path / v) if k.endswith("_dir") and v else v
    with pytest.raises(UserError) as err:
        prepare_dataset(**args)
    assert err.value.field == field and err.value.fix
    assert not (tmp_path / "proj").exists()


def test_unwritable_destination_is_a_user_error(tmp_path, unwritable_dir):
    make_images(tmp_path / "photos", 1)
    with pytest.raises(UserError) as err:
        prepare_dataset(instance_prompt="zkz", class_prompt="", images_dir=tmp_path / "photos",
                        destination=unwritable_dir / "proj")
    assert err.value.field == "destination"
    assert (tmp_path / "photos" / "im00.png").is_file()
