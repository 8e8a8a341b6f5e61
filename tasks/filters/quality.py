"""`quality`: the Gopher, C4 and FineWeb heuristic rules, as datatrove 0.10 applies them.

Recipe: `{step: quality, rules: [gopher, c4, fineweb]}`; thresholds per family, named as
datatrove's arguments: `{step: quality, rules: [gopher], gopher: {min_doc_words: 30}}`.
A null threshold switches its rule off (datatrove's `None`, and its `-1` for C4's
`min_num_sentences`, `min_words_per_line` and `max_word_length`).

Families run in the order of the datatrove pipeline [GopherRepetitionFilter,
GopherQualityFilter, C4QualityFilter, FineWebQualityFilter], whatever the order of
`rules`; a row is dropped by the first rule it fails, under `<family>.<rule>`:

- `gopher` (repetition): `empty`, `dup_para_frac`, `dup_para_char_frac`, `dup_line_frac`,
  `dup_line_char_frac`, `top_<n>_gram`, `duplicated_<n>_n_grams`: datatrove's names.
- `gopher` (quality), datatrove's `gopher_<name>` without the prefix: `short_doc`,
  `long_doc`, `too_many_hashes`, `too_many_ellipsis`, `too_many_bullets`,
  `too_many_end_ellipsis`, `below_alpha_threshold`; two are renamed:
  `gopher_below_avg_threshold` and `gopher_above_avg_threshold` are `mean_word_length`
  (the detail says which bound), and `gopher_enough_stop_words`, which fires when there
  are too few, is `too_few_stop_words`.
- `c4`: `lorem_ipsum`, `curly_bracket`, `too_few_sentences`.
- `fineweb`: `empty`, `line_punct_ratio`, `short_line_ratio`, `char_dup_ratio`, `list_ratio`.

C4 rewrites what it keeps, as datatrove does: every line is stripped, wiki citations
(`[1]`, `[edit]`, `[citation needed]`) are removed, and lines without terminal punctuation,
with fewer than 3 words, with a word over 1000 characters, or mentioning javascript or a
cookie/terms-of-use policy are dropped. The verdict carries the new text of kept rows
(dropped rows keep theirs, for the quarantine), and FineWeb judges the rewritten text.
Hard-wrapped text (Gutenberg) loses most of its lines this way; set
`c4: {filter_no_terminal_punct: false}` to keep them. Only C4's line mode (datatrove's
default `split_paragraph=True`) is offered.

Words are split as datatrove's spaCy tokenizer splits them (`tasks/filters/words.py`).
Deliberate differences: Gopher's repeated n-grams are compared as word sequences (by
64-bit hashes), where datatrove compares the words joined without a separator (`ab c`
equals `a bc` there); and datatrove divides by zero on a text without words when
`min_doc_words` is off, where the ratios here are 0.
`benchmarks/filters.py` measures the agreement of the decisions with datatrove's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import chain
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict
from corpusmill.tasks.filters.words import PUNCTUATION_SET, TERMINAL_PUNCTUATION, count_sentences, split_words

BATCH = 1_000  # rows per vectorised pass: bounds the memory held by flattened words


STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")

# ---- thresholds ---------------------------------------------------------------------------


class _Family(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GopherRules(_Family):
    """datatrove's GopherRepetitionFilter and GopherQualityFilter arguments. As there, a
    threshold that is null or 0 switches its rule off."""

    dup_para_frac: float | None = Field(0.3, ge=0, description="most share of paragraphs equal to an earlier one")
    dup_para_char_frac: float | None = Field(0.2, ge=0, description="most share of characters in repeated paragraphs")
    dup_line_frac: float | None = Field(0.3, ge=0, description="most share of lines equal to an earlier one")
    dup_line_char_frac: float | None = Field(0.2, ge=0, description="most share of characters in repeated lines")
    top_n_grams: tuple[tuple[int, float], ...] = Field(
        ((2, 0.2), (3, 0.18), (4, 0.16)),
        description="(n, most share of characters taken by the most frequent word n-gram)")
    dup_n_grams: tuple[tuple[int, float], ...] = Field(
        ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)),
        description="(n, most share of characters in word n-grams that repeat an earlier one)")
    min_doc_words: int | None = Field(50, ge=0, description="fewest words that are not only punctuation")
    max_doc_words: int | None = Field(100_000, ge=0, description="most words that are not only punctuation")
    min_avg_word_length: float | None = Field(3, ge=0, description="shortest mean length of those words")
    max_avg_word_length: float | None = Field(10, ge=0, description="longest mean length of those words")
    max_symbol_word_ratio: float | None = Field(
        0.1, ge=0, description="most '#', and most '...' or '…', per word")
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, description="most share of lines starting with • or -")
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, description="most share of lines ending with ... or …")
    max_non_alpha_words_ratio: float | None = Field(
        0.8, ge=0, description="fewest share of words with a letter (datatrove's name says the opposite)")
    min_stop_words: int | None = Field(2, ge=0, description="fewest distinct stop words present")
    stop_words: tuple[str, ...] = Field(STOP_WORDS, description="the stop words, matched case-sensitively")

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _positive_n(cls, value: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
        if any(n < 1 for n, _ in value):
            raise ValueError("each n must be at least 1")
        return value


class C4Rules(_Family):
    """datatrove's C4QualityFilter arguments (line mode). Null, or datatrove's -1, switches
    the numeric rules off."""

    remove_citations: bool = Field(True, description="remove [1], [edit] and [citation needed] from lines")
    filter_no_terminal_punct: bool = Field(True, description="remove lines not ending in . ? ! \" or ', or ending in ...")
    min_num_sentences: int | None = Field(5, ge=-1, description="fewest sentences left in the kept lines")
    min_words_per_line: int | None = Field(3, ge=-1, description="remove lines with fewer words")
    max_word_length: int | None = Field(1000, ge=-1, description="remove lines with a longer word")
    filter_lorem_ipsum: bool = Field(True, description="drop documents with a kept line saying 'lorem ipsum'")
    filter_javascript: bool = Field(True, description="remove lines mentioning javascript")
    filter_curly_bracket: bool = Field(True, description="drop documents with a kept line containing {")
    filter_policy: bool = Field(True, description="remove lines about terms of use, privacy or cookie policies")

    @staticmethod
    def bound(value: int | None) -> int | None:
        return None if value is None or value == -1 else value


class FineWebRules(_Family):
    """datatrove's FineWebQualityFilter arguments."""

    line_punct_thr: float = Field(0.12, ge=0, description="fewest share of lines ending in a stop character")
    line_punct_exclude_zero: bool = Field(False, description="keep documents where no line ends in one")
    stop_chars: tuple[str, ...] | None = Field(
        None, description="line-ending characters; null: datatrove's terminal punctuation of all scripts")
    short_line_thr: float = Field(0.67, ge=0, description="most share of short lines")
    short_line_length: int = Field(30, ge=0, description="a line of at most this many characters is short")
    char_duplicates_ratio: float = Field(0.01, ge=0, description="most share of characters in repeated lines")
    new_line_ratio: float = Field(0.3, ge=0, description="most line breaks per word")


# ---- the rules ----------------------------------------------------------------------------

Failure = tuple[str, str]  # (rule, detail)
_LETTER = regex.compile(r"\p{L}").search  # str.isalpha's letters
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _duplicates(items: list[str]) -> tuple[int, int]:
    """datatrove's find_duplicates: how many items equal an earlier one, and their characters."""
    unique = set(items)
    return len(items) - len(unique), sum(map(len, items)) - sum(map(len, unique))


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _lines(text: str) -> list[str]:
    """re.split("\\n+", text), several times faster: blank pieces go, but the first and last stay."""
    parts = text.split("\n")
    last = len(parts) - 1
    return [p for k, p in enumerate(parts) if p or k == 0 or k == last]


def _paragraphs(text: str) -> list[str]:
    """re.split("\\n{2,}", text) for a stripped text: lines grouped between empty lines."""
    out, block = [], []
    for line in text.split("\n"):
        if line:
            block.append(line)
        elif block:
            out.append("\n".join(block))
            block = []
    if block or not out:
        out.append("\n".join(block))
    return out


def _gopher_lines(text: str, r: GopherRules) -> Failure | None:
    """The repetition rules on paragraphs and lines, before any word is split."""
    if not text:
        return "empty", "empty text"
    for unit, pieces, max_frac, max_char_frac in (
            ("para", _paragraphs(text.strip()), r.dup_para_frac, r.dup_para_char_frac),
            ("line", _lines(text), r.dup_line_frac, r.dup_line_char_frac)):
        name = {"para": "paragraphs", "line": "lines"}[unit]
        dup, chars = _duplicates(pieces)
        if max_frac and dup / len(pieces) > max_frac:
            return f"dup_{unit}_frac", f"{dup} of {len(pieces)} {name} repeat > {max_frac}"
        if max_char_frac and chars / len(text) > max_char_frac:
            return (f"dup_{unit}_char_frac",
                    f"repeated {name} hold {chars / len(text):.4g} of characters > {max_char_frac}")
    return None


class _Words:
    """The words of a batch of documents, flattened: ids into a vocabulary, per-word lengths
    and the document of each word, for rules computed with numpy over the whole batch."""

    def __init__(self, words: list[list[str]]):
        self.counts = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        encoded = pc.dictionary_encode(pa.array(list(chain.from_iterable(words)), pa.string()))
        self.ids = encoded.indices.to_numpy().astype(np.int64)
        self.vocab: list[str] = encoded.dictionary.to_pylist()
        self.doc = np.repeat(np.arange(len(words)), self.counts)
        self.lengths = np.fromiter(map(len, self.vocab), dtype=np.int64, count=len(self.vocab))[self.ids]
        self.position = np.arange(len(self.ids)) - self.starts[self.doc]
        self.cum_lengths = np.concatenate([[0], np.cumsum(self.lengths)])

    def per_doc(self, flags: np.ndarray) -> np.ndarray:
        """The sum of a per-word value over each document's words."""
        return np.bincount(self.doc, weights=flags, minlength=len(self.counts))

    def vocab_flags(self, test: Callable[[str], object]) -> np.ndarray:
        """A per-word boolean from a test run once per distinct word."""
        return np.fromiter((bool(test(w)) for w in self.vocab), dtype=bool, count=len(self.vocab))[self.ids]

    def ngram_levels(self, n_max: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """For n = 1..n_max: the start positions of the n-grams that may repeat within their
        document, and the group of each (equal n-grams of one document; numbered in order of
        first appearance by Arrow's hash kernel). An n-gram repeats only where its first n-1
        words do, so each level looks only where the one below found repeats."""
        levels = {}
        positions, key = np.arange(len(self.ids)), np.zeros(len(self.ids), np.uint64)
        with np.errstate(over="ignore"):
            for n in range(1, n_max + 1):
                fits = self.position[positions] + n <= self.counts[self.doc[positions]]
                positions, key = positions[fits], key[fits]
                key = (key ^ (key >> np.uint64(29))) * _MIX + self.ids[positions + n - 1].astype(np.uint64)
                in_doc = (key ^ (self.doc[positions].astype(np.uint64) * _MIX)) * _MIX
                group = pc.dictionary_encode(pa.array(in_doc)).indices.to_numpy()
                levels[n] = positions, group
                repeats = np.bincount(group)[group] >= 2
                positions, key = positions[repeats], key[repeats]
        return levels

    def chars(self, positions: np.ndarray, n: int) -> np.ndarray:
        """Characters of the n words from each position, joined without a separator."""
        return self.cum_lengths[positions + n] - self.cum_lengths[positions]


def _top_ngram_chars(w: _Words, n: int, positions: np.ndarray, group: np.ndarray) -> np.ndarray:
    """datatrove's find_top_duplicate per document: characters of the most frequent n-gram
    (words joined by spaces) times its count; ties go to the earliest. -1: no n-gram."""
    out = np.full(len(w.counts), -1, np.int64)
    some = np.flatnonzero(w.counts >= n)  # where no n-gram repeats, the first one is the top
    out[some] = w.chars(w.starts[some], n) + n - 1
    if not len(group):
        return out
    count = np.bincount(group)
    head = np.empty(len(count), np.int64)
    head[group[::-1]] = positions[::-1]  # the first position of each group
    repeated = np.flatnonzero(count >= 2)  # numbered in order of appearance, so by document
    if not len(repeated):
        return out
    doc = w.doc[head[repeated]]
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    most = np.maximum.reduceat(count[repeated], starts)
    ties = np.flatnonzero(count[repeated] == np.repeat(most, np.diff(np.r_[starts, len(doc)])))
    best = repeated[ties[np.r_[True, doc[ties][1:] != doc[ties][:-1]]]]  # the earliest of the most frequent
    out[w.doc[head[best]]] = (w.chars(head[best], n) + n - 1) * count[best]
    return out


def _dup_ngram_chars(w: _Words, n: int, positions: np.ndarray, group: np.ndarray) -> np.ndarray:
    """datatrove's find_all_duplicate per document: scanning n-grams left to right, an
    n-gram seen before adds its characters and skips n positions. Only n-grams occurring
    twice or more can be seen before, so the scan visits only those."""
    repeated = np.zeros(len(w.counts), np.int64)
    if not len(group):
        return repeated
    members = np.bincount(group)[group] >= 2
    at, grp = positions[members], group[members]
    current, resume, seen = -1, 0, set()
    for pos, g, doc, gain in zip(at.tolist(), grp.tolist(), w.doc[at].tolist(), w.chars(at, n).tolist()):
        if doc != current:
            current, resume, seen = doc, 0, set()
        if pos < resume:
            continue
        if g in seen:
            repeated[doc] += gain
            resume = pos + n
        else:
            seen.add(g)
    return repeated


Check = tuple[str, np.ndarray, Callable[[int], str]]  # (rule, failed per document, detail of document i)


def _ngram_checks(w: _Words, size: np.ndarray, r: GopherRules) -> list[Check]:
    """GopherRepetitionFilter's n-gram rules, in its order."""
    checks: list[Check] = []
    levels = w.ngram_levels(max((n for n, _ in (*r.top_n_grams, *r.dup_n_grams)), default=0))
    for n, bound in r.top_n_grams:
        top = _top_ngram_chars(w, n, *levels[n])
        share = top / size
        checks.append((f"top_{n}_gram", (top >= 0) & (share > bound),
                       lambda i, s=share, n=n, b=bound: f"top {n}-gram holds {s[i]:.4g} of characters > {b}"))
    for n, bound in r.dup_n_grams:
        share = _dup_ngram_chars(w, n, *levels[n]) / size
        checks.append((f"duplicated_{n}_n_grams", share > bound,
                       lambda i, s=share, n=n, b=bound: f"repeated {n}-grams hold {s[i]:.4g} of characters > {b}"))
    return checks


def _word_checks(w: _Words, docs: list[str], r: GopherRules) -> list[Check]:
    """GopherQualityFilter's rules, in its order; a rule whose threshold is null or 0 is off."""
    symbol = w.vocab_flags(PUNCTUATION_SET.issuperset)
    text_words = w.per_doc(~symbol)
    mean = np.divide(w.per_doc(np.where(symbol, 0, w.lengths)), text_words,
                     out=np.full(len(docs), np.nan), where=text_words > 0)
    per_word = np.maximum(w.counts, 1)  # datatrove divides by zero where min_doc_words is off
    hashes = np.fromiter((t.count("#") for t in docs), np.float64, len(docs)) / per_word
    ellipses = np.fromiter((t.count("...") + t.count("…") for t in docs), np.float64, len(docs)) / per_word
    bullets, end_ellipses = np.array([_line_shares(t) for t in docs], dtype=np.float64).reshape(-1, 2).T
    alpha = w.per_doc(w.vocab_flags(_LETTER)) / per_word
    stop = w.vocab_flags(frozenset(r.stop_words).__contains__)
    vocab = max(len(w.vocab), 1)
    stops = np.bincount(np.unique(w.doc[stop] * vocab + w.ids[stop]) // vocab, minlength=len(docs))
    rules = [
        ("short_doc", r.min_doc_words, text_words, -1, "words"),
        ("long_doc", r.max_doc_words, text_words, 1, "words"),
        ("mean_word_length", r.min_avg_word_length, mean, -1, "mean word length"),
        ("mean_word_length", r.max_avg_word_length, mean, 1, "mean word length"),
        ("too_many_hashes", r.max_symbol_word_ratio, hashes, 1, "'#' per word"),
        ("too_many_ellipsis", r.max_symbol_word_ratio, ellipses, 1, "ellipses per word"),
        ("too_many_bullets", r.max_bullet_lines_ratio, bullets, 1, "share of lines starting with a bullet"),
        ("too_many_end_ellipsis", r.max_ellipsis_lines_ratio, end_ellipses, 1, "share of lines ending in an ellipsis"),
        ("below_alpha_threshold", r.max_non_alpha_words_ratio, alpha, -1, "share of words with a letter"),
        ("too_few_stop_words", r.min_stop_words, stops, -1, "distinct stop words"),
    ]
    return [(name, value < bound if side < 0 else value > bound,
             lambda i, v=value, b=bound, t=text, c="<" if side < 0 else ">": f"{t} {v[i]:.4g} {c} {b}")
            for name, bound, value, side, text in rules if bound]


def _gopher_words(docs: list[str], r: GopherRules) -> list[Failure | None]:
    """The repetition rules on word n-grams, then the quality rules, over a batch at once."""
    w = _Words([split_words(t) for t in docs])
    size = np.fromiter(map(len, docs), dtype=np.float64, count=len(docs))
    out: list[Failure | None] = [None] * len(docs)
    for name, failed, why in _ngram_checks(w, size, r) + _word_checks(w, docs, r):
        for i in np.flatnonzero(failed):
            if out[i] is None:
                out[i] = (name, why(i))
    return out


def _line_shares(text: str) -> tuple[float, float]:
    """Shares of lines (str.splitlines) starting with a bullet and ending with an ellipsis."""
    lines = text.splitlines() or [""]
    bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-")))
    ellipses = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
    return bullets / len(lines), ellipses / len(lines)


def gopher(texts: list[str], r: GopherRules) -> list[Failure | None]:
    """datatrove's GopherRepetitionFilter then GopherQualityFilter: the first rule each text fails."""
    out = [_gopher_lines(t, r) for t in texts]
    todo = [i for i, failure in enumerate(out) if failure is None]
    for k in range(0, len(todo), BATCH):
        batch = todo[k : k + BATCH]
        for i, failure in zip(batch, _gopher_words([texts[i] for i in batch], r)):
            out[i] = failure
    return out


def c4(text: str, r: C4Rules) -> tuple[Failure | None, str]:
    """datatrove's C4QualityFilter: (the rule the text fails, or None; the text it keeps)."""
    min_sentences, min_words, max_word = map(r.bound, (r.min_num_sentences, r.min_words_per_line, r.max_word_length))
    kept: list[str] = []
    sentences = 0
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        words = line.split()
        if max_word is not None and len(line) > max_word and max(map(len, words)) > max_word:
            continue
        if r.remove_citations and "[" in line:
            line = CITATION.sub("", line)
        if r.filter_no_terminal_punct and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
            continue
        if min_words is not None and len(words) < min_words:
            continue
        lower = line.lower()
        if r.filter_lorem_ipsum and "lorem ipsum" in lower:
            return ("lorem_ipsum", f"line {number} says lorem ipsum"), text
        if r.filter_javascript and "javascript" in lower:
            continue
        if r.filter_curly_bracket and "{" in line:
            return ("curly_bracket", f"line {number} has a curly bracket"), text
        if r.filter_policy and any(p in lower for p in C4_POLICY):
            continue
        if min_sentences is not None and sentences < min_sentences:  # only "fewer than" matters
            sentences += count_sentences(split_words(line))
        kept.append(line)
    if min_sentences is not None and sentences < min_sentences:
        return ("too_few_sentences", f"{sentences} sentences in kept lines < {min_sentences}"), text
    return None, "\n".join(kept).strip()


def fineweb(text: str, r: FineWebRules) -> Failure | None:
    """datatrove's FineWebQualityFilter: the first rule the text fails."""
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return "empty", "no non-blank line"
    share = sum(1 for line in lines if line.endswith(r.stop_chars or _TERMINAL)) / len(lines)
    if share < r.line_punct_thr and not (share == 0 and r.line_punct_exclude_zero):
        return "line_punct_ratio", f"{share:.4g} of lines end in punctuation < {r.line_punct_thr}"
    share = sum(1 for line in lines if len(line) <= r.short_line_length) / len(lines)
    if share > r.short_line_thr:
        return "short_line_ratio", f"{share:.4g} of lines have <= {r.short_line_length} characters > {r.short_line_thr}"
    share = _duplicates(lines)[1] / (len(text) - text.count("\n"))
    if share > r.char_duplicates_ratio:
        return "char_dup_ratio", f"repeated lines hold {share:.4g} of characters > {r.char_duplicates_ratio}"
    share = _ratio(text.count("\n"), len(split_words(text)))
    if share > r.new_line_ratio:
        return "list_ratio", f"{share:.4g} line breaks per word > {r.new_line_ratio}"
    return None


_TERMINAL = tuple(TERMINAL_PUNCTUATION)
Family = Literal["gopher", "c4", "fineweb"]


class Quality(FilterStep):
    """Drops rows that fail the Gopher, C4 or FineWeb heuristics (see the module's doc)."""

    NAME: ClassVar[str] = "quality"
    VERSION: ClassVar[str] = "1"
    rules: tuple[Family, ...] = Field(("gopher", "c4", "fineweb"), min_length=1,
                                      description="rule families to apply: gopher, c4, fineweb")
    gopher: GopherRules = Field(default_factory=GopherRules, description="Gopher thresholds")
    c4: C4Rules = Field(default_factory=C4Rules, description="C4 thresholds")
    fineweb: FineWebRules = Field(default_factory=FineWebRules, description="FineWeb thresholds")

    @model_validator(mode="after")
    def _families(self) -> Quality:
        if len(set(self.rules)) != len(self.rules):
            raise ValueError(f"rules {list(self.rules)} names a family twice")
        unused = sorted(({"gopher", "c4", "fineweb"} & self.model_fields_set) - set(self.rules))
        if unused:
            raise ValueError(f"thresholds are set for {unused}, which rules {list(self.rules)} does not apply; "
                             f"add them to rules or remove their thresholds")
        return self

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        texts = [t or "" for t in table.column("text").to_pylist()]
        failures: list[tuple[str, Failure] | None] = [None] * len(texts)
        if "gopher" in self.rules:
            failures = [("gopher", f) if f else None for f in gopher(texts, self.gopher)]
        out = list(texts)
        rewritten = 0
        if "c4" in self.rules:
            for i in (i for i, f in enumerate(failures) if f is None):
                failure, out[i] = c4(texts[i], self.c4)
                failures[i] = ("c4", failure) if failure else None
                rewritten += failure is None and out[i] != texts[i]
        if "fineweb" in self.rules:
            for i in (i for i, f in enumerate(failures) if f is None):
                failure = fineweb(out[i], self.fineweb)
                failures[i] = ("fineweb", failure) if failure else None
        for i, f in enumerate(failures):
            if f is not None:
                out[i] = texts[i]  # the quarantine keeps the row as it came
        return Verdict(
            reasons=[f"{f[0]}.{f[1][0]}" if f else None for f in failures],
            details=[f[1][1] if f else None for f in failures],
            text=pa.array(out, pa.string()) if "c4" in self.rules else None,
            figures={"c4_rewritten": rewritten} if "c4" in self.rules else {},
        )
