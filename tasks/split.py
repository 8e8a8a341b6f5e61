"""Split stage: lineage-safe train/validation/test assignment and the synthetic cap.

A row's *lineage* joins it with its near-duplicate cluster and, for a synthetic row, with
its parent (and so with the parent's cluster). Every lineage goes to one split, chosen
by a hash of its root, so no document, its paraphrase or its near duplicate can sit in
two splits. The root is the lowest id in the lineage: a pure function of the rows, not
of shard boundaries or run order.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from corpusmill.tasks import dedup, schema
from corpusmill.tasks.dedup import StaleWorkFiles, UnionFind
from corpusmill.tasks.recipe import Dedup, Splits
from corpusmill.tasks.stage import Stage
from corpusmill.tasks.shards import ParquetSink, StageReport, dropped_table, iter_batches, read_table, write_table

NAME = "split"

ASSIGNMENTS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("cluster_id", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("reason", pa.string()),
    ]
)


def unit_interval(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from a string, the same on every machine and run."""
    return xxhash.xxh3_64_intdigest(f"{salt}\x1f{key}".encode()) / 2.0**64


def split_of(root: str, fractions: dict[str, float]) -> str:
    """The split whose cumulative share covers this root's hash."""
    u, edge = unit_interval(root, "split"), 0.0
    names = [s for s in schema.SPLITS if fractions[s] > 0]
    for name in names:
        edge += fractions[name]
        if u < edge:
            return name
    return names[-1]  # u within rounding of 1.0


def lineage_roots(ids: pa.Array, cluster_ids: pa.Array, parent_ids: pa.Array) -> list[str]:
    """For each row, the lowest id among everything it is linked to by cluster or parentage."""
    order = pc.sort_indices(ids)  # dense index = rank of id, so "smallest member" = lowest id
    sorted_ids = ids.take(order)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order.to_numpy()] = np.arange(len(ids))
    lineages = UnionFind(len(ids))
    for links in (cluster_ids, parent_ids):
        # -1 where the link is null (originals have no parent) or points outside the rows.
        target = pc.fill_null(pc.index_in(links, value_set=sorted_ids), -1).to_numpy()
        for row in np.flatnonzero(target >= 0):
            lineages.union(int(rank[row]), int(target[row]))
    label = lineages.labels()
    lowest = np.full(len(ids), len(ids), dtype=np.int64)
    np.minimum.at(lowest, label, np.arange(len(ids)))
    return sorted_ids.take(pa.array(lowest[label][rank])).to_pylist()


def cap_synthetic(synthetic: np.ndarray, ids: list[str], max_share: float, seed: int) -> np.ndarray:
    """Mask of synthetic rows to drop so that synthetic / all <= max_share.

    Which rows stay is decided by a seeded hash of the id, so the choice is deterministic
    and independent of row order.
    """
    n_original = int((~synthetic).sum())
    allowed = math.floor(max_share * n_original / (1.0 - max_share) + 1e-9)
    candidates = np.flatnonzero(synthetic)
    drop = np.zeros(len(ids), dtype=bool)
    if len(candidates) > allowed:
        ranked = sorted(candidates, key=lambda i: (unit_interval(ids[i], f"cap{seed}"), ids[i]))
        drop[ranked[allowed:]] = True
    return drop


# --- the previous release: held-out rows stay held out -----------------------------------

# Where a lineage linked to several splits of the previous release goes: held-out first.
PRECEDENCE = ("test", "validation", "train")


@dataclass(frozen=True)
class Previous:
    """What `assign` needs to keep a new version's splits consistent with a previous release.

    `path` is the side file written by `prepare_previous` (named by the previous release's
    fingerprint and the signature settings, so it is content-addressed); `signature_paths`
    are this build's MinHash side files; `dedup` the recipe's dedup settings as a dict.
    """

    path: str
    signature_paths: tuple[str, ...]
    dedup: dict
    version: str = ""


def prepare_previous(release_dir: str | Path, out_dir: Path, settings: Dedup) -> Path:
    """One side file of the previous release's rows: id, cluster_id, parent_id, split,
    text_hash and MinHash signature under this recipe's settings; reused while it exists."""
    from fsspec.core import url_to_fs

    from corpusmill.tasks.publish import is_remote, read_manifest

    manifest = read_manifest(release_dir)
    # named by what its content depends on: the previous data, the dedup settings and code version
    key = hashlib.sha256(json.dumps([manifest["fingerprint"], settings.model_dump(mode="json"),
                                     dedup.VERSION], sort_keys=True).encode()).hexdigest()[:20]
    out = Path(out_dir) / f"previous-{key}.parquet"
    if out.is_file():
        return out
    parts = []
    remote = is_remote(release_dir)
    for f in sorted(manifest["files"], key=lambda f: f["path"]):
        data_path = Path(release_dir) / f["path"] if not remote else Path(out_dir) / f".data-{Path(f['path']).name}"
        if remote:  # an s3:// (or other fsspec) release: fetch the file, then work locally
            fs, root = url_to_fs(str(release_dir))
            data_path.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root.rstrip('/')}/{f['path']}", str(data_path))
        side_path = Path(out_dir) / f".signatures-{Path(f['path']).name}"
        dedup.signatures(data_path, side_path, settings)
        side = read_table(side_path, ["id", "text_hash", "signature"])
        rows = read_table(data_path, ["id", "cluster_id", "parent_id"])
        if not side.column("id").equals(rows.column("id")):
            raise RuntimeError(f"signatures of {data_path} are not in row order")
        parts.append(pa.table({
            "id": rows.column("id"), "cluster_id": rows.column("cluster_id"), "parent_id": rows.column("parent_id"),
            "split": pa.array([f["split"]] * rows.num_rows, pa.string()),
            "text_hash": side.column("text_hash"), "signature": side.column("signature")}))
        side_path.unlink()
        if remote:
            data_path.unlink()
    if parts:
        write_table(pa.concat_tables(parts).replace_schema_metadata(None), out)
    else:  # a previous release without rows: nothing to match
        write_table(pa.table({"id": pa.array([], pa.string())}), out)
    return out


def previous_links(ids: list[str], cluster_ids: list[str], parent_ids: list, previous: Previous) -> tuple[list[set], dict]:
    """For each new row, the splits of the previous release it is linked to: by id (its id,
    cluster or parent is an id, cluster or parent of a previous row), by identical text, or as
    a near duplicate (MinHash-estimated Jaccard >= the dedup threshold) of a previous row."""
    prev = read_table(previous.path)
    links: list[set] = [set() for _ in ids]
    stats = {"by_id": 0, "by_text": 0, "near_duplicate": 0}
    if "split" not in prev.column_names or prev.num_rows == 0:
        return links, stats
    prev_split = prev.column("split").to_pylist()
    by_key: dict[str, set] = {}
    for column in ("id", "cluster_id", "parent_id"):
        for key, split in zip(prev.column(column).to_pylist(), prev_split):
            if key is not None:
                by_key.setdefault(key, set()).add(split)
    for i, keys in enumerate(zip(ids, cluster_ids, parent_ids)):
        for key in keys:
            if key is not None and key in by_key:
                links[i] |= by_key[key]
        stats["by_id"] += bool(links[i])

    # text and near-duplicate links, through this build's signature side files
    settings = Dedup(**previous.dedup)
    sides = [read_table(p, ["id", "text_hash", "signature"]) for p in previous.signature_paths]
    if not sides:
        return links, stats
    side = pa.concat_tables(sides)
    row_of = {row_id: i for i, row_id in enumerate(ids)}
    new_rows = np.array([row_of.get(x, -1) for x in side.column("id").to_pylist()], dtype=np.int64)
    by_hash: dict[int, set] = {}
    for h, split in zip(prev.column("text_hash").to_pylist(), prev_split):
        by_hash.setdefault(h, set()).add(split)
    for r, h in zip(new_rows, side.column("text_hash").to_pylist()):
        if r >= 0 and h in by_hash and not by_hash[h] <= links[r]:
            links[r] |= by_hash[h]
            stats["by_text"] += 1
    n_new = side.num_rows
    signature = np.concatenate([
        side.column("signature").combine_chunks().flatten().to_numpy().reshape(n_new, -1),
        prev.column("signature").combine_chunks().flatten().to_numpy().reshape(prev.num_rows, -1)])
    bands, rows_per_band = dedup.lsh_params(settings)
    pairs = dedup.candidate_pairs(signature, bands, rows_per_band)
    cross = pairs[(pairs[:, 0] < n_new) & (pairs[:, 1] >= n_new)]
    if len(cross):
        similarity = (signature[cross[:, 0]] == signature[cross[:, 1]]).mean(axis=1)
        for (a, b) in cross[similarity >= settings.threshold]:
            r = new_rows[a]
            if r >= 0 and prev_split[b - n_new] not in links[r]:
                links[r].add(prev_split[b - n_new])
                stats["near_duplicate"] += 1
    return links, stats


def pinned_splits(roots: list[str], links: list[set]) -> dict[str, str]:
    """Lineage root -> the split it must keep: test or validation when any member was held
    out in the previous release (never train), else train when a member was in train."""
    linked: dict[str, set] = {}
    for root, splits in zip(roots, links):
        if splits:
            linked.setdefault(root, set()).update(splits)
    return {root: next(s for s in PRECEDENCE if s in splits) for root, splits in linked.items()}


def assignment_paths(out_dir: Path, shards: int) -> list[Path]:
    """Where `assign` writes each shard's assignments, in the order of its `shard_paths`
    (`out_dir` a Path, or the UPath of a URL: joined, never converted)."""
    return [out_dir / f"assignments-{i:05d}.parquet" for i in range(shards)]


def assign(clusters_path: Path, shard_paths: list[Path], out_dir: Path, splits: Splits,
           max_synthetic_share: float | None, seed: int, previous: Previous | None = None) -> dict:
    """Assign every row kept by dedup to a split and apply the per-split synthetic cap.

    `shard_paths` are the tokenized and augment shards; only their small id, synthetic and
    parent_id columns are read. Writes, for each shard, one assignment row per row of the
    shard in its order (`assignment_paths`), so finalizing a shard reads only its own; rows
    dropped by dedup keep their reason and get no split.
    """
    clusters = read_table(clusters_path).sort_by("id")
    rows = pa.concat_tables(read_table(p, ["id", "synthetic", "parent_id"]) for p in shard_paths)
    shard_rows = [pq.read_metadata(p).num_rows for p in shard_paths]
    by_id = pc.sort_indices(rows, [("id", "ascending")])
    rows = rows.take(by_id)
    if not rows.column("id").equals(clusters.column("id")):
        raise StaleWorkFiles(f"{clusters_path} does not hold the row ids of the {len(shard_paths)} shards given with "
                             "it (its clusters were made from other shards); rerun the dedup stage")

    ids = rows.column("id").combine_chunks()
    roots = lineage_roots(ids, clusters.column("cluster_id").combine_chunks(), rows.column("parent_id").combine_chunks())
    fractions = splits.fractions()
    pinned: dict[str, str] = {}
    if previous is not None:
        links, link_stats = previous_links(ids.to_pylist(), clusters.column("cluster_id").to_pylist(),
                                           rows.column("parent_id").to_pylist(), previous)
        pinned = pinned_splits(roots, links)
    split = np.array([pinned.get(r) or split_of(r, fractions) for r in roots], dtype=object)
    keep = clusters.column("keep").to_numpy(zero_copy_only=False)
    reason = np.array(clusters.column("reason").to_pylist(), dtype=object)
    split[~keep] = None

    report = StageReport(NAME, rows_in=int(keep.sum()))
    synthetic = rows.column("synthetic").to_numpy(zero_copy_only=False)
    id_list = ids.to_pylist()
    if max_synthetic_share is not None:
        for name in schema.SPLITS:
            members = np.flatnonzero(split == name)
            drop = members[cap_synthetic(synthetic[members], [id_list[i] for i in members], max_synthetic_share, seed)]
            split[drop], reason[drop] = None, "synthetic_cap"
            report.drop("synthetic_cap", len(drop))

    table = pa.table(
        {"id": ids, "cluster_id": clusters.column("cluster_id"), "split": pa.array(split, pa.string()),
         "reason": pa.array(reason, pa.string())},
        schema=ASSIGNMENTS,
    )
    in_shard_order = np.empty(len(ids), dtype=np.int64)
    in_shard_order[by_id.to_numpy()] = np.arange(len(ids))
    table = table.take(pa.array(in_shard_order))
    starts = np.cumsum([0, *shard_rows])
    for path, start, length in zip(assignment_paths(Path(out_dir), len(shard_paths)), starts, shard_rows):
        write_table(table.slice(int(start), length), path)
    report.rows_out = int(pc.sum(pc.is_valid(table.column("split"))).as_py() or 0)  # None when no row is left
    report.extra["rows"] = {
        name: {"rows": int((split == name).sum()), "synthetic": int(((split == name) & synthetic).sum())}
        for name in schema.SPLITS
    }
    if previous is not None:
        pinned_rows = np.array([r in pinned for r in roots]) & (split != None)  # noqa: E711 (object array)
        report.extra["previous"] = {
            "version": previous.version, "links": link_stats, "lineages_pinned": len(pinned),
            "rows_pinned": {name: int((pinned_rows & (split == name)).sum()) for name in schema.SPLITS},
        }
    return report.to_dict()


def finalize(shard_path: Path, assignments_path: Path, out_path: Path, quarantine_path: Path) -> dict:
    """Attach `cluster_id` and `split` to one shard's rows, in order; rows without a split
    (duplicates, over the synthetic cap) go to the quarantine with their reason. The shard is
    read a row group at a time beside its own assignments, which are in the shard's row order."""
    assignments = read_table(assignments_path)
    kept = dropped = None
    rows = n_dropped = offset = 0
    try:
        for batch in iter_batches(shard_path):
            matched = assignments.slice(offset, batch.num_rows)
            offset += batch.num_rows
            if not matched.column("id").equals(batch.column("id")):
                raise StaleWorkFiles(f"{assignments_path} does not hold the ids of {shard_path} in its row order (the "
                                     "assignments were made from another shard); rerun the split stage")
            table, rejects = _attach(batch, matched)
            if table.num_rows:
                kept = kept or ParquetSink(out_path, table.schema)
                kept.write(table)
                rows += table.num_rows
            if rejects.num_rows:
                dropped = dropped or ParquetSink(quarantine_path, schema.DROPPED)
                dropped.write(rejects)
                n_dropped += rejects.num_rows
        if kept is None:  # no row kept: an empty file, written as for any empty table
            write_table(_attach(pq.read_schema(shard_path).empty_table(), assignments.slice(0, 0))[0], out_path)
        else:
            kept.close()
        if dropped is None:
            Path(quarantine_path).unlink(missing_ok=True)
        else:
            dropped.close()
    except BaseException:
        for sink in (kept, dropped):
            if sink is not None:
                sink.abort()
        raise
    return {"rows": rows, "dropped": n_dropped}


def _attach(batch: pa.Table, matched: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(the batch's assigned rows with `cluster_id` and `split`, its quarantine rows);
    `matched` holds the batch's assignments, row for row."""
    table = batch.append_column(schema.RELEASE.field("cluster_id"), matched.column("cluster_id"))
    table = table.append_column(pa.field("split", pa.string()), matched.column("split"))
    assigned = pc.is_valid(table.column("split"))
    unassigned = table.filter(pc.invert(assigned))
    reasons = matched.filter(pc.invert(assigned)).column("reason").to_pylist()
    rows = unassigned.select(["id", "source", "text", "cluster_id"]).to_pylist()
    rejects = dropped_table([
        {"id": r["id"], "source": r["source"], "text": r["text"], "stage": "split" if reason == "synthetic_cap" else "dedup",
         "reason": reason, "detail": f"cluster {r['cluster_id']}"}
        for r, reason in zip(rows, reasons)])
    return table.filter(assigned), rejects


ASSIGN = Stage("assign-splits", "2", assign, inputs=("clusters_path", "shard_paths"))
FINALIZE = Stage("finalize", "2", finalize, inputs=("shard_path", "assignments_path"), label="{shard_path.name}")
