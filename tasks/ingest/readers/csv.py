"""CSV: one document per row, its text in the source's `text_column` column."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from corpusmill.tasks.ingest.documents import Doc, cell, empty_file
from corpusmill.tasks.ingest.errors import missing_column
from corpusmill.tasks.ingest.files import FileReads
from corpusmill.tasks.recipe import FilesSource, source_name


def read(file: FileReads, source: FilesSource) -> Iterator[Doc]:
    """A document per data row (`file:row N`, from 0); a row with the wrong number of fields
    is dropped as malformed_csv in its place, and an empty file is one dropped document."""
    column = source.text_column
    bad: dict[int, tuple[str, str]] = {}  # data row index -> (raw row, problem)

    def on_invalid(row) -> str:
        # row.number counts the header as row 1 (known because the reader is single-threaded)
        bad[row.number - 2] = (row.text, f"expected {row.expected_columns} fields, got {row.actual_columns}")
        return "skip"

    def malformed(index: int) -> Doc:
        text, problem = bad.pop(index)
        return Doc(f"{file.label}:row {index}", f"{file.label}:row {index}", text, "malformed_csv", problem)

    with file.open() as f:
        if not f.peek(1):
            yield empty_file(file.label)
            return
        try:
            reader = pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
                # binary, so one badly encoded cell is dropped instead of failing the whole block
                convert_options=pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.binary()}),
            )
        except pa.ArrowKeyError:
            raise missing_column(source_name(source), file.url, column, _columns(file)) from None
        index = -1
        for batch in reader:
            for value in batch.column(0).to_pylist():
                index += 1
                while index in bad:  # skipped rows take their place in the numbering
                    yield malformed(index)
                    index += 1
                key = f"{file.label}:row {index}"
                yield cell(key, key, value, column)
        for rest in sorted(bad):
            yield malformed(rest)


def _columns(file: FileReads) -> list[str]:
    with file.open() as f:  # opened again: a decompressed stream cannot seek back
        return pacsv.open_csv(f, parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _: "skip")).schema.names
