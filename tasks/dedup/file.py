"""Dedup of one Parquet file, the `corpusmill dedup` command: the stage's phases on a
single shard, and the result written back beside the file's own columns."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmill.tasks.dedup.stage import CLUSTER_ID, KEEP, READ_BATCH, cluster, require_columns, side_table
from corpusmill.tasks.recipe import Dedup
from corpusmill.tasks.shards import ParquetSink, read_table, write_table


def dedup_file(
    in_path: Path,
    out_path: Path,
    text_column: str = "text",
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
) -> dict:
    """Dedup one Parquet file: the same rows and columns, in the same order, plus
    `cluster_id` and `keep` (replaced in place if the file already has them).

    Without an `id` column, ids are the zero-padded row positions, so the first occurrence
    is kept; a `synthetic` column, when present, applies the keep rule's originals-first.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    settings = Dedup(threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed)
    source = pq.ParquetFile(in_path)
    require_columns(in_path, source.schema_arrow.names, [text_column])
    with tempfile.TemporaryDirectory(prefix="corpusmill-dedup-") as tmp:
        side_path, clusters_path = Path(tmp) / "signatures.parquet", Path(tmp) / "clusters.parquet"
        write_table(side_table(in_path, settings, text_column, "id" not in source.schema_arrow.names), side_path)
        ids = read_table(side_path, columns=["id"]).column("id")
        report = cluster([(side_path, in_path)], clusters_path, settings, text_column)
        clusters = read_table(clusters_path)
    _write_with_columns(source, out_path, _in_row_order(clusters, ids))
    return report


def _in_row_order(clusters: pa.Table, ids: pa.ChunkedArray) -> dict[pa.Field, pa.ChunkedArray]:
    """`cluster_id` and `keep` in the file's row order (the clusters are sorted by id, the
    same sort as here)."""
    by_id = pc.sort_indices(ids).to_numpy()
    position = np.empty(len(ids), dtype=np.int64)
    position[by_id] = np.arange(len(ids))
    return {CLUSTER_ID: clusters.column("cluster_id").take(position), KEEP: clusters.column("keep").take(position)}


def _write_with_columns(source: pq.ParquetFile, out_path: Path, added: dict[pa.Field, pa.ChunkedArray]) -> None:
    """Stream `source` to `out_path` with the `added` columns, each replacing a column of
    its name where there is one, else appended."""
    schema = source.schema_arrow
    for field in added:
        i = schema.get_field_index(field.name)
        schema = schema.set(i, field) if i >= 0 else schema.append(field)
    sink = ParquetSink(out_path, schema)
    start = 0
    try:
        for batch in source.iter_batches(batch_size=READ_BATCH):
            table = pa.Table.from_batches([batch])
            for field, values in added.items():
                column = values.slice(start, batch.num_rows)
                i = table.schema.get_field_index(field.name)
                table = table.set_column(i, field, column) if i >= 0 else table.append_column(field, column)
            sink.write(table)
            start += batch.num_rows
    except BaseException:
        sink.abort()
        raise
    sink.close()
