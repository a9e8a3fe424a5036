"""Shared captioning fixtures: `offline` (autouse where imported: no hub, an empty HF cache) and a folder of
real and odd images (alpha, grayscale, 16-bit, palette, WEBP, EXIF-rotated, BMP, upper-case extension) plus
two broken files, copied fresh for each test."""

import shutil

import pytest

from kohya_lite.captioning.tiny import build_sample_images


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No hub, and an empty Hugging Face cache: missing models must be reported, never fetched."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def sample_source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    good, bad = build_sample_images(folder)
    return folder, [p.name for p in good], [p.name for p in bad]


@pytest.fixture
def samples(sample_source, tmp_path):
    src, good, bad = sample_source
    dst = tmp_path / "images"
    shutil.copytree(src, dst)
    return dst, [dst / n for n in good], [dst / n for n in bad]
