import pyarrow as pa
import pytest

from corpusmill.tasks import schema
from corpusmill.tasks.models import load_tokenizer
from corpusmill.tasks.recipe import Filters, ModelRef
from corpusmill.tasks.shards import read_table, write_table
from corpusmill.tasks.tokenize import count_tokens, filter_rows, run


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelRef(gguf="smollm2"))


def table(texts):
    return pa.Table.from_pylist(
        [{"id": f"r{i}", "text": t, "source": "s", "license": "l"} for i, t in enumerate(texts)], schema=schema.INGEST)


def test_counts_match_the_tokenizer_without_special_tokens(tokenizer):
    texts = ["Hello world.", "A somewhat longer sentence about parsing Python source files.", ""]
    expected = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    assert count_tokens(texts, tokenizer).tolist() == expected


def test_bounds_drop_and_report_rows(tokenizer):
    short, ok, long = "Hi.", "This sentence has a comfortable number of tokens in it.", "word " * 200
    kept, dropped, report = filter_rows(table([short, ok, long]), tokenizer, Filters(min_tokens=5, max_tokens=100))
    assert kept.schema.equals(schema.TOKENIZED)
    assert kept.column("id").to_pylist() == ["r1"] and kept.column("synthetic").to_pylist() == [False]
    assert {d["id"]: d["reason"] for d in dropped} == {"r0": "too_few_tokens", "r2": "too_many_tokens"}
    assert report.to_dict()["dropped"] == {"too_few_tokens": 1, "too_many_tokens": 1}
    assert report.rows_in == report.rows_out + sum(report.dropped.values())


def test_personal_data_is_redacted_dropped_or_kept(tokenizer):
    texts = ["Mail ada.lovelace@example.com for the notes on the engine.", "Nothing personal in this line of text."]
    redacted, _, report = filter_rows(table(texts), tokenizer, Filters(pii="redact"))
    assert redacted.column("text")[0].as_py() == "Mail <EMAIL> for the notes on the engine."
    assert report.extra == {"pii_redactions": 1, "pii_rows_redacted": 1}
    kept, dropped, _ = filter_rows(table(texts), tokenizer, Filters(pii="drop"))
    assert kept.column("id").to_pylist() == ["r1"] and dropped[0]["reason"] == "pii" and dropped[0]["detail"] == "email"
    untouched, _, _ = filter_rows(table(texts), tokenizer, Filters(pii="keep"))
    assert untouched.column("text").to_pylist() == texts


def test_run_writes_shard_and_quarantine_and_clears_stale_quarantine(tmp_path, tokenizer):
    write_table(table(["Hi.", "This sentence has a comfortable number of tokens in it."]), tmp_path / "in.parquet")
    report = run(tmp_path / "in.parquet", tmp_path / "out.parquet", tmp_path / "q.parquet", ModelRef(gguf="smollm2"),
                 Filters(min_tokens=5))
    assert report["rows_out"] == 1 and report["extra"]["tokens"] == read_table(tmp_path / "out.parquet")["n_tokens"][0].as_py()
    assert read_table(tmp_path / "q.parquet").column("reason").to_pylist() == ["too_few_tokens"]
    run(tmp_path / "in.parquet", tmp_path / "out.parquet", tmp_path / "q.parquet", ModelRef(gguf="smollm2"), Filters())
    assert not (tmp_path / "q.parquet").exists()
