"""MinHash LSH: signatures, the choice of bands, band keys and candidate pairs.

Signatures are datasketch 2.0 `affine32` MinHashes with datasketch's permutations for
(num_perm, seed); the shingle hash (`hashing.shingle_hash32`) is the one thing chosen
here. Candidate pairs are the pairs MinHashLSH would return, found by sorting one 64-bit
key per band instead of filling Python dicts.
"""

from __future__ import annotations

import functools

import numpy as np

from corpusmill.tasks.dedup.compiled import njit
from corpusmill.tasks.dedup.hashing import L, M64, Q, fmix32, fmix64
from corpusmill.tasks.recipe import Dedup

SCHEME = "affine32"  # datasketch 2.0's default; named so stored signatures say what they are
SHINGLE_HASH = "corpusmill-poly64-v1"  # the hashfunc behind the signatures: see hashing.shingle_hash32
EMPTY_SLOT = np.uint32(0xFFFFFFFF)  # every slot of an affine32 MinHash that saw no shingle
FULL_BUCKET = 32  # LSH buckets up to this size give all their pairs; larger ones a star and a chain


@functools.cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b) for (num_perm, seed), drawn as
    `MinHash._init_permutations` draws them (importing datasketch takes seconds): odd `a`,
    any `b`, from numpy's legacy RandomState, whose stream numpy keeps stable."""
    draw = np.random.RandomState(seed)
    a = draw.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = draw.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def minhash(shingle64: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """(documents, num_perm) uint32 signatures: datasketch affine32 MinHash of each document's
    shingles with `hashfunc=shingle_hash32`, for all documents at once."""
    a, b = permutations(num_perm, seed)
    hv = fmix32((shingle64 >> np.uint64(32)).astype(np.uint32))
    signature = np.full((len(counts), num_perm), EMPTY_SLOT, dtype=np.uint32)
    _permute_min(hv, counts.astype(np.int64), a, b, signature)
    return signature


@njit
def _permute_min(hv, counts, a, b, signature):  # pragma: no cover (compiled; tested through `minhash`)
    """signature[d, p] = min over document d's shingle hashes h of (a[p] * h + b[p]) mod 2^32."""
    start = 0
    for d in range(len(counts)):
        row = signature[d]
        for s in range(start, start + counts[d]):
            h = hv[s]
            for p in range(len(a)):
                row[p] = min(row[p], np.uint32(a[p] * h + b[p]))
        start += counts[d]


# --- how many bands ----------------------------------------------------------------------


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


# --- bands and the pairs they make ---------------------------------------------------------


def band_keys(signature: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64: a 64-bit hash of each band's `rows` signature values."""
    keys = np.empty((signature.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        h = np.full(signature.shape[0], ((band + 1) * L) & M64, dtype=np.uint64)
        for column in signature[:, band * rows : (band + 1) * rows].T:
            h ^= column
            h *= np.uint64(Q)
            h ^= h >> np.uint64(29)
        keys[:, band] = fmix64(h)
    return keys


def bucket_pairs(key: np.ndarray, order_key: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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

    The pairs MinHashLSH with params=(bands, rows) returns. With `subset`, only those rows
    take part, and i, j index into `subset`. (Band values are compared, so key collisions
    add nothing.)
    """
    values = signature if subset is None else signature[subset]
    n = values.shape[0]
    keys = band_keys(values, bands, rows)
    found = [np.empty(0, dtype=np.int64)]
    for band in range(bands):
        i, j = bucket_pairs(keys[:, band])
        a, b = np.minimum(i, j), np.maximum(i, j)
        columns = slice(band * rows, (band + 1) * rows)
        equal = (values[a, columns] == values[b, columns]).all(axis=1)
        found.append(a[equal].astype(np.int64) * n + b[equal])
    pairs = np.unique(np.concatenate(found))
    return np.stack([pairs // max(n, 1), pairs % max(n, 1)], axis=1)
