"""The validate stage: the default suite on small releases, one defect at a time."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import split_row, suite_params, synthetic_row, valid_rows, write_split_files

from corpusmill.expectations.default import SuiteParams, lineage_suite, rows_suite, split_suite
from corpusmill.tasks import schema
from corpusmill.tasks.filters import parse_step
from corpusmill.tasks.filters.pii import TYPES as PII_TYPES
from corpusmill.tasks.recipe import parse_recipe
from corpusmill.tasks.validate import format_failures, validate_release

PARAMS = suite_params()


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory, to prove GE writes nothing outside out_dir."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_valid_release_passes_and_writes_reports(tmp_path, cwd):
    files = write_split_files(tmp_path, valid_rows())
    out = tmp_path / "validation"
    summary = validate_release(files, PARAMS, out)

    assert summary["success"] is True, format_failures(summary)
    assert summary["critical_failures"] == [] and summary["warnings"] == [] and summary["failed"] == 0
    assert summary["suite"] == "default"
    assert summary["per_batch"] == {
        "train": {"rows": 20, "success": True},
        "validation": {"rows": 5, "success": True},
        "test": {"rows": 5, "success": True},
        "lineage": {"rows": 30, "success": True},
    }
    # one file per split: its rows, then the split's set-level checks; then lineage
    per_split = len(rows_suite(PARAMS, "x").expectations) + len(split_suite(PARAMS, "x").expectations)
    assert summary["evaluated"] == 3 * per_split + len(lineage_suite().expectations)

    assert sorted(p.name for p in out.iterdir()) == ["data_docs", "results.json"]
    assert (out / "data_docs" / "index.html").is_file()
    assert summary["data_docs"] == str(out / "data_docs" / "index.html")
    text = (out / "results.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"results.json holds {c}, not valid JSON"))
    assert report["summary"] == summary
    assert sorted(report["results"]) == ["lineage", "test", "test-00000-of-00001", "train", "train-00000-of-00001",
                                         "validation", "validation-00000-of-00001"]
    assert text == json.dumps(report, sort_keys=True, indent=2) + "\n"
    assert list(cwd.iterdir()) == [], "GE wrote into the working directory"


def _dup_id(rows):
    rows["train"][1]["id"] = rows["train"][0]["id"]


def _dup_text(rows):
    rows["train"][1]["text"] = rows["train"][0]["text"]


def _too_long(rows):
    rows["train"][3]["n_tokens"] = 101


def _synthetic_share(rows):
    # 2 of 5 rows generated: 0.4 > 0.3; parents in the same split keep lineage clean.
    rows["validation"][3] = synthetic_row("validation", 3, "validation-000")
    rows["validation"][4] = synthetic_row("validation", 4, "validation-001")


def _no_generator(rows):
    rows["train"][18]["generator"] = None


def _no_sampling(rows):
    rows["test"][4]["sampling"] = None


def _shared_cluster(rows):
    rows["test"][2]["cluster_id"] = rows["train"][5]["id"]


def _parent_in_train(rows):
    rows["test"][4]["parent_id"] = "train-007"


DEFECTS = [
    pytest.param(_dup_id, "train", "expect_column_values_to_be_unique", "id", "train-000", id="duplicate-id"),
    pytest.param(_dup_text, "train", "expect_column_values_to_be_unique", "text", "train-000", id="duplicate-text"),
    pytest.param(_too_long, "train", "expect_column_values_to_be_between", "n_tokens", "101", id="n-tokens-above-max"),
    pytest.param(
        _synthetic_share, "validation", "expect_column_mean_to_be_between", "synthetic", "0.4", id="synthetic-share"
    ),
    pytest.param(
        _no_generator, "train", "expect_column_values_to_not_be_null", "generator", "train-018", id="no-generator"
    ),
    pytest.param(
        _no_sampling, "test", "expect_column_values_to_not_be_null", "sampling", "test-004", id="no-sampling"
    ),
    pytest.param(
        _shared_cluster,
        "lineage",
        "expect_column_values_to_be_between",
        "n_splits",
        "train-005",
        id="cluster-in-two-splits",
    ),
    pytest.param(
        _parent_in_train, "lineage", "expect_column_values_to_be_between", "n_splits", "train-007", id="parent-in-train"
    ),
]


@pytest.mark.parametrize("defect, batch, expectation, column, seen", DEFECTS)
def test_each_defect_is_a_critical_failure(tmp_path, defect, batch, expectation, column, seen):
    rows = valid_rows()
    defect(rows)
    summary = validate_release(write_split_files(tmp_path, rows), PARAMS, tmp_path / "validation")

    assert summary["success"] is False
    hits = [
        f
        for f in summary["critical_failures"]
        if (f["batch"], f["expectation"], f["column"]) == (batch, expectation, column)
    ]
    assert len(hits) == 1, summary["critical_failures"]
    assert seen in hits[0]["observed"] and hits[0]["why"]
    assert summary["per_batch"][batch]["success"] is False
    if batch == "lineage":
        assert "train+test" in hits[0]["observed"]

    message = format_failures(summary)
    assert f"[{batch}] {expectation} on column {column}" in message
    assert hits[0]["why"] in message and summary["data_docs"] in message


def _drop_prompt_id(table: pa.Table) -> pa.Table:
    return table.drop_columns(["prompt_id"])


def _swap_columns(table: pa.Table) -> pa.Table:
    names = table.column_names
    return table.select([names[1], names[0], *names[2:]])


def _int64_tokens(table: pa.Table) -> pa.Table:
    return table.set_column(4, "n_tokens", table["n_tokens"].cast(pa.int64()))


@pytest.mark.parametrize(
    "alter, expectation, column, seen",
    [
        pytest.param(
            _drop_prompt_id, "expect_table_columns_to_match_ordered_list", None, "prompt_id", id="missing-column"
        ),
        pytest.param(
            _swap_columns, "expect_table_columns_to_match_ordered_list", None, "'Found': 'text'", id="column-order"
        ),
        pytest.param(_int64_tokens, "expect_column_values_to_be_of_type", "n_tokens", "int64", id="wrong-type"),
    ],
)
def test_schema_defects_are_critical_failures(tmp_path, alter, expectation, column, seen):
    files = write_split_files(tmp_path, valid_rows(), alter={"validation": alter})
    summary = validate_release(files, PARAMS, tmp_path / "validation")

    assert summary["success"] is False
    hits = [f for f in summary["critical_failures"] if f["expectation"] == expectation and f["column"] == column]
    assert [f["batch"] for f in hits] == ["validation"], summary["critical_failures"]
    assert seen in hits[0]["observed"]
    assert expectation in format_failures(summary)
    if alter is _drop_prompt_id:
        # The provenance check on the missing column reports GE's error rather than crashing.
        assert any(
            f["column"] == "prompt_id" and "does not exist" in f["observed"] for f in summary["critical_failures"]
        )


def test_files_of_one_split_must_share_a_schema(tmp_path):
    files = write_split_files(tmp_path, valid_rows())
    other = tmp_path / "data" / "train-extra.parquet"
    pq.write_table(_drop_prompt_id(pa.Table.from_pylist([split_row("train", 99)], schema=schema.RELEASE)), other)
    with pytest.raises(ValueError, match="different schemas"):
        validate_release({**files, "train": [*files["train"], other]}, PARAMS, tmp_path / "validation")


def test_a_data_docs_page_that_cannot_be_written_stops_validation(tmp_path, monkeypatch, caplog):
    """GE's site builder only logs what it fails to write; a full disk must not leave a
    release with incomplete reports, nor print GE's traceback."""
    from great_expectations.data_context.store.html_site_store import HtmlSiteStore

    full = OSError(errno.ENOSPC, "No space left on device")

    def disk_full(self, key, value, **kwargs):
        raise full

    monkeypatch.setattr(HtmlSiteStore, "set", disk_full)
    with pytest.raises(OSError) as raised:
        validate_release(write_split_files(tmp_path, valid_rows()), PARAMS, tmp_path / "validation")
    assert raised.value is full
    assert "Traceback" not in caplog.text


def test_empty_split_passes(tmp_path):
    rows = valid_rows()
    rows["test"] = []
    summary = validate_release(write_split_files(tmp_path, rows), PARAMS, tmp_path / "validation")

    assert summary["success"] is True, format_failures(summary)
    assert summary["per_batch"]["test"] == {"rows": 0, "success": True}
    assert format_failures(summary).startswith("Validation passed")


def test_an_empty_file_checked_first_leaves_the_row_checks_of_the_files_after_it(tmp_path):
    rows = valid_rows()
    rows["train"] = []
    rows["validation"][0]["n_tokens"] = PARAMS.max_tokens + 1
    summary = validate_release(write_split_files(tmp_path, rows), PARAMS, tmp_path / "validation")

    assert [(f["batch"], f["column"]) for f in summary["critical_failures"]] == [("validation", "n_tokens")]


def test_repeated_cluster_within_a_split_is_a_warning(tmp_path):
    rows = valid_rows()
    rows["train"][2]["cluster_id"] = rows["train"][1]["id"]
    summary = validate_release(write_split_files(tmp_path, rows), PARAMS, tmp_path / "validation")

    assert summary["success"] is True
    (warning,) = summary["warnings"]
    assert (warning["batch"], warning["column"]) == ("train", "cluster_id")
    assert summary["failed"] == 1


# Personal data of each kind the pii step removes, as a row might still hold it.
PII_EXAMPLES = {
    "email": "Write to jane.doe@example.org for a copy.",
    "us_ssn": "Her social security number was 078-05-1120 on the form.",
    "credit_card": "She paid with 4111 1111 1111 1111 at the door.",
    "phone": "Call +44 20 7946 0958 after six.",
}
# Numbers and dotted names as documentation and books hold them: not personal data.
NOT_PII = ("Call os.path.join in Python 3.11.7 (section 12-3 of RFC 5322, ISBN 978-0-14-143976-1), "
           "on 2024-01-15 at 10:30, from 127.0.0.1.")


def test_personal_data_left_in_a_release_fails_it_by_type_and_row(tmp_path):
    pii = parse_step({"step": "pii", "action": "redact", "actions": {"ip_address": "keep"}})
    params = SuiteParams(4, 100, 0.3, personal_data=tuple(t for t in PII_TYPES if t != "ip_address"), pii_step=pii)
    rows = valid_rows()
    planted = {}
    for k, (name, example) in enumerate(PII_EXAMPLES.items()):
        rows["test"][k]["text"] += " " + example
        planted[name] = rows["test"][k]["id"]
    rows["train"][0]["text"] += " " + NOT_PII
    rows["train"][1]["text"] += " Served from 8.8.8.8."  # a public address, but the recipe keeps addresses
    summary = validate_release(write_split_files(tmp_path, rows), params, tmp_path / "validation")

    assert summary["per_batch"]["safety"] == {"rows": 30, "success": False}
    failed = {f["column"]: f for f in summary["critical_failures"]}
    assert set(failed) == {f"personal_data.{name}" for name in PII_EXAMPLES}, failed
    for name, row_id in planted.items():
        hit = failed[f"personal_data.{name}"]
        assert hit["batch"] == "safety" and hit["observed"].startswith("1 unexpected") and row_id in hit["observed"]
        assert f"no '{name}' personal data may be left" in hit["why"]
    assert "[safety] expect_column_values_to_be_between on column personal_data.email" in format_failures(summary)


def test_languages_outside_the_recipe_fail_the_release(tmp_path):
    params = SuiteParams(4, 100, 0.3, languages=("en",), min_language_score=0.65)
    rows = valid_rows()
    for split in rows.values():
        for row in split:
            row.update(language="en", language_score=0.9)
    rows["train"][2].update(language="de", language_score=0.99)
    rows["validation"][0]["language_score"] = 0.5
    summary = validate_release(write_split_files(tmp_path, rows), params, tmp_path / "validation")
    failed = {(f["batch"], f["column"]): f for f in summary["critical_failures"]}
    assert set(failed) == {("train", "language"), ("validation", "language_score")}
    assert "train-002" in failed[("train", "language")]["observed"]


def test_a_decontaminated_eval_set_left_in_a_release_fails_it(tmp_path):
    from corpusmill.tasks.filters.decontaminate import EvalSet, build_index

    item = "the quick brown fox jumps over the lazy dog while the farmer sleeps in the warm afternoon sun"
    (tmp_path / "eval.jsonl").write_text(json.dumps({"text": item}) + "\n")
    index = tmp_path / "index.npz"
    build_index([EvalSet(name="fables", path=str(tmp_path / "eval.jsonl"))], index)
    rows = valid_rows()
    rows["validation"][1]["text"] += " " + item.upper()
    params = SuiteParams(4, 100, 0.3, eval_sets=("fables",))
    summary = validate_release(write_split_files(tmp_path, rows), params, tmp_path / "validation", index)
    (failure,) = summary["critical_failures"]
    assert (failure["batch"], failure["column"]) == ("safety", "eval_hits.fables")
    assert "validation-001" in failure["observed"]


def test_every_expectation_says_why_and_empty_files_check_only_the_schema():
    suites = [rows_suite(PARAMS, "rows"), split_suite(PARAMS, "train"), lineage_suite()]
    assert all(isinstance(e.meta["critical"], bool) and e.meta["why"] for s in suites for e in s.expectations)
    empty = rows_suite(PARAMS, "rows", empty=True).expectations
    assert [e.expectation_type for e in empty] == ["expect_table_columns_to_match_ordered_list"] + [
        "expect_column_values_to_be_of_type"
    ] * len(schema.RELEASE)


def test_params_from_recipe():
    base = {
        "name": "demo",
        "version": "1.0.0",
        "sources": [{"kind": "python-docs"}],
        "filters": [{"step": "tokens", "min": 8, "max": 512}],
    }
    assert SuiteParams.from_recipe(parse_recipe(base)) == SuiteParams(8, 512, 1.0)
    with_augment = parse_recipe({**base, "augment": {"max_synthetic_share": 0.25}})
    assert SuiteParams.from_recipe(with_augment).max_synthetic_share == 0.25


def test_relative_report_folder_is_accepted(tmp_path, cwd):
    # Recipes say `root: ./releases`; GE's Data Docs site itself only takes absolute folders.
    files = write_split_files(tmp_path, valid_rows())
    summary = validate_release(files, PARAMS, Path("rel") / "validation")
    assert summary["success"] is True
    assert (cwd / "rel" / "validation" / "data_docs" / "index.html").is_file()
