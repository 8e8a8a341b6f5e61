"""Dedup stage: exact and near duplicates over original and synthetic rows together.

The pipeline, as in datatrove and NeMo Curator, in phases that never hold the corpus text
in memory (`stage`): per-shard signature side files, one task per LSH band for candidate
pairs, and one clustering task that verifies every candidate by exact Jaccard. By job:

- `hashing`: the hash definitions and their Python reference;
- `compiled`: how the compiled loops are compiled and cached (numba);
- `text`: normalised text, word n-gram shingles, and both hashed for a batch in one compiled
  pass (`features`, `shingle_sets`);
- `lsh`: MinHash signatures, the choice of bands, band keys, candidate pairs;
- `clusters`: exact-Jaccard verification, the union-find with its size cap, the keep rule;
- `stage`: side files, the three phases and their `Stage` declarations;
- `report`: the stage report as Markdown;
- `file`: `dedup_file`, the `corpusmill dedup` command.

Datasketch compatibility: signatures are datasketch 2.0 `affine32` MinHashes with
datasketch's permutations for (num_perm, seed); the shingle hash is the one thing chosen
here. `MinHash(num_perm, seed=seed, hashfunc=shingle_hash32)` updated with the `shingles`
of a text gives bit-for-bit the signature stored in the side file, and stored signatures
load as `LeanMinHash(seed=seed, hashvalues=..., scheme="affine32")` for `MinHashLSH` or
`jaccard` (tests/test_dedup.py checks both).
"""

from corpusmill.tasks.dedup.clusters import EXACT, NEAR, UnionFind, jaccard
from corpusmill.tasks.dedup.errors import InvalidIds, MissingColumn, StaleWorkFiles
from corpusmill.tasks.dedup.file import dedup_file
from corpusmill.tasks.dedup.hashing import shingle_hash32, shingle_hash64
from corpusmill.tasks.dedup.lsh import candidate_pairs, lsh_params, minhash, s_curve
from corpusmill.tasks.dedup.report import report_details, report_markdown
from corpusmill.tasks.dedup.stage import (
    BANDS, CLUSTER, CLUSTERS, NAME, SIGNATURES, VERSION, band_pairs, cluster, signatures,
)
from corpusmill.tasks.dedup.text import features, normalize, shingles, text_hash

__all__ = [
    "BANDS", "CLUSTER", "CLUSTERS", "EXACT", "NAME", "NEAR", "SIGNATURES", "VERSION", "InvalidIds", "MissingColumn",
    "StaleWorkFiles", "UnionFind", "band_pairs", "candidate_pairs", "cluster", "dedup_file", "features", "jaccard",
    "lsh_params", "minhash", "normalize", "report_details", "report_markdown", "s_curve", "shingle_hash32",
    "shingle_hash64", "shingles", "signatures", "text_hash",
]
