"""Bucketing against the reference's worked examples (§5.2, §5.6)."""

import pytest

from kohya_lite.dataset.buckets import BucketSettings, assign_no_upscale, assign_to_list, make_bucket_list


def test_bucket_list_512():
    b = make_bucket_list((512, 512), 256, 1024, 64)
    assert b == [(256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
                 (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256)]
    assert make_bucket_list((512, 512), 256, 2048, 64) == b


def test_bucket_list_sdxl():
    b = make_bucket_list((1024, 1024), 256, 2048, 64)
    assert len(b) == 41 and b[0] == (256, 2048) and (2048, 256) in b
    for need in [(1024, 1024), (832, 1216), (896, 1152), (768, 1344)]:
        assert need in b
    b = make_bucket_list((1024, 1024), 640, 1536, 64)
    assert len(b) == 17 and (640, 1536) in b and (960, 1088) in b and (1088, 960) in b


@pytest.mark.parametrize("size, up, noup", [
    ((1000, 600), ((640, 384), (640, 384)), ((640, 384), (640, 384))),
    ((768, 1024), ((448, 576), (448, 597)), ((384, 512), (384, 512))),
    ((3000, 2000), ((640, 384), (640, 427)), ((576, 384), (576, 384))),
    ((400, 300), ((576, 448), (597, 448)), ((384, 256), (400, 300))),
    ((1920, 1080), ((640, 384), (683, 384)), ((640, 384), (683, 384))),
])
def test_worked_assignments(size, up, noup):
    buckets = make_bucket_list((512, 512), 256, 2048, 64)
    a = assign_to_list(size, buckets)
    assert (a.bucket, a.resized) == up
    b = assign_no_upscale(size, 512 * 512, 64)
    assert (b.bucket, b.resized) == noup
    for x in (a, b):
        l, t, r, btm = x.crop_ltrb
        assert r - l == x.bucket[0] and btm - t == x.bucket[1] and l >= 0 and t >= 0
        assert r <= x.resized[0] and btm <= x.resized[1]


def test_no_bucket_mode_single_resolution():
    s = BucketSettings((512, 512), enable_bucket=False)
    a = s.assign((1000, 600))
    assert a.bucket == (512, 512) and a.resized == (853, 512)


def test_tiny_images_never_padded():
    a = assign_no_upscale((40, 30), 64 * 64, 64)
    assert a.bucket == (64, 64) and a.resized[0] >= 64 and a.resized[1] >= 64
