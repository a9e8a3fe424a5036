"""Caption files, image discovery/loading, basic captioning and the manual-editor helpers (no models)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from PIL import Image

from kohya_lite.captioning import (BasicOptions, add_tags, caption_basic, find_images, list_images_with_captions,
                                   load_rgb, save_caption, search_replace, tag_frequency)
from kohya_lite.captioning.writer import CaptionWriter, compose_caption, merge_tags, normalize_extension
from kohya_lite.media import caption_path, read_caption
from kohya_lite.errors import UserError
from captioning_fixtures import sample_source, samples  # noqa: F401  (shared fixtures)


def _digest(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


# ------------------------------------------------------------------------------------ caption text

@pytest.mark.parametrize("prefix, body, postfix, expected", [
    ("lisabp, ", "a dog on grass", "", "lisabp, a dog on grass"),
    ("lisabp,", "  a  dog ", "best quality", "lisabp, a dog best quality"),
    ("", "a dog", ", masterpiece", "a dog, masterpiece"),
    ("lisabp,", "lisabp, a dog", "", "lisabp, a dog"),  # not added twice
    ("lisabp", "lisabp, a dog", "", "lisabp, a dog"),
    ("cat", "category of things", "", "cat category of things"),  # word boundary, not a prefix match
    ("x", "", "y", "x y"),
    ("", "", "", ""),
])
def test_compose_caption(prefix, body, postfix, expected):
    assert compose_caption(prefix, body, postfix) == expected
    assert "  " not in compose_caption(prefix, body, postfix)


def test_merge_tags_keeps_order_adds_once_and_leads_with_prefix():
    assert merge_tags("1girl, smile", "smile, solo, 1girl") == "1girl, smile, solo"
    assert merge_tags("1girl, smile, lisabp", "solo", ", ", prefix="lisabp,") == "lisabp, 1girl, smile, solo"
    assert merge_tags("a, b", "c", ", ", postfix="end") == "a, b, c, end"


def test_normalize_extension():
    assert normalize_extension("txt") == ".txt"
    assert normalize_extension(".wd14.txt") == ".wd14.txt"
    for bad in ("", ".PNG", ".jpg", "a/b"):
        with pytest.raises(UserError):
            normalize_extension(bad)


def test_writer_modes_utf8_and_newline(tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(image)
    target = caption_path(image, ".txt")
    assert target == tmp_path / "x.txt"
    keep = CaptionWriter(ext=".txt", prefix="lisabp,")
    assert not keep.keeps_existing(image)
    assert keep.write(image, "café ✓") == "lisabp, café ✓"
    assert target.read_bytes() == "lisabp, café ✓\n".encode("utf-8")
    assert keep.keeps_existing(image)
    assert not CaptionWriter(overwrite=True).keeps_existing(image)
    CaptionWriter(overwrite=True).write(image, "new")
    assert read_caption(target) == "new"
    CaptionWriter(append=True).write(image, "new, other")
    assert target.read_text(encoding="utf-8") == "new, other\n"


# ------------------------------------------------------------------------------------------ images

def test_find_images_any_case_sorted_and_recursive(samples):
    folder, good, bad = samples
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "sub" / "deep.PNG")
    found = find_images(folder)
    assert {p.name for p in found} == {p.name for p in good + bad}
    assert found == sorted(found)
    assert folder / "sub" / "deep.PNG" in find_images(folder, recursive=True)


def test_find_images_problems_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist") as missing:
        find_images(tmp_path / "nope")
    assert missing.value.field == "folder"
    with pytest.raises(UserError, match="No images found"):
        find_images(tmp_path)
    assert find_images(tmp_path, required=False) == []
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(UserError, match="not a folder"):
        find_images(tmp_path / "f.png")


def test_load_image_handles_odd_modes(samples):
    folder, _, bad = samples
    alpha = load_rgb(folder / "alpha.png")
    assert alpha.mode == "RGB" and alpha.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert alpha.getpixel((30, 20)) == (200, 40, 40)
    assert load_rgb(folder / "palette.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(folder / "palette.png").getpixel((20, 20)) == (10, 120, 200)
    gray16 = load_rgb(folder / "gray16.png")  # scaled, not clipped to white
    assert gray16.getpixel((0, 0)) == (0, 0, 0) and 200 < gray16.getpixel((31, 31))[0] < 255
    rotated = load_rgb(folder / "rotated.jpg")  # stored 48x24, EXIF says rotate 90 cw
    assert rotated.size == (24, 48)
    top, bottom = rotated.getpixel((12, 5)), rotated.getpixel((12, 42))
    assert top[0] > 150 and top[2] < 100 and bottom[2] > 150 and bottom[0] < 100  # red on top, blue below
    for path in bad:  # an unknown format or a truncated file: PIL's OSError, which the captioners report per image
        with pytest.raises(OSError, match="cannot identify image file|image file is truncated"):
            load_rgb(path)


# ------------------------------------------------------------------------------------------- basic

def test_basic_writes_missing_only_and_ignores_prefix_without_overwrite(samples):
    folder, good, bad = samples
    caption_path(good[0], ".txt").write_text("keep me\n", encoding="utf-8")
    before = _digest(good + bad)
    result = caption_basic(folder, BasicOptions(caption_text="a photo of lisabp", prefix="IGNORED", find_text="photo"))
    assert result.skipped_existing == [good[0]]
    assert set(result.written) == set(good[1:] + bad)  # basic never opens the images
    assert read_caption(caption_path(good[0], ".txt")) == "keep me"
    assert read_caption(caption_path(good[1], ".txt")) == "a photo of lisabp"
    assert any("ignored" in n for n in result.notes)
    assert _digest(good + bad) == before


def test_basic_overwrite_applies_prefix_postfix_and_find_replace(samples):
    folder, good, _ = samples
    caption_path(good[0], ".txt").write_text("old caption\n", encoding="utf-8")
    options = BasicOptions(caption_text="a photo of a dog", overwrite=True, prefix="lisabp,", postfix="best quality",
                           find_text="dog", replace_text="woman")
    result = caption_basic(folder, options)
    assert good[0] in result.written
    for image in good:
        assert caption_path(image, ".txt").read_text(encoding="utf-8") == "lisabp, a photo of a woman best quality\n"


def test_basic_overwrite_without_text_edits_existing_captions_once(samples):
    folder, good, _ = samples
    caption_path(good[0], ".txt").write_text("a dog\n", encoding="utf-8")
    options = BasicOptions(overwrite=True, prefix="lisabp,")
    first = caption_basic(folder, options)
    second = caption_basic(folder, options)
    assert read_caption(caption_path(good[0], ".txt")) == "lisabp, a dog"
    assert read_caption(caption_path(good[1], ".txt")) == "lisabp"  # kohya creates 'prefix postfix'
    assert good[0] in first.written and good[0] in second.skipped_existing


def test_basic_nothing_to_do_is_a_user_error(samples):
    folder, _, _ = samples
    with pytest.raises(UserError) as err:
        caption_basic(folder, BasicOptions(prefix="lisabp"))
    assert err.value.field == "caption_text" and "overwrite" in err.value.message


# -------------------------------------------------------------------------------------------- editor

def test_list_images_with_captions_pages(samples):
    folder, good, bad = samples
    save_caption(good[0], "first caption", ".txt")
    page = list_images_with_captions(folder, ".txt", page=1, page_size=4)
    total = len(good) + len(bad)
    assert page.total_images == total and page.total_pages == -(-total // 4) and len(page.items) == 4
    assert page.items[0].image == good[0] and page.items[0].caption == "first caption" and page.items[0].has_caption
    assert not page.items[1].has_caption and page.items[1].caption == ""
    last = list_images_with_captions(folder, ".txt", page=99, page_size=4)
    assert last.page == page.total_pages and len(last.items) == total - 4 * (page.total_pages - 1)


def test_save_caption_writes_and_clears(samples):
    _, good, _ = samples
    target = save_caption(good[0], "  lisabp, a dog\r\n", ".txt")
    assert target.read_bytes() == b"lisabp, a dog\n"
    save_caption(good[0], "   ", ".txt")
    assert not target.exists()
    with pytest.raises(UserError):
        save_caption(good[0].with_suffix(".txt"), "x", ".txt")


def test_search_replace_counts_changed_files(samples):
    folder, good, _ = samples
    save_caption(good[0], "a dog, a dog", ".txt")
    save_caption(good[1], "a cat", ".txt")
    assert search_replace(folder, ".txt", "dog", "woman") == 1
    assert read_caption(caption_path(good[0], ".txt")) == "a woman, a woman"
    assert read_caption(caption_path(good[1], ".txt")) == "a cat"
    with pytest.raises(UserError):
        search_replace(folder, ".txt", "", "x")


def test_tag_frequency_and_add_tags(samples):
    folder, good, _ = samples
    save_caption(good[0], "1girl, Smile, solo", ".txt")
    save_caption(good[1], "1girl, smile", ".txt")
    assert tag_frequency(folder, ".txt") == Counter({"1girl": 2, "smile": 2, "solo": 1})
    changed = add_tags(folder, ".txt", "lisabp, 1girl", position="front")
    assert changed == len(list_images_with_captions(folder, ".txt", page_size=100).items)
    assert read_caption(caption_path(good[0], ".txt")) == "lisabp, 1girl, Smile, solo"
    assert read_caption(caption_path(good[2], ".txt")) == "lisabp, 1girl"  # created
    assert add_tags(folder, ".txt", ["lisabp"], position="back") == 0  # already everywhere
    add_tags(folder, ".txt", ["masterpiece"], position="back")
    assert read_caption(caption_path(good[1], ".txt")) == "lisabp, 1girl, smile, masterpiece"
    with pytest.raises(UserError):
        add_tags(folder, ".txt", "x", position="middle")


def test_two_images_sharing_a_caption_file_are_reported(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    result = caption_basic(tmp_path, BasicOptions(caption_text="x"))
    assert result.written == [tmp_path / "a.jpg"]
    assert result.failed[0][0] == tmp_path / "a.png" and "a.jpg" in result.failed[0][1]
