"""The `toxicity` step: the share of listed words per row, judged only in the list's languages."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from corpusmill.tasks.filters import parse_step
from corpusmill.tasks.filters.step import StepContext
from corpusmill.tasks.filters.toxicity import Toxicity

TOXIC = "You fucking piece of shit, shut up and fuck off, you stupid cunt, nobody wants you here."
HAMLET = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer the slings and "
          "arrows of outrageous fortune, or to take arms against a sea of troubles and by opposing end them.")
DOCS = ("Return a new sorted list from the items in iterable. Has two optional arguments which must be specified "
        "as keyword arguments. key specifies a function of one argument that is used to extract a comparison key.")
SCUNTHORPE = ("The people of Scunthorpe and Sussex assess the classic cocktail recipes; the class passed the "
              "assessment, and Dickens wrote of Middlesex and Essex in his assignments.")
GERMAN_TOXIC = "Du bist ein Arschloch und ein Hurensohn, verpiss dich, du blöde Schlampe, Scheiße noch mal."


def _table(texts: list[str], **columns) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts, **columns})


def _filter(texts: list[str], **params):
    return Toxicity(step="toxicity", **params).filter(_table(texts), StepContext())


def test_drops_a_toxic_text_with_masked_matches_and_keeps_clean_ones():
    step = parse_step({"step": "toxicity", "max_share": 0.01})
    verdict = step.filter(_table([TOXIC, HAMLET, DOCS]), StepContext())
    assert list(verdict.reasons) == ["too_toxic", None, None]
    share, _, matched = verdict.details[0].partition(": ")
    assert share.startswith("0.") and share.endswith("> 0.01")
    assert matched == "f*****g, s**t, f**k"  # the first three distinct matches, in order, masked
    assert verdict.figures == {"judged": 3, "not_judged": 0, "flagged_rows": 1, "dropped": 1}


def test_words_inside_other_words_never_match():
    verdict = _filter([SCUNTHORPE])
    assert verdict.figures["flagged_rows"] == 0 and not verdict.dropped.any()


def test_a_row_at_the_bound_stays_and_one_above_it_goes():
    filler = ["word"] * 98
    at_bound = " ".join(["shit", "hello"] + filler)  # 1 in 100
    above = " ".join(["shit", "shit"] + filler)  # 2 in 100
    verdict = _filter([at_bound, above])
    assert list(verdict.reasons) == [None, "too_toxic"]
    assert verdict.figures["flagged_rows"] == 2


def test_other_languages_pass_as_not_judged():
    verdict = _filter([GERMAN_TOXIC, TOXIC])
    assert list(verdict.reasons) == [None, "too_toxic"]
    assert verdict.figures == {"judged": 1, "not_judged": 1, "flagged_rows": 1, "dropped": 1}


def test_judges_the_languages_asked_for_with_entries_of_several_words():
    verdict = _filter([GERMAN_TOXIC, "Mach das Fenster zu und verpiss", "dich ruhig auf das Sofa, sagte sie."],
                      languages=["en", "de"])
    assert list(verdict.reasons) == ["too_toxic", None, None]  # "verpiss dich" split over two rows is no match
    assert "v*****s d**h" in verdict.details[0]
    assert verdict.figures["judged"] == 3


def test_uses_the_language_column_of_an_earlier_language_step():
    table = _table([TOXIC, TOXIC, ""], language=pa.array(["fr", "en", None], pa.string()))
    verdict = Toxicity(step="toxicity").filter(table, StepContext())
    assert list(verdict.reasons) == [None, "too_toxic", None]
    assert verdict.figures["not_judged"] == 2


def test_languages_without_a_list_or_without_spaces_are_refused():
    with pytest.raises(ValidationError, match=r"no word list can judge \['xx', 'zh'\]"):
        Toxicity(step="toxicity", languages=["zh", "xx"])
    with pytest.raises(ValidationError):
        Toxicity(step="toxicity", max_share=-0.1)


def test_the_word_list_is_part_of_the_identity():
    identity = Toxicity(step="toxicity").identity()
    assert identity["step"] == "toxicity" and len(identity["word_list"]) == 64


def test_shakespeare_and_python_docs_are_mostly_kept(corpora):
    from pydoc_data.topics import topics

    assert not _filter(list(topics.values())).dropped.any()
    play = (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")
    verdict = _filter(play)
    assert verdict.figures["judged"] > 0.95 * len(play)
    assert verdict.dropped.mean() < 0.02  # a few short turns are bawdy: "Thou whoreson ..."
