"""A candidate document as readers produce it, and what a kept one becomes: normalised
text under a stable id."""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

import xxhash


class Doc(NamedTuple):
    """A candidate document: `text` to keep, or `reason` why not (then `text` is the raw snippet)."""

    key: str  # position part of the row id
    where: str  # where a person finds it, for quarantine details
    text: str | bytes | None
    reason: str | None = None
    detail: str | None = None


def row_id(source: str, position: str) -> str:
    """The stable row id: 24 hex chars of xxh3-128 over source name and position."""
    return xxhash.xxh3_128_hexdigest(f"{source}\x00{position}".encode("utf-8"))[:24]


def normalize(text: str) -> str:
    """NFC, '\\n' line ends, no surrounding whitespace.

    Raises UnicodeEncodeError for a lone surrogate (JSON allows '\\ud800'), which Parquet
    cannot store.
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text.isascii():
        text.encode("utf-8")
    return text


def cell(key: str, where: str, value, column: str) -> Doc:
    """A text value from a table or record (bytes, str or None) as a candidate document."""
    if value is None:
        return Doc(key, where, None, "missing_text", f"{column!r} is null")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return Doc(key, where, value, "invalid_utf8", f"invalid UTF-8 at byte {e.start}: {e.reason}")
    if not isinstance(value, str):
        return Doc(key, where, None, "missing_text", f"{column!r} is {type(value).__name__}, not a string")
    return Doc(key, where, value)


def empty_file(label: str) -> Doc:
    """An empty file as one dropped document, so it is counted rather than silently nothing."""
    return Doc(label, label, "", "empty", "the file is empty")


def decode_line(raw: bytes, lineno: int) -> str:
    # a UTF-8 byte-order mark is allowed at the start of a file only
    return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
