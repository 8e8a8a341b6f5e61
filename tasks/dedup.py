"""Dedup stage: exact and near duplicates over original and synthetic rows together.

The pipeline, as in datatrove and NeMo Curator, in steps that never hold the corpus text
in memory:

1. `signatures` (one task per shard) writes a compact side file: each row's position, id,
   synthetic flag, the hash of its normalised text (exact duplicates), its number of
   shingles, its MinHash signature and one 64-bit key per LSH band. Signatures are
   computed for a whole record batch at once in numpy (bytes -> words -> word n-grams ->
   affine32 permutations -> per-document minimum), with no Python loop per document or
   per shingle.
2. `band_pairs` (one task per band) reads one band-key column and the text hashes of every
   side file (20 bytes a row), and writes the pairs of distinct texts whose keys collide.
3. `cluster` (one task) reads the small columns and the pair files, verifies every candidate
   pair by the exact Jaccard similarity of the two texts' shingle sets (texts are read back
   shard by shard, under a memory budget), joins verified pairs most-similar first with a
   union-find that refuses to grow a cluster past `max_cluster_size` distinct texts, and
   writes one row per input row: id, cluster_id, keep, reason. Split assignment then
   filters each shard by it.

Datasketch compatibility: signatures are datasketch 2.0 `affine32` MinHashes with
datasketch's permutations for (num_perm, seed); the shingle hash is the one thing chosen
here. `MinHash(num_perm, seed=seed, hashfunc=shingle_hash32)` updated with the `shingles`
of a text gives bit-for-bit the signature stored in the side file, and stored signatures
load as `LeanMinHash(seed=seed, hashvalues=..., scheme="affine32")` for `MinHashLSH` or
`jaccard` (tests/test_dedup.py checks both).

Keep rule: each cluster keeps exactly one row, the first of its originals
(synthetic=False) by id, or the lowest id when all members are synthetic. It depends on
ids, flags and texts only, so the result is the same for any input order or sharding.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasketch import MinHash

from corpusmill.tasks.recipe import Dedup
from corpusmill.tasks.stage import Stage
from corpusmill.tasks.shards import ParquetSink, StageReport, read_table, write_table

NAME = "dedup"
VERSION = "2"  # of the signature side files and of every dedup step below
EXACT = "exact_duplicate"
NEAR = "near_duplicate"
SCHEME = "affine32"  # datasketch 2.0's default; named so stored signatures say what they are
SHINGLE_HASH = "corpusmill-poly64-v1"  # the hashfunc behind the signatures: see shingle_hash32
EMPTY_SLOT = np.uint32(0xFFFFFFFF)  # every slot of an affine32 MinHash that saw no shingle
META_KEY = b"corpusmill.dedup"
READ_BATCH = 10_000  # rows per record batch when streaming a file
VERIFY_BUDGET_BYTES = 64 << 20  # shingle sets held at once while verifying candidate pairs
FULL_BUCKET = 32  # LSH buckets up to this size give all their pairs; larger ones a star and a chain
_FEATURE_BYTES = 1 << 20  # text bytes per piece of the byte-level passes
_PERM_CHUNK = 16_384  # shingles per block of the permutation step: (num_perm, chunk) uint32

_WORD = re.compile(r"\w+")

CLUSTERS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("cluster_id", pa.string(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reason", pa.string()),
    ]
)
CLUSTER_ID = CLUSTERS.field("cluster_id")
KEEP = CLUSTERS.field("keep")
PAIRS = pa.schema([pa.field("a", pa.uint64(), nullable=False), pa.field("b", pa.uint64(), nullable=False)])

# --- hashing: one definition, a Python reference and a vectorised implementation ----------
#
# A byte string (a word, or a whitespace-separated token) hashes to
#     fmix64(sum_i byte_i * P^i + len * L)            (mod 2^64)
# a sequence of such hashes (the words of a shingle, the tokens of a text) folds to
#     fmix64(((s * Q + h_1) * Q + h_2) ... )          (mod 2^64, s a fixed seed)
# and a shingle's 32-bit hash (datasketch's `hashfunc` input) is the high half of its
# 64-bit hash. The exact Jaccard is computed on the 64-bit shingle hashes.

_M64 = (1 << 64) - 1
_P = 0x100000001B3  # FNV prime: odd, so its powers never vanish mod 2^64
_L = 0x9E3779B97F4A7C15
_Q = 0xD6E8FEB86659FD93
_SEED_SHINGLE = 0x2545F4914F6CDD1D
_SEED_TEXT = 0x61C8864680B583EB


def _fmix64_int(h: int) -> int:
    """`_fmix64` of one Python int (the per-shingle reference path datasketch calls)."""
    return int(_fmix64(np.array([h], dtype=np.uint64))[0])


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """datasketch's affine32 pre-mix (MurmurHash3's 32-bit finalizer)."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _bytes_hash(data: bytes) -> int:
    h, p = 0, 1
    for byte in data:
        h = (h + byte * p) & _M64
        p = (p * _P) & _M64
    return _fmix64_int((h + len(data) * _L) & _M64)


def _fold(hashes, seed: int) -> int:
    h = seed
    for x in hashes:
        h = (h * _Q + x) & _M64
    return _fmix64_int(h)


def shingle_hash64(shingle: bytes) -> int:
    """64-bit hash of one shingle as `shingles` returns it (words joined by one space)."""
    return _fold((_bytes_hash(w) for w in shingle.split(b" ")), _SEED_SHINGLE)


def shingle_hash32(shingle: bytes) -> int:
    """The `hashfunc` that makes datasketch compute corpusmill's signatures:
    `MinHash(num_perm, seed=seed, hashfunc=shingle_hash32)` updated with `shingles(text)`."""
    return shingle_hash64(shingle) >> 32


# --- text -----------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The text as compared for exact duplicates: case-folded, whitespace runs made one space."""
    return " ".join(text.casefold().split())


def text_hash(text: str) -> int:
    """64-bit hash of the normalised text: equal for texts that differ only in case or spacing."""
    return _fold((_bytes_hash(t.encode("utf-8")) for t in text.casefold().split()), _SEED_TEXT)


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


def jaccard(a, b) -> float:
    """|a & b| / |a | b| of two sets, or of two sorted arrays of unique values.

    Two empty sets give 0.0: texts without words are not called similar; only an exact
    duplicate (equal text hash) joins them.
    """
    if isinstance(a, np.ndarray):
        inter = np.intersect1d(a, b, assume_unique=True).size
    else:
        inter = len(a & b)
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


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


def _string_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0, data bytes) of a string array without nulls."""
    if texts.type not in (pa.large_string(), pa.large_binary()):
        texts = texts.cast(pa.large_string())
    _, off, data = texts.buffers()
    offsets = np.frombuffer(off, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def _casefold(texts: pa.Array) -> pa.Array:
    """str.casefold of every text: Arrow's utf8_lower, and Python's casefold for the few
    texts holding a character on which the two disagree (ß, ς, İ, ligatures, ...)."""
    lowered = pc.utf8_lower(texts)
    if len(texts) == 0 or pc.all(pc.string_is_ascii(texts)).as_py():
        return lowered
    offsets, data = _string_buffers(texts)
    lead, cp = _utf8_codepoints(data)
    bad = lead[_unicode_tables()[2][cp]]
    if not bad.size:
        return lowered
    docs = np.unique(np.searchsorted(offsets, bad, side="right") - 1)
    fixed = [t.casefold() for t in texts.take(pa.array(docs)).to_pylist()]
    mask = np.zeros(len(texts), dtype=bool)
    mask[docs] = True
    return pc.replace_with_mask(lowered, pa.array(mask), pa.array(fixed, lowered.type))


@functools.cache
def _powers(n: int) -> np.ndarray:
    return np.cumprod(np.r_[np.uint64(1), np.full(max(n - 1, 0), _P, dtype=np.uint64)], dtype=np.uint64)


def _hash_strings(values: pa.Array) -> np.ndarray:
    """`_bytes_hash` of every (non-null) string of a small array, vectorised over its bytes."""
    offsets, data = _string_buffers(values)
    lengths = np.diff(offsets)
    out = lengths.astype(np.uint64) * np.uint64(_L)
    live = np.flatnonzero(lengths)
    if live.size:
        local = np.arange(len(data)) - np.repeat(offsets[:-1], lengths)
        terms = data.astype(np.uint64) * _powers(int(lengths.max()))[local]
        out[live] += np.add.reduceat(terms, offsets[live])
    return _fmix64(out)


def _runs(data: np.ndarray, member: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (`_bytes_hash`) of the maximal runs of `member` bytes (runs never cross a
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
    hashes = _hash_strings(encoded.dictionary.cast(pa.large_binary()))[encoded.indices.to_numpy()]
    counts = np.diff(np.searchsorted(starts, offsets))
    return hashes, counts


@functools.cache
def _q_powers(n: int) -> np.ndarray:
    return np.cumprod(np.r_[np.uint64(1), np.full(n, _Q, dtype=np.uint64)], dtype=np.uint64)


def _fold_segments(values: np.ndarray, counts: np.ndarray, seed: int) -> np.ndarray:
    """`_fold` of each consecutive segment of `values` (segment d has counts[d] items):
    seed * Q^c + sum_k v_k * Q^(c-1-k), mod 2^64, then fmix64."""
    counts = counts.astype(np.int64)
    q = _q_powers(int(counts.max(initial=0)) + 1)
    out = np.uint64(seed) * q[counts]
    live = np.flatnonzero(counts)
    if live.size:
        starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
        doc = np.repeat(np.arange(len(counts)), counts)
        exponent = counts[doc] - 1 - (np.arange(len(values)) - starts[doc])
        out[live] += np.add.reduceat(values * q[exponent], starts[live])
    return _fmix64(out)


# --- features of many texts at once ------------------------------------------------------


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
        q = _q_powers(ngram)
        h = np.full(total, (_SEED_SHINGLE * int(q[ngram])) & _M64, dtype=np.uint64)
        for k in range(ngram):
            h += words[pos + k] * q[ngram - 1 - k]
        out[np.repeat(long, nsh)] = _fmix64(h)
    short = np.flatnonzero(~long & (counts > 0))
    if short.size:
        c = counts[short]
        idx = np.repeat(starts[short], c) + np.arange(int(c.sum())) - np.repeat(np.r_[0, np.cumsum(c)[:-1]], c)
        out[out_start[short]] = _fold_segments(words[idx], c, _SEED_SHINGLE)
    return out, nsh


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
    offsets, _ = _string_buffers(texts)
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
    offsets, data = _string_buffers(folded)
    is_word, is_space = _char_classes(data)
    token, token_counts = _runs(data, ~is_space, offsets)
    hashes = _fold_segments(token, token_counts, _SEED_TEXT)
    word, word_counts = _runs(data, is_word, offsets)
    shingle, counts = _shingle_hashes(word, word_counts, ngram)
    return hashes, shingle, counts


@functools.cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b) for (num_perm, seed)."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def minhash(shingle64: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """(documents, num_perm) uint32 signatures: datasketch affine32 MinHash of each document's
    shingles with `hashfunc=shingle_hash32`, for all documents at once, in blocks of about
    _PERM_CHUNK shingles laid out (num_perm, shingles) so every step is a contiguous loop."""
    a, b = permutations(num_perm, seed)
    a, b = a[:, None], b[:, None]
    hv = _fmix32((shingle64 >> np.uint64(32)).astype(np.uint32))
    n = len(counts)
    signature = np.full((n, num_perm), EMPTY_SLOT, dtype=np.uint32)
    live = np.flatnonzero(counts)
    if not live.size:
        return signature
    end = np.cumsum(counts)[live]
    begin = end - counts[live]
    buffer = np.empty((num_perm, _PERM_CHUNK), dtype=np.uint32)
    i = 0
    while i < len(live):
        j = max(i + 1, int(np.searchsorted(end, begin[i] + _PERM_CHUNK, side="right")))
        lo, hi = int(begin[i]), int(end[j - 1])
        if hi - lo > buffer.shape[1]:
            buffer = np.empty((num_perm, hi - lo), dtype=np.uint32)
        block = buffer[:, : hi - lo]
        np.multiply(a, hv[lo:hi], out=block)
        block += b
        signature[live[i:j]] = np.minimum.reduceat(block, begin[i:j] - lo, axis=1).T
        i = j
    return signature


# --- LSH parameters ------------------------------------------------------------------------


def collision_probability(similarity, bands: int, rows: int):
    """P(two texts of this Jaccard similarity share at least one band): 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** rows) ** bands


@functools.cache
def choose_bands(threshold: float, num_perm: int, recall_target: float) -> tuple[int, int]:
    """(bands, rows per band), bands * rows <= num_perm, that reach `recall_target` at the
    threshold (a pair of exactly that Jaccard becomes a candidate with that probability)
    with the fewest false candidates (least area under the S-curve below the threshold).
    If no choice reaches the target, the one with the highest recall at the threshold."""
    below = np.linspace(0.0, threshold, 201)
    best, best_key = None, None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        recall = float(collision_probability(threshold, bands, rows))
        false_area = float(np.trapezoid(collision_probability(below, bands, rows), below))
        key = (0, false_area) if recall >= recall_target else (1, -recall)
        if best_key is None or key < best_key:
            best, best_key = (bands, rows), key
    return best


def lsh_params(settings: Dedup) -> tuple[int, int]:
    """(bands, rows per band) for these settings: see `choose_bands`."""
    return choose_bands(settings.threshold, settings.num_perm, settings.recall_target)


def s_curve(settings: Dedup) -> dict:
    """The chosen banding and its theoretical S-curve, for the stage report."""
    bands, rows = lsh_params(settings)
    points = sorted({round(float(x), 2) for x in np.arange(0.5, 1.0001, 0.05)} | {settings.threshold})
    return {
        "bands": bands, "rows_per_band": rows, "threshold": settings.threshold, "recall_target": settings.recall_target,
        "recall_at_threshold": round(float(collision_probability(settings.threshold, bands, rows)), 4),
        "curve": [{"jaccard": s, "p_candidate": round(float(collision_probability(s, bands, rows)), 4)} for s in points],
    }


def band_keys(signature: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64: a 64-bit hash of each band's `rows` signature values."""
    keys = np.empty((signature.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        h = np.full(signature.shape[0], ((band + 1) * _L) & _M64, dtype=np.uint64)
        for column in signature[:, band * rows : (band + 1) * rows].T:
            h ^= column
            h *= np.uint64(_Q)
            h ^= h >> np.uint64(29)
        keys[:, band] = _fmix64(h)
    return keys


def _bucket_pairs(key: np.ndarray, order_key: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of entries with equal `key`. Buckets of up to FULL_BUCKET members
    give all their pairs; larger ones (boilerplate) a star from their first member and a
    chain through the rest, in `order_key` order, so a bucket of k gives O(k) pairs."""
    n = len(key)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((order_key, key)) if order_key is not None else np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    ends = np.r_[starts[1:], n]
    size = ends - starts
    small = np.repeat(size <= FULL_BUCKET, size)
    # For each sorted position in a small bucket, how many later members it has: one pair each.
    later = np.where(small, np.repeat(ends, size) - np.arange(n) - 1, 0)
    first = np.repeat(np.arange(n), later)
    second = first + 1 + np.arange(first.size) - np.repeat(np.cumsum(later) - later, later)
    big = np.flatnonzero(size > FULL_BUCKET)
    if big.size:
        members = np.concatenate([np.arange(starts[k] + 1, ends[k]) for k in big])
        heads = np.concatenate([np.full(size[k] - 1, starts[k]) for k in big])
        chain = np.concatenate([np.arange(starts[k] + 1, ends[k] - 1) for k in big])
        first = np.concatenate([first, heads, chain])
        second = np.concatenate([second, members, chain + 1])
    return order[first], order[second]


def candidate_pairs(signature: np.ndarray, bands: int, rows: int, subset: np.ndarray | None = None) -> np.ndarray:
    """Pairs (i, j), i < j, of signature rows equal in at least one band; sorted, unique.

    The pairs MinHashLSH with params=(bands, rows) returns, found by sorting a 64-bit key per
    band instead of filling Python dicts. With `subset`, only those rows take part, and
    i, j index into `subset`. (Band values are compared, so key collisions add nothing.)
    """
    values = signature if subset is None else signature[subset]
    n = values.shape[0]
    keys = band_keys(values, bands, rows)
    found = [np.empty(0, dtype=np.int64)]
    for band in range(bands):
        i, j = _bucket_pairs(keys[:, band])
        a, b = np.minimum(i, j), np.maximum(i, j)
        columns = slice(band * rows, (band + 1) * rows)
        equal = (values[a, columns] == values[b, columns]).all(axis=1)
        found.append(a[equal].astype(np.int64) * n + b[equal])
    pairs = np.unique(np.concatenate(found))
    return np.stack([pairs // max(n, 1), pairs % max(n, 1)], axis=1)


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int, limit: int | None = None) -> bool:
        """Join the sets of a and b; False (and nothing joined) if the joined set would be
        larger than `limit`."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if limit is not None and self.size[ra] + self.size[rb] > limit:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True


# --- phase 1: signatures and band keys, per shard ------------------------------------------


def _signature_settings(settings: Dedup) -> dict:
    # What changes a side file; the threshold enters only through the banding it picks.
    bands, rows = lsh_params(settings)
    return {"version": VERSION, "scheme": SCHEME, "shingle_hash": SHINGLE_HASH, "num_perm": settings.num_perm,
            "seed": settings.seed, "ngram": settings.ngram, "bands": bands, "rows_per_band": rows}


def band_column(band: int) -> str:
    return f"band_{band:03d}"


def side_schema(settings: Dedup) -> pa.Schema:
    """Schema of a signature side file; its metadata records the settings that made it."""
    bands, _ = lsh_params(settings)
    return pa.schema(
        [
            pa.field("row", pa.int32(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("synthetic", pa.bool_(), nullable=False),
            pa.field("text_hash", pa.uint64(), nullable=False),
            pa.field("shingles", pa.int32(), nullable=False),
            pa.field("signature", pa.list_(pa.uint32(), settings.num_perm), nullable=False),
        ]
        + [pa.field(band_column(k), pa.uint64(), nullable=False) for k in range(bands)],
        metadata={META_KEY: json.dumps(_signature_settings(settings), sort_keys=True).encode()},
    )


def _require_columns(path: Path, names: list[str], wanted: list[str]) -> None:
    for column in wanted:
        if column not in names:
            raise ValueError(f"{path} has no column {column!r} (its columns: {', '.join(names)})")


def _sign(ids: pa.Array, texts: pa.Array, synthetic: np.ndarray, first_row: int, settings: Dedup) -> pa.Table:
    n = len(texts)
    hashes, shingle, counts = features(texts, settings.ngram)
    signature = minhash(shingle, counts, settings.num_perm, settings.seed)
    bands, rows = lsh_params(settings)
    keys = band_keys(signature, bands, rows)
    columns = [
        pa.array(np.arange(first_row, first_row + n, dtype=np.int32)),
        ids,
        pa.array(synthetic, pa.bool_()),
        pa.array(hashes),
        pa.array(counts.astype(np.int32)),
        pa.FixedSizeListArray.from_arrays(pa.array(signature.ravel()), settings.num_perm),
    ] + [pa.array(keys[:, k]) for k in range(bands)]
    return pa.Table.from_arrays(columns, schema=side_schema(settings))


def _side_table(path: Path, settings: Dedup, text_column: str, positional_ids: bool) -> pa.Table:
    """Signature rows for a Parquet file, streamed in record batches.

    With `positional_ids`, ids are the zero-padded row positions (so the lowest id is the
    first occurrence); otherwise the file's `id` column is used.
    """
    source = pq.ParquetFile(path)
    names = source.schema_arrow.names
    _require_columns(path, names, [text_column] if positional_ids else ["id", text_column])
    columns = [text_column] + ([] if positional_ids else ["id"]) + (["synthetic"] if "synthetic" in names else [])
    width = len(str(max(source.metadata.num_rows - 1, 0)))
    parts, start = [], 0
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=columns):
        n = batch.num_rows
        if positional_ids:
            ids = pa.array([f"{i:0{width}d}" for i in range(start, start + n)], pa.string())
        else:
            ids = batch.column("id").cast(pa.string())
            if ids.null_count:
                raise ValueError(f"{path}: column 'id' has null values; every row needs an id")
        if "synthetic" in columns:
            synthetic = batch.column("synthetic").cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
        else:
            synthetic = np.zeros(n, dtype=bool)
        parts.append(_sign(ids, batch.column(text_column), synthetic, start, settings))
        start += n
    return pa.concat_tables(parts) if parts else side_schema(settings).empty_table()


def signatures(in_path: Path, out_path: Path, settings: Dedup, text_column: str = "text") -> dict:
    """Write the signature side file of one shard (columns of `side_schema`)."""
    side = _side_table(Path(in_path), settings, text_column, positional_ids=False)
    write_table(side, out_path)
    return {"rows": side.num_rows}


def _check_side(path: Path, settings: Dedup) -> None:
    expected = _signature_settings(settings)
    meta = (pq.read_schema(path).metadata or {}).get(META_KEY)
    found = json.loads(meta) if meta else None
    if found != expected:
        raise ValueError(f"{path} holds signatures made with {found}, but these settings need {expected}; "
                         "recompute it with signatures()")


# --- phase 2: one task per band --------------------------------------------------------------


def band_pairs(side_paths: list[Path], band: int, out_path: Path, settings: Dedup) -> dict:
    """Write the candidate pairs of one LSH band: pairs of distinct texts (by text hash,
    smaller first, sorted, unique) whose band keys are equal. Reads 20 bytes a row; texts
    without shingles take no part, and each distinct text takes part once."""
    keys, hashes = [], []
    for path in side_paths:
        _check_side(Path(path), settings)
        table = pq.read_table(path, columns=["text_hash", "shingles", band_column(band)])
        live = table.column("shingles").to_numpy() > 0
        keys.append(table.column(band_column(band)).to_numpy()[live])
        hashes.append(table.column("text_hash").to_numpy()[live])
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    text = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    text, first = np.unique(text, return_index=True)
    key = key[first]
    i, j = _bucket_pairs(key, order_key=text)
    a, b = np.minimum(text[i], text[j]), np.maximum(text[i], text[j])
    if len(a):
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
        new = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
        a, b = a[new], b[new]
    write_table(pa.Table.from_arrays([pa.array(a, pa.uint64()), pa.array(b, pa.uint64())], schema=PAIRS), out_path)
    return {"band": band, "pairs": len(a)}


# --- phase 3: verify, cluster, keep ------------------------------------------------------------


def _read_sides(paths: list[Path], settings: Dedup) -> pa.Table:
    """The small columns of all side files as one table, with the index of each row's shard."""
    small = []
    for k, path in enumerate(paths):
        _check_side(path, settings)
        table = read_table(path, columns=["row", "id", "synthetic", "text_hash", "shingles"])
        small.append(table.append_column("shard", pa.array(np.full(table.num_rows, k, dtype=np.int32))))
    if not small:
        return pa.schema([pa.field("row", pa.int32()), pa.field("id", pa.string()), pa.field("synthetic", pa.bool_()),
                          pa.field("text_hash", pa.uint64()), pa.field("shingles", pa.int32()),
                          pa.field("shard", pa.int32())]).empty_table()
    return pa.concat_tables(small)


def _shingle_sets(path: Path, text_column: str, rows: np.ndarray, expected_rows: int, ngram: int) -> list[np.ndarray]:
    """Sorted unique 64-bit shingle hashes of the texts at `rows` of one shard."""
    names = pq.read_schema(path).names
    _require_columns(path, names, [text_column])
    column = read_table(path, columns=[text_column]).column(0)
    if len(column) != expected_rows:
        raise ValueError(f"{path} has {len(column)} rows but its signature file has {expected_rows}; "
                         "the pair does not match: recompute the signatures")
    _, shingle, counts = features(column.take(pa.array(rows)), ngram)
    doc = np.repeat(np.arange(len(rows)), counts)
    order = np.lexsort((shingle, doc))
    shingle, doc = shingle[order], doc[order]
    new = np.r_[True, (shingle[1:] != shingle[:-1]) | (doc[1:] != doc[:-1])] if len(doc) else np.zeros(0, bool)
    shingle, doc = shingle[new], doc[new]
    return np.split(shingle, np.cumsum(np.bincount(doc, minlength=len(rows)))[:-1])


def _sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return 0.0
    at = np.searchsorted(b, a)
    inter = int(np.count_nonzero(b[np.minimum(at, len(b) - 1)] == a))
    return inter / (len(a) + len(b) - inter)


def _verify(pairs: np.ndarray, where: tuple[np.ndarray, np.ndarray, np.ndarray], shards: list[tuple[Path, Path]],
            side_rows: np.ndarray, text_column: str, ngram: int, budget: int) -> np.ndarray:
    """Exact Jaccard of each pair of texts (indices into `where` = (shard, row, shingles)).

    Shards are grouped into blocks whose candidate shingle sets fit `budget` bytes (a shard
    larger than that is a block of its own); pairs are verified block pair by block pair,
    holding at most two blocks' sets, so memory does not grow with the corpus."""
    shard_of, row_of, size_of = where
    similarity = np.zeros(len(pairs))
    if not len(pairs):
        return similarity
    block_of_shard = np.zeros(len(shards), dtype=np.int64)
    used, block = 0, 0
    cost = np.bincount(shard_of[np.unique(pairs)], weights=8.0 * size_of[np.unique(pairs)], minlength=len(shards))
    for s in range(len(shards)):
        if used and used + cost[s] > budget:
            block, used = block + 1, 0
        block_of_shard[s] = block
        used += cost[s]
    ba, bb = block_of_shard[shard_of[pairs[:, 0]]], block_of_shard[shard_of[pairs[:, 1]]]
    lo, hi = np.minimum(ba, bb), np.maximum(ba, bb)

    def load(texts: np.ndarray) -> dict[int, np.ndarray]:
        sets = {}
        for s in np.unique(shard_of[texts]):
            members = np.unique(texts[shard_of[texts] == s])
            found = _shingle_sets(Path(shards[s][1]), text_column, row_of[members], int(side_rows[s]), ngram)
            sets.update(zip(members.tolist(), found))
        return sets

    for i in np.unique(lo):
        mine = np.flatnonzero(lo == i)
        ends = pairs[mine].ravel()
        held = load(np.unique(ends[block_of_shard[shard_of[ends]] == i]))
        for j in np.unique(hi[mine]):
            these = mine[hi[mine] == j]
            other = held if j == i else load(np.unique(pairs[these].ravel()[block_of_shard[shard_of[pairs[these].ravel()]] == j]))
            for k, (a, b) in zip(these.tolist(), pairs[these].tolist()):
                similarity[k] = _sorted_jaccard(held.get(a, other.get(a)), other.get(b, held.get(b)))
            del other
    return similarity


def _histogram(sizes: np.ndarray) -> dict[str, int]:
    """Clusters by size (rows), in power-of-two bins: 1, 2, 3-4, 5-8, ..."""
    out: dict[str, int] = {}
    top = 1
    while sizes.size:
        low = top // 2 + 1 if top > 1 else 1
        count = int(((sizes >= low) & (sizes <= top)).sum())
        if count:
            out[str(low) if low == top else f"{low}-{top}"] = count
        if top >= sizes.max():
            break
        top *= 2
    return out


def cluster(shards: list[tuple[Path, Path]], out_path: Path, settings: Dedup, text_column: str = "text",
            pair_paths: list[Path] | None = None, memory_budget: int = VERIFY_BUDGET_BYTES) -> dict:
    """Cluster all rows of the (signature file, text shard) pairs and write the clusters.

    `pair_paths` are the outputs of `band_pairs`, one per band; without them the bands are
    computed here, one after another. Writes `out_path` (schema `CLUSTERS`, rows sorted by
    id) and returns the stage report.
    """
    shards = [(Path(s), Path(t)) for s, t in shards]
    if pair_paths is None:
        bands, _ = lsh_params(settings)
        with tempfile.TemporaryDirectory(prefix="corpusmill-bands-") as tmp:
            paths = [band_pairs([s for s, _ in shards], k, Path(tmp) / f"band-{k:03d}.parquet", settings)
                     and Path(tmp) / f"band-{k:03d}.parquet" for k in range(bands)]
            return cluster(shards, out_path, settings, text_column, paths, memory_budget)

    side = _read_sides([s for s, _ in shards], settings)
    # Rows are numbered by the rank of their id from here on.
    side = side.take(pc.sort_indices(side, [("id", "ascending")]))
    ids = side.column("id").combine_chunks()
    n = len(ids)
    if n > 1:
        repeated = pc.equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
        if repeated.any():
            i = int(np.flatnonzero(repeated)[0])
            raise ValueError(f"row ids must be unique, but {ids[i].as_py()!r} appears more than once")
    synthetic = side.column("synthetic").to_numpy()
    hashes = side.column("text_hash").to_numpy()
    shard_of = side.column("shard").to_numpy()
    row_of = side.column("row").to_numpy()
    n_shingles = side.column("shingles").to_numpy()
    side_rows = np.bincount(shard_of, minlength=len(shards))
    del side

    # Exact duplicates share a group, numbered in the order of its lowest id; `rep` is that row.
    unique_hashes, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    by_first = np.argsort(first)
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    group = rank[inverse.ravel()]
    rep = first[by_first]

    # Candidate pairs of distinct texts, from every band, as group numbers.
    found = [pq.read_table(p) for p in pair_paths]
    a = np.concatenate([t.column("a").to_numpy() for t in found]) if found else np.zeros(0, np.uint64)
    b = np.concatenate([t.column("b").to_numpy() for t in found]) if found else np.zeros(0, np.uint64)
    del found
    ga, gb = (rank[np.searchsorted(unique_hashes, x)] if len(x) else np.zeros(0, np.int64) for x in (a, b))
    if len(a) and not (np.array_equal(unique_hashes[by_first][ga], a) and np.array_equal(unique_hashes[by_first][gb], b)):
        raise ValueError("the band pair files name texts that the signature files do not hold; recompute the bands")
    pairs = np.unique(np.stack([np.minimum(ga, gb), np.maximum(ga, gb)], axis=1), axis=0) if len(a) else np.zeros((0, 2), np.int64)
    del a, b, ga, gb

    similarity = _verify(pairs, (shard_of[rep], row_of[rep], n_shingles[rep]), shards, side_rows, text_column,
                         settings.ngram, memory_budget)
    ok = similarity >= settings.threshold

    # Join verified pairs, most similar first, never growing a cluster past the cap.
    uf = UnionFind(len(rep))
    verified = np.flatnonzero(ok)
    verified = verified[np.lexsort((pairs[verified, 1], pairs[verified, 0], -similarity[verified]))]
    refused = [k for k in verified.tolist() if not uf.union(int(pairs[k, 0]), int(pairs[k, 1]), settings.max_cluster_size)]

    # Keep the row with the smallest (synthetic, id rank) in each cluster.
    component = np.fromiter((uf.find(g) for g in range(len(rep))), dtype=np.int64, count=len(rep))[group]
    priority = synthetic.astype(np.int64) * n + np.arange(n)
    best = np.full(len(rep), np.iinfo(np.int64).max)
    np.minimum.at(best, component, priority)
    kept = best[component] % max(n, 1)
    keep = priority == best[component]
    exact = ~keep & (hashes == hashes[kept])
    near = ~keep & ~exact
    reason = np.where(exact, EXACT, np.where(near, NEAR, None))
    table = pa.Table.from_arrays(
        [ids, ids.take(pa.array(kept)), pa.array(keep), pa.array(reason, pa.string())], schema=CLUSTERS
    )
    write_table(table, out_path)

    sizes = np.bincount(component, minlength=len(rep))
    sizes = sizes[sizes > 0]
    name = lambda g: ids[int(rep[g])].as_py()  # noqa: E731
    rejected = np.flatnonzero(~ok)
    report = StageReport(NAME, rows_in=n, rows_out=int(keep.sum()))
    report.dropped = Counter({EXACT: int(exact.sum()), NEAR: int(near.sum())})
    curve = s_curve(settings)
    report.extra = {
        "bands": curve["bands"],
        "rows_per_band": curve["rows_per_band"],
        "s_curve": curve,
        "distinct_texts": len(rep),
        "candidate_pairs": len(pairs),
        "verified_pairs": int(ok.sum()),
        "rejected_pairs": int((~ok).sum()),
        "refused_by_cap": len(refused),
        "max_cluster_size": settings.max_cluster_size,
        "clusters": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max(initial=0)),
        "cluster_sizes": _histogram(sizes),
        # Lowest similarity first: the borderline pairs say most about the threshold.
        "examples": [
            {"a": name(pairs[k, 0]), "b": name(pairs[k, 1]), "jaccard": round(float(similarity[k]), 4)}
            for k in sorted(verified.tolist(), key=lambda k: (similarity[k], k))[:5]
        ],
        "rejected_examples": [
            {"a": name(pairs[k, 0]), "b": name(pairs[k, 1]), "jaccard": round(float(similarity[k]), 4)}
            for k in sorted(rejected.tolist(), key=lambda k: (-similarity[k], k))[:3]
        ],
    }
    return report.to_dict()


def cluster_shards(signature_paths: list[Path], text_paths: list[Path], pair_paths: list[Path], out_path: Path,
                   settings: Dedup) -> dict:
    """`cluster` over the flow's parallel lists of signature files and text shards."""
    return cluster(list(zip(signature_paths, text_paths)), out_path, settings, pair_paths=pair_paths)


SIGNATURES = Stage("signatures", VERSION, signatures, inputs=("in_path",), label="{in_path.name}")
BANDS = Stage("bands", VERSION, band_pairs, inputs=("side_paths",), label="{band}")
CLUSTER = Stage("cluster", VERSION, cluster_shards, inputs=("signature_paths", "text_paths", "pair_paths"))


def report_markdown(report: dict) -> str:
    """The dedup report for a Prefect artifact or the dataset card."""
    extra = report.get("extra", {})
    curve = extra.get("s_curve", {})
    dropped = report.get("dropped", {})
    lines = [
        f"{report['rows_in']:,} rows in, {report['rows_out']:,} out: {dropped.get(EXACT, 0):,} exact and "
        f"{dropped.get(NEAR, 0):,} near duplicates removed.",
        "",
        f"MinHash LSH with {curve.get('bands', '?')} bands x {curve.get('rows_per_band', '?')} rows, chosen for "
        f"recall {curve.get('recall_target', '?')} at Jaccard {curve.get('threshold', '?')} (theoretical "
        f"{curve.get('recall_at_threshold', '?')}). {extra.get('candidate_pairs', 0):,} candidate pairs, each verified "
        f"by exact Jaccard: {extra.get('verified_pairs', 0):,} kept, {extra.get('rejected_pairs', 0):,} rejected, "
        f"{extra.get('refused_by_cap', 0):,} refused by the cluster cap of {extra.get('max_cluster_size', '?')} texts. "
        f"{extra.get('clusters', 0):,} clusters, the largest of {extra.get('largest_cluster', 1)} rows.",
    ]
    return "\n".join(lines + ["", report_details(report)])


def report_details(report: dict) -> str:
    """The S-curve, the cluster size histogram and example pairs, as Markdown tables."""
    extra = report.get("extra", {})
    curve = extra.get("s_curve", {})
    lines = [f"Banding {curve.get('bands', '?')} x {curve.get('rows_per_band', '?')} chosen for recall "
             f"{curve.get('recall_target', '?')} at Jaccard {curve.get('threshold', '?')}; clusters capped at "
             f"{extra.get('max_cluster_size', '?')} distinct texts ({extra.get('refused_by_cap', 0):,} verified pairs refused)."]
    if curve.get("curve"):
        lines += ["", "| Jaccard | P(candidate) |", "|---:|---:|"]
        lines += [f"| {p['jaccard']:.2f} | {p['p_candidate']:.4f} |" for p in curve["curve"]]
    if extra.get("cluster_sizes"):
        lines += ["", "| cluster size (rows) | clusters |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in extra["cluster_sizes"].items()]
    examples = extra.get("examples", []) + extra.get("rejected_examples", [])
    if examples:
        lines += ["", "| a | b | Jaccard | joined |", "|---|---|---:|---|"]
        lines += [f"| {e['a']} | {e['b']} | {e['jaccard']:.4f} | {'yes' if e in extra.get('examples', []) else 'no'} |"
                  for e in examples]
    return "\n".join(lines)


# --- one file (the `corpusmill dedup` command) ----------------------------------------


def dedup_file(
    in_path: Path,
    out_path: Path,
    text_column: str = "text",
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
) -> dict:
    """Dedup one Parquet file: the same rows and columns, in the same order, plus
    `cluster_id` and `keep` (replaced in place if the file already has them).

    Without an `id` column, ids are the zero-padded row positions, so the first occurrence
    is kept; a `synthetic` column, when present, applies the keep rule's originals-first.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    settings = Dedup(threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed)
    source = pq.ParquetFile(in_path)
    schema = source.schema_arrow
    _require_columns(in_path, schema.names, [text_column])
    with tempfile.TemporaryDirectory(prefix="corpusmill-dedup-") as tmp:
        side_path, clusters_path = Path(tmp) / "signatures.parquet", Path(tmp) / "clusters.parquet"
        write_table(_side_table(in_path, settings, text_column, "id" not in schema.names), side_path)
        ids = read_table(side_path, columns=["id"]).column("id")
        report = cluster([(side_path, in_path)], clusters_path, settings, text_column)
        clusters = read_table(clusters_path)

    # The clusters are sorted by id, the same sort as here; put them back in row order.
    by_id = pc.sort_indices(ids).to_numpy()
    position = np.empty(len(ids), dtype=np.int64)
    position[by_id] = np.arange(len(ids))
    added = {CLUSTER_ID: clusters.column("cluster_id").take(position), KEEP: clusters.column("keep").take(position)}

    for field in added:
        i = schema.get_field_index(field.name)
        schema = schema.set(i, field) if i >= 0 else schema.append(field)
    sink = ParquetSink(out_path, schema)
    start = 0
    try:
        for batch in source.iter_batches(batch_size=READ_BATCH):
            table = pa.Table.from_batches([batch])
            for field, values in added.items():
                column = values.slice(start, batch.num_rows)
                i = table.schema.get_field_index(field.name)
                table = table.set_column(i, field, column) if i >= 0 else table.append_column(field, column)
            sink.write(table)
            start += batch.num_rows
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return report
