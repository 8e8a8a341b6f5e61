import json

import pyarrow as pa
import pytest

from corpusmill.tasks import schema
from corpusmill.tasks.publish import ReleaseExists, accounting, check_absent, fingerprint, verify, write_splits
from corpusmill.tasks.shards import read_table, write_table


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


# --- dataset card ---------------------------------------------------------------------------

def _card_inputs(tmp_path, licenses):
    from corpusmill.tasks.publish import _accumulate, SplitStats

    rows = [{"id": f"r{i}", "text": f"text {i}", "source": f"src{i % len(licenses)}", "license": licenses[i % len(licenses)],
             "n_tokens": 5 + i, "synthetic": i % 3 == 0, "parent_id": f"p{i}" if i % 3 == 0 else None,
             "generator": "g@sha256:x" if i % 3 == 0 else None, "prompt_id": "paraphrase@abc" if i % 3 == 0 else None,
             "cluster_id": f"r{i}"} for i in range(12)]
    stats = {"train": SplitStats(), "test": SplitStats()}
    _accumulate(stats["train"], pa.Table.from_pylist(rows[:9], schema=schema.RELEASE))
    _accumulate(stats["test"], pa.Table.from_pylist(rows[9:], schema=schema.RELEASE))
    manifest = {
        "name": "c", "version": "1.2.0", "fingerprint": "fp", "code_version": "0.1.0", "seed": 1, "tokenizer": "tok",
        "recipe": {"name": "c", "sources": [{"license": lic} for lic in licenses],
                   "dedup": {"ngram": 5, "num_perm": 128, "threshold": 0.8},
                   "augment": {"model": "m", "templates": ["paraphrase"], "fraction": 0.1, "max_synthetic_share": 0.3}},
        "inputs": [{"name": f"src{i}", "kind": "files", "license": lic} for i, lic in enumerate(licenses)],
        "files": [{"path": "data/train-00000-of-00001.parquet", "split": "train"},
                  {"path": "data/test-00000-of-00001.parquet", "split": "test"}],
        "accounting": {"rows_in": 20, "synthetic_in": 6, "rows_out": 12, "synthetic_out": 4,
                       "dropped": {"dedup.near_duplicate": 3, "tokenize.too_few_tokens": 11}},
        "validation": {"suite": "default", "evaluated": 9, "failed": 0, "critical_failures": [], "warnings": [],
                       "per_batch": {"train": {"rows": 9, "success": True}}},
    }
    return manifest, stats


def _front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.parametrize("licenses, expected", [
    (["PSF-2.0"], {"license": "psf-2.0"}),
    (["CC-BY-SA-3.0"], {"license": "cc-by-sa-3.0"}),
    (["CC0-1.0"], {"license": "cc0-1.0"}),
    (["public-domain"], {"license": "other", "license_name": "public-domain"}),
])
def test_card_license_ids(licenses, expected):
    from corpusmill.tasks.card import license_front_matter

    assert license_front_matter(licenses) == expected


def test_card_front_matter_and_sections(tmp_path):
    from corpusmill.tasks.card import dataset_card

    manifest, stats = _card_inputs(tmp_path, ["CC0-1.0", "public-domain"])
    card = dataset_card(manifest, stats, {"extra": {"bands": 9, "rows_per_band": 13, "clusters": 2}})
    front = _front_matter(card)
    assert front["license"] == "other" and "public-domain" in front["license_details"]
    assert front["size_categories"] == ["n<1K"] and front["task_categories"] == ["text-generation"]
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"},
                                                 {"split": "test", "path": "data/test-*.parquet"}]
    for heading in ("## Sources and licenses", "### Rows and tokens per split and source", "## Where the rows went",
                    "## Synthetic data", "## Deduplication", "## Validation", "plots/composition.png"):
        assert heading in card
    assert "| src1 | files | public-domain | other |" in card
    assert "| tokenize | too_few_tokens | 11 |" in card
    assert "| train | `paraphrase@abc` | 3 |" in card  # rows 0, 3, 6 of the first nine are synthetic
    assert dataset_card(manifest, stats, {}) == dataset_card(manifest, stats, {})


def test_plots_are_byte_identical(tmp_path):
    from corpusmill.tasks.card import write_plots

    _, stats = _card_inputs(tmp_path, ["CC0-1.0", "MIT"])
    paths = write_plots(stats, tmp_path / "a" / "plots")
    write_plots(stats, tmp_path / "b" / "plots")
    assert paths == ["plots/token_lengths.png", "plots/composition.png"]
    for p in paths:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
