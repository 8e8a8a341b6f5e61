"""Filter steps: the chain that runs them, the tokens step, a user's own step, the recipe's
`filters:` list and the filter stage's files."""

from __future__ import annotations

import pyarrow as pa
import pytest

from corpusmill.tasks import schema
from corpusmill.tasks.filters import StepContext, parse_step
from corpusmill.tasks.filters.chain import FilterStepError, apply_steps
from corpusmill.tasks.filters.stage import STAGE, run
from corpusmill.tasks.filters.tokens import count_tokens
from corpusmill.tasks.models import load_tokenizer
from corpusmill.tasks.recipe import ModelRef, RecipeError, parse_recipe
from corpusmill.tasks.shards import read_table, write_table

TOKENIZER = ModelRef(gguf="smollm2")
TABLE_DOC = "Results:\n| a | b |\n| 1 | 2 |\n| 3 | 4 |\n| 5 | 6 |\nThat is all."


@pytest.fixture(scope="module")
def context():
    return StepContext(tokenizer_ref=TOKENIZER)


def table(texts):
    return pa.Table.from_pylist(
        [{"id": f"r{i}", "text": t, "source": "s", "license": "l"} for i, t in enumerate(texts)], schema=schema.INGEST)


def steps(*entries):
    return [parse_step(e) for e in entries]


def test_counts_match_the_tokenizer_without_special_tokens():
    tokenizer = load_tokenizer(TOKENIZER)
    texts = ["Hello world.", "A somewhat longer sentence about parsing Python source files.", ""]
    expected = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    assert count_tokens(texts, tokenizer).tolist() == expected


def test_token_bounds_drop_count_and_quarantine_by_step_and_rule(context):
    short, ok, long = "Hi.", "This sentence has a comfortable number of tokens in it.", "word " * 200
    kept, dropped, report = apply_steps(table([short, ok, long]), steps({"step": "tokens", "min": 5, "max": 100}),
                                        context, "filter")
    assert kept.schema.equals(schema.TOKENIZED)
    assert kept.column("id").to_pylist() == ["r1"] and kept.column("synthetic").to_pylist() == [False]
    assert kept.column("language").null_count == 1  # no language step: the columns are there, null
    assert {d["id"]: (d["stage"], d["reason"]) for d in dropped} == {
        "r0": ("filter", "tokens.too_few_tokens"), "r2": ("filter", "tokens.too_many_tokens")}
    assert dropped[0]["detail"].endswith("tokens") and dropped[0]["text"] == short
    assert report.to_dict()["dropped"] == {"tokens.too_few_tokens": 1, "tokens.too_many_tokens": 1}
    assert report.rows_in == report.rows_out + sum(report.dropped.values())


def test_tokens_are_counted_on_the_final_text_after_a_rewrite(context):
    text = "A sentence with quite a few tokens in it, more than two."
    kept, _, _ = apply_steps(table([text]), steps({"step": "tokens"}, {"step": "user_steps:FirstWord"}), context,
                             "filter")
    assert kept.column("text").to_pylist() == ["A"]
    assert kept.column("n_tokens").to_pylist() == count_tokens(["A"], context.tokenizer).tolist()


def test_a_user_step_from_an_import_path_drops_with_its_own_reasons(context):
    kept, dropped, report = apply_steps(table([TABLE_DOC, "Plain prose, no tables."]),
                                        steps({"step": "user_steps:NoTables", "max_rows": 3}), context, "filter")
    assert kept.column("id").to_pylist() == ["r1"]
    assert (dropped[0]["reason"], dropped[0]["detail"]) == ("no_tables.too_many_table_rows", "4 rows")
    loose = apply_steps(table([TABLE_DOC]), steps({"step": "user_steps:NoTables", "max_rows": 4}), context, "filter")
    assert loose[0].num_rows == 1


def test_a_step_that_raises_is_named_with_the_shard_and_row(context):
    rows = table(["fine", "also fine", "this one goes boom", "fine again"])
    with pytest.raises(FilterStepError, match=r"'user_steps:Explodes' failed on shard s-1.parquet, row 2 \(id r2\)"
                       r".*ValueError: cannot parse this row"):
        apply_steps(rows, steps({"step": "user_steps:Explodes"}), context, "filter", where="shard s-1.parquet")
    with pytest.raises(FilterStepError, match="reasons has 2 values"):
        apply_steps(table(["x"]), steps({"step": "user_steps:WrongLength"}), context, "filter")


BASE = {"name": "x", "version": "1.0.0", "sources": [{"kind": "python-docs"}]}


@pytest.mark.parametrize("filters, message", [
    ({"min_tokens": 16, "max_tokens": 4096, "pii": "drop"},
     "filters:\n  - {step: tokens, min: 16, max: 4096}\n  - {step: pii, action: drop}"),
    ([{"step": "tokens", "mn": 3}], "entry 0 (step tokens): mn: unknown parameter; this step takes ['max', 'min']"),
    ([{"step": "tokens"}, {"step": "langauge"}], "entry 1: unknown step 'langauge'; choose one of ['language', 'pii',"),
    ([{"step": "tokens", "min": 5, "max": 2}], "max (2) must be >= min (5)"),
    ([{"step": "no_such_pkg.mod:Step"}], "No module named 'no_such_pkg'"),
    ([{"step": "user_steps:NotAStep"}], "is not a corpusmill.tasks.filters.FilterStep subclass"),
    ([{"min": 3}], "each filter is a mapping with a `step:` key"),
])
def test_recipe_errors_name_the_entry_key_and_choices(filters, message):
    with pytest.raises(RecipeError) as error:
        parse_recipe({**BASE, "filters": filters})
    assert message in str(error.value)


def test_recipe_steps_round_trip_through_the_manifest_and_key_the_stage():
    recipe = parse_recipe({**BASE, "filters": [{"step": "tokens", "min": 4}, {"step": "user_steps:NoTables"}]})
    resolved = recipe.resolved()["filters"]
    assert resolved == [{"step": "tokens", "min": 4, "max": None}, {"step": "user_steps:NoTables", "max_rows": 3}]
    assert parse_recipe({**BASE, "filters": resolved}).filters == recipe.filters
    params = dict(in_path=None, tokenizer_ref=TOKENIZER, steps=recipe.filters, decontamination_index=None)
    stricter = parse_recipe({**BASE, "filters": [{"step": "tokens", "min": 4}, {"step": "user_steps:NoTables",
                                                                              "max_rows": 2}]})
    assert STAGE.address(params) != STAGE.address({**params, "steps": stricter.filters})
    assert STAGE.address(params) == STAGE.address({**params, "steps": list(recipe.filters)})


def test_run_writes_shard_and_quarantine_and_clears_stale_quarantine(tmp_path):
    write_table(table(["Hi.", "This sentence has a comfortable number of tokens in it."]), tmp_path / "in.parquet")
    report = run(tmp_path / "in.parquet", tmp_path / "out.parquet", tmp_path / "q.parquet", TOKENIZER,
                 steps({"step": "tokens", "min": 5}))
    assert report["rows_out"] == 1 and report["extra"]["tokens"] == read_table(tmp_path / "out.parquet")["n_tokens"][0].as_py()
    assert read_table(tmp_path / "q.parquet").column("reason").to_pylist() == ["tokens.too_few_tokens"]
    run(tmp_path / "in.parquet", tmp_path / "out.parquet", tmp_path / "q.parquet", TOKENIZER, [])
    assert not (tmp_path / "q.parquet").exists()
