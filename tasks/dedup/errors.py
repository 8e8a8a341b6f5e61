"""Dedup's input or work files are wrong in a way the user can fix; never retried."""

from corpusmill.tasks.errors import CorpusmillError


class MissingColumn(CorpusmillError, ValueError):
    """A Parquet file lacks a column dedup needs (the text, or the ids)."""


class NotParquet(CorpusmillError, ValueError):
    """An input to `corpusmill dedup` that Parquet cannot read."""


class BadSettings(CorpusmillError, ValueError):
    """Dedup settings out of range (a threshold of 0, no permutations...)."""


class InvalidIds(CorpusmillError, ValueError):
    """Row ids that are null or repeated: clusters and the keep rule are keyed by id."""


class StaleWorkFiles(CorpusmillError, ValueError):
    """Signature, band-pair or cluster files that were made with other settings or from
    other shards than the ones given with them."""
