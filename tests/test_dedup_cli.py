"""`corpusmill dedup` on one file: bad input is one paragraph, and empty texts are nobody's duplicate."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from corpusmill.flows.cli import app

TEXT = "the quick brown fox jumps over the lazy dog near the old river bank in the morning light"


def dedup(*args: str):
    return CliRunner().invoke(app, ["dedup", *map(str, args)])


def failed(result) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "Please report" not in result.output
    return result.output.replace("\n", " ")


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [TEXT, None, "", "   ", TEXT, TEXT + " again"], "n": [1, 2, 3, 4, 5, 6]}), path)
    return path


def test_null_and_blank_texts_are_kept_as_their_own_clusters(texts, tmp_path):
    result = dedup(texts, "--out", tmp_path / "out.parquet")
    assert result.exit_code == 0, result.output
    out = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert out["keep"] == [True, True, True, True, False, False]  # the last is a near duplicate (Jaccard 13/14)
    assert out["cluster_id"][1:4] == ["1", "2", "3"]  # each blank row alone
    assert out["cluster_id"][4] == out["cluster_id"][0] == "0"
    assert "1 exact and 1 near" in result.output


@pytest.mark.parametrize("args, expected", [
    (["--text-column", "n"], "holds int64, not text"),
    (["--text-column", "body"], "has no column 'body'"),
    (["--threshold", "0"], "threshold"),
    (["--num-perm", "0"], "num_perm"),
])
def test_bad_columns_and_settings_are_one_paragraph(texts, tmp_path, args, expected):
    assert expected in failed(dedup(texts, "--out", tmp_path / "out.parquet", *args))


def test_folders_and_unreadable_files_are_one_paragraph(texts, tmp_path):
    assert "is a folder" in failed(dedup(tmp_path, "--out", tmp_path / "out.parquet"))
    assert "--out" in failed(dedup(texts, "--out", tmp_path))
    assert not list(tmp_path.glob(".*tmp*"))  # no stray temporary file
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert "not a Parquet file" in failed(dedup(tmp_path / "bad.parquet", "--out", tmp_path / "out.parquet"))
    assert "does not exist" in failed(dedup(tmp_path / "missing.parquet", "--out", tmp_path / "out.parquet"))
