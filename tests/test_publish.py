import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from helpers import FINAL, card_inputs, release_row

from corpusmill.tasks import schema
from corpusmill.tasks.card import dataset_card, license_front_matter, write_plots
from corpusmill.tasks.publish import ReleaseExists, accounting, check_absent, write_splits
from corpusmill.tasks.shards import StageReport, read_table, write_table


def _final_shard(path, ids, split):
    write_table(pa.Table.from_pylist([release_row(i, split=split) for i in ids], schema=FINAL), path)


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


def test_accounting_must_balance():
    reports = {"ingest": {"rows_in": 10, "dropped": {"empty": 1}}, "filter": {"dropped": {"tokens.too_few_tokens": 2}},
               "augment": {"rows_in": 4, "dropped": {"refusal": 1}}, "dedup": {"dropped": {"near_duplicate": 1}},
               "split": {"dropped": {"synthetic_cap": 1}}}
    result = accounting(reports, rows_out=8, synthetic_out=2)
    assert result["dropped"]["filter.tokens.too_few_tokens"] == 2
    with pytest.raises(RuntimeError, match="does not balance"):
        accounting(reports, rows_out=9, synthetic_out=2)


def test_merged_stage_report_adds_up_every_shards_figures():
    """What reaches the manifest's `stages`: the augment and filter figures of all shards, summed."""
    shards = [
        {"rows_in": 5, "rows_out": 4, "dropped": {"refusal": 1},
         "extra": {"tokens": 40, "seconds": 1.5, "new_tokens": 90, "reused": 2,
                   "finish_reasons": {"eos": 3, "length": 1}, "prompt_ids": {"paraphrase@1": {"generated": 3, "kept": 2}}}},
        {"rows_in": 3, "rows_out": 2, "dropped": {"refusal": 1}},  # a shard without figures
        {"rows_in": 3, "rows_out": 3, "dropped": {},
         "extra": {"tokens": 25, "seconds": 0.7, "pii_redactions": 2, "finish_reasons": {"eos": 2, "stop": 1},
                   "prompt_ids": {"paraphrase@1": {"generated": 1, "kept": 1}, "qa@2": {"generated": 2, "kept": 2}}}},
    ]
    assert StageReport.merge("augment", shards).to_dict() == {
        "stage": "augment", "rows_in": 11, "rows_out": 9, "dropped": {"refusal": 2},
        "extra": {"tokens": 65, "finish_reasons": {"eos": 5, "length": 1, "stop": 1},
                  "prompt_ids": {"paraphrase@1": {"generated": 4, "kept": 3}, "qa@2": {"generated": 2, "kept": 2}},
                  "pii_redactions": 2},  # not this run's work (seconds, new_tokens, reused): rebuilds would differ
    }


@pytest.mark.parametrize("first, second", [
    ({"examples": [{"a": "x"}]}, {"examples": [{"a": "y"}]}),  # a list has no sum
    ({"version": "1.0.0"}, {"version": "1.0.0"}),
    ({"capped": True}, {"capped": False}),  # a flag is not a count
    ({"tokens": 4}, {"tokens": {"eos": 4}}),
])
def test_merging_figures_that_do_not_add_up_is_refused(first, second):
    reports = [{"rows_in": 1, "rows_out": 1, "dropped": {}, "extra": extra} for extra in (first, second)]
    with pytest.raises(TypeError, match="cannot merge the shards'"):
        StageReport.merge("x", reports)


def test_existing_release_is_refused(tmp_path):
    with pytest.raises(ReleaseExists, match="bump `version:`"):
        check_absent(tmp_path)


# --- dataset card ---------------------------------------------------------------------------

CARD_LICENSES = ["CC0-1.0", "public-domain"]
DEDUP_REPORT = {"extra": {"bands": 9, "rows_per_band": 13, "clusters": 2}}


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.parametrize("licenses, expected", [
    (["PSF-2.0"], {"license": "psf-2.0"}),
    (["CC-BY-SA-3.0"], {"license": "cc-by-sa-3.0"}),
    (["CC0-1.0"], {"license": "cc0-1.0"}),
    (["public-domain"], {"license": "other", "license_name": "public-domain"}),
])
def test_card_license_ids(licenses, expected):
    assert license_front_matter(licenses) == expected


def test_card_front_matter_and_sections(tmp_path):
    manifest, stats = card_inputs(tmp_path, CARD_LICENSES)
    card = dataset_card(manifest, stats, DEDUP_REPORT)
    assert _front_matter(card) == {
        "license": "other", "license_name": "multiple-licenses",
        "license_details": "Rows carry their source's license in the `license` column: CC0-1.0, public-domain",
        "pretty_name": "c", "size_categories": ["n<1K"], "task_categories": ["text-generation"],
        "task_ids": ["language-modeling"], "tags": ["corpusmill", "synthetic"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"},
                                                              {"split": "test", "path": "data/test-*.parquet"}]}],
    }
    body = card.split("---\n", 2)[2]
    headings = [line for line in body.splitlines() if line.startswith("#")]
    assert headings == ["# c 1.2.0", "## Sources and licenses", "## Splits", "### Rows and tokens per split and source",
                        "## Where the rows went", "## Synthetic data", "## Deduplication", "## Validation",
                        "## Reproducing"]
    assert "| src1 | files | public-domain | other |" in card
    assert "| train | 9 | 81 | 9.0 | 33.3% | 1 |" in card  # tokens 5..13
    assert "| filter | tokens.too_few_tokens | 11 | 42.3% |" in card  # 11 of 20 + 6 rows in
    assert "| train | `paraphrase@abc` | 3 |" in card  # rows 0, 3, 6 of the first nine are synthetic
    assert "(9 bands x 13 rows)" in card and "| clusters of more than one row | 2 |" in card
    assert "![Composition by source](plots/composition.png)" in card


def test_card_without_augment_or_parent_leaves_their_sections_out(tmp_path):
    manifest, stats = card_inputs(tmp_path, ["PSF-2.0"])
    card = dataset_card({**manifest, "recipe": {**manifest["recipe"], "augment": None}}, stats, {})
    assert _front_matter(card)["license"] == "psf-2.0" and "license_name" not in _front_matter(card)
    assert "## Synthetic data" not in card and "follows **" not in card and "mixes licenses" not in card
    with_parent = dataset_card({**manifest, "parent": {"version": "1.1.0", "fingerprint": "abc"}}, stats, {})
    assert "This version follows **1.1.0** (fingerprint `abc`)" in with_parent


def test_card_credits_the_models_and_word_lists_its_filter_steps_ran_on(tmp_path):
    manifest, stats = card_inputs(tmp_path, ["PSF-2.0"])
    filters = [{"step": "language", "languages": ["en"]}, {"step": "toxicity"}, {"step": "tokens", "min": 1}]
    card = dataset_card({**manifest, "recipe": {**manifest["recipe"], "filters": filters}}, stats, {})
    credits = card.split("## Credits\n", 1)[1].split("\n## ", 1)[0]
    assert [line.split(" (")[0].split(",")[0] for line in credits.splitlines() if line.startswith("- ")] == [
        "- fastText's language identification model `lid.176.ftz`", '- LDNOOBW']  # each once, in step order
    assert "CC-BY-SA-3.0" in credits and "CC-BY-4.0" in credits
    assert "## Credits" not in dataset_card(manifest, stats, {})  # no step with credits


def test_card_is_the_same_in_another_process(tmp_path):
    """A card depends on nothing but its inputs: not on set or dict order under another hash seed."""
    manifest, stats = card_inputs(tmp_path / "here", CARD_LICENSES)
    render = (
        "import sys; from pathlib import Path; from helpers import card_inputs; "
        "from corpusmill.tasks.card import dataset_card; "
        f"sys.stdout.write(dataset_card(*card_inputs(Path(sys.argv[1]), {CARD_LICENSES!r}), {DEDUP_REPORT!r}))"
    )
    tests_dir = str(Path(__file__).parent)
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": tests_dir}
        child = subprocess.run([sys.executable, "-c", render, str(tmp_path / f"child{seed}")], env=env,
                               capture_output=True, text=True, timeout=300, check=True)
        assert child.stdout == dataset_card(manifest, stats, DEDUP_REPORT)


def test_plots_are_byte_identical(tmp_path):
    _, stats = card_inputs(tmp_path, ["CC0-1.0", "MIT"])
    paths = write_plots(stats, tmp_path / "a" / "plots")
    write_plots(stats, tmp_path / "b" / "plots")
    assert paths == ["plots/token_lengths.png", "plots/composition.png"]
    for p in paths:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
