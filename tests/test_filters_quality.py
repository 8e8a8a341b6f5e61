"""The quality step: each Gopher, C4 and FineWeb rule drops a crafted document for its own
reason, thresholds override, C4 rewrites what it keeps, and on real text the decisions are
datatrove's (where datatrove is installed: it is a benchmark dependency)."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from pydantic import ValidationError

from corpusmill.tasks.filters import parse_step
from corpusmill.tasks.filters.quality import Quality
from corpusmill.tasks.filters.words import count_sentences, split_words

GOOD = "\n".join([
    "The river runs past the old mill and into the valley below the town.",
    "Farmers bring their grain to the mill each autumn, as their parents did.",
    "A wooden wheel turns with the current and drives two heavy stones.",
    "Children watch the miller work, and some of them help him with sacks.",
    "In winter the water freezes, so the mill stands quiet until spring.",
    "Visitors from the city like to walk along the bank to see the wheel.",
    "The miller keeps a small garden with roses that bloom in early summer.",
    "Every evening he writes the weight of each load in a leather book.",
])
LINES = GOOD.split("\n")


def _without_stop_words(text: str) -> str:
    for word in ("the ", "The ", "and ", "of ", "to ", "that ", "with "):
        text = text.replace(word, "")
    return text


def _gopher_and_c4_cases() -> dict[str | None, str]:
    rng = random.Random(0)
    short_words = " ".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(80)) + "."
    sequence = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60))
    return {
        "gopher.empty": "",
        "gopher.dup_para_frac": "\n\n".join([GOOD] * 3),
        "gopher.dup_para_char_frac": "\n\n".join([GOOD, GOOD] + [f"Paragraph number {i} is short." for i in range(6)]),
        "gopher.dup_line_frac": "\n".join(LINES[:2] * 3),
        "gopher.dup_line_char_frac": GOOD + "\n" + "\n".join([GOOD.replace("\n", " ")] * 2),
        "gopher.top_2_gram": GOOD + "\n" + "hello world " * 40 + ".",
        "gopher.duplicated_5_n_grams": GOOD + "\n" + sequence + " " + sequence + ".",
        "gopher.short_doc": "\n".join(LINES[:3]),
        "gopher.mean_word_length": short_words,
        "gopher.too_many_hashes": GOOD + "\n" + " ".join(f"#tag{i}" for i in range(20)) + ".",
        "gopher.too_many_ellipsis": GOOD + "\n" + " ".join(f"wait{i}..." for i in range(20)) + ".",
        "gopher.too_many_bullets": "\n".join("- " + line for line in LINES),
        "gopher.too_many_end_ellipsis": "\n".join(line[:-1] + "..." for line in LINES),
        "gopher.below_alpha_threshold": GOOD + "\n" + " ".join(str(1000 + 7 * i) for i in range(40)) + ".",
        "gopher.too_few_stop_words": _without_stop_words(GOOD),
        "c4.lorem_ipsum": GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
        "c4.curly_bracket": GOOD + "\nThe value {x} is set by the miller.",
        "c4.too_few_sentences": "\n".join(line[:-1] for line in LINES),
        None: GOOD,
    }


FINEWEB_CASES = {
    "fineweb.empty": "  \n \n",
    "fineweb.line_punct_ratio": "\n".join(line[:-1] for line in LINES),
    "fineweb.short_line_ratio": "\n".join(f"Short line {i}." for i in range(10)),
    "fineweb.char_dup_ratio": GOOD + "\n" + LINES[0],
    "fineweb.list_ratio": "\n".join(f"Internationalization{w}." for w in ("considerations", "requirements",
                                                                          "guidelines", "principles", "frameworks")),
    None: GOOD,
}


def _verdict(step: Quality, texts: list[str]):
    return step.filter(pa.table({"text": texts}), None)


def test_every_gopher_and_c4_rule_drops_its_document_and_a_good_one_stays():
    cases = _gopher_and_c4_cases()
    verdict = _verdict(Quality(step="quality"), list(cases.values()))
    assert list(verdict.reasons) == list(cases)
    assert all(detail for reason, detail in zip(verdict.reasons, verdict.details) if reason)


def test_every_fineweb_rule_drops_its_document_and_a_good_one_stays():
    verdict = _verdict(Quality(step="quality", rules=["fineweb"]), list(FINEWEB_CASES.values()))
    assert list(verdict.reasons) == list(FINEWEB_CASES)


def test_details_name_the_measured_value_and_the_bound():
    verdict = _verdict(Quality(step="quality"), ["\n".join(LINES[:3])])
    assert verdict.details == ["words 39 < 50"]


def test_thresholds_override_per_family():
    short = "\n".join(LINES[:3])
    assert _verdict(Quality(step="quality", rules=["gopher"]), [short]).reasons == ["gopher.short_doc"]
    relaxed = parse_step({"step": "quality", "rules": ["gopher"], "gopher": {"min_doc_words": 30}})
    assert _verdict(relaxed, [short]).reasons == [None]
    strict = parse_step({"step": "quality", "rules": ["gopher"], "gopher": {"max_doc_words": 60}})
    assert _verdict(strict, [GOOD]).reasons == ["gopher.long_doc"]
    off = parse_step({"step": "quality", "rules": ["c4"], "c4": {"min_num_sentences": -1}})
    assert _verdict(off, ["\n".join(line[:-1] for line in LINES)]).reasons == [None]


def test_c4_rewrites_kept_rows_and_the_quarantine_keeps_the_original():
    noisy = GOOD + "\nClick here to subscribe\nThis site uses cookies to work well.\nEnable JavaScript to see it.[1]"
    dropped = "\n".join(LINES[:3])
    verdict = _verdict(Quality(step="quality"), [noisy, dropped])
    assert verdict.reasons == [None, "gopher.short_doc"]
    assert verdict.text.to_pylist() == [GOOD, dropped]
    assert verdict.figures == {"c4_rewritten": 1}
    assert _verdict(Quality(step="quality", rules=["gopher", "fineweb"]), [noisy]).text is None


def test_families_run_in_datatrove_pipeline_order_whatever_the_recipe_order():
    both = "\n".join(line[:-1] for line in LINES[:3])  # too short for gopher, no sentences for c4
    for rules in (["gopher", "c4"], ["c4", "gopher"]):
        assert _verdict(Quality(step="quality", rules=rules), [both]).reasons == ["gopher.short_doc"]


@pytest.mark.parametrize("entry, message", [
    ({"rules": ["gopher", "gopher"]}, "twice"),
    ({"rules": ["gopher"], "c4": {"min_num_sentences": 3}}, "does not apply"),
    ({"rules": ["bleu"]}, "gopher"),
    ({"gopher": {"min_words": 3}}, "min_words"),
])
def test_bad_parameters_name_the_key(entry, message):
    with pytest.raises(ValidationError, match=message):
        parse_step({"step": "quality", **entry})


def test_words_split_as_spacy_english_does():
    text = "Mr. Bennet's house, don't “I can’t!” said H. Long. U.S.A. e.g. 3.5 1990-1995 well-known end.The"
    assert split_words(text) == [
        "Mr.", "Bennet", "'s", "house", ",", "do", "n't", "“", "I", "ca", "n’t", "!", "”", "said", "H.", "Long", ".",
        "U.S.A.", "e.g.", "3.5", "1990", "-", "1995", "well", "-", "known", "end", ".", "The"]
    assert split_words("the <unk> lobster @-@ like ( 24 in ) said--Mr. --Mr. cannot kill-e.” true):") == [
        "the", "<", "unk", ">", "lobster", "@-@", "like", "(", "24", "in", ")", "said", "--", "Mr.", "--Mr", ".",
        "can", "not", "kill", "-", "e.", "”", "true", "):"]
    assert split_words("see http://www.gutenberg.org/ebooks/11 or www.gutenberg.org, $5 10km") == [
        "see", "http://www.gutenberg.org/ebooks/11", "or", "www.gutenberg.org", ",", "$", "5", "10", "km"]


def test_sentences_counted_as_spacy_sentencizer_does():
    assert count_sentences(split_words("He came. She left! Did they? Mr. Smith stayed.")) == 4
    assert count_sentences(split_words("“Go.” He went.")) == 2
    assert count_sentences([]) == 0


def _datatrove_decisions(texts: list[str]) -> list[str | None]:
    """What a datatrove pipeline [GopherRepetition, GopherQuality, C4Quality, FineWebQuality]
    does with each text: the first filter's reason, or None."""
    filters = pytest.importorskip("datatrove.pipeline.filters", reason="datatrove (the bench extra) is not installed")
    pytest.importorskip("spacy", reason="datatrove's English word tokenizer needs spacy (the bench extra)")
    from datatrove.data import Document

    steps = [filters.GopherRepetitionFilter(), filters.GopherQualityFilter(), filters.C4QualityFilter(),
             filters.FineWebQualityFilter()]
    out = []
    for i, text in enumerate(texts):
        doc, reason = Document(text=text, id=str(i)), None
        for step in steps:
            result = step.filter(doc)
            if result is not True:
                reason = result[1] if isinstance(result, tuple) else "dropped"
                break
        out.append(reason)
    return out


def test_crafted_documents_get_datatrove_decisions():
    texts = list(_gopher_and_c4_cases().values())
    theirs = _datatrove_decisions(texts)
    ours = _verdict(Quality(step="quality"), texts).reasons
    assert [t is None for t in theirs] == [o is None for o in ours]


@pytest.mark.slow
def test_real_text_decisions_agree_with_datatrove(corpora):
    from benchmarks.filters import documents, units

    texts = documents(units(corpora), 150, seed=7)
    theirs = _datatrove_decisions(texts)
    ours = _verdict(Quality(step="quality"), texts).reasons
    agree = sum((t is None) == (o is None) for t, o in zip(theirs, ours)) / len(texts)
    assert agree >= 0.995
    assert 0 < sum(o is None for o in ours) < len(texts)  # the sample has both outcomes
