"""Incremental versions: rows and lineages held out in the previous release never land in train."""

from __future__ import annotations

import random

import pyarrow as pa
from helpers import release_row, word_doc, write_release

from corpusmill.tasks import dedup, schema
from corpusmill.tasks.recipe import Dedup, Splits
from corpusmill.tasks.shards import read_table, write_table
from corpusmill.tasks.split import Previous, assign, prepare_previous

SETTINGS = Dedup()


def _tokenized(rows):
    base = {"source": "s", "license": "l", "n_tokens": 40, "synthetic": False, "parent_id": None, "generator": None,
            "prompt_id": None}
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=schema.TOKENIZED)


def _previous_release(folder, rows):
    """rows: (id, text, split, parent_id); a row with a parent is synthetic."""
    return write_release(folder, [
        release_row(i, text=t, split=s, n_tokens=40, synthetic=p is not None, parent_id=p,
                    generator="g" if p else None, prompt_id="x@1" if p else None)
        for i, t, s, p in rows])


def test_held_out_rows_and_their_near_duplicates_stay_held_out(tmp_path):
    rng = random.Random(3)
    texts = [word_doc(rng, 90) for _ in range(400)]
    # Previous release: every document of the first 200 in test or validation (all held out), plus one in train
    # and a synthetic row whose parent (n0300) was not in the previous release at all.
    prev_rows = [(f"n{i:04d}", texts[i], "test" if i % 2 else "validation", None) for i in range(200)]
    prev_rows += [("n0250", texts[250], "train", None), ("syn-1", "a paraphrase " + texts[300], "test", "n0300")]
    near = texts[350].split()
    near[20] = "kaleidoscope"  # the previous release held a near duplicate of n0350 under another id
    prev_rows.append(("old-350", " ".join(near), "test", None))
    previous_dir = _previous_release(tmp_path, prev_rows)

    # New version: all 400 documents, all singletons; every split fraction would put most of them in train.
    rows = [{"id": f"n{i:04d}", "text": t} for i, t in enumerate(texts)]
    write_table(_tokenized(rows), tmp_path / "tok.parquet")
    dedup.signatures(tmp_path / "tok.parquet", tmp_path / "sig.parquet", SETTINGS)
    ids = [r["id"] for r in rows]
    write_table(pa.table({"id": ids, "cluster_id": ids, "keep": [True] * len(ids), "reason": [None] * len(ids)},
                         schema=pa.schema([("id", pa.string()), ("cluster_id", pa.string()), ("keep", pa.bool_()),
                                           ("reason", pa.string())])), tmp_path / "clusters.parquet")
    side = prepare_previous(previous_dir, tmp_path / "previous", SETTINGS)
    assert prepare_previous(previous_dir, tmp_path / "previous", SETTINGS) == side  # reused
    previous = Previous(str(side), (str(tmp_path / "sig.parquet"),), SETTINGS.model_dump(), "1.0.0")
    report = assign(tmp_path / "clusters.parquet", [tmp_path / "tok.parquet"], tmp_path / "assign",
                    Splits(train=0.9, validation=0.05, test=0.05), None, seed=1, previous=previous)
    where = {r["id"]: r["split"] for r in read_table(tmp_path / "assign" / "assignments-00000.parquet").to_pylist()}

    for i in range(200):  # reused exactly
        assert where[f"n{i:04d}"] == ("test" if i % 2 else "validation")
    assert where["n0250"] == "train"  # rows in the previous train keep train
    assert where["n0300"] == "test"  # the parent of a held-out synthetic row
    assert where["n0350"] == "test"  # a near duplicate of a held-out row
    info = report["extra"]["previous"]
    assert info["links"]["near_duplicate"] >= 1 and info["version"] == "1.0.0"
    assert info["rows_pinned"]["test"] >= 102 and info["rows_pinned"]["train"] == 1

    # without the previous release the same rows mostly land in train
    report = assign(tmp_path / "clusters.parquet", [tmp_path / "tok.parquet"], tmp_path / "assign2",
                    Splits(train=0.9, validation=0.05, test=0.05), None, seed=1)
    plain = {r["id"]: r["split"] for r in read_table(tmp_path / "assign2" / "assignments-00000.parquet").to_pylist()}
    assert sum(plain[f"n{i:04d}"] == "train" for i in range(200)) > 150 and "previous" not in report["extra"]
