"""The dedup stage's three phases, their side files and their `Stage` declarations.

1. `signatures` (one task per shard) writes a compact side file: each row's position, id,
   synthetic flag, the hash of its normalised text (exact duplicates), its number of
   shingles, its MinHash signature and one 64-bit key per LSH band.
2. `band_pairs` (one task per band) reads one band-key column and the text hashes of every
   side file (20 bytes a row), and writes the pairs of distinct texts whose keys collide.
3. `cluster` (one task) reads the small columns and the pair files, verifies every
   candidate pair by exact Jaccard (texts are read back shard by shard, under a memory
   budget), joins and keeps rows as `clusters` decides, and writes one row per input row:
   id, cluster_id, keep, reason. Split assignment then filters each shard by it.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmill.tasks.dedup.clusters import EXACT, NEAR, DistinctTexts, Kept, join, keep_first_original, verify
from corpusmill.tasks.dedup.errors import InvalidIds, MissingColumn, StaleWorkFiles
from corpusmill.tasks.dedup.lsh import SCHEME, SHINGLE_HASH, band_keys, bucket_pairs, lsh_params, minhash, s_curve
from corpusmill.tasks.dedup.text import features, shingle_sets
from corpusmill.tasks.recipe import Dedup
from corpusmill.tasks.shards import StageReport, read_table, write_table
from corpusmill.tasks.stage import Stage

NAME = "dedup"
VERSION = "2"  # of the signature side files and of every dedup phase
META_KEY = b"corpusmill.dedup"
READ_BATCH = 10_000  # rows per record batch when streaming a file
VERIFY_BUDGET_BYTES = 64 << 20  # shingle sets held at once while verifying candidate pairs

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
PAIRS = pa.schema([pa.field("a", pa.uint64(), nullable=False), pa.field("b", pa.uint64(), nullable=False)])


# --- the signature side file ---------------------------------------------------------------


def _signature_settings(settings: Dedup) -> dict:
    # What changes a side file; the threshold enters only through the banding it picks.
    bands, rows = lsh_params(settings)
    return {"version": VERSION, "scheme": SCHEME, "shingle_hash": SHINGLE_HASH, "num_perm": settings.num_perm,
            "seed": settings.seed, "ngram": settings.ngram, "bands": bands, "rows_per_band": rows}


def band_column(band: int) -> str:
    return f"band_{band:03d}"


def side_schema(settings: Dedup) -> pa.Schema:
    """Schema of a signature side file; its metadata records the settings that made it."""
    bands, _ = lsh_params(settings)
    return pa.schema(
        [
            pa.field("row", pa.int32(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("synthetic", pa.bool_(), nullable=False),
            pa.field("text_hash", pa.uint64(), nullable=False),
            pa.field("shingles", pa.int32(), nullable=False),
            pa.field("signature", pa.list_(pa.uint32(), settings.num_perm), nullable=False),
        ]
        + [pa.field(band_column(k), pa.uint64(), nullable=False) for k in range(bands)],
        metadata={META_KEY: json.dumps(_signature_settings(settings), sort_keys=True).encode()},
    )


def require_columns(path: Path, schema: pa.Schema, wanted: list[str], text_column: str | None = None) -> None:
    """Every `wanted` column is there, and `text_column` (when given) holds strings."""
    for column in wanted:
        if column not in schema.names:
            fix = ("every row needs an id; `corpusmill dedup` numbers the rows of a file without one" if column == "id"
                   else "name the column that holds the text (text_column, or `corpusmill dedup --text-column NAME`)")
            raise MissingColumn(f"{path} has no column {column!r} (its columns: {', '.join(schema.names)}); {fix}")
    if text_column is not None:
        kind = schema.field(text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise MissingColumn(f"{path}: column {text_column!r} holds {kind}, not text; name a string column "
                                f"(text_column, or `corpusmill dedup --text-column NAME`)")


def _sign(ids: pa.Array, texts: pa.Array, synthetic: np.ndarray, first_row: int, settings: Dedup) -> pa.Table:
    n = len(texts)
    hashes, shingle, counts = features(texts, settings.ngram)
    signature = minhash(shingle, counts, settings.num_perm, settings.seed)
    bands, rows = lsh_params(settings)
    keys = band_keys(signature, bands, rows)
    columns = [
        pa.array(np.arange(first_row, first_row + n, dtype=np.int32)),
        ids,
        pa.array(synthetic, pa.bool_()),
        pa.array(hashes),
        pa.array(counts.astype(np.int32)),
        pa.FixedSizeListArray.from_arrays(pa.array(signature.ravel()), settings.num_perm),
    ] + [pa.array(keys[:, k]) for k in range(bands)]
    return pa.Table.from_arrays(columns, schema=side_schema(settings))


def side_table(path: Path, settings: Dedup, text_column: str, positional_ids: bool) -> pa.Table:
    """Signature rows for a Parquet file, streamed in record batches.

    With `positional_ids`, ids are the zero-padded row positions (so the lowest id is the
    first occurrence); otherwise the file's `id` column is used.
    """
    source = pq.ParquetFile(path)
    names = source.schema_arrow.names
    require_columns(path, source.schema_arrow, [text_column] if positional_ids else ["id", text_column], text_column)
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
                row = start + int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
                raise InvalidIds(f"{path}: column 'id' is null at row {row}; every row needs an id")
        if "synthetic" in columns:
            synthetic = batch.column("synthetic").cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
        else:
            synthetic = np.zeros(n, dtype=bool)
        parts.append(_sign(ids, batch.column(text_column), synthetic, start, settings))
        start += n
    return pa.concat_tables(parts) if parts else side_schema(settings).empty_table()


def _check_side(path: Path, settings: Dedup) -> None:
    expected = _signature_settings(settings)
    meta = (pq.read_schema(path).metadata or {}).get(META_KEY)
    found = json.loads(meta) if meta else None
    if found != expected:
        raise StaleWorkFiles(f"{path} holds signatures made with {found}, but these settings need {expected}; "
                             "recompute it with signatures() (or delete it and rerun the dedup stage)")


# --- phase 1: signatures and band keys, per shard --------------------------------------------


def signatures(in_path: Path, out_path: Path, settings: Dedup, text_column: str = "text") -> dict:
    """Write the signature side file of one shard (columns of `side_schema`)."""
    side = side_table(Path(in_path), settings, text_column, positional_ids=False)
    write_table(side, out_path)
    return {"rows": side.num_rows}


# --- phase 2: one task per band --------------------------------------------------------------


def band_pairs(side_paths: list[Path], band: int, out_path: Path, settings: Dedup) -> dict:
    """Write the candidate pairs of one LSH band: pairs of distinct texts (by text hash,
    smaller first, sorted, unique) whose band keys are equal. Reads 20 bytes a row; texts
    without shingles take no part, and each distinct text takes part once."""
    keys, hashes = [], []
    for path in side_paths:
        _check_side(Path(path), settings)
        table = pq.read_table(path, columns=["text_hash", "shingles", band_column(band)])
        live = table.column("shingles").to_numpy() > 0
        keys.append(table.column(band_column(band)).to_numpy()[live])
        hashes.append(table.column("text_hash").to_numpy()[live])
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    text = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    text, first = np.unique(text, return_index=True)
    key = key[first]
    i, j = bucket_pairs(key, order_key=text)
    a, b = np.minimum(text[i], text[j]), np.maximum(text[i], text[j])
    if len(a):
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
        new = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
        a, b = a[new], b[new]
    write_table(pa.Table.from_arrays([pa.array(a, pa.uint64()), pa.array(b, pa.uint64())], schema=PAIRS), out_path)
    return {"band": band, "pairs": len(a)}


# --- phase 3: verify, cluster, keep ------------------------------------------------------------


def cluster(shards: list[tuple[Path, Path]], out_path: Path, settings: Dedup, text_column: str = "text",
            pair_paths: list[Path] | None = None, memory_budget: int = VERIFY_BUDGET_BYTES) -> dict:
    """Cluster all rows of the (signature file, text shard) pairs and write the clusters.

    `pair_paths` are the outputs of `band_pairs`, one per band; without them the bands are
    computed here, one after another. Writes `out_path` (schema `CLUSTERS`, rows sorted by
    id) and returns the stage report.
    """
    shards = [(Path(s), Path(t)) for s, t in shards]
    if pair_paths is None:
        return _cluster_with_own_bands(shards, out_path, settings, text_column, memory_budget)
    rows = _read_rows(shards, settings)
    texts = DistinctTexts.of(rows.text_hash)
    pairs = _read_pairs(pair_paths, texts)
    side_rows = np.bincount(rows.shard, minlength=len(shards))
    first = texts.first_row  # each distinct text is read from its lowest-id row

    def read_sets(shard: int, members: np.ndarray) -> list[np.ndarray]:
        positions = rows.row[first[members]]
        return _read_shingle_sets(shards[shard][1], text_column, positions, int(side_rows[shard]), settings.ngram)

    similarity = verify(pairs, rows.shard[first], rows.shingles[first], len(shards), read_sets, memory_budget)
    verified = np.flatnonzero(similarity >= settings.threshold)
    cluster_of_text, refused = join(pairs, similarity, verified, len(texts), settings.max_cluster_size)
    cluster_of_row = cluster_of_text[texts.of_row]
    kept = keep_first_original(cluster_of_row, rows.synthetic, rows.text_hash)
    table = pa.Table.from_arrays(
        [rows.ids, rows.ids.take(pa.array(kept.row)), pa.array(kept.keep), pa.array(kept.reasons(), pa.string())],
        schema=CLUSTERS,
    )
    write_table(table, out_path)
    return _report(settings, rows.ids, texts, pairs, similarity, refused, cluster_of_row, kept)


def _cluster_with_own_bands(shards: list[tuple[Path, Path]], out_path: Path, settings: Dedup, text_column: str,
                            memory_budget: int) -> dict:
    bands, _ = lsh_params(settings)
    with tempfile.TemporaryDirectory(prefix="corpusmill-bands-") as tmp:
        paths = [Path(tmp) / f"band-{k:03d}.parquet" for k in range(bands)]
        for k, path in enumerate(paths):
            band_pairs([s for s, _ in shards], k, path, settings)
        return cluster(shards, out_path, settings, text_column, paths, memory_budget)


@dataclass(frozen=True)
class _Rows:
    """The small columns of every side file, rows sorted (and from here on numbered) by id."""

    ids: pa.Array
    synthetic: np.ndarray
    text_hash: np.ndarray
    shard: np.ndarray  # index of the (side file, text shard) pair the row is in
    row: np.ndarray  # its position in that shard
    shingles: np.ndarray  # how many shingles its text has


def _read_rows(shards: list[tuple[Path, Path]], settings: Dedup) -> _Rows:
    small = []
    for k, (path, _) in enumerate(shards):
        _check_side(path, settings)
        table = read_table(path, columns=["row", "id", "synthetic", "text_hash", "shingles"])
        small.append(table.append_column("shard", pa.array(np.full(table.num_rows, k, dtype=np.int32))))
    if small:
        side = pa.concat_tables(small)
    else:
        side = pa.schema([pa.field("row", pa.int32()), pa.field("id", pa.string()), pa.field("synthetic", pa.bool_()),
                          pa.field("text_hash", pa.uint64()), pa.field("shingles", pa.int32()),
                          pa.field("shard", pa.int32())]).empty_table()
    side = side.take(pc.sort_indices(side, [("id", "ascending")]))
    rows = _Rows(side.column("id").combine_chunks(), *(side.column(c).to_numpy() for c in
                                                        ("synthetic", "text_hash", "shard", "row", "shingles")))
    _require_unique_ids(rows, shards)
    return rows


def _require_unique_ids(rows: _Rows, shards: list[tuple[Path, Path]]) -> None:
    ids = rows.ids
    if len(ids) < 2:
        return
    repeated = np.flatnonzero(pc.equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False))
    if repeated.size:
        where = [f"{shards[rows.shard[i]][1]} row {rows.row[i]}" for i in (repeated[0], repeated[0] + 1)]
        raise InvalidIds(f"row ids must be unique, but {ids[int(repeated[0])].as_py()!r} appears more than once "
                         f"({where[0]} and {where[1]}); give every row its own id")


def _read_pairs(pair_paths: list[Path], texts: DistinctTexts) -> np.ndarray:
    """Candidate pairs from every band file as (smaller, larger) text group numbers; sorted, unique."""
    found = [np.zeros((0, 2), np.int64)]
    for path in pair_paths:
        table = pq.read_table(path)
        a, b = (texts.lookup(table.column(c).to_numpy()) for c in ("a", "b"))
        if (a < 0).any() or (b < 0).any():
            raise StaleWorkFiles(f"{path} names texts that the signature files do not hold; "
                                 "recompute the band pairs from these signature files")
        found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def _read_shingle_sets(path: Path, text_column: str, rows: np.ndarray, expected_rows: int,
                       ngram: int) -> list[np.ndarray]:
    """Sorted unique 64-bit shingle hashes of the texts at `rows` of one shard."""
    require_columns(path, pq.read_schema(path), [text_column])
    column = read_table(path, columns=[text_column]).column(0)
    if len(column) != expected_rows:
        raise StaleWorkFiles(f"{path} has {len(column)} rows but its signature file has {expected_rows}; "
                             "the pair does not match: recompute the signatures")
    return shingle_sets(column.take(pa.array(rows)), ngram)


def _report(settings: Dedup, ids: pa.Array, texts: DistinctTexts, pairs: np.ndarray, similarity: np.ndarray,
            refused: int, cluster_of_row: np.ndarray, kept: Kept) -> dict:
    ok = similarity >= settings.threshold
    sizes = np.bincount(cluster_of_row, minlength=len(texts))
    sizes = sizes[sizes > 0]

    def example(k: int) -> dict:
        a, b = (ids[int(texts.first_row[g])].as_py() for g in pairs[k])
        return {"a": a, "b": b, "jaccard": round(float(similarity[k]), 4)}

    report = StageReport(NAME, rows_in=len(ids), rows_out=int(kept.keep.sum()))
    report.dropped = Counter({EXACT: int(kept.exact.sum()), NEAR: int(kept.near.sum())})
    curve = s_curve(settings)
    report.extra = {
        "bands": curve["bands"],
        "rows_per_band": curve["rows_per_band"],
        "s_curve": curve,
        "distinct_texts": len(texts),
        "candidate_pairs": len(pairs),
        "verified_pairs": int(ok.sum()),
        "rejected_pairs": int((~ok).sum()),
        "refused_by_cap": refused,
        "max_cluster_size": settings.max_cluster_size,
        "clusters": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max(initial=0)),
        "cluster_sizes": _histogram(sizes),
        # Lowest similarity first: the borderline pairs say most about the threshold.
        "examples": [example(k) for k in sorted(np.flatnonzero(ok).tolist(), key=lambda k: (similarity[k], k))[:5]],
        "rejected_examples": [example(k) for k in sorted(np.flatnonzero(~ok).tolist(),
                                                         key=lambda k: (-similarity[k], k))[:3]],
    }
    return report.to_dict()


def _histogram(sizes: np.ndarray) -> dict[str, int]:
    """Clusters by size (rows), in power-of-two bins: 1, 2, 3-4, 5-8, ..."""
    out: dict[str, int] = {}
    top = 1
    while sizes.size:
        low = top // 2 + 1 if top > 1 else 1
        count = int(((sizes >= low) & (sizes <= top)).sum())
        if count:
            out[str(low) if low == top else f"{low}-{top}"] = count
        if top >= sizes.max():
            break
        top *= 2
    return out


def cluster_shards(signature_paths: list[Path], text_paths: list[Path], pair_paths: list[Path], out_path: Path,
                   settings: Dedup) -> dict:
    """`cluster` over the flow's parallel lists of signature files and text shards."""
    return cluster(list(zip(signature_paths, text_paths)), out_path, settings, pair_paths=pair_paths)


SIGNATURES = Stage("signatures", VERSION, signatures, inputs=("in_path",), label="{in_path.name}")
BANDS = Stage("bands", VERSION, band_pairs, inputs=("side_paths",), label="{band}")
CLUSTER = Stage("cluster", VERSION, cluster_shards, inputs=("signature_paths", "text_paths", "pair_paths"))
