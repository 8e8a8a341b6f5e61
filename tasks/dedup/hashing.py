"""The hashes dedup is built on: one definition, with a Python reference for one value.

A byte string (a word, or a whitespace-separated token) hashes to
    fmix64(sum_i byte_i * P^i + len * L)            (mod 2^64)
a sequence of such hashes (the words of a shingle, the tokens of a text) folds to
    fmix64(((s * Q + h_1) * Q + h_2) ... )          (mod 2^64, s a fixed seed)
and a shingle's 32-bit hash (datasketch's `hashfunc` input) is the high half of its
64-bit hash. The exact Jaccard is computed on the 64-bit shingle hashes.

The reference functions (`bytes_hash`, `fold`, `shingle_hash64`, `shingle_hash32`) work on
one value at a time; `text.features` computes the same for whole batches in a compiled loop,
with `fmix64_compiled`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from corpusmill.tasks.dedup.compiled import njit

M64 = (1 << 64) - 1
P = 0x100000001B3  # FNV prime: odd, so its powers never vanish mod 2^64
L = 0x9E3779B97F4A7C15
Q = 0xD6E8FEB86659FD93
SEED_SHINGLE = 0x2545F4914F6CDD1D
SEED_TEXT = 0x61C8864680B583EB


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, elementwise (uint64 arithmetic wraps mod 2^64)."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


fmix64_compiled = njit(fmix64)  # the same finalizer, for one uint64 in compiled loops


def fmix32(h: np.ndarray) -> np.ndarray:
    """datasketch's affine32 pre-mix (MurmurHash3's 32-bit finalizer)."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _fmix64_int(h: int) -> int:
    """`fmix64` of one Python int (the per-shingle reference path datasketch calls)."""
    return int(fmix64(np.array([h], dtype=np.uint64))[0])


def bytes_hash(data: bytes) -> int:
    h, p = 0, 1
    for byte in data:
        h = (h + byte * p) & M64
        p = (p * P) & M64
    return _fmix64_int((h + len(data) * L) & M64)


def fold(hashes, seed: int) -> int:
    h = seed
    for x in hashes:
        h = (h * Q + x) & M64
    return _fmix64_int(h)


def shingle_hash64(shingle: bytes) -> int:
    """64-bit hash of one shingle as `shingles` returns it (words joined by one space)."""
    return fold((bytes_hash(w) for w in shingle.split(b" ")), SEED_SHINGLE)


def shingle_hash32(shingle: bytes) -> int:
    """The `hashfunc` that makes datasketch compute corpusmill's signatures:
    `MinHash(num_perm, seed=seed, hashfunc=shingle_hash32)` updated with `shingles(text)`."""
    return shingle_hash64(shingle) >> 32


# --- Arrow string buffers ------------------------------------------------


def string_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0, data bytes) of a string array without nulls."""
    if texts.type not in (pa.large_string(), pa.large_binary()):
        texts = texts.cast(pa.large_string())
    _, off, data = texts.buffers()
    offsets = np.frombuffer(off, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]
