"""Reading one file of a `files` source into candidate documents, one reader per format."""

from __future__ import annotations

import zlib
from typing import Iterator

import pyarrow as pa
import zstandard

from corpusmill.tasks.ingest.documents import Doc
from corpusmill.tasks.ingest.errors import IngestError, unreadable
from corpusmill.tasks.ingest.files import SourceFile, file_format
from corpusmill.tasks.ingest.readers import csv, jsonl, parquet, text
from corpusmill.tasks.recipe import FilesSource, source_name

_READERS = {"jsonl": jsonl.read, "csv": csv.read, "parquet": parquet.read, "text": text.read}

# Errors from reading a file (I/O, decompression, Arrow parsing) that mean "this input is
# unreadable"; they become an IngestError naming the file.
_READ_ERRORS = (OSError, EOFError, ValueError, pa.ArrowException, zstandard.ZstdError, zlib.error)


def read_file(source: FilesSource, file: SourceFile) -> Iterator[Doc]:
    """The candidate documents of one file, in file order."""
    name, fmt = source_name(source), file_format(source, file.url)
    try:
        yield from _READERS[fmt](file, source)
    except IngestError:
        raise
    except FileNotFoundError as e:
        raise IngestError(
            f"ingest source {name!r}: {file.url} does not exist ({e}). It may have been moved or "
            f"deleted after planning; restore it or run again."
        ) from e
    except _READ_ERRORS as e:
        raise unreadable(name, file.url, fmt, e) from e
