"""Dedup stage: shingles, signatures, verified LSH clusters, the keep rule, `dedup_file`."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from corpusmill.tasks import dedup
from corpusmill.tasks.dedup import (
    InvalidIds, MissingColumn, StaleWorkFiles, UnionFind, candidate_pairs, cluster, dedup_file, jaccard, shingles,
    signatures,
)
from corpusmill.tasks.dedup import lsh
from corpusmill.tasks.dedup.clusters import join, keep_first_original
from corpusmill.tasks.dedup.stage import band_column
from corpusmill.tasks.dedup.text import shingle_sets
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.recipe import Dedup
from corpusmill.tasks.shards import read_table, write_table

SETTINGS = Dedup()

PARAGRAPH = (
    "The river ran slowly past the old mill, where the miller's daughter sat every evening "
    "counting the boats that drifted down towards the sea. Some carried timber from the hills, "
    "some carried wool and barley, and once, in a dry summer long ago, a boat came by with "
    "nothing in it at all except a small brown dog who barked at the mill wheel as if it were "
    "an old enemy. The daughter laughed so hard that she dropped her ledger into the water, and "
    "for the rest of that year the miller kept his accounts on the back of a door, which he "
    "later sold to a travelling painter for the price of two loaves and a jar of honey."
)
UNRELATED = (
    "Quantum error correction protects fragile qubits by spreading one logical bit of "
    "information across many physical ones, so that a single stray interaction with the "
    "environment can be detected and undone before it corrupts the computation."
)


def random_words(rng: random.Random, n: int, prefix: str) -> list[str]:
    """n distinct words, so every word n-gram of the text is distinct."""
    return [f"{prefix}{i}x{rng.randrange(10**6)}" for i in range(n)]


def changed(words: list[str], positions: list[int], tag: str) -> list[str]:
    out = list(words)
    for p in positions:
        out[p] = f"{tag}{p}"
    return out


def run(tmp_path: Path, rows: list[dict], n_shards: int = 1, settings: Dedup = SETTINGS):
    """Write rows as shards, compute signatures, cluster; return ({id: output row}, report)."""
    per = -(-len(rows) // n_shards)
    pairs = []
    for k in range(n_shards):
        shard = write_table(pa.Table.from_pylist(rows[k * per : (k + 1) * per]), tmp_path / f"part-{k:05d}.parquet")
        side = tmp_path / f"sig-{k:05d}.parquet"
        assert signatures(shard, side, settings) == {"rows": len(rows[k * per : (k + 1) * per])}
        pairs.append((side, shard))
    report = cluster(pairs, tmp_path / "clusters.parquet", settings)
    table = read_table(tmp_path / "clusters.parquet")
    assert table.schema.equals(dedup.CLUSTERS)
    assert table.column("id").to_pylist() == sorted(table.column("id").to_pylist())
    return {r["id"]: r for r in table.to_pylist()}, report


def members(out: dict) -> dict[str, list[str]]:
    clusters = defaultdict(list)
    for row in out.values():
        clusters[row["cluster_id"]].append(row["id"])
    return clusters


# --- shingles and Jaccard ---------------------------------------------------------------


def test_shingles_are_word_ngrams_of_the_casefolded_text():
    assert shingles("The cat, the CAT!  sat.", 2) == {b"the cat", b"cat the", b"cat sat"}
    assert shingles("Hello,   World", 5) == {b"hello world"}  # shorter than ngram: one shingle
    assert shingles("", 5) == set() and shingles(" ... !! ", 5) == set()
    assert shingles("Straße eins zwei", 1) == shingles("STRASSE eins zwei", 1)  # casefold, as for text_hash


def test_jaccard_on_sets_and_sorted_arrays_equals_intersection_over_union():
    assert jaccard({1, 2, 3, 4}, {3, 4, 5}) == pytest.approx(2 / 5)
    assert jaccard(set(), set()) == 0.0  # no words: never near duplicates
    as_array = lambda s: np.array(sorted(s), dtype=np.uint64)  # noqa: E731
    rng = random.Random(8)
    for _ in range(300):  # sizes from empty to 60 drawn from a small range: overlaps of every degree
        a = {rng.randrange(80) for _ in range(rng.randrange(60))}
        b = {rng.randrange(80) for _ in range(rng.randrange(60))}
        expected = len(a & b) / len(a | b) if a | b else 0.0
        assert jaccard(a, b) == expected
        assert jaccard(as_array(a), as_array(b)) == expected == jaccard(as_array(b), as_array(a))
    p, q = PARAGRAPH, PARAGRAPH.replace("timber", "stone")
    sets = lambda t: np.unique(dedup.features([t], 5)[1])  # noqa: E731  (64-bit shingle hashes, as verified)
    assert jaccard(sets(p), sets(q)) == jaccard(shingles(p, 5), shingles(q, 5))


def test_union_find_joins_transitively_and_refuses_past_the_limit():
    uf = UnionFind(6)
    assert uf.union(0, 1) and uf.union(3, 4) and uf.union(1, 4)
    assert len({uf.find(i) for i in (0, 1, 3, 4)}) == 1 and uf.find(2) == 2
    assert not uf.union(5, 0, limit=4)  # would make a set of 5
    assert uf.union(5, 2, limit=2) and uf.union(0, 4, limit=1)  # already joined: nothing grows
    labels = uf.labels()
    assert labels[0] == labels[1] == labels[3] == labels[4] != labels[5] == labels[2]


def test_join_takes_the_most_similar_pairs_first_under_the_cap():
    # texts 0-1-2 in a chain; 1~2 is the more similar, so with room for two texts it wins
    pairs = np.array([[0, 1], [1, 2], [3, 4]])
    similarity = np.array([0.85, 0.95, 0.5])
    labels, refused = join(pairs, similarity, np.array([0, 1]), 5, max_cluster_size=2)
    assert refused == 1 and labels[1] == labels[2] != labels[0]
    assert len(set(labels[[0, 3, 4]].tolist())) == 3  # 3~4 was not verified: not joined
    labels, refused = join(pairs, similarity, np.array([0, 1, 2]), 5, max_cluster_size=3)
    assert refused == 0 and labels[0] == labels[1] == labels[2] and labels[3] == labels[4]


def test_keep_rule_picks_the_first_original_else_the_first_row():
    cluster_of_row = np.array([0, 0, 0, 1, 1, 2])
    synthetic = np.array([True, False, False, True, True, False])
    text_hash = np.array([7, 8, 7, 9, 9, 10], dtype=np.uint64)
    kept = keep_first_original(cluster_of_row, synthetic, text_hash)
    assert kept.row.tolist() == [1, 1, 1, 3, 3, 5]
    assert kept.keep.tolist() == [False, True, False, True, False, True]
    assert kept.reasons().tolist() == ["near_duplicate", None, "near_duplicate", None, "exact_duplicate", None]


# --- signatures ---------------------------------------------------------------------------


def test_signature_side_file_is_compact_and_datasketch_compatible(tmp_path):
    texts = [PARAGRAPH, "  the RIVER ran\n slowly ", "", UNRELATED]
    shard = write_table(pa.table({"id": ["d", "c", "b", "a"], "text": texts}), tmp_path / "part.parquet")
    assert signatures(shard, tmp_path / "sig.parquet", SETTINGS) == {"rows": 4}
    side = read_table(tmp_path / "sig.parquet")
    bands, rows = dedup.lsh_params(SETTINGS)
    assert side.schema.names == ["row", "id", "synthetic", "text_hash", "shingles", "signature"] + [
        band_column(k) for k in range(bands)]
    assert side.schema.field("signature").type == pa.list_(pa.uint32(), SETTINGS.num_perm)
    assert side.column("row").to_pylist() == [0, 1, 2, 3]
    assert side.column("synthetic").to_pylist() == [False] * 4  # no synthetic column in the shard
    assert side.column("text_hash")[1].as_py() == dedup.text_hash("The river RAN slowly")

    stored = np.array(side.column("signature").to_pylist(), dtype=np.uint32)
    direct = []
    for text, values in zip(texts, stored):
        # datasketch 2.0's default scheme with corpusmill's shingle hash: bit-for-bit equal
        direct.append(MinHash(num_perm=SETTINGS.num_perm, seed=SETTINGS.seed, hashfunc=dedup.shingle_hash32))
        direct[-1].update_batch(shingles(text, SETTINGS.ngram))
        assert direct[-1].scheme == "affine32" and np.array_equal(direct[-1].hashvalues, values)
    assert side.column("shingles").to_pylist() == [len(shingles(t, SETTINGS.ngram)) for t in texts]
    keys = lsh.band_keys(stored, bands, rows)
    assert side.column(band_column(3)).to_pylist() == keys[:, 3].tolist()
    assert (stored[2] == lsh.EMPTY_SLOT).all()  # empty text: no shingles


def test_stored_signatures_estimate_jaccard_as_datasketch_does(tmp_path):
    """Stored signatures load as datasketch LeanMinHashes whose estimate is datasketch's own
    for the same texts, and near the exact Jaccard of their shingle sets."""
    words = random_words(random.Random(6), 400, "w")
    texts = [" ".join(words)] + [" ".join(changed(words, list(range(7, 400, step)), "x")) for step in (40, 15, 6)]
    shard = write_table(pa.table({"id": list("abcd"), "text": texts}), tmp_path / "part.parquet")
    signatures(shard, tmp_path / "sig.parquet", SETTINGS)
    stored = np.array(read_table(tmp_path / "sig.parquet").column("signature").to_pylist(), dtype=np.uint32)
    lean = [LeanMinHash(seed=SETTINGS.seed, hashvalues=v, scheme="affine32") for v in stored]
    direct = []
    for text in texts:
        direct.append(MinHash(num_perm=SETTINGS.num_perm, seed=SETTINGS.seed, hashfunc=dedup.shingle_hash32))
        direct[-1].update_batch(shingles(text, SETTINGS.ngram))
    for other in (1, 2, 3):
        exact = jaccard(shingles(texts[0], 5), shingles(texts[other], 5))
        estimate = lean[0].jaccard(lean[other])
        assert estimate == direct[0].jaccard(direct[other])
        assert abs(estimate - exact) < 0.15  # 128 permutations: standard error about 0.04
    assert lean[0].jaccard(lean[1]) > lean[0].jaccard(lean[2]) > lean[0].jaccard(lean[3])


def test_signatures_name_the_missing_column(tmp_path):
    shard = write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "part.parquet")
    with pytest.raises(MissingColumn, match=r"part\.parquet has no column 'text' \(its columns: id, body\); name"):
        signatures(shard, tmp_path / "sig.parquet", SETTINGS)
    shard = write_table(pa.table({"text": ["x"]}), tmp_path / "part.parquet")
    with pytest.raises(MissingColumn, match=r"part\.parquet has no column 'id'.*every row needs an id"):
        signatures(shard, tmp_path / "sig.parquet", SETTINGS)


def test_signatures_name_the_row_with_a_null_id(tmp_path):
    shard = write_table(pa.table({"id": ["a", None], "text": ["x", "y"]}), tmp_path / "part.parquet")
    with pytest.raises(InvalidIds, match=r"part\.parquet: column 'id' is null at row 1"):
        signatures(shard, tmp_path / "sig.parquet", SETTINGS)


def test_cluster_refuses_signatures_made_with_other_settings(tmp_path):
    shard = write_table(pa.table({"id": ["a"], "text": [PARAGRAPH]}), tmp_path / "part.parquet")
    signatures(shard, tmp_path / "sig.parquet", Dedup(seed=7))
    with pytest.raises(StaleWorkFiles, match=r"sig\.parquet holds signatures made with .*'seed': 7.* recompute"):
        cluster([(tmp_path / "sig.parquet", shard)], tmp_path / "c.parquet", SETTINGS)


def test_cluster_refuses_band_pairs_of_other_signature_files(tmp_path):
    rows = corpus(6)
    run(tmp_path / "all", rows)
    run(tmp_path / "some", rows[:3])  # without the texts of the later groups
    bands, _ = dedup.lsh_params(SETTINGS)
    pair_paths = [tmp_path / f"band-{k}.parquet" for k in range(bands)]
    found = [dedup.band_pairs([tmp_path / "all" / "sig-00000.parquet"], k, p, SETTINGS) for k, p in enumerate(pair_paths)]
    assert sum(f["pairs"] for f in found) > 0
    some = [(tmp_path / "some" / "sig-00000.parquet", tmp_path / "some" / "part-00000.parquet")]
    with pytest.raises(StaleWorkFiles, match=r"band-\d+\.parquet names texts that the signature files do not hold"):
        cluster(some, tmp_path / "c.parquet", SETTINGS, pair_paths=pair_paths)


def test_cluster_refuses_repeated_ids_naming_both_rows(tmp_path):
    rows = [{"id": "b", "text": UNRELATED}, {"id": "a", "text": PARAGRAPH}, {"id": "a", "text": UNRELATED}]
    with pytest.raises(InvalidIds, match=r"'a' appears more than once \(.*part-00000\.parquet row 1 and "
                                         r".*part-00001\.parquet row 0\); give every row its own id"):
        run(tmp_path, rows, n_shards=2)


# --- clusters -----------------------------------------------------------------------------


def test_exact_duplicates_ignore_case_and_whitespace(tmp_path):
    rows = [
        {"id": "3", "text": "The Cat  sat\n on the MAT."},
        {"id": "1", "text": "the cat sat on the mat."},
        {"id": "2", "text": "THE CAT SAT ON THE MAT.  "},
        {"id": "4", "text": "the cat sat on the mat!"},  # other punctuation: same words, not exact
        {"id": "5", "text": ""},
        {"id": "6", "text": "  "},
        {"id": "7", "text": "!!!"},  # no words: not near anything, only its own exact copies
    ]
    out, report = run(tmp_path, rows)
    assert out["1"] == {"id": "1", "cluster_id": "1", "keep": True, "reason": None}
    assert [out[i]["reason"] for i in "234"] == ["exact_duplicate", "exact_duplicate", "near_duplicate"]
    assert {out[i]["cluster_id"] for i in "1234"} == {"1"}
    assert out["6"] == {"id": "6", "cluster_id": "5", "keep": False, "reason": "exact_duplicate"}
    assert out["7"]["cluster_id"] == "7" and out["7"]["keep"]
    assert report["dropped"] == {"exact_duplicate": 3, "near_duplicate": 1}
    assert (report["rows_in"], report["rows_out"]) == (7, 3)


def test_planted_near_duplicate_is_clustered_and_unrelated_text_is_not(tmp_path):
    near = PARAGRAPH.replace("timber", "stone").replace("The river", "THE RIVER")
    assert 0.9 < jaccard(shingles(PARAGRAPH, 5), shingles(near, 5)) < 1
    rows = [{"id": "b", "text": near}, {"id": "a", "text": PARAGRAPH}, {"id": "c", "text": UNRELATED}]
    out, report = run(tmp_path, rows)
    assert out["b"] == {"id": "b", "cluster_id": "a", "keep": False, "reason": "near_duplicate"}
    assert out["a"]["keep"] and out["a"]["cluster_id"] == "a"
    assert out["c"] == {"id": "c", "cluster_id": "c", "keep": True, "reason": None}
    extra = report["extra"]
    assert (extra["bands"], extra["rows_per_band"]) == dedup.lsh_params(SETTINGS) == (18, 7)
    assert extra["s_curve"]["recall_at_threshold"] >= SETTINGS.recall_target
    assert (extra["verified_pairs"], extra["clusters"], extra["largest_cluster"]) == (1, 1, 2)
    assert [(e["a"], e["b"]) for e in extra["examples"]] == [("a", "b")]
    assert extra["examples"][0]["jaccard"] == round(jaccard(shingles(PARAGRAPH, 5), shingles(near, 5)), 4)


def test_keep_rule_originals_first_then_lowest_id(tmp_path):
    other = PARAGRAPH.replace("river", "canal")
    rows = [
        # synthetic "a" has the lowest id, but the original "b" is kept
        {"id": "a", "text": PARAGRAPH, "synthetic": True},
        {"id": "c", "text": PARAGRAPH, "synthetic": False},
        {"id": "b", "text": PARAGRAPH.replace("timber", "stone"), "synthetic": False},
        # all synthetic: the lowest id
        {"id": "z", "text": UNRELATED, "synthetic": True},
        {"id": "y", "text": UNRELATED.upper(), "synthetic": True},
        {"id": "m", "text": other, "synthetic": False},
    ]
    out, _ = run(tmp_path, rows)
    assert {i: (out[i]["cluster_id"], out[i]["keep"], out[i]["reason"]) for i in "abcm"} == {
        "b": ("b", True, None),
        "a": ("b", False, "near_duplicate"),  # its text differs from the kept row's
        "c": ("b", False, "near_duplicate"),
        "m": ("b", False, "near_duplicate"),
    }
    assert (out["y"]["keep"], out["z"]["cluster_id"], out["z"]["reason"]) == (True, "y", "exact_duplicate")


def corpus(n_groups: int = 30) -> list[dict]:
    """Groups of near and exact copies of random texts, some synthetic, plus singletons."""
    rng = random.Random(3)
    rows = []
    for g in range(n_groups):
        words = random_words(rng, 300, f"g{g}w")  # one word changed in 300: LSH recall ~1
        variants = [words, changed(words, [10], "v"), changed(words, [150], "u")][: 1 + g % 3]
        for v, text in enumerate(variants):
            row_id = f"{rng.randrange(10**6):06d}-{g}-{v}"  # random prefix: id order is not group order
            rows.append({"id": row_id, "text": " ".join(text), "synthetic": rng.random() < 0.4})
        if g % 4 == 0:
            rows.append({"id": f"{rng.randrange(10**6):06d}-{g}-x", "text": " ".join(words).upper(), "synthetic": True})
    return rows


def test_result_is_independent_of_input_order_and_sharding(tmp_path):
    rows = corpus()
    one, report_one = run(tmp_path / "one", rows)
    shuffled = list(rows)
    random.Random(5).shuffle(shuffled)
    three, report_three = run(tmp_path / "three", shuffled, n_shards=3)
    assert one == three and report_one == report_three
    assert report_one["extra"]["clusters"] == 23  # the groups with more than one member
    for row in one.values():  # every cluster keeps its first original by id
        group = [one[i] for i in members(one)[row["cluster_id"]]]
        best = min(group, key=lambda r: (next(x for x in rows if x["id"] == r["id"])["synthetic"], r["id"]))
        assert row["cluster_id"] == best["id"] and row["keep"] == (row is best)


def test_verification_rejects_candidates_below_the_threshold(tmp_path):
    """Pairs sharing ~73% of their shingles collide in an LSH band now and then; the
    MinHash estimate says "similar", the true Jaccard says no, and no edge is made."""
    rng = random.Random(11)
    rows = []
    for p in range(40):
        words = random_words(rng, 200, f"p{p}w")
        rows.append({"id": f"{p:02d}a", "text": " ".join(words)})
        rows.append({"id": f"{p:02d}b", "text": " ".join(changed(words, list(range(12, 200, 31)), "z"))})
    true = jaccard(shingles(rows[0]["text"], 5), shingles(rows[1]["text"], 5))
    assert 0.7 < true < SETTINGS.threshold
    out, report = run(tmp_path, rows)
    extra = report["extra"]
    assert extra["candidate_pairs"] > 0 and extra["rejected_pairs"] == extra["candidate_pairs"]
    assert extra["verified_pairs"] == 0 and extra["clusters"] == 0
    assert all(r["keep"] and r["cluster_id"] == r["id"] for r in out.values())


def test_chain_of_verified_pairs_is_one_cluster(tmp_path):
    """A~B and B~C are each above the threshold, A and C are not: union-find is transitive,
    so all three are one cluster; verification bounds each edge, not the cluster's width."""
    words = random_words(random.Random(2), 504, "w")
    a = words
    b = changed(a, list(range(20, 504, 80)), "b")
    c = changed(b, list(range(60, 504, 80)), "c")
    sim = lambda x, y: jaccard(shingles(" ".join(x), 5), shingles(" ".join(y), 5))  # noqa: E731
    assert sim(a, b) >= 0.8 and sim(b, c) >= 0.8 and sim(a, c) < 0.8
    out, report = run(tmp_path, [{"id": i, "text": " ".join(t)} for i, t in zip("ABC", (a, b, c))])
    assert {r["cluster_id"] for r in out.values()} == {"A"}
    assert out["C"]["reason"] == "near_duplicate" and report["extra"]["verified_pairs"] == 2


# --- real data: two editions of Alice in Wonderland --------------------------------------


def paragraphs(path: Path, min_words: int = 30) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    return [p for p in re.split(r"\n\s*\n", text) if len(p.split()) >= min_words]


@pytest.fixture(scope="module")
def alice(corpora, tmp_path_factory):
    rows = [
        {"id": f"{edition}-{i:04d}", "text": p}
        for edition, name in (("new", "11-0.txt"), ("old", "11-old-alice30.txt"))
        for i, p in enumerate(paragraphs(corpora / "gutenberg" / name))
    ]
    out, report = run(tmp_path_factory.mktemp("alice"), rows, n_shards=3)
    return rows, out, report


def test_alice_editions_cluster_together(alice):
    rows, out, report = alice
    clusters = members(out)
    new = [r for r in rows if r["id"].startswith("new")]
    matched = [r for r in new if any(m.startswith("old") for m in clusters[out[r["id"]]["cluster_id"]])]
    assert len(new) > 300 and len(matched) / len(new) > 0.8
    assert report["rows_in"] == len(rows) == report["rows_out"] + sum(report["dropped"].values())
    assert all(e["jaccard"] >= SETTINGS.threshold for e in report["extra"]["examples"])


def test_alice_every_cluster_is_held_together_by_true_jaccard(alice):
    """Each multi-member cluster is connected by pairs with true Jaccard >= threshold (or
    equal normalised text): no cluster rests on a MinHash estimate alone."""
    rows, out, _ = alice
    text = {r["id"]: r["text"] for r in rows}
    for ids in members(out).values():
        uf = UnionFind(len(ids))
        sets = [shingles(text[i], 5) for i in ids]
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                same = dedup.normalize(text[ids[x]]) == dedup.normalize(text[ids[y]])
                if same or jaccard(sets[x], sets[y]) >= SETTINGS.threshold:
                    uf.union(x, y)
        assert len({uf.find(x) for x in range(len(ids))}) == 1, ids


def assert_banding_finds_what_datasketch_lsh_finds(texts: list[str], tmp_path: Path) -> int:
    """`candidate_pairs` on the stored signatures of `texts` equals the pairs datasketch's
    MinHashLSH returns with the same banding; returns how many there are."""
    shard = write_table(pa.table({"id": [f"{i:05d}" for i in range(len(texts))], "text": texts}), tmp_path / "part.parquet")
    signatures(shard, tmp_path / "sig.parquet", SETTINGS)
    stored = np.array(read_table(tmp_path / "sig.parquet").column("signature").to_pylist(), dtype=np.uint32)
    bands, rows_per_band = dedup.lsh_params(SETTINGS)
    index = MinHashLSH(num_perm=SETTINGS.num_perm, params=(bands, rows_per_band))
    lean = [LeanMinHash(seed=SETTINGS.seed, hashvalues=v, scheme="affine32") for v in stored]
    for i, m in enumerate(lean):
        index.insert(i, m)
    expected = sorted({(min(i, j), max(i, j)) for i, m in enumerate(lean) for j in index.query(m) if i != j})
    assert (index.b, index.r) == (bands, rows_per_band)
    assert [tuple(p) for p in candidate_pairs(stored, bands, rows_per_band).tolist()] == expected
    # with a subset, the pairs among those rows, numbered within the subset
    odd = np.arange(1, len(stored), 2)
    expected_odd = [(i // 2, j // 2) for i, j in expected if i % 2 and j % 2]
    assert [tuple(p) for p in candidate_pairs(stored, bands, rows_per_band, subset=odd).tolist()] == expected_odd
    return len(expected)


def test_numpy_banding_finds_what_datasketch_lsh_finds(alice, tmp_path):
    rows, _, _ = alice
    assert assert_banding_finds_what_datasketch_lsh_finds([r["text"] for r in rows], tmp_path) > 100


def planted_documents(n: int = 600, seed: int = 12) -> list[str]:
    """Random word documents; every third is a copy of an earlier one (itself perhaps a copy)
    with 0.5% to 8% of its words replaced, so planted pairs span the S-curve around the threshold."""
    rng = random.Random(seed)
    vocabulary = [f"v{i}" for i in range(5000)]
    docs: list[str] = []
    for i in range(n):
        if i % 3 == 2:
            words = docs[rng.randrange(len(docs))].split()
            for k in rng.sample(range(len(words)), max(1, int(len(words) * rng.uniform(0.005, 0.08)))):
                words[k] = rng.choice(vocabulary)
            docs.append(" ".join(words))
        else:
            docs.append(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(40, 300))))
    return docs


def test_numpy_banding_finds_what_datasketch_lsh_finds_on_planted_near_duplicates(tmp_path):
    assert assert_banding_finds_what_datasketch_lsh_finds(planted_documents(), tmp_path) > 100


# --- one file: `corpusmill dedup` ---------------------------------------------------------


def test_dedup_file_keeps_rows_and_columns_and_adds_two(tmp_path):
    texts = [PARAGRAPH, UNRELATED, PARAGRAPH.replace("timber", "stone"), "x", PARAGRAPH.upper()] + [
        f"unique document number {i} about topic {i * 7}" for i in range(7)
    ]
    source = pa.table({"n": list(range(12)), "text": texts, "cluster_id": [0] * 12})
    pq.write_table(source, tmp_path / "in.parquet")
    report = dedup_file(tmp_path / "in.parquet", tmp_path / "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet")
    # an existing cluster_id column is replaced where it stood; keep is added at the end
    assert out.schema.names == ["n", "text", "cluster_id", "keep"]
    assert out.column("n").to_pylist() == list(range(12)) and out.column("text").to_pylist() == texts
    assert out.schema.field("cluster_id").type == pa.string() and out.schema.field("keep").type == pa.bool_()
    # ids are zero-padded positions: the first occurrence is kept
    assert out.column("cluster_id").to_pylist()[:5] == ["00", "01", "00", "03", "00"]
    assert out.column("keep").to_pylist() == [True, True, False, True, False] + [True] * 7
    assert report["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}


def test_dedup_file_uses_id_and_synthetic_columns(tmp_path):
    pq.write_table(
        pa.table({"id": ["s1", "o9"], "body": [PARAGRAPH, PARAGRAPH], "synthetic": [True, False]}),
        tmp_path / "in.parquet",
    )
    dedup_file(tmp_path / "in.parquet", tmp_path / "out.parquet", text_column="body")
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("cluster_id").to_pylist() == ["o9", "o9"] and out.column("keep").to_pylist() == [False, True]


def test_dedup_file_names_file_and_column_when_text_is_missing(tmp_path):
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "in.parquet")
    # the CLI reports CorpusmillErrors as one paragraph
    with pytest.raises(CorpusmillError, match=r"in\.parquet has no column 'text' \(its columns: body\); .*--text-column"):
        dedup_file(tmp_path / "in.parquet", tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


# --- batch features, banding choice, band tasks, the cluster cap ----------------------


# Characters where a byte-level scan can go wrong: multi-byte word characters, whitespace
# beyond ASCII (\x1c-\x1f, \x85, nbsp, em space, ideographic space, line separator),
# combining marks (not \\w), case-folding that changes length, 4-byte characters.
TRICKY = list("aZ09_ .,!-'\t\n\x1c\x1f\x85\u00a0\u2003\u3000\u2028\u0301ßẞİıſﬁΣσςΐé日本語😀𝔘𝔫١٢")


def test_batch_features_equal_the_per_text_reference():
    rng = random.Random(3)
    fuzz = ["".join(rng.choice(TRICKY) for _ in range(rng.randrange(40))) for _ in range(300)]
    texts = ["The cat, the CAT!  sat.", "Hello,   World", "", " ... !! ", None, "Straße eins zwei", "STRASSE EINS ZWEI",
             "ﬁne İstanbul ΣΊΣΥΦΟΣ ς end", "日本語のテキスト　全角\u00a0nbsp\u2003em 😀 𝔘𝔫𝔦", PARAGRAPH, "a b c d"] + fuzz
    for ngram in (1, 3, 5):
        hashes, shingle, counts = dedup.features(texts, ngram)
        sets = shingle_sets(texts, ngram)
        offsets = np.r_[0, np.cumsum(counts)]
        for i, text in enumerate(texts):
            text = text or ""
            assert hashes[i] == dedup.text_hash(text)
            expected = {dedup.shingle_hash64(s) for s in shingles(text, ngram)}
            assert set(shingle[offsets[i] : offsets[i + 1]].tolist()) == expected
            assert sets[i].tolist() == sorted(expected)
    assert dedup.text_hash("Straße  eins") == dedup.text_hash("STRASSE eins") != dedup.text_hash("strasse eins!")


def test_character_tables_follow_python_for_every_code_point():
    from corpusmill.tasks.dedup.text import _unicode_tables

    word, space, differs = _unicode_tables()
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    codes = np.array([ord(c) for c in chars])
    assert np.array_equal(word[codes], [c.isalnum() or c == "_" for c in chars])  # Python's \\w
    assert np.array_equal(space[codes], [c.isspace() for c in chars])  # str.split's whitespace
    arrow = pc.utf8_lower(pa.array(chars)).to_pylist()
    assert np.array_equal(differs[codes], [c.casefold() != low for c, low in zip(chars, arrow)])


# sha256 over text hashes (<u8), shingle hashes (<u8), counts (<i8) and signatures (<u4; 128
# permutations, seed 1) of every blank-line paragraph of these files, as computed by the
# numpy implementation at commit 0f8c569, before the compiled scan replaced it: releases
# built before and after must be byte-identical.
FROZEN_FILES = ["gutenberg/11-0.txt", "gutenberg/11-old-alice30.txt", "gutenberg/1342-0.txt",
                "gutenberg/1342-old-pandp10.txt", "gutenberg/2701-0.txt", "gutenberg/2701-old-moby10b.txt",
                "tinyshakespeare/input.txt", "wikitext-2/test.txt", "wikitext-2/valid.txt"]
FROZEN_DIGESTS = {5: "0d2e362130e18bd15aeac6f2b863ae442cce869db68a7606c0a767675716de27",
                  3: "d1ae1794ad59dfc780cbc84449a66b39a034e0f833b894bf9c89e395b3547ce6"}


def test_features_and_signatures_of_real_text_keep_their_frozen_values(corpora):
    texts = []
    for name in FROZEN_FILES:
        text = (corpora / name).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        texts += re.split(r"\n\s*\n", text)
    assert len(texts) == 21535
    for ngram, expected in FROZEN_DIGESTS.items():
        hashes, shingle, counts = dedup.features(texts, ngram)
        signature = dedup.minhash(shingle, counts, 128, 1)
        digest = hashlib.sha256()
        for values in (hashes.astype("<u8"), shingle.astype("<u8"), counts.astype("<i8"), signature.astype("<u4")):
            digest.update(values.tobytes())
        assert digest.hexdigest() == expected, ngram


@pytest.mark.parametrize("num_perm, seed", [(128, 1), (256, 42), (7, 0)])
def test_permutations_are_datasketchs_own(num_perm, seed):
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    ours = lsh.permutations(num_perm, seed)
    assert ours[0].dtype == ours[1].dtype == np.uint32
    assert np.array_equal(ours[0], a) and np.array_equal(ours[1], b)


def test_banding_reaches_the_recall_target_with_fewest_false_candidates():
    for threshold, target in ((0.8, 0.98), (0.7, 0.95), (0.9, 0.99)):
        settings = Dedup(threshold=threshold, recall_target=target)
        bands, rows = dedup.lsh_params(settings)
        assert bands * rows <= settings.num_perm
        assert lsh.collision_probability(threshold, bands, rows) >= target
        # one more row per band (fewer false candidates) would miss the target
        assert lsh.collision_probability(threshold, settings.num_perm // (rows + 1), rows + 1) < target
    curve = dedup.s_curve(SETTINGS)["curve"]
    assert [p["p_candidate"] for p in curve] == sorted(p["p_candidate"] for p in curve)


def test_band_tasks_give_the_same_clusters_as_one_process(tmp_path):
    rows = corpus()
    one, report = run(tmp_path / "one", rows, n_shards=2)
    sides = sorted((tmp_path / "one").glob("sig-*.parquet"))
    shards = sorted((tmp_path / "one").glob("part-*.parquet"))
    bands, _ = dedup.lsh_params(SETTINGS)
    pair_paths = [tmp_path / f"band-{k}.parquet" for k in range(bands)]
    found = [dedup.band_pairs(sides, k, p, SETTINGS)["pairs"] for k, p in enumerate(pair_paths)]
    assert sum(found) >= report["extra"]["candidate_pairs"] > 0
    # a tiny verification budget: one block per shard, same result
    again = cluster(list(zip(sides, shards)), tmp_path / "c.parquet", SETTINGS, pair_paths=pair_paths, memory_budget=1)
    assert again == report and read_table(tmp_path / "c.parquet").to_pylist() == sorted(one.values(), key=lambda r: r["id"])


def test_cluster_cap_stops_chaining_and_is_reported(tmp_path):
    """Eight texts, each one word away from the next: a chain of verified pairs. With a cap
    of 3 distinct texts per cluster the chain is cut, most similar pairs joined first."""
    words = random_words(random.Random(4), 400, "w")
    texts = [words]
    for step in range(7):
        texts.append(changed(texts[-1], [30 + 50 * step], f"s{step}"))
    rows = [{"id": f"{i}", "text": " ".join(t)} for i, t in enumerate(texts)]
    out, report = run(tmp_path / "free", rows)
    assert len(members(out)) == 1 and report["extra"]["refused_by_cap"] == 0
    capped, report = run(tmp_path / "cap", rows, settings=Dedup(max_cluster_size=3))
    sizes = sorted(len(m) for m in members(capped).values())
    assert max(sizes) <= 3 and sum(sizes) == 8 and report["extra"]["refused_by_cap"] > 0
    assert report["extra"]["largest_cluster"] == max(sizes) and sum(
        report["extra"]["cluster_sizes"].values()) == len(sizes)


COMPILE_WITHOUT_A_WRITABLE_CACHE = """
import numba
import numba.core.caching as caching
import numpy as np
for locator in (caching.InTreeCacheLocator, caching.UserWideCacheLocator):  # a read-only install and home
    locator.from_function = classmethod(lambda cls, function, path: None)
from corpusmill.tasks.dedup.hashing import fmix64_compiled
fmix64_compiled(np.uint64(1))
print(numba.config.CACHE_DIR)
"""


@pytest.mark.parametrize("held_by_others", [False, True])
def test_compiled_loops_are_cached_in_a_private_temporary_folder_where_numba_finds_none(tmp_path, held_by_others):
    """Where numba can write neither next to the source nor in the user's cache folder, dedup
    still imports and caches its compiled code: in this user's folder under TMPDIR, or, where
    others could write that folder (and plant code there), in a new one of its own."""
    shared = tmp_path / f"corpusmill-numba-{os.getuid()}"
    if held_by_others:
        shared.mkdir()
        shared.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"TMPDIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", COMPILE_WITHOUT_A_WRITABLE_CACHE], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    cache = Path(run.stdout.strip())
    assert cache.parent == tmp_path and (cache == shared) is not held_by_others
    assert list(cache.rglob("*.nbi"))  # the compiled finalizer was cached there
