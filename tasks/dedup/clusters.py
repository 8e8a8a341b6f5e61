"""From candidate pairs to clusters: exact-Jaccard verification, joining under a size cap,
and the keep rule.

Rows are grouped by exact text first (equal normalised text, `DistinctTexts`); candidate
pairs of distinct texts are verified by the exact Jaccard similarity of their shingle sets
(`verify`), joined most similar first into clusters of at most `max_cluster_size` texts
(`join`), and each cluster keeps one row (`keep_first_original`).

Keep rule: each cluster keeps exactly one row, the first of its originals (synthetic=False)
by id, or the lowest id when all members are synthetic. It depends on ids, flags and texts
only, so the result is the same for any input order or sharding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

EXACT = "exact_duplicate"
NEAR = "near_duplicate"


def jaccard(a, b) -> float:
    """|a & b| / |a | b| of two sets, or of two sorted arrays of unique values.

    Two empty sets give 0.0: texts without words are not called similar; only an exact
    duplicate (equal text hash) joins them.
    """
    inter = _sorted_intersection_size(a, b) if isinstance(a, np.ndarray) else len(a & b)
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def _sorted_intersection_size(a: np.ndarray, b: np.ndarray) -> int:
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return 0
    at = np.searchsorted(b, a)  # look the shorter array up in the longer one
    return int(np.count_nonzero(b[np.minimum(at, len(b) - 1)] == a))


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size; a union can be refused
    when the joined set would grow past a limit, which is why this is incremental."""

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

    def labels(self) -> np.ndarray:
        """The set of every element, as the element at its root."""
        return np.fromiter((self.find(x) for x in range(len(self.parent))), dtype=np.int64, count=len(self.parent))


@dataclass(frozen=True)
class DistinctTexts:
    """Rows grouped by exact text (equal `text_hash`), the groups numbered in the order of
    their lowest row (rows are numbered by id rank, so: of their lowest id)."""

    of_row: np.ndarray  # the group of each row
    first_row: np.ndarray  # the lowest row of each group
    _sorted_hashes: np.ndarray
    _group_of_sorted: np.ndarray

    @classmethod
    def of(cls, text_hash: np.ndarray) -> DistinctTexts:
        unique, first, inverse = np.unique(text_hash, return_index=True, return_inverse=True)
        by_first = np.argsort(first)
        group_of_sorted = np.empty_like(by_first)
        group_of_sorted[by_first] = np.arange(len(by_first))
        return cls(group_of_sorted[inverse.ravel()], first[by_first], unique, group_of_sorted)

    def __len__(self) -> int:
        return len(self.first_row)

    def lookup(self, text_hash: np.ndarray) -> np.ndarray:
        """The group of each text hash; -1 for a hash that no row has."""
        at = np.searchsorted(self._sorted_hashes, text_hash)
        known = at < len(self._sorted_hashes)
        known[known] = self._sorted_hashes[at[known]] == text_hash[known]
        group = np.full(len(text_hash), -1, dtype=np.int64)
        group[known] = self._group_of_sorted[at[known]]
        return group


# --- verification ------------------------------------------------------------------------

# read_sets(shard, texts) -> the sorted unique 64-bit shingle hashes of those texts of a shard
ReadSets = Callable[[int, np.ndarray], list[np.ndarray]]


def verify(pairs: np.ndarray, shard_of: np.ndarray, size_of: np.ndarray, n_shards: int, read_sets: ReadSets,
           budget: int) -> np.ndarray:
    """Exact Jaccard of each pair of texts (rows of `pairs`, indices into `shard_of` and
    `size_of`: each text's shard and number of shingles).

    Shards are grouped into blocks whose candidate shingle sets fit `budget` bytes (a shard
    larger than that is a block of its own); pairs are verified block pair by block pair,
    holding at most two blocks' sets, so memory does not grow with the corpus."""
    similarity = np.zeros(len(pairs))
    if not len(pairs):
        return similarity
    block_of = _blocks(pairs, shard_of, size_of, n_shards, budget)[shard_of]
    a, b = block_of[pairs[:, 0]], block_of[pairs[:, 1]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)

    def load(texts: np.ndarray, block: int) -> dict[int, np.ndarray]:
        texts = np.unique(texts[block_of[texts] == block])
        sets = {}
        for shard in np.unique(shard_of[texts]):
            members = texts[shard_of[texts] == shard]
            sets.update(zip(members.tolist(), read_sets(int(shard), members)))
        return sets

    for i in np.unique(lo):
        mine = np.flatnonzero(lo == i)
        held = load(pairs[mine].ravel(), i)
        for j in np.unique(hi[mine]):
            these = mine[hi[mine] == j]
            other = held if j == i else load(pairs[these].ravel(), j)
            for k, (a, b) in zip(these.tolist(), pairs[these].tolist()):
                similarity[k] = jaccard(held.get(a, other.get(a)), other.get(b, held.get(b)))
            del other
    return similarity


def _blocks(pairs: np.ndarray, shard_of: np.ndarray, size_of: np.ndarray, n_shards: int, budget: int) -> np.ndarray:
    """Block number of each shard: consecutive shards while their candidates' sets fit `budget`."""
    candidates = np.unique(pairs)
    cost = np.bincount(shard_of[candidates], weights=8.0 * size_of[candidates], minlength=n_shards)
    block_of_shard = np.zeros(n_shards, dtype=np.int64)
    used, block = 0, 0
    for shard in range(n_shards):
        if used and used + cost[shard] > budget:
            block, used = block + 1, 0
        block_of_shard[shard] = block
        used += cost[shard]
    return block_of_shard


# --- clusters and the kept row -------------------------------------------------------------


def join(pairs: np.ndarray, similarity: np.ndarray, verified: np.ndarray, n_texts: int,
         max_cluster_size: int) -> tuple[np.ndarray, int]:
    """Join the `verified` pairs (indices into `pairs`), most similar first, never growing a
    cluster past `max_cluster_size` texts. Returns the cluster label of every text and the
    number of verified pairs refused by the cap."""
    clusters = UnionFind(n_texts)
    order = verified[np.lexsort((pairs[verified, 1], pairs[verified, 0], -similarity[verified]))]
    refused = sum(not clusters.union(int(pairs[k, 0]), int(pairs[k, 1]), max_cluster_size) for k in order.tolist())
    return clusters.labels(), refused


class Kept(NamedTuple):
    """What the keep rule decided, per row."""

    row: np.ndarray  # the row its cluster keeps
    keep: np.ndarray  # it is that row
    exact: np.ndarray  # dropped: same normalised text as the kept row
    near: np.ndarray  # dropped: a near duplicate of the kept row

    def reasons(self) -> np.ndarray:
        return np.where(self.exact, EXACT, np.where(self.near, NEAR, None))


def keep_first_original(cluster_of_row: np.ndarray, synthetic: np.ndarray, text_hash: np.ndarray) -> Kept:
    """The keep rule (see the module docstring). Rows are numbered by id rank, so the
    smallest (synthetic, row) in each cluster is its first original, else its lowest id."""
    n = len(synthetic)
    priority = synthetic.astype(np.int64) * n + np.arange(n)
    best = np.full(int(cluster_of_row.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(best, cluster_of_row, priority)
    kept = best[cluster_of_row] % max(n, 1)
    keep = kept == np.arange(n)
    exact = ~keep & (text_hash == text_hash[kept])
    return Kept(kept, keep, exact, ~keep & ~exact)
