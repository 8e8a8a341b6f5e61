"""Dedup of one Parquet file, the `corpusmill dedup` command: the stage's phases on a
single shard, and the result written back beside the file's own columns.

A file, unlike the pipeline's shards, may hold null or blank texts. They have nothing to
compare, so they are nobody's duplicate: each is its own cluster and kept, and the report
counts them as `empty_texts`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pydantic import ValidationError

from corpusmill.tasks.dedup.clusters import EXACT
from corpusmill.tasks.dedup.errors import BadSettings, NotParquet
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
    try:
        settings = Dedup(threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed)
    except ValidationError as e:
        raise BadSettings("dedup settings out of range: " + "; ".join(
            f"{'.'.join(map(str, err['loc']))} {err['msg'].lower()}" for err in e.errors()) + ".") from None
    try:
        source = pq.ParquetFile(in_path)
    except pa.ArrowInvalid as e:
        raise NotParquet(f"{in_path} is not a Parquet file that can be read ({e}); pass a .parquet file.") from None
    require_columns(in_path, source.schema_arrow, [text_column], text_column)
    with tempfile.TemporaryDirectory(prefix="corpusmill-dedup-") as tmp:
        side_path, clusters_path = Path(tmp) / "signatures.parquet", Path(tmp) / "clusters.parquet"
        write_table(side_table(in_path, settings, text_column, "id" not in source.schema_arrow.names), side_path)
        ids = read_table(side_path, columns=["id"]).column("id")
        report = cluster([(side_path, in_path)], clusters_path, settings, text_column)
        clusters = read_table(clusters_path)
    added = _in_row_order(clusters, ids)
    report = _keep_empty_texts(added, source, text_column, ids, report)
    _write_with_columns(source, out_path, added)
    return report


def _keep_empty_texts(added: dict, source: pq.ParquetFile, text_column: str, ids: pa.ChunkedArray, report: dict) -> dict:
    """Null and blank texts as their own kept clusters (see the module docstring); the report's counts follow."""
    texts = source.read(columns=[text_column]).column(0)
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(texts), ""), True).to_numpy(zero_copy_only=False)
    if not empty.any():
        return report
    clusters, keep = added[CLUSTER_ID].to_numpy(zero_copy_only=False), added[KEEP].to_numpy(zero_copy_only=False)
    turned = int((empty & ~keep).sum())
    clusters[empty] = ids.to_numpy(zero_copy_only=False)[empty]
    keep[empty] = True
    added[CLUSTER_ID], added[KEEP] = pa.chunked_array([pa.array(clusters, pa.string())]), pa.chunked_array([pa.array(keep)])
    dropped = {**report["dropped"], EXACT: report["dropped"].get(EXACT, 0) - turned}
    return {**report, "rows_out": report["rows_out"] + turned, "dropped": {k: v for k, v in dropped.items() if v},
            "extra": {**report.get("extra", {}), "empty_texts": int(empty.sum())}}


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
