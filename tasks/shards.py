"""Reading and writing the Parquet shards that stages pass to each other.

Writer settings are fixed so the same rows always give the same bytes. Files are written
to a temporary name and renamed, so a crash never leaves a half-written shard that a
resumed run would mistake for a finished one.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.tasks import schema

ROW_GROUP_ROWS = 10_000
PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=True,
    write_statistics=True,
    data_page_version="1.0",
    store_schema=True,
)


def write_table(table: pa.Table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
    os.replace(tmp, path)
    return path


class ParquetSink:
    """Streams tables into one Parquet file with the fixed writer settings.

    Rows are buffered into full row groups, so the file's bytes depend only on its rows,
    not on how they arrived (one shard or many).
    """

    def __init__(self, path: str | Path, arrow_schema: pa.Schema):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._writer = pq.ParquetWriter(self._tmp, arrow_schema, **PARQUET_OPTIONS)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        buffered = pa.concat_tables(self._pending) if self._pending else None
        full = (self._pending_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
        cut = self._pending_rows if final else full
        if buffered is not None and cut:
            self._writer.write_table(buffered.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
        rest = buffered.slice(cut) if buffered is not None else None
        self._pending = [rest] if rest is not None and rest.num_rows else []
        self._pending_rows = rest.num_rows if rest is not None else 0

    def close(self) -> Path:
        self._flush(final=True)
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def iter_batches(path: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A shard's rows in order, one row group (ROW_GROUP_ROWS rows) at a time: memory bounded
    by a row group, not by the shard."""
    with pq.ParquetFile(path) as f:
        for i in range(f.num_row_groups):
            yield f.read_row_group(i, columns=columns)


def stream_sha256(handle) -> str:
    """sha256 of an open binary file, local or fsspec's, read in blocks."""
    return hashlib.file_digest(handle, "sha256").hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content, local or at an fsspec URL (the same for the same bytes)."""
    import fsspec

    with (fsspec.open(str(path), "rb") if "://" in str(path) else open(path, "rb")) as f:
        return stream_sha256(f)


def list_shards(directory: str | Path) -> list[Path]:
    """The shards of a stage in their global order (names sort in row order)."""
    return sorted(Path(directory).glob("*.parquet"))


@dataclass
class StageReport:
    """What one shard task did: rows in and out, and every dropped row counted by reason."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def merge(cls, stage: str, reports: Iterable[dict]) -> StageReport:
        """The stage's report over all its shards: counts summed, `extra` merged by `merge_extra`."""
        total = cls(stage)
        for r in reports:
            total.rows_in += r["rows_in"]
            total.rows_out += r["rows_out"]
            total.dropped.update(r["dropped"])
            total.extra = merge_extra(total.extra, r.get("extra", {}))
        return total


# Figures of one run's work rather than of the release it produced: wall time, and the
# generation work that a run resumed from a checkpoint partly skips (augment's `reused` rows
# and `new_tokens`). In the manifest they would make two builds of one release differ, so
# merged reports leave them out.
RUN_FIGURES = frozenset({"seconds", "new_tokens", "reused"})


def merge_extra(total: dict, shard: dict) -> dict:
    """Add one shard's `extra` figures to the stage's: numbers summed, dicts merged key by key.

    Any other kind of figure (a list, a string, a flag) has no sum; a stage that reports one
    must say here how its shards combine, so merging raises rather than keeping one shard's value.
    """
    merged = dict(total)
    for key, value in shard.items():
        if key not in RUN_FIGURES:
            merged[key] = _combine(key, merged.get(key), value)
    return merged


def _combine(key: str, total, value):
    if isinstance(value, dict) and (total is None or isinstance(total, dict)):
        return merge_extra(total or {}, value)
    if _is_number(value) and (total is None or _is_number(total)):
        return (total or 0) + value
    raise TypeError(f"cannot merge the shards' {key!r} figures {total!r} and {value!r}: only numbers and dicts of "
                    "numbers add up; say in tasks.shards.merge_extra how this one combines")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def dropped_table(rows: list[dict]) -> pa.Table:
    """Quarantine rows (id, source, stage, reason, detail, text) as a table."""
    return pa.Table.from_pylist(rows, schema=schema.DROPPED)
