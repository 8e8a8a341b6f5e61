"""The `language` step: lid.176 labels, scores and the drops that `languages` and `min_score` make."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from corpusmill.tasks.filters import parse_step
from corpusmill.tasks.filters.language import Language, identify
from corpusmill.tasks.filters.step import StepContext

ENGLISH = ("The committee met on Tuesday to discuss the budget for next year. Most members agreed that "
           "the library needs a new roof before winter, and the school wants more teachers.")
GERMAN = ("Der Ausschuss traf sich am Dienstag, um den Haushalt für das nächste Jahr zu besprechen. Die meisten "
          "Mitglieder waren sich einig, dass die Bibliothek vor dem Winter ein neues Dach braucht.")
FRENCH = ("Le comité s'est réuni mardi pour discuter du budget de l'année prochaine. La plupart des membres "
          "étaient d'accord pour dire que la bibliothèque a besoin d'un nouveau toit avant l'hiver.")


def _table(texts: list[str]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts})


def test_identify_names_each_language_with_a_high_probability():
    codes, scores = identify([ENGLISH, GERMAN, FRENCH])
    assert codes == ["en", "de", "fr"]
    assert scores.dtype == np.float32
    assert (scores > 0.9).all()


def test_a_text_without_letters_has_no_language():
    codes, scores = identify(["", "   \n", "12 345 -- 6.7 !!", ENGLISH])
    assert codes == [None, None, None, "en"]
    assert np.isnan(scores[:3]).all() and scores[3] > 0.9


def test_newlines_do_not_cut_the_text_short():
    # fastText reads one line: were the newline kept, the German part would be ignored or refused
    codes, _ = identify(["Hi\n" + GERMAN])
    assert codes == ["de"]


def test_the_same_text_gets_the_same_score_bits_alone_and_in_any_batch():
    _, alone = identify([FRENCH])
    _, batch = identify([ENGLISH, GERMAN, FRENCH] * 50)
    assert alone[0].tobytes() == batch[2].tobytes() == batch[-1].tobytes()


def test_labels_every_row_and_drops_nothing_without_languages():
    for languages in (None, []):
        verdict = Language(step="language", languages=languages).filter(_table([ENGLISH, GERMAN, ""]), StepContext())
        assert not verdict.dropped.any()
        assert verdict.columns["language"].to_pylist() == ["en", "de", None]
        scores = verdict.columns["language_score"]
        assert scores.type == pa.float32() and scores.null_count == 1
        assert verdict.figures == {"detected": {"de": 1, "en": 1, "no_letters": 1}}


def test_drops_other_languages_low_scores_and_texts_without_letters():
    step = parse_step({"step": "language", "languages": ["en", "fr"], "min_score": 0.65})
    assert isinstance(step, Language)
    verdict = step.filter(_table([ENGLISH, GERMAN, FRENCH, "ok", "42"]), StepContext())
    assert list(verdict.reasons) == [None, "not_allowed", None, "low_score", "no_letters"]
    found, score = verdict.details[1].split()
    assert found == "de" and float(score) > 0.9
    low = verdict.details[3]
    assert low.startswith("en 0.") and low.endswith("< 0.65") and float(low.split()[1]) < 0.65
    assert verdict.columns["language"].to_pylist() == ["en", "de", "fr", "en", None]  # set on dropped rows too


def test_min_score_is_the_bound_on_the_stored_float32_score():
    _, (score,) = identify([ENGLISH])
    above = float(np.nextafter(score, np.float32(1.0)))
    keep = Language(step="language", languages=["en"], min_score=float(score)).filter(_table([ENGLISH]), StepContext())
    drop = Language(step="language", languages=["en"], min_score=above).filter(_table([ENGLISH]), StepContext())
    assert list(keep.reasons) == [None] and list(drop.reasons) == ["low_score"]


def test_the_model_file_is_part_of_the_identity():
    identity = Language(step="language", languages=["en"]).identity()
    assert identity["step"] == "language" and len(identity["model"]) == 64


def test_an_unknown_language_code_names_the_valid_ones():
    with pytest.raises(ValidationError, match=r"unknown language codes \['eng'\].*\ben\b"):
        Language(step="language", languages=["eng"])
    with pytest.raises(ValidationError):
        Language(step="language", min_score=1.5)


def test_real_english_books_and_articles_are_english(corpora):
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((corpora / "gutenberg").glob("*-0.txt")))
    text += (corpora / "wikitext-2" / "test.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if len(line) > 200][:2000]
    verdict = Language(step="language", languages=["en"]).filter(_table(lines), StepContext())
    assert verdict.dropped.mean() < 0.01
    assert verdict.figures["detected"]["en"] >= 0.99 * len(lines)
