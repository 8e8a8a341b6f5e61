"""JSON Lines: one document per line, its text in the source's `text_column` field."""

from __future__ import annotations

import json
from typing import Iterator

from corpusmill.tasks.ingest.documents import Doc, cell, decode_line
from corpusmill.tasks.ingest.files import FileReads
from corpusmill.tasks.recipe import FilesSource


def read(file: FileReads, source: FilesSource) -> Iterator[Doc]:
    """A document per line (`file:LINE`, from 1); blank, malformed or text-less lines are dropped."""
    column = source.text_column
    with file.open() as f:
        for lineno, raw in enumerate(f, 1):
            key = where = f"{file.label}:{lineno}"
            try:
                line = decode_line(raw, lineno).rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield Doc(key, where, raw, "invalid_utf8", f"invalid UTF-8 at byte {e.start}: {e.reason}")
                continue
            yield _record(key, where, line, column)


def _record(key: str, where: str, line: str, column: str) -> Doc:
    if not line.strip():
        return Doc(key, where, line, "empty", "blank line")
    try:
        record = json.loads(line)
    except ValueError as e:
        return Doc(key, where, line, "malformed_json", str(e))
    if not isinstance(record, dict):
        return Doc(key, where, line, "malformed_json", f"expected a JSON object, got {type(record).__name__}")
    if column not in record:
        return Doc(key, where, line, "missing_text", f"no {column!r} field")
    doc = cell(key, where, record[column], column)
    return doc if doc.reason is None else doc._replace(text=line)
