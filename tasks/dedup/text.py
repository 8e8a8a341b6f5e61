"""What dedup compares of a text: its normalised form, its word n-gram shingles, and the
hashes of both, per text (the reference) and for a whole batch at once (`features`).

Words are runs of \\w (Python's definition) in the case-folded text; tokens, for the
exact-duplicate hash, are the runs between whitespace (str.split's). The batch path finds
both with per-code-point tables over the UTF-8 bytes, so no Python loop runs per text.
"""

from __future__ import annotations

import functools
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusmill.tasks.dedup.hashing import (
    M64, SEED_SHINGLE, SEED_TEXT, bytes_hash, fmix64, fold, fold_segments, hash_strings, q_powers, string_buffers,
)

_WORD = re.compile(r"\w+")
_FEATURE_BYTES = 1 << 20  # text bytes per piece of the byte-level passes


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
    every word n-gram, in order, repeats included) with the number per text. Vectorised
    over the whole batch; equal to the per-text reference functions."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    elif not isinstance(texts, pa.Array):
        texts = pa.array(texts, pa.string())
    texts = pc.fill_null(texts.cast(pa.large_string()), "")
    offsets, _ = string_buffers(texts)
    cuts = [0]
    while cuts[-1] < len(texts):  # pieces of about _FEATURE_BYTES, so the byte passes stay in cache
        cuts.append(max(cuts[-1] + 1, int(np.searchsorted(offsets, offsets[cuts[-1]] + _FEATURE_BYTES, side="right")) - 1))
        cuts[-1] = min(cuts[-1], len(texts))
    if len(cuts) > 2:
        parts = [_features(texts.slice(a, b - a), ngram) for a, b in zip(cuts[:-1], cuts[1:])]
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))
    return _features(texts, ngram)


def _features(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folded = _casefold(texts)
    offsets, data = string_buffers(folded)
    is_word, is_space = _char_classes(data)
    token, token_counts = _runs(data, ~is_space, offsets)
    hashes = fold_segments(token, token_counts, SEED_TEXT)
    word, word_counts = _runs(data, is_word, offsets)
    shingle, counts = _shingle_hashes(word, word_counts, ngram)
    return hashes, shingle, counts


# --- Unicode: the same classes and case-folding as Python's, over UTF-8 bytes -------------


@functools.cache
def _unicode_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code point: is it \\w (Python's definition), is it whitespace (str.split's), and
    does Arrow's utf8_lower disagree with str.casefold on it. Built once per process (~1 s)."""
    codes = np.array([c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF], dtype=np.uint32)
    text = codes.astype("<u4").tobytes().decode("utf-32-le")
    word = np.zeros(sys.maxunicode + 1, dtype=bool)
    word[codes] = np.frombuffer(re.sub(r"\W", "\0", text).encode("utf-32-le"), dtype="<u4") != 0
    space = np.zeros(sys.maxunicode + 1, dtype=bool)
    space[[ord(c) for c in re.findall(r"\s", text)]] = True
    # Only characters that some lowering changes can disagree.
    chars = pa.array(list(text))
    arrow = pc.utf8_lower(chars)
    suspects = np.flatnonzero(pc.not_equal(arrow, chars).to_numpy(zero_copy_only=False))
    suspects = np.union1d(suspects, [i for i, c in enumerate(text) if c.casefold() != c]).astype(np.int64)
    arrow_lower = arrow.take(pa.array(suspects)).to_pylist()
    differs = np.zeros(sys.maxunicode + 1, dtype=bool)
    for i, low in zip(suspects.tolist(), arrow_lower):
        if text[i].casefold() != low:
            differs[codes[i]] = True
    return word, space, differs


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


def _char_classes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per byte of UTF-8 `data`: is the character it belongs to \\w, and is it whitespace."""
    word_table, space_table, _ = _unicode_tables()
    lut = (word_table[:256] & (np.arange(256) < 128)).astype(np.uint8) | (space_table[:256] & (np.arange(256) < 128)) * np.uint8(2)
    cls = lut[data]
    lead, cp = _utf8_codepoints(data)
    if lead.size:
        code = word_table[cp].astype(np.uint8) | space_table[cp].astype(np.uint8) * np.uint8(2)
        width = np.where(data[lead] >= 0xF0, 4, np.where(data[lead] >= 0xE0, 3, 2))
        for k in range(4):
            take = width > k
            at = lead[take] + k
            inside = at < len(data)
            cls[at[inside]] = code[take][inside]
    return (cls & 1).astype(bool), (cls & 2).astype(bool)


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


# --- words and shingles of many texts at once -----------------------------------------------


def _runs(data: np.ndarray, member: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (`bytes_hash`) of the maximal runs of `member` bytes (runs never cross a
    document boundary), in order, and the number of runs per document. Each distinct run
    is hashed once (Arrow dictionary-encodes the runs)."""
    n = len(offsets) - 1
    if not member.any():
        return np.zeros(0, dtype=np.uint64), np.zeros(n, dtype=np.int64)
    edge = np.empty(len(data) + 1, dtype=bool)  # edge[i]: a run starts or ends at i
    edge[0], edge[-1] = member[0], member[-1]
    np.not_equal(member[1:], member[:-1], out=edge[1:-1])
    edge[offsets] = True  # document boundaries cut runs
    bounds = np.flatnonzero(edge)
    inner = bounds[:-1]
    first = np.flatnonzero(member[inner])  # bounds that start a run: the next bound ends it
    starts, ends = inner[first], bounds[first + 1]
    lengths = ends - starts
    word_offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    word_bytes = data[member]
    words = pa.Array.from_buffers(pa.large_binary(), len(starts), [None, pa.py_buffer(word_offsets), pa.py_buffer(word_bytes)])
    encoded = pc.dictionary_encode(words)
    hashes = hash_strings(encoded.dictionary.cast(pa.large_binary()))[encoded.indices.to_numpy()]
    counts = np.diff(np.searchsorted(starts, offsets))
    return hashes, counts


def _shingle_hashes(words: np.ndarray, counts: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every document's word n-grams (in order, repeats included) from its
    word hashes, and the number per document: n-grams for texts of at least `ngram` words,
    one shingle of all words for shorter texts, none for texts without words."""
    counts = counts.astype(np.int64)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    long = counts >= ngram
    nsh = np.where(long, counts - ngram + 1, (counts > 0).astype(np.int64))
    out_start = np.r_[0, np.cumsum(nsh)[:-1]].astype(np.int64)
    out = np.empty(int(nsh.sum()), dtype=np.uint64)
    n_long = nsh[long]
    total = int(n_long.sum())
    if total:
        pos = np.repeat(starts[long], n_long) + np.arange(total) - np.repeat(np.r_[0, np.cumsum(n_long)[:-1]], n_long)
        q = q_powers(ngram)
        h = np.full(total, (SEED_SHINGLE * int(q[ngram])) & M64, dtype=np.uint64)
        for k in range(ngram):
            h += words[pos + k] * q[ngram - 1 - k]
        out[np.repeat(long, nsh)] = fmix64(h)
    short = np.flatnonzero(~long & (counts > 0))
    if short.size:
        c = counts[short]
        idx = np.repeat(starts[short], c) + np.arange(int(c.sum())) - np.repeat(np.r_[0, np.cumsum(c)[:-1]], c)
        out[out_start[short]] = fold_segments(words[idx], c, SEED_SHINGLE)
    return out, nsh
