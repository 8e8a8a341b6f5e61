"""`corpusmill rebuild`: a release rebuilt from its manifest is byte-identical; changed inputs are named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from helpers import word_doc
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from corpusmill.flows.cli import app
from corpusmill.flows.release import release
from corpusmill.tasks.rebuild import compare, summary_line
from corpusmill.tasks.shards import read_table

def _manifest(files, inputs, fp="f"):
    return {"name": "n", "version": "1.0.0", "fingerprint": fp, "files": files, "inputs": inputs,
            "code_version": "0.1.0", "packages": {"pyarrow": "20"}}


def test_compare_names_changed_files_and_inputs():
    a = _manifest([{"path": "data/train-0.parquet", "sha256": "aa"}, {"path": "data/test-0.parquet", "sha256": "bb"}],
                  [{"name": "docs", "fingerprint": "1", "units": [{"label": "x.jsonl", "fingerprint": "1"}]},
                   {"name": "web", "fingerprint": "2", "units": []}])
    b = _manifest([{"path": "data/train-0.parquet", "sha256": "aa"}, {"path": "data/test-0.parquet", "sha256": "cc"},
                   {"path": "data/validation-0.parquet", "sha256": "dd"}],
                  [{"name": "docs", "fingerprint": "9", "units": [{"label": "x.jsonl", "fingerprint": "9"}]},
                   {"name": "web", "fingerprint": "2", "units": []}], fp="g")
    report = compare(a, b)
    assert not report["identical"]
    assert {f["path"]: f["status"] for f in report["files"]} == {
        "data/test-0.parquet": "different", "data/train-0.parquet": "same", "data/validation-0.parquet": "extra"}
    assert report["changed_inputs"] == ["docs"] and report["inputs"][0]["changed_units"] == ["x.jsonl"]
    assert "inputs whose content changed: docs" in summary_line(report)
    assert compare(a, a)["identical"] and summary_line(compare(a, a)).startswith("identical")


def test_rebuild_of_a_missing_release_is_one_paragraph(tmp_path):
    out = CliRunner().invoke(app, ["rebuild", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert out.exit_code == 1 and "manifest.json" in out.output and "Traceback" not in out.output


@pytest.mark.slow
def test_rebuild_is_byte_identical_and_names_changed_inputs(tmp_path):
    rng = random.Random(1)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    docs = [word_doc(rng, rng.randint(20, 40)) for _ in range(60)]
    (inputs / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:30]))
    (inputs / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[30:]))
    recipe = {"name": "rb", "version": "1.0.0", "seed": 2,
              "sources": [{"kind": "files", "name": "docs", "path": str(inputs / "*.jsonl"), "license": "CC0-1.0"}],
              "filters": [{"step": "tokens", "min": 4}], "splits": {"train": 0.6, "validation": 0.2, "test": 0.2},
              "output": {"root": str(tmp_path / "releases"), "shard_rows": 10}, "work_shard_rows": 17}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with prefect_test_harness(server_startup_timeout=60):
        original = Path(release(str(tmp_path / "r.yaml"), [], str(tmp_path / "work")))
        manifest = json.loads((original / "manifest.json").read_text())
        assert len(manifest["files"]) >= 4

        runner = CliRunner()
        out = runner.invoke(app, ["rebuild", str(original), "--out", str(tmp_path / "again"), "--json"])
        assert out.exit_code == 0, out.output
        report = json.loads(out.stdout)
        assert report["identical"] and report["changed_inputs"] == []
        assert [f["status"] for f in report["files"]] == ["same"] * len(manifest["files"])
        rebuilt = json.loads((tmp_path / "again" / "rb" / "1.0.0" / "manifest.json").read_text())
        assert {f["path"]: f["sha256"] for f in rebuilt["files"]} == {f["path"]: f["sha256"] for f in manifest["files"]}
        assert not any(p.name.startswith(".rebuild-") for p in (tmp_path / "again").iterdir())  # temp work removed

        # an edited input: the rebuild differs and names the input and the changed file
        (inputs / "b.jsonl").write_text("".join(json.dumps({"text": d.upper()}) + "\n" for d in docs[30:]))
        out = runner.invoke(app, ["rebuild", str(original), "--out", str(tmp_path / "third")])
        assert out.exit_code == 2, out.output
        assert "inputs whose content changed: docs" in out.output

        # an incremental version naming the first as its parent: held-out ids never move to train
        second = Path(release(str(tmp_path / "r.yaml"), ["version=1.1.0", f"output.previous={original}",
                                                         "splits.train=0.9", "splits.validation=0.05", "splits.test=0.05"],
                              str(tmp_path / "work")))
        manifest2 = json.loads((second / "manifest.json").read_text())
        assert manifest2["parent"] == {"name": "rb", "version": "1.0.0", "fingerprint": manifest["fingerprint"]}
        assert "follows **1.0.0**" in (second / "README.md").read_text()

        def splits_of(folder):
            return {r["id"]: f.name.split("-")[0] for f in (folder / "data").glob("*.parquet")
                    for r in read_table(f, ["id"]).to_pylist()}

        before, after = splits_of(original), splits_of(second)
        held_out = {i for i, s in before.items() if s != "train"}
        assert held_out and all(after[i] == before[i] for i in held_out if i in after)
        assert manifest2["stages"]["split"]["extra"]["previous"]["lineages_pinned"] >= len(held_out)
