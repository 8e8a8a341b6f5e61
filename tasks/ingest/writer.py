"""Where a unit's rows go: kept rows into INGEST shards, dropped rows into its quarantine file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from corpusmill.tasks import schema
from corpusmill.tasks.shards import ParquetSink, dropped_table, write_table

SNIPPET_CHARS = 1000  # raw text kept per quarantined row
BATCH_ROWS = 10_000  # rows buffered before a write (= the shard row-group size)
BATCH_BYTES = 64 << 20  # ... or this much text, whichever comes first: bounds memory on long documents


class ShardWriter:
    """Streams kept rows into numbered shards `<stem>-pNNNNN.parquet` of at most `shard_rows` rows."""

    def __init__(self, out_dir: Path, stem: str, shard_rows: int, source: str, license: str):
        # parts of an earlier run of this unit (say, with a larger shard_rows) must not linger
        for stale in out_dir.glob(f"{stem}-p*.parquet"):
            stale.unlink()
        self.out_dir, self.stem, self.shard_rows = out_dir, stem, shard_rows
        self.source, self.license = source, license
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.bytes = 0
        self.sink: ParquetSink | None = None
        self.paths: list[Path] = []

    def _path(self) -> Path:
        return self.out_dir / f"{self.stem}-p{len(self.paths):05d}.parquet"

    def add(self, rid: str, text: str) -> None:
        self.ids.append(rid)
        self.texts.append(text)
        self.bytes += len(text)
        in_shard = (self.sink.rows if self.sink else 0) + len(self.ids)
        if len(self.ids) >= BATCH_ROWS or self.bytes >= BATCH_BYTES or in_shard >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.ids:
            return
        n = len(self.ids)
        table = pa.Table.from_arrays(
            [pa.array(self.ids, pa.string()), pa.array(self.texts, pa.string()),
             pa.array([self.source] * n, pa.string()), pa.array([self.license] * n, pa.string())],
            schema=schema.INGEST,
        )
        self.ids, self.texts, self.bytes = [], [], 0
        if self.sink is None:
            self.sink = ParquetSink(self._path(), schema.INGEST)
        self.sink.write(table)
        if self.sink.rows >= self.shard_rows:
            self.paths.append(self.sink.close())
            self.sink = None

    def close(self) -> list[Path]:
        """The written shards, in row order."""
        self._flush()
        if self.sink is not None:
            self.paths.append(self.sink.close())
            self.sink = None
        if not self.paths:  # downstream stages expect a file per unit, even an empty one
            self.paths.append(write_table(schema.INGEST.empty_table(), self._path()))
        return self.paths

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


class Quarantine:
    """Streams dropped rows into one DROPPED file, created on the first drop."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        self.sink: ParquetSink | None = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            if self.sink is None:
                self.sink = ParquetSink(self.path, schema.DROPPED)
            self.sink.write(dropped_table(self.rows))
            self.rows = []

    def close(self) -> None:
        self._flush()
        if self.sink is not None:
            self.sink.close()
        else:  # an earlier run's quarantine no longer describes this unit
            self.path.unlink(missing_ok=True)

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


def snippet(text: str | bytes | None) -> str | None:
    """The start of a dropped row's raw text, storable whatever it holds."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text[: SNIPPET_CHARS * 4].decode("utf-8", "backslashreplace")
    # backslashreplace turns lone surrogates into '\ud800' so the snippet can be stored
    return text[:SNIPPET_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
