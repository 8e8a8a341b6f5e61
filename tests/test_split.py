import random
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from corpusmill.tasks import schema
from corpusmill.tasks.dedup import StaleWorkFiles
from corpusmill.tasks.recipe import Splits
from corpusmill.tasks.shards import read_table, write_table
from corpusmill.tasks.split import assign, assignment_paths, cap_synthetic, finalize, lineage_roots, split_of


def test_lineage_joins_clusters_and_parents():
    ids = pa.array(["d", "a", "c", "b", "e", "f"])
    clusters = pa.array(["d", "a", "a", "b", "e", "f"])  # a and c are near duplicates
    parents = pa.array([None, None, None, "c", "a", "zz"])  # b from c, e from a; f's parent is gone
    assert lineage_roots(ids, clusters, parents) == ["d", "a", "a", "a", "a", "f"]


def test_lineage_root_is_the_lowest_id_reachable_by_any_link():
    """Against a breadth-first search over the links, on random forests of clusters and parents."""
    rng = random.Random(4)
    for _ in range(20):
        ids = [f"{rng.randrange(10**6):06d}-{i}" for i in range(rng.randint(1, 80))]
        clusters = [rng.choice(ids) if rng.random() < 0.4 else i for i in ids]
        parents = [rng.choice(ids + ["gone"]) if rng.random() < 0.3 else None for _ in ids]
        neighbours = defaultdict(set)
        for row, *links in zip(ids, clusters, parents):
            for link in links:
                if link in ids:
                    neighbours[row].add(link)
                    neighbours[link].add(row)
        expected = []
        for row in ids:
            seen, frontier = {row}, [row]
            while frontier:
                frontier = [n for f in frontier for n in neighbours[f] if n not in seen]
                seen.update(frontier)
            expected.append(min(seen))
        assert lineage_roots(pa.array(ids), pa.array(clusters), pa.array(parents, pa.string())) == expected


def test_split_of_is_deterministic_and_follows_fractions():
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    picks = [split_of(f"doc-{i}", fractions) for i in range(20_000)]
    assert picks == [split_of(f"doc-{i}", fractions) for i in range(20_000)]
    share = {s: picks.count(s) / len(picks) for s in fractions}
    assert share["train"] == pytest.approx(0.8, abs=0.02) and share["test"] == pytest.approx(0.1, abs=0.01)
    assert {split_of(f"d{i}", {"train": 1.0, "validation": 0.0, "test": 0.0}) for i in range(100)} == {"train"}


def test_cap_keeps_share_and_is_order_independent():
    ids = [f"id{i:03d}" for i in range(100)]
    synthetic = np.array([i % 2 == 0 for i in range(100)])  # 50 / 50
    drop = cap_synthetic(synthetic, ids, 0.3, seed=7)
    kept_syn = int((synthetic & ~drop).sum())
    assert kept_syn / (kept_syn + 50) <= 0.3 and kept_syn == 21
    assert not drop[~synthetic].any()
    order = np.random.default_rng(0).permutation(100)
    drop2 = cap_synthetic(synthetic[order], [ids[i] for i in order], 0.3, seed=7)
    assert {ids[i] for i in np.flatnonzero(drop)} == {ids[order[i]] for i in np.flatnonzero(drop2)}


def _shard(rows):
    base = {"text": "t", "source": "s", "license": "l", "n_tokens": 5, "generator": None, "prompt_id": None}
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=schema.TOKENIZED)


def test_assign_keeps_lineage_in_one_split_and_finalize_keeps_order(tmp_path):
    originals = [{"id": f"o{i:04d}", "synthetic": False, "parent_id": None} for i in range(300)]
    synthetic = [{"id": f"s{i:04d}", "synthetic": True, "parent_id": f"o{i:04d}", "generator": "g", "prompt_id": "p"}
                 for i in range(0, 300, 3)]
    write_table(_shard(originals), tmp_path / "a.parquet")
    write_table(_shard(synthetic), tmp_path / "b.parquet")
    # o0001 is a near duplicate of o0000 (dropped); everything else is a singleton.
    all_ids = sorted(r["id"] for r in originals + synthetic)
    clusters = pa.table({
        "id": all_ids,
        "cluster_id": ["o0000" if i == "o0001" else i for i in all_ids],
        "keep": [i != "o0001" for i in all_ids],
        "reason": ["near_duplicate" if i == "o0001" else None for i in all_ids],
    })
    write_table(clusters, tmp_path / "clusters.parquet")
    report = assign(tmp_path / "clusters.parquet", [tmp_path / "a.parquet", tmp_path / "b.parquet"],
                    tmp_path / "assign", Splits(train=0.6, validation=0.2, test=0.2), 0.2, seed=1)
    for_a, for_b = assignment_paths(tmp_path / "assign", 2)
    # each shard's assignments are its own rows, in its order
    assert read_table(for_a).column("id").to_pylist() == [r["id"] for r in originals]
    assert read_table(for_b).column("id").to_pylist() == [r["id"] for r in synthetic]
    table = read_table(for_a).to_pylist() + read_table(for_b).to_pylist()
    where = {r["id"]: r["split"] for r in table}
    assert where["o0001"] is None
    for r in synthetic:
        if where[r["id"]] is not None:
            assert where[r["id"]] == where[r["parent_id"]]
    assert report["rows_in"] == report["rows_out"] + report["dropped"].get("synthetic_cap", 0)
    for name, counts in report["extra"]["rows"].items():
        assert counts["synthetic"] <= 0.2 * counts["rows"] + 1e-9

    with pytest.raises(StaleWorkFiles, match=r"assignments-00001\.parquet does not hold the ids of .*a\.parquet"):
        finalize(tmp_path / "a.parquet", for_b, tmp_path / "final.parquet", tmp_path / "q.parquet")
    finalize(tmp_path / "a.parquet", for_a, tmp_path / "final.parquet", tmp_path / "q.parquet")
    assert read_table(tmp_path / "q.parquet").to_pylist()[0] | {"text": None} == {
        "id": "o0001", "source": "s", "stage": "dedup", "reason": "near_duplicate", "detail": "cluster o0000", "text": None}
    final = read_table(tmp_path / "final.parquet")
    assert final.column("id").to_pylist() == [r["id"] for r in originals if r["id"] != "o0001"]
    assert set(final.column("split").to_pylist()) <= {"train", "validation", "test"}


def test_assign_refuses_clusters_of_other_shards(tmp_path):
    write_table(_shard([{"id": "a", "synthetic": False, "parent_id": None}]), tmp_path / "a.parquet")
    write_table(pa.table({"id": ["b"], "cluster_id": ["b"], "keep": [True], "reason": pa.array([None], pa.string())}),
                tmp_path / "clusters.parquet")
    with pytest.raises(StaleWorkFiles, match=r"clusters\.parquet does not hold the row ids of the 1 shards.*rerun the dedup"):
        assign(tmp_path / "clusters.parquet", [tmp_path / "a.parquet"], tmp_path / "assign", Splits(), None, seed=1)
