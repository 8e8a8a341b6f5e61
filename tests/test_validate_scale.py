"""Validation over releases of several files per split: failures that span files are still
caught and name their rows, and no step holds more than one file's rows."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from helpers import split_row, synthetic_row

from corpusmill.expectations.default import SuiteParams
from corpusmill.tasks import schema, validate
from corpusmill.tasks.filters import parse_step
from corpusmill.tasks.validate import format_failures, validate_release
from corpusmill.tasks.validate_sets import Lineage, SplitKeys

FILE_ROWS = 10
SIZES = {"train": 30, "validation": 20, "test": 20}  # 3, 2 and 2 files


def multi_file_rows() -> dict[str, list[dict]]:
    """Rows in English that pass the suite. Train's first file is half synthetic (0.5, over the
    0.3 cap), but the split as a whole is 5 in 30: the cap holds for the split, not per file."""
    rows = {split: [split_row(split, i, language="en", language_score=0.9) for i in range(n)]
            for split, n in SIZES.items()}
    for i in range(5, 10):
        rows["train"][i] = synthetic_row("train", i, f"train-0{i + 5}", language="en", language_score=0.9)
    return rows


def write_files(root: Path, rows: dict[str, list[dict]], alter=None) -> dict[str, list[Path]]:
    """Each split cut into release files of FILE_ROWS rows, named as publishing names them."""
    files = {}
    for split, split_rows in rows.items():
        count = -(-len(split_rows) // FILE_ROWS)
        files[split] = []
        for k in range(count):
            table = pa.Table.from_pylist(split_rows[k * FILE_ROWS:(k + 1) * FILE_ROWS], schema=schema.RELEASE)
            path = root / "data" / f"{split}-{k:05d}-of-{count:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(alter[split](table) if alter and split in alter else table, path)
            files[split].append(path)
    return files


def params() -> SuiteParams:
    pii = parse_step({"step": "pii", "action": "redact"})
    return SuiteParams(4, 100, 0.3, languages=("en",), min_language_score=0.65, personal_data=("email",),
                       pii_step=pii)


def _int64_tokens(table: pa.Table) -> pa.Table:
    return table.set_column(4, "n_tokens", table["n_tokens"].cast(pa.int64()))


def test_failures_spanning_files_are_each_reported_with_their_rows(tmp_path):
    rows = multi_file_rows()
    train, validation, test = rows["train"], rows["validation"], rows["test"]
    train[25]["id"] = "train-003"  # an id repeated in another file
    train[14]["text"] = train[2]["text"]  # a text repeated in another file
    test[15]["cluster_id"] = "validation-012"  # a cluster in two splits
    for i in (10, 11, 14, 15, 16, 17, 18):  # 7 of 20 generated, all in the second file: 0.35 > 0.3
        validation[i] = synthetic_row("validation", i, f"validation-00{i - 10}", language="en", language_score=0.9)
    # a null where the schema allows one but the suite does not: a generated row without its generator
    train[21] = synthetic_row("train", 21, "train-020", generator=None, language="en", language_score=0.9)
    validation[13]["n_tokens"] = 101
    train[28]["language"] = "de"
    test[12]["text"] += " Write to jane.doe@example.org for a copy."  # personal data in a second file
    files = write_files(tmp_path, rows, alter={"test": _int64_tokens})  # every test file: one schema per split

    summary = validate_release(files, params(), tmp_path / "validation")

    found = {(f["batch"], f["expectation"], f["column"]): f for f in summary["critical_failures"]}
    expected = {
        ("train", "expect_column_values_to_be_unique", "id"): (["train-003"], []),
        ("train", "expect_column_values_to_be_unique", "text"): (["train-002", "train-014"], []),
        ("lineage", "expect_column_values_to_be_between", "n_splits"): (["validation-012", "validation+test"], []),
        ("validation", "expect_column_mean_to_be_between", "synthetic"): (["0.35"], []),
        ("train", "expect_column_values_to_not_be_null", "generator"): (["train-021"], ["train-00002-of-00003"]),
        ("validation", "expect_column_values_to_be_between", "n_tokens"): (["validation-013"],
                                                                             ["validation-00001-of-00002"]),
        ("train", "expect_column_values_to_be_in_set", "language"): (["train-028"], ["train-00002-of-00003"]),
        ("test", "expect_column_values_to_be_of_type", "n_tokens"): (["int64"],
                                                                     ["test-00000-of-00002", "test-00001-of-00002"]),
        ("safety", "expect_column_values_to_be_between", "personal_data.email"): (["test-012"],
                                                                                  ["test-00001-of-00002"]),
    }
    assert set(found) == set(expected), summary["critical_failures"]
    for key, (seen, files_named) in expected.items():
        assert all(s in found[key]["observed"] for s in seen), found[key]
        assert found[key]["files"] == files_named and found[key]["why"]
    assert summary["success"] is False and summary["warnings"] == []
    message = format_failures(summary)
    assert "[safety] expect_column_values_to_be_between on column personal_data.email in test-00001-of-00002" in message
    assert "on column n_tokens in test-00000-of-00002, test-00001-of-00002:" in message
    assert summary["per_batch"]["train"] == {"rows": 30, "success": False}


def test_validation_holds_one_file_at_a_time_and_reads_texts_once(tmp_path, monkeypatch):
    """Every table read is released before the next read, every frame GE gets with more rows
    than a file holds no strings but row names, and a clean release is read exactly once."""
    files = write_files(tmp_path, multi_file_rows())
    reads, tables, frames = [], [], []
    read_file, check = validate.read_file, validate.Run.check

    def counting_read(path, columns=None, row_groups=None, footer=None):
        gc.collect()  # GE leaves reference cycles; what they hold is freed, not kept
        assert [r for r in tables + frames if r() is not None] == [], f"still held when reading {path.name}"
        reads.append((path.name, columns))
        table = read_file(path, columns, row_groups, footer)
        tables.append(weakref.ref(table))
        return table

    def recording_check(self, name, report, file, frame, *args, **kwargs):
        frames.append(weakref.ref(frame))
        if len(frame) > FILE_ROWS:
            assert name in SIZES or name == "lineage", name
            strings = [c for c, t in frame.dtypes.items() if pd.api.types.is_string_dtype(t) and c != "splits"]
            assert strings == [], f"{name} holds strings: {strings}"
        return check(self, name, report, file, frame, *args, **kwargs)

    monkeypatch.setattr(validate, "read_file", counting_read)
    monkeypatch.setattr(validate.Run, "check", recording_check)
    summary = validate_release(files, params(), tmp_path / "validation")

    assert summary["success"] is True, format_failures(summary)  # train's half-synthetic first file included
    assert reads == [(p.name, None) for split in SIZES for p in files[split]]
    assert summary["per_batch"] == {"train": {"rows": 30, "success": True}, "validation": {"rows": 20, "success": True},
                                    "test": {"rows": 20, "success": True}, "lineage": {"rows": 70, "success": True},
                                    "safety": {"rows": 70, "success": True}}


def test_a_file_with_more_text_than_a_piece_is_validated_piece_by_piece(tmp_path, monkeypatch):
    """A big release file is read a few row groups at a time, and what spans its pieces (a
    repeated text) or sits in a later piece (personal data) is still found, named by rows."""
    rows = multi_file_rows()
    train = rows["train"]
    train[27]["text"] = train[21]["text"]
    train[25]["text"] += " Write to jane.doe@example.org for a copy."
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(train, schema=schema.RELEASE), path, row_group_size=4)
    files = {**write_files(tmp_path, {s: rows[s] for s in ("validation", "test")}), "train": [path]}
    text_bytes = pq.ParquetFile(path).metadata.row_group(0).column(1).total_uncompressed_size
    monkeypatch.setattr(validate, "PIECE_TEXT_BYTES", 2 * text_bytes)  # about two row groups of 4 rows a piece
    reads = []
    read_file = validate.read_file
    monkeypatch.setattr(validate, "read_file", lambda path, columns=None, row_groups=None, footer=None:
                        reads.append((path.name, row_groups)) or read_file(path, columns, row_groups, footer))
    summary = validate_release(files, params(), tmp_path / "validation")

    pieces = [groups for name, groups in reads if name.startswith("train") and groups is not None]
    assert len(pieces) >= 3 and [g for groups in pieces for g in groups] == list(range(8))  # each group once, in order
    found = {(f["batch"], f["column"]): f for f in summary["critical_failures"]}
    assert set(found) == {("train", "text"), ("safety", "personal_data.email")}
    assert "train-021" in found[("train", "text")]["observed"] and "train-027" in found[("train", "text")]["observed"]
    (piece,) = found[("safety", "personal_data.email")]["files"]
    first, last = map(int, piece.removeprefix("train-00000-of-00001 rows ").split("-"))
    assert first <= 25 <= last and (first, last) != (0, 29)
    assert "train-025" in found[("safety", "personal_data.email")]["observed"]
    assert summary["per_batch"]["train"] == {"rows": 30, "success": False}


def test_each_file_footer_is_read_once(tmp_path, monkeypatch):
    """The schema check, the piece plan and every piece's read share one read of the footer."""
    files = write_files(tmp_path, multi_file_rows())
    monkeypatch.setattr(validate, "PIECE_TEXT_BYTES", 1)  # every row group a piece of its own
    footers_read = []
    parquet_file = pq.ParquetFile

    def counting_file(path, *args, metadata=None, **kwargs):
        if metadata is None:  # pyarrow parses the footer
            footers_read.append(path)
        return parquet_file(path, *args, metadata=metadata, **kwargs)

    for module in (pq, pq.core):  # pq.read_metadata and read_schema call the one in pq.core
        monkeypatch.setattr(module, "ParquetFile", counting_file)
    summary = validate_release(files, params(), tmp_path / "validation")

    assert summary["success"] is True, format_failures(summary)
    assert len(footers_read) == sum(len(paths) for paths in files.values()) == 7


def test_names_are_resolved_by_a_second_pass_over_key_columns_only(tmp_path, monkeypatch):
    rows = multi_file_rows()
    rows["test"][19]["id"] = "test-001"
    files = write_files(tmp_path, rows)
    reads = []
    read_file = validate.read_file
    monkeypatch.setattr(validate, "read_file", lambda path, columns=None, row_groups=None, footer=None:
                        reads.append(columns) or read_file(path, columns, row_groups, footer))
    summary = validate_release(files, SuiteParams(4, 100, 0.3), tmp_path / "validation")

    (failure,) = summary["critical_failures"]
    assert (failure["batch"], failure["column"]) == ("test", "id") and "test-001" in failure["observed"]
    assert reads[7:] == [["id", "cluster_id", "parent_id"]] * 7  # the second pass: no texts


def _keys(rows: list[dict]) -> SplitKeys:
    keys = SplitKeys()
    for k in range(0, len(rows), 2):  # two rows a file
        keys.add(pa.Table.from_pylist(rows[k:k + 2], schema=schema.RELEASE))
    return keys


def test_lineage_counts_the_splits_of_each_key():
    rows = {"train": [split_row("train", i) for i in range(4)],
            "test": [split_row("test", 0), synthetic_row("test", 1, "train-002")]}
    lineage = Lineage.of({s: _keys(r) for s, r in rows.items()}, schema.SPLITS)
    # six ids, one of them also the parent of a row in the other split
    assert len(lineage.keys) == 6 and np.all(np.diff(lineage.keys.astype(np.float64)) > 0)
    assert sorted(lineage.n_splits().tolist()) == [1, 1, 1, 1, 1, 2]
    assert sorted(lineage.bits.tolist()) == [1, 1, 1, 4, 4, 5]  # train is bit 0, test bit 2
