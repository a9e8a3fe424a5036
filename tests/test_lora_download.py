"""`lora download` against a real HTTP server on 127.0.0.1 (started here): a normal download that the library then
lists with its trigger words, a dropped connection resumed by Range (in the same call and in a later one), hash
mismatch and non-safetensors answers refused with nothing left behind, pickle files only when allowed, redirects
followed (the token stays with its host), loops, 404/401 and an unreachable server explained in words."""

from __future__ import annotations

import hashlib
import io
import json
import socket

import pytest
import torch
from safetensors.torch import load_file, save

from download_helpers import TOKEN, start_server, stop_server
from kohya_lite.cli import main
from kohya_lite.errors import UserError
from kohya_lite.library import list_library
from kohya_lite.models.load import load_model
from kohya_lite.tools.download import (check_sha256, choose_name, download_lora, normalise_url, redact, sniff,
                                       token_for)
from lora_helpers import write_lora


@pytest.fixture(scope="module")
def lora_bytes(tiny_sd1_dir, tmp_path_factory):
    meta = {"ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_output_name": "zkz",
            "ss_tag_frequency": json.dumps({"5_zkz object": {"zkz object": 5, "red": 2}})}
    path = write_lora(load_model(tiny_sd1_dir), tmp_path_factory.mktemp("src") / "lora.safetensors", seed=1,
                      metadata=meta)
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(lora_bytes):
    pickled = io.BytesIO()
    torch.save(load_file_bytes(lora_bytes), pickled)
    bad_header = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\x00" * 64
    checkpoint = save({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
                       "first_stage_model.decoder.conv_in.weight": torch.zeros(2)})
    srv = start_server({"lora.safetensors": lora_bytes, "model.ckpt": pickled.getvalue(), "bad.safetensors": bad_header,
                        "noise.bin": bytes(range(256)) * 8, "full.safetensors": checkpoint,
                        "trailing.safetensors": lora_bytes + b"\x00" * 16})
    yield srv
    stop_server(srv)


def load_file_bytes(data: bytes) -> dict:
    from safetensors.torch import load

    return load(data)


def _requests(server, prefix):
    return [r for r in server.requests if r["path"].startswith(prefix)]


def test_normal_download_then_the_library_lists_it(server, lora_bytes, tmp_path, capsys):
    lib = tmp_path / "Lora"
    seen = []
    sha = hashlib.sha256(lora_bytes).hexdigest()
    res = download_lora(f"{server.url}/files/lora.safetensors", lib, sha256=sha.upper(),
                        progress=lambda d, t, w: seen.append((d, t, w)))
    assert res.path == lib / "lora.safetensors" and res.path.read_bytes() == lora_bytes
    assert res.sha256 == sha and res.resumed_from == 0 and not res.already_present
    assert ("downloading" in {w for _, _, w in seen}) and (len(lora_bytes), len(lora_bytes), "downloading") in seen
    assert sorted(p.name for p in lib.iterdir()) == ["lora.safetensors"], "no part or state file left"
    (entry,) = list_library(lib)
    assert entry.name == "lora" and entry.trigger_words[:2] == ["zkz object", "red"] and entry.family == "sd1"
    assert res.entry.trigger_words == entry.trigger_words
    again = download_lora(f"{server.url}/files/lora.safetensors", lib)
    assert again.already_present and sorted(p.name for p in lib.iterdir()) == ["lora.safetensors"]
    # the CLI prints where it went and the trigger words
    assert main(["lora", "download", f"{server.url}/files/lora.safetensors", "--lora-dir", str(tmp_path / "L2"),
                 "--name", "mine", "--sha256", sha]) == 0
    out = capsys.readouterr().out
    assert "mine.safetensors" in out and "trigger words: zkz object, red" in out and "<lora:mine:1>" in out


def test_dropped_connection_resumes_in_the_same_call(server, lora_bytes, tmp_path):
    server.requests.clear()
    res = download_lora(f"{server.url}/flaky/lora.safetensors", tmp_path)
    assert res.path.read_bytes() == lora_bytes
    flaky = _requests(server, "/flaky/")
    half = len(lora_bytes) // 2
    assert [r["range"] for r in flaky] == [None, f"bytes={half}-"]
    assert flaky[1]["if_range"], "the resume is guarded by the ETag"


def test_interrupted_download_resumes_in_a_later_call(server, lora_bytes, tmp_path):
    server.requests.clear()
    server.mode = "broken"
    url = f"{server.url}/flaky/lora.safetensors"
    try:
        with pytest.raises(UserError) as e:
            download_lora(url, tmp_path, retries=1)
        assert "kept dropping" in e.value.message and "resumes" in e.value.fix
        parts = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
        assert len(parts) == 1 and parts[0].stat().st_size == len(lora_bytes) // 2
        assert list_library(tmp_path) == [], "a partial download is not a library entry"
        server.mode = "good"
        res = download_lora(url, tmp_path)
    finally:
        server.mode = "good"
    assert res.resumed_from == len(lora_bytes) // 2 and res.path.read_bytes() == lora_bytes
    assert _requests(server, "/flaky/")[-1]["range"] == f"bytes={len(lora_bytes) // 2}-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors"]


def test_hash_mismatch_is_refused_and_nothing_is_left(server, tmp_path):
    with pytest.raises(UserError) as e:
        download_lora(f"{server.url}/files/lora.safetensors", tmp_path, sha256="0" * 64)
    assert e.value.field == "sha256" and "deleted" in e.value.message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError):
        check_sha256("abc")


@pytest.mark.parametrize("path,words", [
    ("/page.html", "web page"),
    ("/files/model.ckpt", "pickle"),
    ("/files/noise.bin", "not a .safetensors"),
    ("/files/bad.safetensors", "header is not JSON"),
    ("/files/trailing.safetensors", "not described by its header"),
    ("/files/full.safetensors", "full model checkpoint"),
])
def test_not_a_lora_safetensors_is_refused(server, tmp_path, path, words):
    with pytest.raises(UserError) as e:
        download_lora(server.url + path, tmp_path)
    assert words in e.value.message
    assert list(tmp_path.iterdir()) == [], "nothing left behind"


def test_pickle_only_when_allowed_then_weights_only_and_converted(server, lora_bytes, tmp_path):
    res = download_lora(f"{server.url}/files/model.ckpt", tmp_path, allow_pickle=True)
    assert res.converted_from_pickle and res.path == tmp_path / "model.safetensors"
    original, converted = load_file_bytes(lora_bytes), load_file(str(res.path))
    assert original.keys() == converted.keys() and all(torch.equal(original[k], converted[k]) for k in original)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_redirect_followed_and_the_token_stays_with_its_host(server, lora_bytes, tmp_path):
    server.requests.clear()
    url = f"{server.url}/api/download/7"
    with pytest.raises(UserError) as e:
        download_lora(url, tmp_path)
    assert "HTTP 401" in e.value.message and "sign in" in e.value.message and "--token-env" in e.value.fix
    with pytest.raises(UserError) as e:
        download_lora(url, tmp_path, token_env="KL_TEST_TOKEN", env={"KL_TEST_TOKEN": "wrong"})
    assert "refused the token in KL_TEST_TOKEN" in e.value.message and "wrong" not in e.value.format()
    res = download_lora(url, tmp_path, token_env="KL_TEST_TOKEN", env={"KL_TEST_TOKEN": TOKEN})
    assert res.path.name == "zkz-style.safetensors", "named by the server's Content-Disposition"
    assert res.path.read_bytes() == lora_bytes
    api, storage = _requests(server, "/api/")[-1], _requests(server, "/storage/")[-1]
    assert api["auth"] == f"Bearer {TOKEN}" and api["host"].startswith("127.0.0.1")
    assert storage["host"].startswith("localhost") and storage["auth"] is None, "no token for another host"
    # a Hugging Face-like generic file name is named after its repository
    res = download_lora(f"{server.url}/owner/zkz-repo/resolve/main/pytorch_lora_weights.safetensors", tmp_path)
    assert res.path.name == "zkz-repo.safetensors"


def test_errors_in_words(server, tmp_path, capsys):
    with pytest.raises(UserError) as e:
        download_lora(f"{server.url}/loop/a", tmp_path)
    assert "circle" in e.value.message
    with pytest.raises(UserError) as e:
        download_lora(f"{server.url}/nothing-here.safetensors", tmp_path)
    assert "no file at this address (HTTP 404" in e.value.message and "resolve/main" in e.value.fix
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError) as e:
        download_lora(f"http://127.0.0.1:{port}/x.safetensors", tmp_path)
    assert "refused the connection" in e.value.message and "internet connection" in e.value.fix
    with pytest.raises(UserError):
        download_lora("ftp://example.invalid/x.safetensors", tmp_path)
    assert main(["lora", "download", f"{server.url}/nothing-here.safetensors", "--lora-dir", str(tmp_path)]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_pure_helpers():
    assert normalise_url(" https://huggingface.co/a/b/blob/main/x.safetensors ") == \
        "https://huggingface.co/a/b/resolve/main/x.safetensors"
    assert normalise_url("http://127.0.0.1/a/b/blob/main/x") == "http://127.0.0.1/a/b/blob/main/x"
    assert "s3cret" not in redact("https://civitai.com/api/download/models/1?type=Model&token=s3cret")
    env = {"HF_TOKEN": "hf", "CIVITAI_API_TOKEN": "cv", "MINE": "m"}
    assert token_for("huggingface.co", "huggingface.co", env=env) == ("hf", "HF_TOKEN")
    assert token_for("cdn-lfs.huggingface.co", "huggingface.co", env=env) == (None, None)
    assert token_for("civitai.com", "civitai.com", env=env) == ("cv", "CIVITAI_API_TOKEN")
    assert token_for("example.org", "example.org", token_env="MINE", env=env) == ("m", "MINE")
    assert token_for("storage.example.net", "example.org", token_env="MINE", env=env) == (None, None)
    assert choose_name("https://x/api/download/models/5", 'attachment; filename="a b.safetensors"') == "a b.safetensors"
    assert choose_name("https://x/api/download/models/5", "attachment; filename*=UTF-8''%E6%A8%A1.safetensors") \
        == "模.safetensors"
    assert choose_name("https://x/y/../../evil", None, "../../etc/passwd") == "passwd.safetensors"
    hf = "https://huggingface.co/someone/zkz-style/resolve/main/pytorch_lora_weights.safetensors"
    assert choose_name(hf, 'attachment; filename="pytorch_lora_weights.safetensors"') == "zkz-style.safetensors"
    assert choose_name("https://x/api/download/models/5", None, final_url="https://cdn/abc/zkz.safetensors?sig=1") \
        == "zkz.safetensors"
    assert choose_name("https://x/api/download/models/5", None, final_url="https://cdn/abc/0f3a9") == "5.safetensors"
    assert sniff(b"<!doctype html>") == "html" and sniff(b"PK\x03\x04rest") == "pickle"


def test_name_taken_by_another_file(server, lora_bytes, tmp_path):
    (tmp_path / "lora.safetensors").write_bytes(b"another file")
    url = f"{server.url}/files/lora.safetensors"
    with pytest.raises(UserError) as e:
        download_lora(url, tmp_path)
    assert "already exists" in e.value.message and (tmp_path / "lora.safetensors").read_bytes() == b"another file"
    server.requests.clear()
    res = download_lora(url, tmp_path, filename="second")  # the finished download is not fetched again
    assert res.path.name == "second.safetensors" and res.resumed_from == len(lora_bytes)
    assert [r["range"] for r in _requests(server, "/files/")] == [f"bytes={len(lora_bytes)}-"]
    res = download_lora(url, tmp_path, overwrite=True)
    assert (tmp_path / "lora.safetensors").read_bytes() == lora_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors", "second.safetensors"]
