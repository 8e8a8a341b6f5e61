"""The errors that stop an ingest run, each naming the source, the file and the fix."""

from __future__ import annotations

from corpusmill.tasks.errors import CorpusmillError


class IngestError(CorpusmillError, ValueError):
    """An input that stops the run; the message names the source, the path and the fix."""


def unreadable(source: str, url: str, fmt: str, error: BaseException) -> IngestError:
    """The error for a file whose bytes do not make sense as `fmt` (damaged, cut short, another format)."""
    return IngestError(
        f"ingest source {source!r}: {url} could not be read as {fmt}: {error}. Check that the file is {fmt} and "
        f"not damaged, or set `format:` on the source to the format it really has."
    )


def missing_column(source: str, url: str, column: str, columns: list[str]) -> IngestError:
    return IngestError(
        f"ingest source {source!r}: {url} has no column {column!r} (columns: {', '.join(columns) or 'none'}). "
        f"Set `text_column:` on the source to the column that holds the text."
    )
