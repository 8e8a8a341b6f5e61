"""The data-safety figures: built from the filter and augment reports, shown in the card."""

from __future__ import annotations

from collections import Counter

from corpusmill.tasks.card import _data_safety
from corpusmill.tasks.publish import SplitStats
from corpusmill.tasks.safety import data_safety, without_item_lists

RECIPE = {
    "filters": [{"step": "pii", "action": "redact", "actions": {"phone": "drop"}}, {"step": "toxicity"}],
    "decontaminate": [{"name": "humaneval", "policy": "drop"}, {"name": "mmlu", "policy": "cut"}],
}
REPORTS = {
    "filter": {"extra": {
        "pii": {"email": {"found": 3, "rows": 2, "redacted": 3, "kept": 0, "dropped": 0},
                "phone": {"found": 1, "rows": 1, "redacted": 0, "kept": 0, "dropped": 1}},
        "toxicity": {"judged": 90, "not_judged": 4, "flagged_rows": 6, "dropped": 2},
        "decontaminate": {"humaneval": {"rows_dropped": 2, "rows_cut": 0, "items": {"3": 1, "17": 1}},
                          "mmlu": {"rows_dropped": 0, "rows_cut": 1, "items": {"5": 1}}}}},
    "augment": {"extra": {
        "pii": {"email": {"found": 1, "rows": 1, "redacted": 1, "kept": 0, "dropped": 0}},
        "toxicity": {"judged": 10, "not_judged": 0, "flagged_rows": 1, "dropped": 1},
        "decontaminate": {"humaneval": {"rows_dropped": 1, "rows_cut": 0, "items": {"3": 1}}}}},
}
ACCOUNTING = {"dropped": {"filter.pii.phone": 1, "filter.toxicity.too_toxic": 2, "augment.toxicity.too_toxic": 1,
                          "augment.refusal": 4, "filter.decontaminate.humaneval": 2,
                          "augment.decontaminate.humaneval": 1, "dedup.near_duplicate": 7}}
EVAL_SETS = {"humaneval": {"items_total": 164}, "mmlu": {"items_total": 14042}}


def test_figures_add_source_and_generated_rows_and_name_each_control():
    safety = data_safety(RECIPE, REPORTS, ACCOUNTING, Counter({"en": 90, "de": 3}), EVAL_SETS)
    assert safety["personal_data"] == {
        "email": {"action": "redact", "found": 4, "rows": 3, "redacted": 4, "kept": 0, "dropped": 0},
        "phone": {"action": "drop", "found": 1, "rows": 1, "redacted": 0, "kept": 0, "dropped": 1}}
    assert safety["languages"] == {"en": 90, "de": 3}
    # augment's own gates (refusal) and other stages are not filter steps
    assert safety["filter_drops"] == {"decontaminate": {"humaneval": 3}, "pii": {"phone": 1},
                                      "toxicity": {"too_toxic": 3}}
    assert safety["toxicity"] == {"judged": 100, "not_judged": 4, "flagged_rows": 7, "dropped": 3}
    # item 3 was found in source and generated rows: one item, found
    assert safety["contamination"] == {
        "humaneval": {"policy": "drop", "rows_dropped": 3, "rows_cut": 0, "items_found": 2, "items_total": 164},
        "mmlu": {"policy": "cut", "rows_dropped": 0, "rows_cut": 1, "items_found": 1, "items_total": 14042}}


def test_the_manifest_keeps_counts_of_items_not_their_lists():
    compact = without_item_lists(REPORTS)
    assert compact["filter"]["extra"]["decontaminate"]["humaneval"] == {"rows_dropped": 2, "rows_cut": 0,
                                                                       "items_found": 2}
    assert compact["filter"]["extra"]["pii"] == REPORTS["filter"]["extra"]["pii"]


def test_card_section_shows_every_control_and_says_when_one_is_absent():
    safety = data_safety(RECIPE, REPORTS, ACCOUNTING, Counter({"en": 90, "de": 3}), EVAL_SETS)
    stats = {"train": SplitStats(rows=93)}
    card = "\n".join(_data_safety({"data_safety": safety}, stats))
    assert "| phone | drop | 1 | 1 |" in card and "| email | redact | 4 | 3 |" in card
    assert "| de | 3 | 3.2% |" in card
    assert "| toxicity | too_toxic | 3 |" in card
    assert "100 rows judged" in card and "4 rows in languages the list does not cover" in card
    assert "| humaneval | drop | 3 | 0 | 2 of 164 (1.2%) |" in card
    bare = data_safety({"filters": []}, {}, {"dropped": {}}, Counter({"unknown": 5}), {})
    card = "\n".join(_data_safety({"data_safety": bare}, {"train": SplitStats(rows=5)}))
    assert "No `pii` step: personal data was neither searched for nor removed." in card
    assert "Toxicity" not in card and "contamination" not in card
