"""Dedup stage: exact and near duplicates over original and synthetic rows together.

Two phases, so the global step never holds the corpus text in memory:

1. `signatures` (one task per shard) writes a compact side file: each row's position,
   id, synthetic flag, a 64-bit hash of its normalised text and its MinHash signature
   (datasketch 2.0, `affine32` scheme, word n-gram shingles).
2. `cluster` (one task for the whole corpus) reads only the side files. Rows with equal
   text hashes are exact duplicates. Distinct texts become LSH candidates by banding
   their signatures; every candidate pair is then verified by the true Jaccard
   similarity of the two texts' shingle sets (only candidate texts are read back, one
   shard at a time), and only verified pairs join clusters, via union-find.

Keep rule: each cluster keeps exactly one row, the first of its originals
(synthetic=False) by id, or the lowest id when all members are synthetic. It depends on
ids and flags only, so the result is the same for any input order or sharding.

Clusters are transitive: A~B and B~C put A, B and C in one cluster even when A and C are
not similar. Verification bounds each edge, not the cluster's diameter; this is what
split assignment needs (a document and everything near it on the same side).
"""

from __future__ import annotations

import heapq
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from datasketch import MinHash, MinHashLSH

from tasks.recipe import Dedup
from tasks.shards import ParquetSink, StageReport, read_table, write_table

STAGE = "dedup"
VERSION = "1"
EXACT = "exact_duplicate"
NEAR = "near_duplicate"
SCHEME = "affine32"  # datasketch 2.0's default; named so stored signatures say what they are
EMPTY_SLOT = np.uint32(0xFFFFFFFF)  # every slot of an affine32 MinHash that saw no shingle
META_KEY = b"corpusmill.dedup"
READ_BATCH = 10_000  # rows per record batch when streaming a file
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for hashing LSH bands

_WORD = re.compile(r"\w+")

CLUSTERS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("cluster_id", pa.string(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reason", pa.string()),
    ]
)
CLUSTER_ID = CLUSTERS.field("cluster_id")
KEEP = CLUSTERS.field("keep")


# --- text -----------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The text as compared for exact duplicates: case-folded, whitespace runs made one space."""
    return " ".join(text.casefold().split())


def text_hash(text: str) -> int:
    """xxh3_64 of the normalised text: equal for texts that differ only in case or spacing."""
    return xxhash.xxh3_64_intdigest(normalize(text).encode("utf-8"))


def shingles(text: str, ngram: int) -> set[bytes]:
    """Word n-grams of the case-folded text; words are runs of \\w (punctuation splits them).

    Case-folding is the same as in `normalize`, so texts with equal `text_hash` always have
    equal shingle sets (and equal signatures).
    """
    words = _WORD.findall(text.casefold())
    if len(words) < ngram:
        # A short text is one shingle, so it can still match; a text without words has none.
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i : i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)}


def jaccard(a, b) -> float:
    """|a & b| / |a | b| of two sets, or of two sorted arrays of unique values.

    Two empty sets give 0.0: texts without words are not called similar; only an exact
    duplicate (equal text hash) joins them.
    """
    if isinstance(a, np.ndarray):
        inter = np.intersect1d(a, b, assume_unique=True).size
    else:
        inter = len(a & b)
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def _fingerprint(text: str, ngram: int) -> np.ndarray:
    """The shingle set as sorted unique 64-bit hashes: about 8 bytes per word instead of
    ~100 for a set of bytes, so every candidate text's set fits in memory at once. Equal to
    `jaccard` over `shingles` unless two shingles of a pair collide in 64 bits."""
    hashes = np.fromiter((xxhash.xxh3_64_intdigest(s) for s in shingles(text, ngram)), dtype=np.uint64)
    return np.unique(hashes)


# --- phase 1: signatures --------------------------------------------------------------


def _signature_settings(settings: Dedup) -> dict:
    # Only what changes a signature; the threshold is applied later, in `cluster`.
    return {"version": VERSION, "scheme": SCHEME, "num_perm": settings.num_perm, "seed": settings.seed,
            "ngram": settings.ngram}


def side_schema(settings: Dedup) -> pa.Schema:
    """Schema of a signature side file; its metadata records the settings that made it."""
    return pa.schema(
        [
            pa.field("row", pa.int32(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("synthetic", pa.bool_(), nullable=False),
            pa.field("text_hash", pa.uint64(), nullable=False),
            pa.field("signature", pa.list_(pa.uint32(), settings.num_perm), nullable=False),
        ],
        metadata={META_KEY: json.dumps(_signature_settings(settings), sort_keys=True).encode()},
    )


def _require_columns(path: Path, names: list[str], wanted: list[str]) -> None:
    for column in wanted:
        if column not in names:
            raise ValueError(f"{path} has no column {column!r} (its columns: {', '.join(names)})")


def _sign(ids: pa.Array, texts: list[str | None], synthetic: np.ndarray, first_row: int, settings: Dedup) -> pa.Table:
    texts = [t or "" for t in texts]  # a null text is treated as empty
    n = len(texts)
    hashes = np.fromiter((text_hash(t) for t in texts), dtype=np.uint64, count=n)
    signature = np.empty((n, settings.num_perm), dtype=np.uint32)
    minhashes = MinHash.generator(
        (shingles(t, settings.ngram) for t in texts), num_perm=settings.num_perm, seed=settings.seed, scheme=SCHEME
    )
    for i, m in enumerate(minhashes):
        signature[i] = m.hashvalues
    columns = [
        pa.array(np.arange(first_row, first_row + n, dtype=np.int32)),
        ids,
        pa.array(synthetic, pa.bool_()),
        pa.array(hashes),
        pa.FixedSizeListArray.from_arrays(pa.array(signature.ravel()), settings.num_perm),
    ]
    return pa.Table.from_arrays(columns, schema=side_schema(settings))


def _side_table(path: Path, settings: Dedup, text_column: str, positional_ids: bool) -> pa.Table:
    """Signature rows for a Parquet file, streamed in record batches.

    With `positional_ids`, ids are the zero-padded row positions (so the lowest id is the
    first occurrence); otherwise the file's `id` column is used.
    """
    source = pq.ParquetFile(path)
    names = source.schema_arrow.names
    _require_columns(path, names, [text_column] if positional_ids else ["id", text_column])
    columns = [text_column] + ([] if positional_ids else ["id"]) + (["synthetic"] if "synthetic" in names else [])
    width = len(str(max(source.metadata.num_rows - 1, 0)))
    parts, start = [], 0
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=columns):
        n = batch.num_rows
        if positional_ids:
            ids = pa.array([f"{i:0{width}d}" for i in range(start, start + n)], pa.string())
        else:
            ids = batch.column("id").cast(pa.string())
            if ids.null_count:
                raise ValueError(f"{path}: column 'id' has null values; every row needs an id")
        if "synthetic" in columns:
            synthetic = batch.column("synthetic").cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
        else:
            synthetic = np.zeros(n, dtype=bool)
        parts.append(_sign(ids, batch.column(text_column).to_pylist(), synthetic, start, settings))
        start += n
    return pa.concat_tables(parts) if parts else side_schema(settings).empty_table()


def signatures(in_path: Path, out_path: Path, settings: Dedup, text_column: str = "text") -> dict:
    """Write the signature side file of one shard (columns of `side_schema`)."""
    side = _side_table(Path(in_path), settings, text_column, positional_ids=False)
    write_table(side, out_path)
    return {"rows": side.num_rows}


# --- phase 2: clusters ----------------------------------------------------------------


def lsh_params(settings: Dedup) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH picks for this threshold and size."""
    lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm)
    return lsh.b, lsh.r


def candidate_pairs(signature: np.ndarray, bands: int, rows: int, subset: np.ndarray | None = None) -> np.ndarray:
    """Pairs (i, j), i < j, of signature rows equal in at least one band; sorted, unique.

    The pairs MinHashLSH returns for these (bands, rows), found by sorting a 64-bit hash of
    each band instead of filling Python dicts: faster and far smaller at millions of rows.
    Hash collisions are removed by comparing the band values of every pair found. With
    `subset`, only those rows take part, and i, j index into `subset`.
    """
    n = signature.shape[0] if subset is None else len(subset)
    found = [np.empty(0, dtype=np.int64)]
    for band in range(bands):
        columns = slice(band * rows, (band + 1) * rows)
        values = signature[:, columns] if subset is None else signature[subset, columns]
        key = np.zeros(n, dtype=np.uint64)
        for column in values.T:
            key ^= column
            key *= _MIX
            key ^= key >> np.uint64(31)
        order = np.argsort(key)
        sorted_key = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        ends = np.r_[starts[1:], n]
        # For each sorted position, how many later members its bucket has: one pair each.
        later = np.repeat(ends, ends - starts) - np.arange(n) - 1
        first = np.repeat(np.arange(n), later)
        second = first + 1 + np.arange(first.size) - np.repeat(np.cumsum(later) - later, later)
        a, b = np.minimum(order[first], order[second]), np.maximum(order[first], order[second])
        equal = (values[a] == values[b]).all(axis=1)
        found.append(a[equal].astype(np.int64) * n + b[equal])
    pairs = np.unique(np.concatenate(found))
    return np.stack([pairs // max(n, 1), pairs % max(n, 1)], axis=1)


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def _read_sides(paths: list[Path], settings: Dedup) -> tuple[pa.Table, np.ndarray]:
    """All side files: their small columns as one table, with the index of the shard each
    row came from, and their signatures as one (rows, num_perm) matrix in the same order."""
    expected = _signature_settings(settings)
    signature = np.empty((sum(pq.read_metadata(p).num_rows for p in paths), settings.num_perm), dtype=np.uint32)
    small, start = [], 0
    for k, path in enumerate(paths):
        table = read_table(path)
        meta = (table.schema.metadata or {}).get(META_KEY)
        found = json.loads(meta) if meta else None
        if found != expected:
            raise ValueError(f"{path} holds signatures made with {found}, but these settings need {expected}; "
                             "recompute it with signatures()")
        values = table.column("signature").combine_chunks().flatten().to_numpy()
        signature[start : start + table.num_rows] = values.reshape(-1, settings.num_perm)
        start += table.num_rows
        table = table.drop_columns("signature").replace_schema_metadata(None)
        small.append(table.append_column("shard", pa.array(np.full(table.num_rows, k, dtype=np.int32))))
    if not small:
        schema = side_schema(settings).remove(4).remove_metadata().append(pa.field("shard", pa.int32()))
        return schema.empty_table(), signature
    return pa.concat_tables(small), signature


def _read_texts(path: Path, text_column: str, rows: np.ndarray, expected_rows: int) -> list[str]:
    names = pq.read_schema(path).names
    _require_columns(path, names, [text_column])
    column = read_table(path, columns=[text_column]).column(0)
    if len(column) != expected_rows:
        raise ValueError(f"{path} has {len(column)} rows but its signature file has {expected_rows}; "
                         "the pair does not match: recompute the signatures")
    return [t or "" for t in column.take(rows).to_pylist()]


def cluster(shards: list[tuple[Path, Path]], out_path: Path, settings: Dedup, text_column: str = "text") -> dict:
    """Cluster all rows of the (signature file, text shard) pairs and write the clusters.

    Writes `out_path` (schema `CLUSTERS`, rows sorted by id) and returns the stage report.
    """
    bands, rows_per_band = lsh_params(settings)
    side, signature = _read_sides([Path(s) for s, _ in shards], settings)
    # Rows are numbered by the rank of their id from here on; `signature` stays in file order.
    by_id = pc.sort_indices(side, [("id", "ascending")])
    side = side.take(by_id)
    sig_row = by_id.to_numpy()
    ids = side.column("id").combine_chunks()
    n = len(ids)
    if n > 1:
        repeated = pc.equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
        if repeated.any():
            i = int(np.flatnonzero(repeated)[0])
            raise ValueError(f"row ids must be unique, but {ids[i].as_py()!r} appears more than once")
    synthetic = side.column("synthetic").to_numpy()
    hashes = side.column("text_hash").to_numpy()
    shard_of = side.column("shard").to_numpy()
    row_of = side.column("row").to_numpy()
    side_rows = np.bincount(shard_of, minlength=len(shards))

    # Exact duplicates share a group, numbered in the order of its lowest id; `rep` is that row.
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    by_first = np.argsort(first)
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    group = rank[inverse.ravel()]
    rep = first[by_first]

    # LSH over one signature per distinct text, so copies of one text cost nothing here;
    # texts without shingles have the empty signature and are left to the exact match.
    # (A signature's minimum is EMPTY_SLOT only when every slot is.)
    with_shingles = np.flatnonzero(signature.min(axis=1, initial=EMPTY_SLOT)[sig_row[rep]] != EMPTY_SLOT)
    pairs = with_shingles[candidate_pairs(signature, bands, rows_per_band, subset=sig_row[rep[with_shingles]])]

    # Read back only the texts of candidate pairs, one shard at a time.
    fingerprints: dict[int, np.ndarray] = {}
    wanted = np.unique(pairs)
    wanted_shard = shard_of[rep[wanted]]
    for s in np.unique(wanted_shard):
        groups = wanted[wanted_shard == s]
        texts = _read_texts(Path(shards[s][1]), text_column, row_of[rep[groups]], int(side_rows[s]))
        for g, text in zip(groups.tolist(), texts):
            fingerprints[g] = _fingerprint(text, settings.ngram)

    uf = UnionFind(len(rep))
    verified = []
    for a, b in pairs.tolist():
        similarity = jaccard(fingerprints[a], fingerprints[b])
        if similarity >= settings.threshold:
            uf.union(a, b)
            verified.append((similarity, a, b))

    # Keep the row with the smallest (synthetic, id rank) in each cluster.
    component = np.fromiter((uf.find(g) for g in range(len(rep))), dtype=np.int64, count=len(rep))[group]
    priority = synthetic.astype(np.int64) * n + np.arange(n)
    best = np.full(len(rep), np.iinfo(np.int64).max)
    np.minimum.at(best, component, priority)
    kept = best[component] % max(n, 1)
    keep = priority == best[component]
    exact = ~keep & (hashes == hashes[kept])
    near = ~keep & ~exact
    reason = np.where(exact, EXACT, np.where(near, NEAR, None))
    table = pa.Table.from_arrays(
        [ids, ids.take(pa.array(kept)), pa.array(keep), pa.array(reason, pa.string())], schema=CLUSTERS
    )
    write_table(table, out_path)

    sizes = np.bincount(component, minlength=len(rep))
    report = StageReport(STAGE, rows_in=n, rows_out=int(keep.sum()))
    report.dropped = Counter({EXACT: int(exact.sum()), NEAR: int(near.sum())})
    report.extra = {
        "bands": bands,
        "rows_per_band": rows_per_band,
        "candidate_pairs": len(pairs),
        "verified_pairs": len(verified),
        "rejected_pairs": len(pairs) - len(verified),
        "clusters": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max(initial=0)),
        # Lowest similarity first: the borderline pairs say most about the threshold.
        "examples": [
            {"a": ids[int(rep[a])].as_py(), "b": ids[int(rep[b])].as_py(), "jaccard": round(j, 4)}
            for j, a, b in heapq.nsmallest(5, verified)
        ],
    }
    return report.to_dict()


# --- one file (the `corpusmill dedup` command) ----------------------------------------


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
    schema = source.schema_arrow
    _require_columns(in_path, schema.names, [text_column])
    with tempfile.TemporaryDirectory(prefix="corpusmill-dedup-") as tmp:
        side_path, clusters_path = Path(tmp) / "signatures.parquet", Path(tmp) / "clusters.parquet"
        write_table(_side_table(in_path, settings, text_column, "id" not in schema.names), side_path)
        ids = read_table(side_path, columns=["id"]).column("id")
        report = cluster([(side_path, in_path)], clusters_path, settings, text_column)
        clusters = read_table(clusters_path)

    # The clusters are sorted by id, the same sort as here; put them back in row order.
    by_id = pc.sort_indices(ids).to_numpy()
    position = np.empty(len(ids), dtype=np.int64)
    position[by_id] = np.arange(len(ids))
    added = {CLUSTER_ID: clusters.column("cluster_id").take(position), KEEP: clusters.column("keep").take(position)}

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
    return report
