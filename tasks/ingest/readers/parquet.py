"""Parquet: one document per row, its text in the source's `text_column` column."""

from __future__ import annotations

import io
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.tasks.ingest.documents import Doc, cell, empty_file
from corpusmill.tasks.ingest.errors import IngestError, missing_column
from corpusmill.tasks.ingest.files import FileReads
from corpusmill.tasks.recipe import FilesSource, source_name

BATCH_ROWS = 1024  # rows read per Parquet batch
_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view, pa.types.is_binary,
               pa.types.is_large_binary)


def read(file: FileReads, source: FilesSource) -> Iterator[Doc]:
    """A document per row (`file:row N`, from 0); an empty file is one dropped document."""
    name, column = source_name(source), source.text_column
    with file.open() as f:
        if f.seek(0, io.SEEK_END) == 0:  # its size, without fetching a byte
            yield empty_file(file.label)
            return
        f.seek(0)
        parquet = pq.ParquetFile(f)
        arrow_schema = parquet.schema_arrow
        if column not in arrow_schema.names:
            raise missing_column(name, file.url, column, arrow_schema.names)
        kind = arrow_schema.field(column).type
        if not any(is_text(kind) for is_text in _TEXT_TYPES):
            raise IngestError(
                f"ingest source {name!r}: column {column!r} of {file.url} holds {kind}, not text. Set `text_column:` "
                f"to a string column."
            )
        index = -1
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[column]):
            for value in batch.column(0).to_pylist():
                index += 1
                key = f"{file.label}:row {index}"
                yield cell(key, key, value, column)
