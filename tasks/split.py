"""Split stage: lineage-safe train/validation/test assignment and the synthetic cap.

A row's *lineage* joins it with its near-duplicate cluster and, for a synthetic row, with
its parent (and so with the parent's cluster). Every lineage goes to one split, chosen
by a hash of its root, so no document, its paraphrase or its near duplicate can sit in
two splits. The root is the lowest id in the lineage: a pure function of the rows, not
of shard boundaries or run order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from tasks import schema
from tasks.recipe import Splits
from tasks.shards import StageReport, dropped_table, read_table, write_table

STAGE = "split"

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


class _UnionFind:
    """Union-find over dense integers; the root of a set is its smallest member."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def lineage_roots(ids: pa.Array, cluster_ids: pa.Array, parent_ids: pa.Array) -> list[str]:
    """For each row, the lowest id among everything it is linked to by cluster or parentage."""
    order = pc.sort_indices(ids)  # dense index = rank of id, so "smallest member" = lowest id
    sorted_ids = ids.take(order)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order.to_numpy()] = np.arange(len(ids))
    uf = _UnionFind(len(ids))
    for links in (cluster_ids, parent_ids):
        # -1 where the link is null (originals have no parent) or points outside the rows.
        target = pc.fill_null(pc.index_in(links, value_set=sorted_ids), -1).to_numpy()
        for row in np.flatnonzero(target >= 0):
            uf.union(int(rank[row]), int(target[row]))
    return [sorted_ids[uf.find(int(r))].as_py() for r in rank]


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


def assign(clusters_path: Path, shard_paths: list[Path], out_path: Path, splits: Splits,
           max_synthetic_share: float | None, seed: int) -> dict:
    """Assign every row kept by dedup to a split and apply the per-split synthetic cap.

    `shard_paths` are the tokenized and augment shards; only their small id, synthetic and
    parent_id columns are read. Writes one assignment row per input row (rows dropped by
    dedup keep their reason and get no split).
    """
    clusters = read_table(clusters_path).sort_by("id")
    rows = pa.concat_tables(read_table(p, ["id", "synthetic", "parent_id"]) for p in shard_paths).sort_by("id")
    if not rows.column("id").equals(clusters.column("id")):
        raise RuntimeError("dedup clusters and tokenized shards disagree on row ids; rerun the dedup stage")

    ids = rows.column("id").combine_chunks()
    roots = lineage_roots(ids, clusters.column("cluster_id").combine_chunks(), rows.column("parent_id").combine_chunks())
    fractions = splits.fractions()
    split = np.array([split_of(r, fractions) for r in roots], dtype=object)
    keep = clusters.column("keep").to_numpy(zero_copy_only=False)
    reason = np.array(clusters.column("reason").to_pylist(), dtype=object)
    split[~keep] = None

    report = StageReport(STAGE, rows_in=int(keep.sum()))
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
    write_table(table, out_path)
    report.rows_out = int(pc.sum(pc.is_valid(table.column("split"))).as_py())
    report.extra["rows"] = {
        name: {"rows": int((split == name).sum()), "synthetic": int(((split == name) & synthetic).sum())}
        for name in schema.SPLITS
    }
    return report.to_dict()


def finalize(shard_path: Path, assignments_path: Path, out_path: Path, quarantine_path: Path) -> dict:
    """Attach `cluster_id` and `split` to one shard's rows, in order; rows without a split
    (duplicates, over the synthetic cap) go to the quarantine with their reason."""
    shard = read_table(shard_path)
    assignments = read_table(assignments_path)
    matched = assignments.take(pc.index_in(shard.column("id"), value_set=assignments.column("id")))
    table = shard.append_column(schema.RELEASE.field("cluster_id"), matched.column("cluster_id"))
    table = table.append_column(pa.field("split", pa.string()), matched.column("split"))
    assigned = pc.is_valid(table.column("split"))
    dropped = table.filter(pc.invert(assigned))
    if dropped.num_rows:
        reasons = matched.filter(pc.invert(assigned)).column("reason").to_pylist()
        stages = ["split" if r == "synthetic_cap" else "dedup" for r in reasons]
        rows = dropped.select(["id", "source", "text", "cluster_id"]).to_pylist()
        write_table(dropped_table([
            {"id": r["id"], "source": r["source"], "text": r["text"], "stage": stage, "reason": reason,
             "detail": f"cluster {r['cluster_id']}"}
            for r, stage, reason in zip(rows, stages, reasons)]), quarantine_path)
    else:
        Path(quarantine_path).unlink(missing_ok=True)
    table = table.filter(assigned)
    write_table(table, out_path)
    return {"rows": table.num_rows, "dropped": dropped.num_rows}
