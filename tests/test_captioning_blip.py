"""BLIP captioning with a tiny offline BLIP built from a hand-written vocabulary."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from kohya_lite.captioning import BlipCaptioner, BlipOptions, caption_blip, load_rgb
from kohya_lite.captioning.blip import BLIP_PROMPT, strip_prompt
from kohya_lite.captioning.tiny import build_tiny_blip
from kohya_lite.media import caption_path, read_caption
from kohya_lite.errors import UserError
from captioning_fixtures import offline, sample_source, samples  # noqa: F401  (shared fixtures)


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture(scope="module")
def captioner(blip_dir):
    return BlipCaptioner.load(model_dir=str(blip_dir), device="cpu")


def test_every_good_image_captioned_with_trigger_word(samples, blip_dir):
    folder, good, bad = samples
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in good + bad}
    calls = []
    options = BlipOptions(model_dir=str(blip_dir), prefix="lisabp, ", postfix="best quality", batch_size=3)
    result = caption_blip(folder, options, progress=lambda d, t: calls.append((d, t)))
    assert sorted(result.written) == good
    assert sorted(p for p, _ in result.failed) == bad
    for image in good:
        raw = caption_path(image, ".txt").read_bytes()
        text = raw.decode("utf-8")
        assert text.endswith("\n") and text.count("\n") == 1 and "  " not in text
        assert text.startswith("lisabp, ") and text.rstrip("\n").endswith(" best quality")
        assert not text[len("lisabp, "):].startswith("a picture of")
        assert len(text) > len("lisabp, best quality\n")  # the model said something
    assert calls[-1] == (len(good) + len(bad),) * 2
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in good + bad} == before


def test_prompt_is_given_to_the_decoder_and_stripped(captioner, samples):
    _, good, _ = samples
    image = load_rgb(good[0])
    inputs = captioner.processor(images=[image], text=[BLIP_PROMPT], return_tensors="pt")
    raw = captioner.processor.batch_decode(captioner.model.generate(**inputs, max_length=20, min_length=5),
                                           skip_special_tokens=True)[0]
    assert raw.startswith("a picture of")
    assert captioner.caption([image], max_length=20) == [strip_prompt(raw)]
    assert strip_prompt("a picture of a dog on grass") == "a dog on grass"
    assert strip_prompt("two cats") == "two cats"


def test_max_length_counts_the_prompt_like_kohya(captioner, samples):
    _, good, _ = samples
    images = [load_rgb(p) for p in good[:2]]
    tokenizer = captioner.processor.tokenizer
    for max_length in (6, 9):
        for text in captioner.caption(images, max_length=max_length, min_length=5):
            # [DEC] a picture of = 4 tokens of the budget
            assert 1 <= len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_length - 4


def test_batch_size_does_not_change_greedy_captions(samples, captioner):
    folder, _, _ = samples
    one = caption_blip(folder, BlipOptions(batch_size=1, overwrite=True), captioner=captioner)
    four = caption_blip(folder, BlipOptions(batch_size=4, overwrite=True), captioner=captioner)
    assert one.captions == four.captions and one.captions


def test_sampling_is_seeded(samples, captioner):
    folder, _, _ = samples
    def sample(seed):
        options = BlipOptions(beam_search=False, top_p=0.9, seed=seed, overwrite=True, batch_size=8, max_length=30)
        return caption_blip(folder, options, captioner=captioner).captions

    first, again, other = sample(7), sample(7), sample(8)
    assert first == again and first != other
    beams = caption_blip(folder, BlipOptions(num_beams=3, overwrite=True, batch_size=8), captioner=captioner)
    assert len(beams.written) == 8


def test_existing_captions_untouched_unless_overwrite(samples, captioner):
    folder, good, _ = samples
    target = caption_path(good[0], ".txt")
    target.write_text("hand-written caption\n", encoding="utf-8")
    kept = caption_blip(folder, BlipOptions(), captioner=captioner)
    assert kept.skipped_existing == [good[0]] and read_caption(target) == "hand-written caption"
    replaced = caption_blip(folder, BlipOptions(overwrite=True), captioner=captioner)
    assert good[0] in replaced.written and read_caption(target) == replaced.captions[good[0]]


def test_fully_captioned_folder_needs_no_model(samples):
    folder, good, bad = samples
    for image in good + bad:
        caption_path(image, ".txt").write_text("done\n", encoding="utf-8")
    result = caption_blip(folder, BlipOptions(model="nobody/not-downloaded"))
    assert len(result.skipped_existing) == len(good + bad) and result.written == []


def test_missing_model_names_model_place_and_command(samples, tmp_path):
    folder, _, _ = samples
    with pytest.raises(UserError) as err:
        caption_blip(folder, BlipOptions())
    e = err.value
    assert "Salesforce/blip-image-captioning-large" in e.message
    assert str(tmp_path / "hf-cache" / "models--Salesforce--blip-image-captioning-large") in e.message
    assert "hf download Salesforce/blip-image-captioning-large" in e.fix
    assert "huggingface-cli download Salesforce/blip-image-captioning-large" in e.fix
    assert "--model-dir" in e.fix and e.field == "model"


def test_incomplete_model_folder_lists_missing_files(blip_dir, tmp_path, samples):
    folder, _, _ = samples
    broken = shutil.copytree(blip_dir, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    with pytest.raises(UserError) as err:
        caption_blip(folder, BlipOptions(model_dir=str(broken)))
    assert "model.safetensors or pytorch_model.bin" in err.value.message and str(broken) in err.value.message


def test_model_found_in_hf_cache(blip_dir, tmp_path, samples):
    folder, good, _ = samples
    repo = tmp_path / "hf-cache" / "models--someone--tiny-blip"
    shutil.copytree(blip_dir, repo / "snapshots" / "feedbeef")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("feedbeef")
    captioner = BlipCaptioner.load("someone/tiny-blip", device="cpu")
    assert captioner.folder == repo / "snapshots" / "feedbeef"
    assert sorted(caption_blip(folder, BlipOptions(), captioner=captioner).written) == good


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("num_beams", 0), ("top_p", 0.0), ("min_length", 99),
                                          ("caption_extension", ".png")])
def test_bad_options_are_user_errors(samples, field, value):
    folder, _, _ = samples
    with pytest.raises(UserError) as err:
        caption_blip(folder, BlipOptions(**{field: value}))
    assert err.value.field == field
