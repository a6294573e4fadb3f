"""Decoding of uploaded and imported files: an explicit, predictable ladder, or a refusal.

The ladder (rule `encoding` on refusal, the message naming what was tried or found):
  1. a byte-order mark decides: UTF-8 with BOM, UTF-16 LE or BE (strict); a UTF-32 BOM is refused;
  2. no BOM: strict UTF-8;
  3. otherwise strict GB18030 (which includes GBK and GB2312), accepted only when the result is
     plausibly text: no control characters and at least half its non-ASCII characters Chinese
     (CJK ideographs, CJK or full-width punctuation). Decision: a Latin-1 or Windows-1252 file
     that happens to decode as GB18030 is mojibake, not Chinese, and is refused rather than guessed.
A file that decodes but holds NUL or other control characters (UTF-16 without a BOM, a binary
file) is refused too. The caller names the field (`file`, `csv_file`).
"""

from __future__ import annotations

import codecs
import unicodedata

from iwrs.errors import InvalidInput
from iwrs.validation import refused_character

MAX_UPLOAD_BYTES = 2 * 1024 * 1024


def _refuse(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", field=field, rule="encoding")


def _chinese(char: str) -> bool:
    code = ord(char)
    return (
        0x3000 <= code <= 0x303F  # CJK symbols and punctuation
        or 0x3400 <= code <= 0x4DBF  # extension A
        or 0x4E00 <= code <= 0x9FFF  # unified ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x20000 <= code <= 0x2FA1F  # extensions B-F, compatibility supplement
        or unicodedata.category(char) in ("Pi", "Pf")  # “ ” ‘ ’ in Chinese text
    )


def _plausible_chinese(decoded: str) -> bool:
    others = [c for c in decoded if ord(c) > 0x7F]
    return sum(map(_chinese, others)) * 2 >= len(others)


def _strict(data: bytes, encoding: str, field: str, label: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise _refuse(
            field, f"starts as {label} but byte {error.start} is not valid {label}"
        ) from None


def decode_text(data: bytes, *, field: str = "file", max_bytes: int = MAX_UPLOAD_BYTES) -> str:
    """The text of an uploaded file (see the module for the ladder), without a BOM, with
    universal newlines left to the CSV reader; InvalidInput (rule encoding, or file_size above
    `max_bytes`) otherwise."""
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{field}: larger than {max_bytes:,} bytes", field=field, rule="file_size"
        )
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise _refuse(field, "UTF-32 text (byte-order mark) is not accepted; save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        decoded = _strict(data[3:], "utf-8", field, "UTF-8 (byte-order mark)")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        decoded = _strict(data, "utf-16", field, "UTF-16 (byte-order mark)")
    else:
        try:
            decoded = data.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            try:
                decoded = data.decode("gb18030")
            except UnicodeDecodeError:
                decoded = ""
            if not decoded or not _plausible_chinese(decoded) or _control(decoded):
                raise _refuse(
                    field,
                    f"not UTF-8 (byte {utf8_error.start} is invalid), UTF-16 with a byte-order "
                    "mark, or Chinese GB18030/GBK text; save it as UTF-8",
                ) from None
    if "\x00" in decoded:
        raise _refuse(field, "holds NUL bytes (UTF-16 without a byte-order mark?); save as UTF-8")
    if _control(decoded):
        raise _refuse(field, "holds control characters: not a text file")
    return decoded


def _control(decoded: str) -> bool:
    return refused_character(decoded.replace("\ufeff", ""), multiline=True) is not None
