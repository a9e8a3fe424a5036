"""Reading the user's text files (configs, captions, sample prompts) with one rule for encodings.

- UTF-8, with or without a byte-order mark (BOM), is read as is; CRLF line ends are left to the caller
  (`str.splitlines` handles them).
- UTF-16 with a BOM (what Windows Notepad calls "Unicode") is unambiguous, so it is decoded; the caller
  gets a note to pass on, because kohya_ss and sd-scripts read UTF-8 only.
- Anything else is refused with a `UserError` naming the file: text in another encoding (Latin-1 or
  Windows-1252, the "ANSI" of Windows editors) and binary data (NUL bytes, or not decodable at all). The
  fix is the same for all of them: re-save the file as UTF-8.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from kohya_lite.errors import UserError

RESAVE_FIX = "open it in a text editor and save it as UTF-8 (Notepad: File → Save as → Encoding: UTF-8)"


class NotText(ValueError):
    """Bytes that are not UTF-8 (or BOM-marked UTF-16) text; the message says why, for the user."""

    def __init__(self, reason: str, *, binary: bool = False):
        super().__init__(reason)
        self.binary = binary


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) with encoding 'utf-8', 'utf-8-sig' or 'utf-16'; raises `NotText`."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise NotText("it is UTF-32 text")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text, encoding = data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise NotText("it starts like UTF-16 text but is damaged or binary", binary=True) from None
    else:
        if b"\x00" in data:
            raise NotText("it holds NUL bytes: binary data, or UTF-16 without a byte-order mark", binary=True)
        encoding = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            byte = data[exc.start]
            raise NotText(f"byte 0x{byte:02X} at position {exc.start} is not UTF-8 "
                          "(Windows 'ANSI' or Latin-1 text?)") from None
    if "\x00" in text:
        raise NotText("it holds NUL characters: binary data, not text", binary=True)
    return text, encoding


def read_text(path: str | os.PathLike, *, what: str = "text file", field: str | None = None,
              notes: list[str] | None = None) -> str:
    """The text of a UTF-8 (with or without BOM) or BOM-marked UTF-16 file.

    `what` names the file for the user ("config file", "caption file", ...). A UTF-16 file is decoded and,
    when `notes` is given, a sentence saying so is appended to it. Raises UserError (naming the file and
    `field`) when the file cannot be read or is not text in one of those encodings."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise UserError(f"cannot read {what} '{p}': {reason}", field=field, file=str(p),
                        fix="check that the file exists and that you may read it") from None
    try:
        text, encoding = decode_text(data)
    except NotText as exc:
        if exc.binary:
            raise UserError(f"{what} '{p}' is not a text file: {exc}", field=field, file=str(p),
                            fix="check that this is the right file, and that it is plain text saved as UTF-8") from None
        raise UserError(f"{what} '{p}' is not UTF-8 text: {exc}", field=field, file=str(p),
                        fix=RESAVE_FIX) from None
    if encoding == "utf-16" and notes is not None:
        notes.append(f"{what} '{p}' is UTF-16 text: kohya-lite reads it, but kohya_ss and sd-scripts need UTF-8")
    return text
