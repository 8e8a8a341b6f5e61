"""`corpusmill diff`: added, removed, changed and moved rows per split and source."""

from __future__ import annotations

import json

from helpers import release_row, write_release
from typer.testing import CliRunner

from corpusmill.flows.cli import app
from corpusmill.tasks.diff import diff_releases


def make_release(folder, rows, version="1.0.0", sampling=None):
    """A release of `rows`, given as (id, split, source, text, n_tokens); `sampling` maps ids to a
    row's sampling settings."""
    sampling = sampling or {}
    return write_release(folder, [release_row(i, split=split, source=source, text=text, n_tokens=n,
                                              sampling=sampling.get(i)) for i, split, source, text, n in rows], version)


def test_diff_counts_rows_and_tokens(tmp_path):
    a = make_release(tmp_path / "a", [
        ("x1", "train", "web", "one", 10), ("x2", "train", "web", "two", 20), ("x3", "test", "web", "three", 30),
        ("y1", "train", "books", "four", 40), ("y2", "validation", "books", "five", 50)])
    b = make_release(tmp_path / "b", [
        ("x1", "train", "web", "one", 10),            # unchanged
        ("x2", "train", "web", "two!", 21),           # changed text and tokens
        ("x3", "validation", "web", "three", 30),     # moved test -> validation
        ("y1", "train", "books", "four", 40),         # unchanged
        ("z1", "train", "books", "new", 7)],          # added; y2 removed
        version="1.1.0")
    report = diff_releases(a, b)
    t = report["totals"]
    assert (t["added"], t["removed"], t["changed"], t["moved"], t["unchanged"]) == (1, 1, 1, 1, 2)
    assert t["tokens_delta"] == (10 + 21 + 30 + 40 + 7) - (10 + 20 + 30 + 40 + 50)
    rows = {(r["split"], r["source"]): r for r in report["by_split_source"]}
    assert rows[("train", "web")]["changed"] == 1 and rows[("train", "web")]["tokens_delta"] == 1
    assert rows[("train", "books")]["added"] == 1 and rows[("validation", "books")]["removed"] == 1
    assert rows[("test", "web")]["moved_out"] == 1 and rows[("validation", "web")]["moved_in"] == 1
    assert report["moves"] == [{"from": "test", "to": "validation", "rows": 1}]
    assert report["changed_columns"] == {"text": 1, "n_tokens": 1}
    assert report["examples"]["changed"] == ["x2"] and not report["identical"]

    out = CliRunner().invoke(app, ["diff", str(a), str(b), "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["totals"] == t
    out = CliRunner().invoke(app, ["diff", str(a), str(b)])
    assert out.exit_code == 0 and "test -> validation: 1" in out.stdout and "books" in out.stdout
    assert diff_releases(a, a)["totals"]["unchanged"] == 5


def test_diff_of_a_missing_release_is_one_paragraph(tmp_path):
    out = CliRunner().invoke(app, ["diff", str(tmp_path), str(tmp_path)])
    assert out.exit_code == 1 and "manifest.json" in out.output and "Traceback" not in out.output


def test_diff_compares_the_sampling_of_synthetic_rows(tmp_path):
    def settings(seed):
        return {"backend": "transformers", "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "stop": ["###"],
                "seed": seed}

    rows = [("s1", "train", "web", "a paraphrase", 5), ("s2", "train", "web", "another one", 6),
            ("o1", "train", "web", "an original", 7)]
    a = make_release(tmp_path / "a", rows, sampling={"s1": settings(1), "s2": settings(2)})
    b = make_release(tmp_path / "b", rows, "1.0.1", sampling={"s1": settings(1), "s2": settings(3)})
    result = diff_releases(a, b)
    assert result["totals"]["changed"] == 1  # only s2's seed differs
