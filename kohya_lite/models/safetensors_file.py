"""A `.safetensors` file's header and length, checked without reading the weights (no torch import).

Layout: 8 bytes little-endian header length N, N bytes of JSON (`{name: {dtype, shape, data_offsets: [begin,
end]}, "__metadata__": {...}}`), then the tensor data; offsets count from the end of the header. A complete
file has exactly `8 + N + max(end)` bytes, so a truncated download (or bytes appended) shows in the length,
and reading it costs one `stat` and the header.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

from kohya_lite.errors import UserError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
REDOWNLOAD_FIX = "the file is incomplete or damaged: download it again (or copy it again) and compare its size with the source"


class DamagedFile(ValueError):
    """The file is not a complete safetensors file; the message says how, for the user."""


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a complete safetensors file; raises DamagedFile (or OSError when unreadable)."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DamagedFile(f"it is only {size} bytes long, too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n < 2:
            raise DamagedFile("it does not start with a safetensors header (is it really a .safetensors file?)")
        if 8 + n > size:
            raise DamagedFile(f"it is truncated: its header alone should be {n:,} bytes, but the file has {size:,}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DamagedFile("its header is not valid JSON (is it really a .safetensors file?)") from None
    if not isinstance(header, dict):
        raise DamagedFile("its header is not a JSON object (is it really a .safetensors file?)")
    data_bytes = size - 8 - n
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            shape = [int(d) for d in info["shape"]]
            dtype = str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise DamagedFile(f"its header entry for tensor '{name}' is malformed") from None
        if not 0 <= begin <= end:
            raise DamagedFile(f"its header gives tensor '{name}' impossible offsets {begin}–{end}")
        if dtype in DTYPE_BYTES and end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise DamagedFile(f"its header gives tensor '{name}' ({dtype} {shape}) {end - begin:,} bytes, "
                              f"which does not match its shape")
        end_max = max(end_max, end)
    if end_max > data_bytes:
        raise DamagedFile(f"it is truncated: {size:,} bytes, where its header describes "
                          f"{8 + n + end_max:,} (an interrupted download or copy)")
    if end_max < data_bytes:
        raise DamagedFile(f"it has {data_bytes - end_max:,} bytes after its last tensor "
                          f"({size:,} bytes, where its header describes {8 + n + end_max:,})")
    return header


def check_file(path: str | os.PathLike, *, field: str | None = None, what: str = "model file") -> dict:
    """`read_header`, with any problem as a UserError naming the file (and `field`)."""
    p = Path(path)
    try:
        return read_header(p)
    except DamagedFile as exc:
        raise UserError(f"{what} '{p.name}' is not a complete safetensors file: {exc}", field=field, file=str(p),
                        fix=REDOWNLOAD_FIX) from None
    except OSError as exc:
        raise UserError(f"cannot read {what} '{p}': {exc.strerror or exc}", field=field, file=str(p),
                        fix="check that the file exists and that you may read it") from None
