"""The errors that stop an ingest run, each naming the source, the file and the fix.

An I/O error is either permanent (the file is gone or forbidden: a rerun cannot get past
it, so it becomes an IngestError) or transient (a store or network failing for a moment:
it propagates as raised, and the flow retries the unit).
"""

from __future__ import annotations

from corpusmill.tasks.errors import CorpusmillError


class IngestError(CorpusmillError, ValueError):
    """An input that stops the run; the message names the source, the path and the fix."""


def inaccessible(source: str, url: str, error: OSError) -> IngestError:
    """The error for a file that is missing or may not be read (one of MISSING_OR_FORBIDDEN)."""
    if isinstance(error, FileNotFoundError):
        problem, fix = "does not exist", "It may have been moved or deleted: restore it or fix `path:` in the recipe"
    elif isinstance(error, PermissionError):
        problem, fix = "may not be read", (
            "Give this machine read access (for an object store: credentials in the usual environment variables) "
            "or fix `path:` in the recipe")
    else:
        problem, fix = "is not a file", "Fix `path:` in the recipe"
    return IngestError(
        f"ingest source {source!r}: {url} {problem} ({type(error).__name__}: {error}). {fix}, then run again."
    )


def unreadable(source: str, url: str, fmt: str, error: BaseException) -> IngestError:
    """The error for a file whose bytes do not make sense as `fmt` (damaged, cut short, another format)."""
    return IngestError(
        f"ingest source {source!r}: {url} could not be read as {fmt}: {error}. Check that the file is {fmt} and "
        f"not damaged or cut short, or set `format:` on the source to the format it really has."
    )


def missing_column(source: str, url: str, column: str, columns: list[str]) -> IngestError:
    return IngestError(
        f"ingest source {source!r}: {url} has no column {column!r} (columns: {', '.join(columns) or 'none'}). "
        f"Set `text_column:` on the source to the column that holds the text."
    )
