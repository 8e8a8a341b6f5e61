"""What dedup compares of a text: its normalised form, its word n-gram shingles, and the
hashes of both, per text (the reference) and for a whole batch at once (`features`).

Words are runs of \\w (Python's definition) in the case-folded text; tokens, for the
exact-duplicate hash, are the runs between whitespace (str.split's). The batch path finds
and hashes both in one compiled pass over the UTF-8 bytes (numba), classing characters with
per-code-point tables, so no Python code runs per text or per word.
"""

from __future__ import annotations

import functools
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusmill.tasks.dedup.compiled import njit
from corpusmill.tasks.dedup.hashing import (
    L, P, Q, SEED_SHINGLE, SEED_TEXT, bytes_hash, fmix64_compiled, fold, string_buffers,
)

_WORD = re.compile(r"\w+")
_FEATURE_BYTES = 1 << 20  # text bytes per piece: bounds the scan's scratch arrays (about 8x this)


def normalize(text: str) -> str:
    """The text as compared for exact duplicates: case-folded, whitespace runs made one space."""
    return " ".join(text.casefold().split())


def text_hash(text: str) -> int:
    """64-bit hash of the normalised text: equal for texts that differ only in case or spacing."""
    return fold((bytes_hash(t.encode("utf-8")) for t in text.casefold().split()), SEED_TEXT)


def shingles(text: str, ngram: int) -> set[bytes]:
    """Word n-grams of the case-folded text; words are runs of \\w (punctuation splits them).

    Case-folding is the same as in `normalize`, so texts with equal `text_hash` always have
    equal shingle sets (and equal signatures).
    """
    words = _WORD.findall(text.casefold())
    if len(words) < ngram:
        # A short text is one shingle, so it can still match; a text without words has none.
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i : i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)}


def features(texts, ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a batch of texts (a list or an Arrow string array; None counts as empty):
    `text_hash` of each, and the 64-bit hashes of all their shingles (`shingle_hash64` of
    every word n-gram, in order, repeats included) with the number per text. Equal to the
    per-text reference functions."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    elif not isinstance(texts, pa.Array):
        texts = pa.array(texts, pa.string())
    texts = pc.fill_null(texts.cast(pa.large_string()), "")
    offsets, _ = string_buffers(texts)
    cuts = [0]
    while cuts[-1] < len(texts):  # pieces of about _FEATURE_BYTES
        cuts.append(max(cuts[-1] + 1, int(np.searchsorted(offsets, offsets[cuts[-1]] + _FEATURE_BYTES, side="right")) - 1))
        cuts[-1] = min(cuts[-1], len(texts))
    if len(cuts) > 2:
        parts = [_features(texts.slice(a, b - a), ngram) for a, b in zip(cuts[:-1], cuts[1:])]
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))
    return _features(texts, ngram)


def _features(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets, data = string_buffers(_casefold(texts))
    return _scan(data, offsets, _char_class(), ngram)


def shingle_sets(texts, ngram: int) -> list[np.ndarray]:
    """Each text's 64-bit shingle hashes as a sorted array without repeats: the set that
    exact Jaccard is computed on."""
    _, shingle, counts = features(texts, ngram)
    values, sizes = _sorted_sets(shingle, counts)
    return np.split(values, np.cumsum(sizes)[:-1])


# --- Unicode: the same classes and case-folding as Python's, over UTF-8 bytes -------------


@functools.cache
def _unicode_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code point: is it \\w (Python's definition), is it whitespace (str.split's), and
    does Arrow's utf8_lower disagree with str.casefold on it. Built once per process (~0.2 s)."""
    codes = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    codes = codes[(codes < 0xD800) | (codes > 0xDFFF)]  # every code point but the surrogates
    text = codes.astype("<u4").tobytes().decode("utf-32-le")
    word, space = np.zeros((2, sys.maxunicode + 1), dtype=bool)
    word[codes], space[codes] = _matches(r"\w", text), _matches(r"\s", text)
    # Only characters that some lowering changes can disagree.
    widths = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)  # UTF-8 bytes per code point
    chars = pa.LargeStringArray.from_buffers(
        len(codes), pa.py_buffer(np.r_[0, np.cumsum(widths)].astype(np.int64)), pa.py_buffer(text.encode("utf-8")))
    arrow = pc.utf8_lower(chars)
    suspects = np.flatnonzero(pc.not_equal(arrow, chars).to_numpy(zero_copy_only=False))
    suspects = np.union1d(suspects, _changed_by_casefold(text)).astype(np.int64)
    arrow_lower = arrow.take(pa.array(suspects)).to_pylist()
    differs = np.zeros(sys.maxunicode + 1, dtype=bool)
    for i, low in zip(suspects.tolist(), arrow_lower):
        if text[i].casefold() != low:
            differs[codes[i]] = True
    return word, space, differs


def _matches(char_class: str, text: str) -> np.ndarray:
    """Per character of `text`: does the regular expression `char_class` match it. Found
    run by run: code points of one class come in long runs."""
    edges = np.zeros(len(text) + 1, dtype=np.int64)
    for run in re.finditer(char_class + "+", text):
        edges[run.start()] += 1
        edges[run.end()] -= 1
    return np.cumsum(edges[:-1]) > 0


def _changed_by_casefold(text: str, block: int = 256) -> list[int]:
    """Positions of the characters str.casefold changes; blocks it leaves alone (most) are
    skipped whole."""
    changed = []
    for start in range(0, len(text), block):
        part = text[start : start + block]
        if part.casefold() != part:
            changed += [start + k for k, c in enumerate(part) if c.casefold() != c]
    return changed


def _utf8_codepoints(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each non-ASCII lead byte of valid UTF-8: its position and code point."""
    lead = np.flatnonzero(data >= 0xC0)
    if not lead.size:
        return lead, lead.astype(np.uint32)
    last = len(data) - 1
    b0, b1, b2, b3 = (data[np.minimum(lead + k, last)].astype(np.uint32) for k in range(4))
    cont = lambda b: b & 0x3F  # noqa: E731
    cp = np.where(b0 >= 0xF0, ((b0 & 0x07) << 18) | (cont(b1) << 12) | (cont(b2) << 6) | cont(b3),
                  np.where(b0 >= 0xE0, ((b0 & 0x0F) << 12) | (cont(b1) << 6) | cont(b2), ((b0 & 0x1F) << 6) | cont(b1)))
    return lead, np.minimum(cp, sys.maxunicode).astype(np.uint32)


def _casefold(texts: pa.Array) -> pa.Array:
    """str.casefold of every text: Arrow's utf8_lower, and Python's casefold for the few
    texts holding a character on which the two disagree (ß, ς, İ, ligatures, ...)."""
    lowered = pc.utf8_lower(texts)
    if len(texts) == 0 or pc.all(pc.string_is_ascii(texts)).as_py():
        return lowered
    offsets, data = string_buffers(texts)
    lead, cp = _utf8_codepoints(data)
    bad = lead[_unicode_tables()[2][cp]]
    if not bad.size:
        return lowered
    docs = np.unique(np.searchsorted(offsets, bad, side="right") - 1)
    fixed = [t.casefold() for t in texts.take(pa.array(docs)).to_pylist()]
    mask = np.zeros(len(texts), dtype=bool)
    mask[docs] = True
    return pc.replace_with_mask(lowered, pa.array(mask), pa.array(fixed, lowered.type))



# --- words, tokens and shingles of many texts at once: one compiled pass over the bytes -----

WORD, SPACE = 1, 2  # bits of a code point's class
# The hash constants as uint64: numba reads a Python int as int64, and int64 with uint64 gives float64.
P64, L64, Q64, SEED_TEXT64, SEED_SHINGLE64 = (np.uint64(c) for c in (P, L, Q, SEED_TEXT, SEED_SHINGLE))


@functools.cache
def _char_class() -> np.ndarray:
    """Per code point: WORD if it is \\w, SPACE if it is whitespace (uint8)."""
    word, space, _ = _unicode_tables()
    return word.astype(np.uint8) * np.uint8(WORD) | space.astype(np.uint8) * np.uint8(SPACE)


@njit
def _scan(data, offsets, char_class, ngram):  # pragma: no cover (compiled; tested through `features`)
    """`text_hash` of every text, and its shingles' `shingle_hash64` with the count per text,
    from the case-folded texts' UTF-8 bytes (`data`, cut by `offsets`; valid, as Arrow's
    utf8_lower checked). A token's or a word's `bytes_hash` is built byte by byte as the
    scan passes it, so every byte is read once."""
    n = len(offsets) - 1
    text_hashes = np.empty(n, np.uint64)
    counts = np.zeros(n, np.int64)
    shingles = np.empty(len(data) // 2 + n, np.uint64)  # a text of b bytes has at most (b + 1) // 2 words
    words = np.empty(len(data) // 2 + 1, np.uint64)  # the current text's word hashes
    found = 0
    for d in range(n):
        text = SEED_TEXT64
        token, token_power, token_length = np.uint64(0), np.uint64(1), 0
        word, word_power, word_length = np.uint64(0), np.uint64(1), 0
        m = 0
        i, end = offsets[d], offsets[d + 1]
        while i <= end:
            # the end of the text counts as a space: it ends the last token and word
            code, width = _code_point(data, i) if i < end else (0x20, 1)
            kind = char_class[code]
            if not kind & SPACE:
                for k in range(width):
                    token += np.uint64(data[i + k]) * token_power
                    token_power *= P64
                token_length += width
            elif token_length:
                text = text * Q64 + fmix64_compiled(token + np.uint64(token_length) * L64)
                token, token_power, token_length = np.uint64(0), np.uint64(1), 0
            if kind & WORD:
                for k in range(width):
                    word += np.uint64(data[i + k]) * word_power
                    word_power *= P64
                word_length += width
            elif word_length:
                words[m] = fmix64_compiled(word + np.uint64(word_length) * L64)
                word, word_power, word_length = np.uint64(0), np.uint64(1), 0
                m += 1
            i += width
        text_hashes[d] = fmix64_compiled(text)
        counts[d] = _fold_ngrams(words[:m], ngram, shingles[found:])
        found += counts[d]
    return text_hashes, shingles[:found].copy(), counts


@njit
def _code_point(data, i):  # pragma: no cover (compiled)
    """The code point of the UTF-8 character starting at data[i], and its width in bytes."""
    lead = np.int64(data[i])
    if lead < 0x80:
        return lead, 1
    if lead >= 0xF0:
        code = ((lead & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6)
        return code | (data[i + 3] & 0x3F), 4
    if lead >= 0xE0:
        return ((lead & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F), 3
    return ((lead & 0x1F) << 6) | (data[i + 1] & 0x3F), 2


@njit
def _fold_ngrams(words, ngram, out):  # pragma: no cover (compiled)
    """`fold` (seed SEED_SHINGLE) of every run of `ngram` consecutive word hashes into `out`,
    or of all words when there are fewer; returns how many (0 without words)."""
    size = min(len(words), ngram)
    count = len(words) - size + 1 if size else 0
    for start in range(count):
        h = SEED_SHINGLE64
        for k in range(start, start + size):
            h = h * Q64 + words[k]
        out[start] = fmix64_compiled(h)
    return count


@njit
def _sorted_sets(shingle, counts):  # pragma: no cover (compiled; tested through `shingle_sets`)
    """Each text's run of `shingle` (counts[d] values) sorted and without repeats, one after
    another, and how many values each text keeps."""
    out = np.empty_like(shingle)
    sizes = np.zeros(len(counts), np.int64)
    start = found = 0
    for d in range(len(counts)):
        values = np.sort(shingle[start : start + counts[d]])
        for k in range(len(values)):
            if k == 0 or values[k] != values[k - 1]:
                out[found] = values[k]
                found += 1
                sizes[d] += 1
        start += counts[d]
    return out[:found], sizes
