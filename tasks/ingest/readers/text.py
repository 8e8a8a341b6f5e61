"""Plain text: split into documents by the source's `split_by`, Gutenberg boilerplate cut off."""

from __future__ import annotations

from typing import Iterator

from corpusmill.tasks.ingest.documents import Doc, decode_line
from corpusmill.tasks.ingest.files import FileReads
from corpusmill.tasks.ingest.gutenberg import Boilerplate
from corpusmill.tasks.ingest.splitters import SPLITTERS
from corpusmill.tasks.recipe import FilesSource


def read(file: FileReads, source: FilesSource) -> Iterator[Doc]:
    """Documents `file:doc N` (from 0). A file that is not UTF-8 is one dropped document,
    and so is a blank one: never silently nothing."""
    # pass 1: check the encoding before anything is kept, and find Gutenberg markers
    bounds = Boilerplate()
    with file.open() as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = decode_line(raw, lineno)
            except UnicodeDecodeError as e:
                yield Doc(file.label, f"{file.label}:{lineno}", raw, "invalid_utf8",
                          f"the file is not UTF-8 (byte {e.start} of this line: {e.reason}); re-encode it as UTF-8")
                return
            bounds.see(lineno, line)

    # pass 2: stream the book's lines into documents
    count = 0
    for count, (lineno, text) in enumerate(SPLITTERS[source.split_by](_lines(file, bounds)), 1):
        yield Doc(f"{file.label}:doc {count - 1}", f"{file.label}:{lineno}", text)
    if not count:
        yield Doc(f"{file.label}:doc 0", f"{file.label}:{bounds.start + 1}", "")


def _lines(file: FileReads, bounds: Boilerplate) -> Iterator[tuple[int, str]]:
    """(line number, line) strictly between the boilerplate markers, line ends removed."""
    start, end = bounds.start, bounds.end
    with file.open() as f:
        for lineno, raw in enumerate(f, 1):
            if lineno <= start:
                continue
            if end is not None and lineno >= end:
                return
            line = decode_line(raw, lineno).removesuffix("\n").removesuffix("\r")
            for piece in line.split("\r"):  # old Mac line ends
                yield lineno, piece
