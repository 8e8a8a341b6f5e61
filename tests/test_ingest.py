import gzip
import json
import subprocess
import sys
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from corpusmill.tasks import ingest, schema
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.ingest import IngestError, IngestUnit
from corpusmill.tasks.recipe import FilesSource, HubSource, PythonDocsSource
from corpusmill.tasks.shards import file_sha256


def files(path, **kw):
    return FilesSource(kind="files", path=path, license=kw.pop("license", "CC0-1.0"), **kw)


def ingest_all(source, tmp_path, shard_rows=100_000, tag="out"):
    """Plan and run every unit of one source; returns (rows, quarantine rows, merged report)."""
    rows, dropped, reports = [], [], []
    for unit in ingest.plan([source]):
        q = tmp_path / f"{tag}-q-{unit.unit_index}.parquet"
        report = ingest.run(source, unit, tmp_path / tag, q, shard_rows)
        reports.append(report)
        for shard in report["shards"]:
            table = pq.read_table(shard)
            assert table.schema.equals(schema.INGEST)
            assert table.num_rows <= shard_rows
            rows += table.to_pylist()
        if q.exists():
            dropped += pq.read_table(q).to_pylist()
    merged = {"rows_in": sum(r["rows_in"] for r in reports), "rows_out": sum(r["rows_out"] for r in reports),
              "dropped": {}, "shards": [s for r in reports for s in r["shards"]]}
    for r in reports:
        for reason, n in r["dropped"].items():
            merged["dropped"][reason] = merged["dropped"].get(reason, 0) + n
    assert merged["rows_in"] == merged["rows_out"] + sum(merged["dropped"].values()) == len(rows) + len(dropped)
    return rows, dropped, merged


def write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


RECORDS = [{"text": f"document number {i}\r\nsecond line", "n": i} for i in range(5)]


# --- python-docs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_docs(tmp_path_factory):
    source = PythonDocsSource(kind="python-docs")
    out = tmp_path_factory.mktemp("python-docs")
    return source, out, ingest_all(source, out)


def test_python_docs_topics_and_module_docstrings(python_docs):
    source, _, (rows, dropped, report) = python_docs
    texts = {r["text"] for r in rows}
    assert report["rows_out"] > 400  # ~80 pydoc topics + ~370 documented stdlib modules and submodules
    assert {r["license"] for r in rows} == {"PSF-2.0"} and {r["source"] for r in rows} == {"python-docs"}
    import json as json_module
    from pydoc_data.topics import topics

    assert topics["assert"].strip() in texts and json_module.__doc__.strip() in texts
    assert all(unicodedata.is_normalized("NFC", t) and t == t.strip() and "\r" not in t for t in texts)
    assert len({r["id"] for r in rows}) == len(rows)
    # modules without a docstring are counted, not silently skipped; private and side-effect modules are never imported
    assert set(report["dropped"]) <= {"missing_text", "empty"}
    assert all(d["detail"].startswith("module:") for d in dropped)
    keys = [d["detail"] for d in dropped]
    assert not any(k.startswith(("module:this", "module:antigravity", "module:_")) for k in keys)


PYTHON_DOCS_ELSEWHERE = """
import json, sys
from pathlib import Path
from corpusmill.tasks import ingest
from corpusmill.tasks.recipe import PythonDocsSource

source = PythonDocsSource(kind="python-docs")
(unit,) = ingest.plan([source])
out = Path(sys.argv[1])
report = ingest.run(source, unit, out / "shards", out / "quarantine.parquet", 100_000)
print(json.dumps({"shards": report["shards"], "fingerprint": ingest.unit_fingerprint(source, unit)}))
"""


def test_python_docs_is_the_same_in_another_process(python_docs, tmp_path):
    # another interpreter imports the standard library afresh (the module list is cached per process)
    source, out, (_, _, report) = python_docs
    done = subprocess.run([sys.executable, "-c", PYTHON_DOCS_ELSEWHERE, str(tmp_path)], capture_output=True,
                          text=True, check=True, timeout=600)
    elsewhere = json.loads(done.stdout.splitlines()[-1])
    assert [file_sha256(p) for p in elsewhere["shards"]] == [file_sha256(p) for p in report["shards"]]
    assert file_sha256(tmp_path / "quarantine.parquet") == file_sha256(out / "out-q-0.parquet")
    assert elsewhere["fingerprint"] == ingest.unit_fingerprint(source, ingest.plan([source])[0])


def test_python_docs_limit(tmp_path):
    rows, _, report = ingest_all(PythonDocsSource(kind="python-docs", limit=7), tmp_path)
    assert len(rows) == report["rows_out"] == 7


# --- files: formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix,opener", [(".jsonl", open), (".jsonl.gz", gzip.open), (".ndjson.zst", zstandard.open)])
def test_jsonl_plain_and_compressed(tmp_path, suffix, opener):
    path = tmp_path / f"data{suffix}"
    write_jsonl(path, RECORDS, opener)
    rows, dropped, report = ingest_all(files(str(path), name="j"), tmp_path)
    assert [r["text"] for r in rows] == [f"document number {i}\nsecond line" for i in range(5)]
    assert not dropped and report["dropped"] == {}
    assert {r["source"] for r in rows} == {"j"} and {r["license"] for r in rows} == {"CC0-1.0"}


def test_parquet_and_csv(tmp_path):
    pq.write_table(pa.table({"body": ["alpha", None, "  ", "gamma"], "k": [1, 2, 3, 4]}), tmp_path / "t.parquet")
    rows, dropped, report = ingest_all(files(str(tmp_path / "t.parquet"), text_column="body"), tmp_path)
    assert [r["text"] for r in rows] == ["alpha", "gamma"]
    assert report["dropped"] == {"missing_text": 1, "empty": 1}
    assert [d["detail"] for d in dropped] == [
        "t.parquet:row 1: 'body' is null", "t.parquet:row 2: no text after normalisation"]

    (tmp_path / "t.csv").write_bytes(
        b'id,text\n1,"multi\nline, quoted"\n2,x,extra\n3,\xff\xfe bad\n4,plain\n5,\n'
    )
    rows, dropped, report = ingest_all(files(str(tmp_path / "t.csv")), tmp_path, tag="csv")
    assert [r["text"] for r in rows] == ["multi\nline, quoted", "plain"]
    assert report["dropped"] == {"malformed_csv": 1, "invalid_utf8": 1, "empty": 1}
    details = [d["detail"] for d in dropped]
    assert details[0] == "t.csv:row 1: expected 2 fields, got 3" and dropped[0]["text"] == "2,x,extra"
    assert details[1].startswith("t.csv:row 2: invalid UTF-8") and details[2].startswith("t.csv:row 4:")


def test_format_inference():
    assert [ingest.infer_format(p) for p in ("a.jsonl", "a.JSON", "s3://b/a.ndjson.gz", "a.jsonl.zst", "a.parquet",
                                             "a.csv", "a.txt", "a.md", "README", "a.txt.gz")] == [
        "jsonl", "jsonl", "jsonl", "jsonl", "parquet", "csv", "text", "text", "text", "text"]


GUTENBERG = """The Project Gutenberg EBook of Test, by Nobody\r
License header that must go.\r
*** START OF THIS PROJECT GUTENBERG EBOOK TEST ***\r
\r
A TEST BOOK\r
\r
CHAPTER I.\r
\r
It was cafe\u0301 time.\r
Still the first paragraph.\r
\r
Second paragraph of chapter one.\r
\r
Chapter 2\r
Straight into the text.\r
\r
CHAPTER XII. THE LAST\r
\r
BOOK I. (Folio), CHAPTER I. (Sperm Whale).--This whale, among the\r
English of old, is not a heading\r
but a paragraph.\r
\r
BOOK ONE\r
\r
PART II\r
\r
Body of part two.\r
*** END OF THIS PROJECT GUTENBERG EBOOK TEST ***\r
Full license text that must go.\r
"""


@pytest.mark.parametrize("split_by,expected", [
    ("file", None),
    ("paragraph", ["A TEST BOOK", "CHAPTER I.", "It was caf\u00e9 time.\nStill the first paragraph.",
                   "Second paragraph of chapter one.", "Chapter 2\nStraight into the text.", "CHAPTER XII. THE LAST",
                   "BOOK I. (Folio), CHAPTER I. (Sperm Whale).--This whale, among the\n"
                   "English of old, is not a heading\nbut a paragraph.", "BOOK ONE", "PART II", "Body of part two."]),
    ("chapter", ["A TEST BOOK", "CHAPTER I.", "Chapter 2", "CHAPTER XII. THE LAST", "BOOK ONE"]),
])
def test_text_split_and_gutenberg_stripping(tmp_path, split_by, expected):
    (tmp_path / "book.txt").write_bytes(GUTENBERG.encode("utf-8"))
    rows, dropped, _ = ingest_all(files(str(tmp_path / "*.txt"), split_by=split_by), tmp_path)
    texts = [r["text"] for r in rows]
    assert not dropped and all("license" not in t.lower() and "\r" not in t for t in texts)
    assert any("caf\u00e9" in t for t in texts)  # NFC: e + combining accent became one character
    if split_by == "file":
        assert len(texts) == 1 and texts[0].startswith("A TEST BOOK") and texts[0].endswith("Body of part two.")
    elif split_by == "paragraph":
        assert texts == expected
    else:  # each chapter starts with its heading; 'BOOK ONE' has no body, so it stays with PART II
        assert [t.split("\n")[0] for t in texts] == expected
        assert texts[3].endswith("but a paragraph.") and texts[4] == "BOOK ONE\n\nPART II\n\nBody of part two."


def test_heading_rule():
    assert ingest.is_heading("  CHAPTER I  ") and ingest.is_heading("Chapter 12.") and ingest.is_heading("PART two")
    wrapped = ["Pictures of Whaling Scenes.", ""]
    assert ingest.is_heading("CHAPTER 56. Of the Less Erroneous Pictures of Whales", wrapped)
    assert not ingest.is_heading("CHAPTER 5. Whale.--The text", ["goes on", "and on"])
    assert not ingest.is_heading("Chapters of my life") and not ingest.is_heading("Part of the plan was this")


def test_gutenberg_chapters(corpora, tmp_path):
    alice = files(str(corpora / "gutenberg" / "11-*.txt"), split_by="chapter", name="g")
    rows, dropped, _ = ingest_all(alice, tmp_path)
    for edition in ("11-0.txt", "11-old-alice30.txt"):
        texts = [r["text"] for r in rows if r["id"] in {ingest.row_id("g", f"{edition}:doc {i}") for i in range(20)}]
        assert len(texts) == 13  # the title page, then 12 chapters
        assert texts[0].startswith("ALICE") and texts[1].startswith("CHAPTER I") and "Rabbit-Hole" in texts[1][:100]
        assert texts[-1].startswith("CHAPTER XII") and texts[-1].endswith("THE END")
        assert not any("Gutenberg" in t or "SMALL PRINT" in t for t in texts)
    assert not dropped


# --- bad rows ---------------------------------------------------------------------------------


def test_bad_jsonl_rows_are_counted_and_quarantined(tmp_path):
    lines = [
        b'{"text": "good one"}',
        b'{"text": "broken',
        b'{"text": "caf\xff"}',
        b'{"text": "   "}',
        b'{"title": "no text"}',
        b'{"text": null}',
        b'{"text": 42}',
        b'["not", "an", "object"]',
        b"",
        b'{"text": "\\ud800 lone surrogate"}',
        b'{"text": "good two"}',
    ]
    (tmp_path / "x.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rows, dropped, report = ingest_all(files(str(tmp_path / "x.jsonl"), name="bad"), tmp_path)
    assert [r["text"] for r in rows] == ["good one", "good two"]
    assert report["rows_in"] == 11 and report["dropped"] == {
        "malformed_json": 2, "invalid_utf8": 2, "empty": 2, "missing_text": 3}
    by_line = {int(d["detail"].split(":")[1]): d for d in dropped}
    assert by_line[2]["reason"] == "malformed_json"
    assert by_line[2]["detail"].startswith("x.jsonl:2: Unterminated string")
    assert by_line[2]["text"] == '{"text": "broken'
    assert by_line[3]["reason"] == "invalid_utf8" and "\\xff" in by_line[3]["text"]
    assert [by_line[n]["reason"] for n in (4, 5, 6, 7, 8, 9, 10)] == [
        "empty", "missing_text", "missing_text", "missing_text", "malformed_json", "empty", "invalid_utf8"]
    assert by_line[5]["detail"] == "x.jsonl:5: no 'text' field"
    assert {d["stage"] for d in dropped} == {"ingest"} and {d["source"] for d in dropped} == {"bad"}
    assert all(d["id"] == ingest.row_id("bad", f"x.jsonl:{n}") for n, d in by_line.items())


def test_undecodable_text_file_is_dropped_whole(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("first line\nna\u00efve\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"  \n\n")
    rows, dropped, report = ingest_all(files(str(tmp_path / "*.txt"), split_by="paragraph"), tmp_path)
    assert rows == [] and report["dropped"] == {"empty": 1, "invalid_utf8": 1}
    assert dropped[0]["detail"].startswith("empty.txt:1: ")
    assert dropped[1]["detail"].startswith("latin1.txt:2: the file is not UTF-8")
    assert dropped[1]["text"] == "na\\xefve\n"  # the offending line, bytes escaped


def test_empty_files_are_counted_and_skipped(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"")
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "c.parquet").write_bytes(b"")
    (tmp_path / "d.csv").write_text("text\nkept\n")
    rows, dropped, report = ingest_all(files(str(tmp_path / "*"), name="e"), tmp_path)
    assert [r["text"] for r in rows] == ["kept"] and report["dropped"] == {"empty": 3}
    assert [(d["detail"], d["id"]) for d in dropped] == [
        (f"{name}: the file is empty", ingest.row_id("e", name)) for name in ("a.csv", "b.csv.gz", "c.parquet")]


# --- errors that stop the run -------------------------------------------------------------------


def test_missing_inputs_raise_with_the_path(tmp_path):
    with pytest.raises(IngestError, match="nope.jsonl.*does not exist") as e:
        ingest.plan([files(str(tmp_path / "nope.jsonl"))])
    assert isinstance(e.value, CorpusmillError) and isinstance(e.value, ValueError)
    with pytest.raises(IngestError, match=r"\*\.parquet.*matches no file"):
        ingest.plan([files(str(tmp_path / "*.parquet"))])
    with pytest.raises(IngestError, match="is a directory"):
        ingest.plan([files(str(tmp_path))])
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(IngestError, match="split_by: chapter applies to text files"):
        ingest.plan([files(str(tmp_path / "*"), split_by="chapter")])


def test_unreadable_files_raise(tmp_path):
    (tmp_path / "fake.parquet").write_text("not parquet at all")
    (tmp_path / "t.parquet").write_bytes(b"")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    (tmp_path / "n.parquet").write_bytes(b"")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    cases = [("fake.parquet", "could not be read as parquet"), ("t.parquet", "no column 'text' .*columns: body"),
             ("t.csv", "no column 'text' .*columns: a, b"), ("n.parquet", "holds int64, not text")]
    for name, message in cases:
        source = files(str(tmp_path / name))
        with pytest.raises(IngestError, match=message):
            ingest.run(source, ingest.plan([source])[0], tmp_path / "out", tmp_path / "q.parquet", 10)


# --- ids, limits, shards ----------------------------------------------------------------------


def test_ids_do_not_depend_on_location(tmp_path):
    for where in ("one/deep/er", "two"):
        (tmp_path / where / "sub").mkdir(parents=True)
        write_jsonl(tmp_path / where / "sub" / "d.jsonl", RECORDS)
    runs = [ingest_all(files(str(tmp_path / w / "**" / "*.jsonl"), name="same"), tmp_path, tag=w.replace("/", "-"))
            for w in ("one/deep/er", "two")]
    assert [r["id"] for r in runs[0][0]] == [r["id"] for r in runs[1][0]]
    assert runs[0][0][0]["id"] == ingest.row_id("same", "sub/d.jsonl:1")
    units = [ingest.plan([files(str(tmp_path / w / "**" / "*.jsonl"))])[0] for w in ("one/deep/er", "two")]
    assert units[0].label == units[1].label == "sub/d.jsonl"
    assert ingest.unit_fingerprint(files("x"), units[0]) == ingest.unit_fingerprint(files("x"), units[1])


def test_plan_units_and_fingerprints(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        write_jsonl(tmp_path / name, RECORDS)
    source = files([str(tmp_path / "*.jsonl"), str(tmp_path / "a.jsonl")])
    units = ingest.plan([PythonDocsSource(kind="python-docs"), source])
    assert [(u.source_index, u.unit_index, u.label) for u in units] == [
        (0, 0, "python-docs"), (1, 0, "a.jsonl .. b.jsonl (2 files)")]  # sorted, a.jsonl listed once
    assert [f.label for f in units[1].files] == ["a.jsonl", "b.jsonl"]
    (alone,) = ingest.plan([files(str(tmp_path / "a.jsonl"))])
    assert alone.label == "a.jsonl" and ingest.unit_fingerprint(source, alone) == file_sha256(tmp_path / "a.jsonl")
    limited = files(str(tmp_path / "*.jsonl"), limit=7)
    (unit,) = ingest.plan([limited])
    assert unit == IngestUnit(0, 0, "2 file(s)", None)
    before = ingest.unit_fingerprint(limited, unit)
    write_jsonl(tmp_path / "b.jsonl", RECORDS[:2])
    assert ingest.unit_fingerprint(limited, unit) != before


def test_limit_counts_kept_documents_in_order_across_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a0"}, {"text": ""}, {"text": "a2"}])
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(5)])
    rows, dropped, report = ingest_all(files(str(tmp_path / "*.jsonl"), limit=4), tmp_path)
    assert [r["text"] for r in rows] == ["a0", "a2", "b0", "b1"]
    assert report["rows_in"] == 5 and report["dropped"] == {"empty": 1}


def test_shard_rows_split_gives_the_same_rows(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(25)])
    source = files(str(tmp_path / "d.jsonl"))
    one, _, r1 = ingest_all(source, tmp_path, shard_rows=1000, tag="one")
    many, _, r2 = ingest_all(source, tmp_path, shard_rows=10, tag="many")
    assert one == many and len(one) == 25
    assert [pq.read_metadata(p).num_rows for p in r2["shards"]] == [10, 10, 5]
    assert [p.rsplit("/", 1)[1] for p in r2["shards"]] == [f"s000-u00000-p0000{i}.parquet" for i in range(3)]
    # a later run with larger shards leaves no stale parts behind
    ingest_all(source, tmp_path, shard_rows=1000, tag="many")
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["s000-u00000-p00000.parquet"]


def test_empty_unit_still_writes_a_shard_and_reports_progress(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    source = files(str(tmp_path / "e.jsonl"))
    calls = []
    report = ingest.run(source, ingest.plan([source])[0], tmp_path / "out", tmp_path / "q.parquet", 10, calls.append)
    assert report["rows_out"] == 0 and report["dropped"] == {"empty": 2} and sum(calls) == 2
    (shard,) = report["shards"]
    assert pq.read_table(shard).schema.equals(schema.INGEST) and pq.read_metadata(shard).num_rows == 0
    # the same unit without bad rows removes the old quarantine file
    (tmp_path / "e.jsonl").write_text('{"text": "ok"}\n')
    ingest.run(source, ingest.plan([source])[0], tmp_path / "out", tmp_path / "q.parquet", 10)
    assert not (tmp_path / "q.parquet").exists()


# --- hub --------------------------------------------------------------------------------------


def test_hub_source_with_local_data_files(tmp_path):
    write_jsonl(tmp_path / "h.jsonl", [{"content": "hub one"}, {"content": None}, {"content": "hub two"}])
    source = HubSource(kind="hub", dataset="json", data_files=str(tmp_path / "h.jsonl"), text_column="content",
                       license="CC-BY-4.0", name="hub-test")
    rows, dropped, report = ingest_all(source, tmp_path)
    assert [r["text"] for r in rows] == ["hub one", "hub two"] and {r["license"] for r in rows} == {"CC-BY-4.0"}
    assert rows[0]["id"] == ingest.row_id("hub-test", "row 0")
    assert report["dropped"] == {"missing_text": 1} and dropped[0]["detail"] == "json:row 1: 'content' is null"
    unit = ingest.plan([source])[0]
    before = ingest.unit_fingerprint(source, unit)
    write_jsonl(tmp_path / "h.jsonl", [{"content": "changed"}])
    assert ingest.unit_fingerprint(source, unit) != before

    wrong_column = source.model_copy(update={"text_column": "text"})
    with pytest.raises(IngestError, match="no column 'text'.*columns: content"):
        ingest_all(wrong_column, tmp_path, tag="wrong")
    wrong_split = source.model_copy(update={"split": "validation"})
    with pytest.raises(IngestError, match="could not load the dataset 'json'.*split 'validation'"):
        ingest_all(wrong_split, tmp_path, tag="split")
    missing = HubSource(kind="hub", dataset="no-such-org/no-such-dataset", license="x")
    with pytest.raises(IngestError, match="no-such-org/no-such-dataset"):
        ingest_all(missing, tmp_path, tag="missing")


def test_small_files_are_grouped_into_few_units_with_the_same_rows(tmp_path, monkeypatch):
    from corpusmill.tasks.ingest import stage

    for i in range(30):
        write_jsonl(tmp_path / f"doc-{i:03d}.jsonl", [{"text": f"document {i} line {k}"} for k in range(3)])
    source = files(str(tmp_path / "*.jsonl"))
    monkeypatch.setattr(stage, "UNIT_FILES", 8)
    units = ingest.plan([source])
    assert [len(u.files) for u in units] == [8, 8, 8, 6]
    grouped = ingest_all(source, tmp_path, tag="grouped")[0]
    monkeypatch.setattr(stage, "UNIT_FILES", 1)  # one file a unit, as before grouping
    assert len(ingest.plan([source])) == 30
    assert ingest_all(source, tmp_path, tag="single")[0] == grouped  # same ids, texts and order
    monkeypatch.setattr(stage, "UNIT_FILES", 256)
    monkeypatch.setattr(stage, "UNIT_BYTES", (tmp_path / "doc-000.jsonl").stat().st_size * 5)
    assert [len(u.files) for u in ingest.plan([source])] == [5] * 6  # closed by size
