import json

import pyarrow as pa
import pytest

from tasks import schema
from tasks.publish import ReleaseExists, accounting, check_absent, fingerprint, verify, write_splits
from tasks.shards import read_table, write_table


def _final_shard(path, ids, split):
    rows = [{"id": i, "text": f"text {i}", "source": "s", "license": "l", "n_tokens": 3, "synthetic": False,
             "parent_id": None, "generator": None, "prompt_id": None, "cluster_id": i, "split": split} for i in ids]
    fields = list(schema.RELEASE) + [pa.field("split", pa.string())]
    write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), path)


def test_write_splits_rolls_files_and_names_them_like_the_hub(tmp_path):
    _final_shard(tmp_path / "f0.parquet", [f"a{i}" for i in range(5)], "train")
    _final_shard(tmp_path / "f1.parquet", [f"b{i}" for i in range(3)], "train")
    _final_shard(tmp_path / "f2.parquet", ["c0"], "test")
    files, stats = write_splits([tmp_path / f"f{i}.parquet" for i in range(3)], tmp_path / "rel" / "data",
                                {"train": 8, "validation": 0, "test": 1}, shard_rows=3)
    assert [f["path"] for f in files] == [
        "data/test-00000-of-00001.parquet", "data/train-00000-of-00003.parquet",
        "data/train-00001-of-00003.parquet", "data/train-00002-of-00003.parquet"]
    train = pa.concat_tables(read_table(tmp_path / "rel" / f["path"]) for f in files if f["split"] == "train")
    assert train.column("id").to_pylist() == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(3)]
    assert train.schema.equals(schema.RELEASE)
    assert stats["train"].rows == 8 and "validation" not in stats


def test_verify_catches_a_flipped_byte_and_extra_files(tmp_path):
    release = tmp_path / "rel"
    _final_shard(tmp_path / "f0.parquet", ["a", "b"], "train")
    files, _ = write_splits([tmp_path / "f0.parquet"], release / "data", {"train": 2}, 10)
    (release / "manifest.json").write_text(json.dumps({"files": files, "fingerprint": fingerprint(files)}))
    assert verify(release) == []
    data = release / files[0]["path"]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    assert "does not match" in verify(release)[0]
    (release / "data" / "extra.parquet").write_bytes(b"x")
    assert any("not listed" in p for p in verify(release))
    assert "missing" in verify(tmp_path)[0]


def test_accounting_must_balance():
    reports = {"ingest": {"rows_in": 10, "dropped": {"empty": 1}}, "tokenize": {"dropped": {"too_few_tokens": 2}},
               "augment": {"rows_in": 4, "dropped": {"refusal": 1}}, "dedup": {"dropped": {"near_duplicate": 1}},
               "split": {"dropped": {"synthetic_cap": 1}}}
    result = accounting(reports, rows_out=8, synthetic_out=2)
    assert result["dropped"]["tokenize.too_few_tokens"] == 2
    with pytest.raises(RuntimeError, match="does not balance"):
        accounting(reports, rows_out=9, synthetic_out=2)


def test_existing_release_is_refused(tmp_path):
    with pytest.raises(ReleaseExists, match="bump `version:`"):
        check_absent(tmp_path)
