"""Download a LoRA by URL into the library folder. The only network access kohya-lite makes, and only
when the user asks for it.

- Any `http(s)://` link that answers with the file: a model-sharing site's download link (e.g. Civitai's
  `…/api/download/models/ID`), a Hugging Face `…/resolve/<rev>/<file>` link (a `…/blob/…` page link is
  rewritten to `resolve`). Redirects are followed by hand (at most 10, loops refused), so an API token
  goes only to the host it belongs to, never to the storage host a redirect points at.
- Tokens come from the environment: `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`) for Hugging Face,
  `CIVITAI_API_TOKEN` for Civitai, or the variable named by `token_env` for the link's own host.
- The bytes go to a hidden `.<key>.part` file in the library folder (`<key>` from the URL). A dropped
  connection resumes with an HTTP Range request (a few times in a row); an interrupted run leaves the
  part file, and the same download later resumes it (`If-Range` guards against a changed file).
- Before the file is accepted: the optional expected SHA-256 (a mismatch deletes the download), then the
  safetensors header check (length, JSON, every tensor's offsets inside the file). Pickle files
  (`.ckpt`/`.pt`) are refused unless `allow_pickle`; then they are read weights-only and saved as
  `.safetensors`. A full model checkpoint is refused (it does not belong in the LoRA folder).
- The final name: `filename`, else the server's Content-Disposition, else the URL's last segment
  (a Hugging Face file called e.g. `pytorch_lora_weights.safetensors` is named after its repository);
  an existing different file of that name is kept unless `overwrite`.
  It is moved in place atomically; the library then lists it with its metadata and trigger words.
"""

from __future__ import annotations

import email.message
import hashlib
import json
import os
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from kohya_lite.errors import UserError
from kohya_lite.fileio import replace
from kohya_lite.tools import Progress, report

if TYPE_CHECKING:
    from kohya_lite.library import LoraEntry

FIELD = "url"
MAX_REDIRECTS = 10
RETRIES = 3  # resumes in a row without progress before giving up
CHUNK = 1 << 20
TIMEOUT = 60.0
MAX_HEADER = 100 * 1024 * 1024
# host → environment variables holding its API token, in order of preference
TOKEN_ENV: dict[str, tuple[str, ...]] = {
    "huggingface.co": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
    "hf.co": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
    "civitai.com": ("CIVITAI_API_TOKEN",),
}
_GENERIC_STEMS = {"pytorch_lora_weights", "adapter_model", "diffusion_pytorch_model", "model", "lora", "weights"}
_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E8M0": 1, "C64": 8}
_CHECKPOINT_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.")


@dataclass
class DownloadResult:
    path: Path
    size_bytes: int
    sha256: str
    url: str  # as given (a token in it hidden)
    resumed_from: int = 0  # bytes already on disk when this call began
    converted_from_pickle: bool = False
    already_present: bool = False  # the same file was already in the library
    entry: LoraEntry | None = None  # the library's view of the file (trigger words, family, rank)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        from kohya_lite.library import format_size

        how = "already in the library" if self.already_present else (
            f"resumed at {format_size(self.resumed_from)}" if self.resumed_from else "downloaded")
        text = f"{self.path.name} ({format_size(self.size_bytes)}, {how}"
        if self.converted_from_pickle:
            text += ", converted from a pickle file to .safetensors"
        return text + f"), sha256 {self.sha256}"


# ---- small pure helpers -----------------------------------------------------------------------------------

def redact(url: str) -> str:
    """The URL with token-like query values hidden (users paste links with `?token=…`)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    query = [(k, "***" if re.search(r"token|key|auth|sig", k, re.I) else v)
             for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="*")))


def normalise_url(url: str) -> str:
    """Strip, check the scheme, and turn a Hugging Face `/blob/` page link into the file's `/resolve/` link."""
    text = (url or "").strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"'{redact(text)}' is not a web address", field=FIELD,
                        fix="paste the download link, starting with https://")
    host = (parts.hostname or "").lower()
    if _token_host(host) in ("huggingface.co", "hf.co") and "/blob/" in parts.path:
        parts = parts._replace(path=parts.path.replace("/blob/", "/resolve/", 1))
    return urllib.parse.urlunsplit(parts)


def _token_host(host: str) -> str | None:
    host = host.lower()
    for known in TOKEN_ENV:
        if host == known or host == "www." + known:
            return known
    return None


def token_for(host: str, origin_host: str, *, token_env: str | None = None,
              env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(token, variable name) to send to `host`: the known sites' variables for their own host; the
    variable named by `token_env` only for the host of the link the user gave. Never for another host."""
    env = os.environ if env is None else env
    if token_env and host.lower() == origin_host.lower():
        value = env.get(token_env, "").strip()
        return (value or None), token_env
    known = _token_host(host)
    if known:
        for var in TOKEN_ENV[known]:
            value = env.get(var, "").strip()
            if value:
                return value, var
    return None, None


def _token_hint(host: str, token_env: str | None) -> str:
    known = _token_host(host)
    if token_env:
        return f"set {token_env} to your token for {host}"
    if known in ("huggingface.co", "hf.co"):
        return "set HF_TOKEN to a Hugging Face access token (Settings → Access Tokens) and try again"
    if known == "civitai.com":
        return "set CIVITAI_API_TOKEN to a Civitai API key (Account settings → API keys) and try again"
    return f"if {host} gives you an API token, put it in an environment variable and pass --token-env NAME"


def safe_filename(name: str) -> str:
    """A plain file name: no folders, no characters Windows refuses, not hidden, not empty."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r'[<>:"|?*\x00-\x1f]', "_", name).strip().strip(".")
    return name


def _disposition_name(value: str | None) -> str | None:
    if not value:
        return None
    msg = email.message.Message()
    msg["content-disposition"] = value
    name = msg.get_filename()
    return safe_filename(name) if name else None


def _url_segments(url: str | None) -> list[str]:
    return [urllib.parse.unquote(x) for x in urllib.parse.urlsplit(url or "").path.split("/") if x]


def choose_name(url: str, disposition: str | None = None, given: str | None = None,
                final_url: str | None = None) -> str:
    """The file name for the library: `given`, else the server's Content-Disposition, else the last segment of
    the final (redirected) URL when it looks like a file, else that of `url`. A generic Hugging Face name
    (`pytorch_lora_weights.safetensors`, …) becomes the repository's name, taken from `url`'s
    `/<owner>/<repo>/resolve/<rev>/<file>`. Without a suffix the name gets `.safetensors`."""
    if given:
        name = safe_filename(given)
    else:
        name = _disposition_name(disposition) or ""
        if not name:
            final = _url_segments(final_url)
            if final and Path(final[-1]).suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
                name = safe_filename(final[-1])
        if not name:
            segments = _url_segments(url)
            name = safe_filename(segments[-1]) if segments else ""
        segments = _url_segments(url)
        if Path(name).stem.lower() in _GENERIC_STEMS and "resolve" in segments:
            i = segments.index("resolve")
            if i >= 2:
                name = safe_filename(segments[i - 1]) + Path(name).suffix
    if not name:
        name = "lora-" + hashlib.sha256(url.encode()).hexdigest()[:8]
    if not Path(name).suffix:
        name += ".safetensors"
    return name


def check_sha256(value: str | None) -> str | None:
    text = (value or "").strip().lower()
    if not text:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise UserError(f"'{value}' is not a SHA-256 (64 hexadecimal characters)", field="sha256",
                        fix="copy the file's SHA256 from the download page, or leave it empty")
    return text


def sniff(head: bytes) -> str:
    """What the first bytes look like: 'safetensors', 'pickle' (torch zip or raw pickle), 'html' or 'other'."""
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= MAX_HEADER and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return "pickle"
    text = head[:512].lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text:
        return "html"
    return "other"


def check_safetensors(path: Path) -> dict:
    """The header of a complete, well-formed safetensors file; UserError otherwise (truncated, overlong
    header, tensors outside the data, data left over)."""
    size = path.stat().st_size
    bad = f"'{path.name}' is not a valid .safetensors file"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{bad}: it is only {size} bytes long", field=FIELD, fix="check the link")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= min(MAX_HEADER, size - 8):
            raise UserError(f"{bad}: its header length ({n}) does not fit the file", field=FIELD,
                            fix="the download may be damaged: try again")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{bad}: its header is not JSON ({exc})", field=FIELD, fix="check the link") from None
    if not isinstance(header, dict):
        raise UserError(f"{bad}: its header is not a JSON object", field=FIELD, fix="check the link")
    data = size - 8 - n
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict):
                raise UserError(f"{bad}: damaged metadata", field=FIELD, fix="check the link")
            continue
        try:
            dtype, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for dim in shape:
                count *= int(dim)
            ok = isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= data
            if ok and dtype in _DTYPE_SIZES:  # (sub-byte and unknown dtypes: the range check only)
                ok = b - a == count * _DTYPE_SIZES[dtype]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"{bad}: tensor '{key}' does not fit the file", field=FIELD,
                            fix="the download may be damaged or cut short: try again")
        end = max(end, b)
    if end != data:
        raise UserError(f"{bad}: {data - end} bytes of data are not described by its header", field=FIELD,
                        fix="the download may be damaged: try again")
    return header


# ---- HTTP ---------------------------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib API
        return None  # we follow redirects ourselves (tokens stay with their host)


_OPENER = urllib.request.build_opener(_NoRedirect)


def _user_agent() -> str:
    from kohya_lite import __version__

    return f"kohya-lite/{__version__}"


def _http_error(code: int, url: str, host: str, token_var: str | None, token_env: str | None) -> UserError:
    where = redact(url)
    if code == 401:
        if token_var:
            return UserError(f"{host} refused the token in {token_var} (HTTP 401 Unauthorized)", field=FIELD,
                             file=where, fix=f"check that {token_var} holds a valid, current token for {host}")
        return UserError(f"{host} wants you to sign in for this file (HTTP 401 Unauthorized)", field=FIELD,
                         file=where, fix=_token_hint(host, token_env))
    if code == 403:
        fix = ("the model may be gated: accept its terms on its page with your account, and use that account's "
               "token" if _token_host(host) in ("huggingface.co", "hf.co") else
               "the file may be private or need other permissions; " + _token_hint(host, token_env))
        return UserError(f"{host} refused access to this file (HTTP 403 Forbidden)", field=FIELD, file=where, fix=fix)
    if code in (404, 410):
        return UserError(f"there is no file at this address (HTTP {code} Not Found)", field=FIELD, file=where,
                         fix="check the link: on Hugging Face copy the file's download link (…/resolve/main/FILE), "
                             "on Civitai the Download button's link")
    if code == 416:
        return UserError("the server cannot resume this download (HTTP 416)", field=FIELD, file=where,
                         fix="try again: the partial download was discarded")
    if code == 429:
        return UserError(f"{host} says too many requests (HTTP 429)", field=FIELD, file=where,
                         fix="wait a few minutes and try again; the partial download is kept")
    if 500 <= code < 600:
        return UserError(f"{host} had a problem (HTTP {code})", field=FIELD, file=where,
                         fix="try again later; the partial download is kept and resumes")
    return UserError(f"{host} answered HTTP {code}", field=FIELD, file=where, fix="check the link")


def _network_error(exc: BaseException, url: str, host: str) -> UserError:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        what = f"{host} did not answer in time"
    elif isinstance(reason, ssl.SSLError):
        what = f"the secure connection to {host} failed ({reason})"
    elif isinstance(reason, socket.gaierror):
        what = f"cannot find the server {host} (no such name, or no internet connection)"
    elif isinstance(reason, ConnectionRefusedError):
        what = f"{host} refused the connection"
    else:
        what = f"cannot reach {host} ({reason})"
    return UserError(what, field=FIELD, file=redact(url),
                     fix="check the address and your internet connection (and proxy settings), then try again; "
                         "a partial download is kept and resumes")


@dataclass
class _Response:
    resp: HTTPResponse
    url: str  # final URL after redirects
    status: int
    headers: Mapping[str, str]


def open_url(url: str, *, start: int = 0, if_range: str | None = None, token_env: str | None = None,
             env: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> _Response:
    """GET `url` (from byte `start`), following redirects by hand; HTTP errors become UserErrors."""
    origin = (urllib.parse.urlsplit(url).hostname or "").lower()
    seen: list[str] = []
    current = url
    while True:
        host = (urllib.parse.urlsplit(current).hostname or "").lower()
        headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
            if if_range:
                headers["If-Range"] = if_range
        token, token_var = token_for(host, origin, token_env=token_env, env=env)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(current, headers=headers)
        try:
            resp = _OPENER.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            code = exc.code
            location = exc.headers.get("Location") if exc.headers else None
            exc.close()
            if code in (301, 302, 303, 307, 308) and location:
                seen.append(current)
                nxt = urllib.parse.urljoin(current, location)
                if nxt in seen:
                    raise UserError(f"the server sends the download in a circle ({len(seen)} redirects)",
                                    field=FIELD, file=redact(url),
                                    fix="open the link in a browser to see where it leads; the site may need a login")
                if len(seen) > MAX_REDIRECTS:
                    raise UserError(f"too many redirects (more than {MAX_REDIRECTS})", field=FIELD, file=redact(url),
                                    fix="open the link in a browser to see where it leads")
                if urllib.parse.urlsplit(nxt).scheme not in ("http", "https"):
                    raise UserError("the server redirected to something that is not a web address", field=FIELD,
                                    file=redact(url), fix="check the link")
                current = nxt
                continue
            if code == 416:
                total = _total_from_range(exc.headers.get("Content-Range") if exc.headers else None)
                raise _RangeNotSatisfiable(total)
            raise _http_error(code, current, host, token_var, token_env) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, HTTPException) as exc:
            raise _network_error(exc, current, host) from None
        return _Response(resp, current, resp.status, resp.headers)


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None):
        super().__init__("416")
        self.total = total


def _total_from_range(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(m[1]) if m else None


def _range_start(value: str | None) -> tuple[int, int | None] | None:
    m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if not m:
        return None
    return int(m[1]), (int(m[3]) if m[3] != "*" else None)


# ---- the download -------------------------------------------------------------------------------------------

class _Dropped(Exception):
    """The connection ended before the file did."""


def _part_paths(folder: Path, url: str) -> tuple[Path, Path]:
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return folder / f".download-{key}.part", folder / f".download-{key}.json"


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _discard(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _read_block(resp: HTTPResponse) -> bytes | None:
    """The next chunk; b'' at the end; None when the connection broke."""
    try:
        return resp.read(CHUNK)
    except (TimeoutError, ConnectionError, HTTPException, ssl.SSLError):
        return None


def _fetch(url: str, part: Path, state_path: Path, *, allow_pickle: bool, token_env: str | None,
           env: Mapping[str, str] | None, progress: Progress, timeout: float, retries: int) -> tuple[dict, int]:
    """Bring the whole file into `part` (resuming what is there); returns (state, bytes there at the start)."""
    key = hashlib.sha256(url.encode()).hexdigest()
    state = _read_state(state_path) if part.exists() else {}
    if state.get("key") not in (None, key):
        state = {}
    initial = part.stat().st_size if part.exists() else 0
    failures = 0
    while True:
        start = part.stat().st_size if part.exists() else 0
        validator = state.get("etag") or state.get("last_modified")
        try:
            r = open_url(url, start=start, if_range=validator if start else None, token_env=token_env, env=env,
                         timeout=timeout)
        except _RangeNotSatisfiable as exc:
            if exc.total is not None and start == exc.total:
                return state, initial  # it was complete already
            _discard(part, state_path)
            state, initial, failures = {}, 0, failures + 1
            if failures > retries:
                raise _http_error(416, url, urllib.parse.urlsplit(url).hostname or "", None, token_env) from None
            continue
        with r.resp:
            if r.status == 206:
                rng = _range_start(r.headers.get("Content-Range"))
                if rng is None or rng[0] != start or (state.get("total") and rng[1] != state["total"]):
                    _discard(part)  # not the part we asked for, or another file now: start over
                    state, initial = {}, 0
                    continue
                total = rng[1]
            elif r.status == 200:
                start = 0  # a fresh copy: the server ignored the range, or the file changed (If-Range)
                initial = 0
                length = r.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            else:
                raise _http_error(r.status, r.url, urllib.parse.urlsplit(r.url).hostname or "", None, token_env)
            block = _read_block(r.resp)
            if block and not start:
                _refuse_early(block, allow_pickle, part, state_path, url)
            state.update({"key": key, "final_url": redact(r.url), "total": total,
                          "etag": _strong_etag(r.headers.get("ETag")), "last_modified": r.headers.get("Last-Modified"),
                          "disposition": r.headers.get("Content-Disposition") or state.get("disposition")})
            state_path.write_text(json.dumps(state), encoding="utf-8")
            done = start
            try:
                with open(part, "ab" if start else "wb") as fh:
                    while block:
                        fh.write(block)
                        done += len(block)
                        report(progress, done, total or 0, "downloading")
                        block = _read_block(r.resp)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise UserError(f"cannot write the download to '{part.parent}': {exc.strerror or exc}",
                                field="lora_dir", file=str(part.parent),
                                fix="check free disk space and permissions; the partial download is kept") from None
        if total is None and block == b"":
            return state, initial
        if total is not None and done == total:
            return state, initial
        if total is not None and done > total:
            _discard(part, state_path)
            raise UserError("the server sent more data than it announced", field=FIELD, file=redact(url),
                            fix="try again")
        # the connection dropped (or ended early): resume from what arrived
        failures = 0 if done > start else failures + 1
        if failures > retries:
            from kohya_lite.library import format_size

            got = format_size(done) + (f" of {format_size(total)}" if total else "")
            raise UserError(f"the connection kept dropping ({got} received)", field=FIELD, file=redact(url),
                            fix="try again later: the partial download is kept and the same download resumes it")


def _strong_etag(value: str | None) -> str | None:
    if not value or value.startswith("W/"):
        return None  # only strong validators may guard a range request
    return value


def _refuse_early(head: bytes, allow_pickle: bool, part: Path, state_path: Path, url: str) -> None:
    kind = sniff(head)
    if kind == "safetensors" or (kind == "pickle" and allow_pickle):
        return
    _discard(part, state_path)
    if kind == "pickle":
        raise UserError("this is a pickle file (.ckpt/.pt), not .safetensors: opening one can run code, so it "
                        "was not downloaded", field=FIELD, file=redact(url),
                        fix="download the .safetensors version if there is one; or, if you trust the source, allow "
                            "pickle files (--allow-pickle): it is then read as plain weights and saved as .safetensors")
    if kind == "html":
        raise UserError("the address gave a web page, not a file", field=FIELD, file=redact(url),
                        fix="use the direct download link (Hugging Face: …/resolve/main/FILE.safetensors; Civitai: the "
                            "Download button's link); a site may also show a login page when a token is needed")
    raise UserError("this is not a .safetensors file", field=FIELD, file=redact(url),
                    fix="check that the link points at the LoRA's .safetensors file")


def _sha256(path: Path, progress: Progress) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            done += len(block)
            report(progress, done, total, "checking")
    return h.hexdigest()


def _pickle_to_safetensors(part: Path, dest: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from kohya_lite.fileio import atomic_path

    try:
        sd = torch.load(str(part), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors of every kind
        raise UserError(f"the pickle file cannot be read as plain weights ({type(exc).__name__}): it may hold code, "
                        "so it was not kept", field=FIELD, fix="download the .safetensors version") from None
    while isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError("the pickle file is not a plain set of weights (a LoRA state dict)", field=FIELD,
                        fix="download the .safetensors version")
    tensors = {str(k): v.detach().contiguous() for k, v in sd.items()}
    with atomic_path(dest) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def _classify(header: dict) -> str | None:
    """Why a valid safetensors file does not belong in the LoRA folder (None when it does)."""
    keys = [k for k in header if k != "__metadata__"]
    if not keys:
        return "it holds no tensors"
    if sum(k.startswith(_CHECKPOINT_PREFIXES) for k in keys) > len(keys) // 2:
        return "it is a full model checkpoint, not a LoRA"
    return None


def download_lora(url: str, lora_dir: str | Path | None = None, *, sha256: str | None = None,
                  filename: str | None = None, allow_pickle: bool = False, overwrite: bool = False,
                  token_env: str | None = None, env: Mapping[str, str] | None = None, progress: Progress = None,
                  timeout: float = TIMEOUT, retries: int = RETRIES) -> DownloadResult:
    """Download the LoRA at `url` into `lora_dir` (default: the library's `models/Lora`); see the module doc."""
    from kohya_lite.library import DEFAULT_LORA_DIR, LORA_SUFFIXES, read_entry

    link = normalise_url(url)
    expected = check_sha256(sha256)
    if filename and not safe_filename(filename):
        raise UserError(f"'{filename}' is not a usable file name", field="name", fix="e.g. my-style.safetensors")
    folder = Path(str(lora_dir).strip() if lora_dir and str(lora_dir).strip() else DEFAULT_LORA_DIR).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"'{folder}' is not a folder", field="lora_dir", file=str(folder),
                        fix="choose the LoRA library folder")
    folder.mkdir(parents=True, exist_ok=True)
    part, state_path = _part_paths(folder, link)

    state, initial = _fetch(link, part, state_path, allow_pickle=allow_pickle, token_env=token_env, env=env,
                            progress=progress, timeout=timeout, retries=retries)
    digest = _sha256(part, progress)
    if expected and digest != expected:
        _discard(part, state_path)
        raise UserError(f"the downloaded file's SHA-256 is {digest}, not the expected {expected}: it was deleted",
                        field="sha256", file=redact(link),
                        fix="check the hash on the download page (and that the link is the same file); then try again")
    with open(part, "rb") as fh:
        kind = sniff(fh.read(4096))
    name = choose_name(link, state.get("disposition"), filename, final_url=state.get("final_url"))
    warnings: list[str] = []
    converted = False
    if kind == "pickle":
        if not allow_pickle:  # (a resumed part file from a run that allowed it)
            _discard(part, state_path)
            raise UserError("this is a pickle file (.ckpt/.pt), not .safetensors", field=FIELD, file=redact(link),
                            fix="allow pickle files to convert it, or download the .safetensors version")
        name = Path(name).stem + ".safetensors"
    elif kind != "safetensors":
        _discard(part, state_path)
        raise UserError("the downloaded file is not a .safetensors file", field=FIELD, file=redact(link),
                        fix="check that the link points at the LoRA's .safetensors file")
    elif Path(name).suffix.lower() != ".safetensors":
        name = (Path(name).stem if Path(name).suffix.lower() in LORA_SUFFIXES + (".bin", ".pth") else name) \
            + ".safetensors"
    dest = folder / name

    if dest.exists():
        if dest.is_file() and _sha256(dest, None) == (digest if kind == "safetensors" else None):
            _discard(part, state_path)
            return DownloadResult(dest, dest.stat().st_size, digest, redact(link), initial, False, True,
                                  read_entry(dest, folder), ["the same file was already in the library"])
        if not overwrite:
            raise UserError(f"'{dest.name}' already exists in '{folder}' (a different file)", field="name",
                            file=str(dest), fix="give another file name, or allow overwriting; the download is kept "
                                                "and the next try does not fetch it again")

    if kind == "pickle":
        try:
            _pickle_to_safetensors(part, dest)
        finally:
            _discard(part, state_path)
        converted = True
        warnings.append("converted from a pickle file (read as plain weights); its SHA-256 is that of the download")
        header = check_safetensors(dest)
    else:
        try:
            header = check_safetensors(part)
        except UserError:
            _discard(part, state_path)
            raise
        why = _classify(header)
        if why:
            _discard(part, state_path)
            raise UserError(f"the file is not a LoRA: {why}; it was not kept", field=FIELD, file=redact(link),
                            fix="put base models where your models go (choose them as the base model), not in the "
                                "LoRA folder")
        replace(part, dest)
        _discard(state_path)
    entry = read_entry(dest, folder)
    if getattr(entry, "error", ""):
        warnings.append(f"kohya-lite cannot use this file itself: {entry.error}")
    return DownloadResult(dest, dest.stat().st_size, digest, redact(link), initial, converted, False, entry, warnings)
