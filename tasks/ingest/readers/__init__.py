"""Reading one file of a `files` source into candidate documents, one reader per format."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from corpusmill.tasks.ingest.compression import DECODE_ERRORS
from corpusmill.tasks.ingest.documents import Doc
from corpusmill.tasks.errors import MISSING_OR_FORBIDDEN
from corpusmill.tasks.ingest.errors import inaccessible, unreadable
from corpusmill.tasks.ingest.files import FileReads, SourceFile, file_format
from corpusmill.tasks.ingest.readers import csv, jsonl, parquet, text
from corpusmill.tasks.recipe import FilesSource, source_name

_READERS = {"jsonl": jsonl.read, "csv": csv.read, "parquet": parquet.read, "text": text.read}

# How decoders and parsers say a file's bytes make no sense. Arrow, like gzip and bz2,
# uses plain OSError for some of it ('Corrupt snappy compressed data'), which is why the
# store's own errors are told apart by where they came from (FileReads.from_store).
_UNREADABLE = (*DECODE_ERRORS, pa.ArrowException)


def read_file(source: FilesSource, file: SourceFile) -> Iterator[Doc]:
    """The candidate documents of one file, in file order.

    Bytes that make no sense as the file's format (damaged, cut short, another format) and
    a file gone or forbidden are IngestErrors naming the file. Any other error of the
    store propagates as raised, so the flow retries the unit.
    """
    name, fmt = source_name(source), file_format(source, file.url)
    reads = FileReads(file)
    try:
        yield from _READERS[fmt](reads, source)
    except _UNREADABLE as e:
        if not reads.from_store(e):
            raise unreadable(name, file.url, fmt, e) from e
        if isinstance(e, MISSING_OR_FORBIDDEN):
            raise inaccessible(name, file.url, e) from e
        raise
