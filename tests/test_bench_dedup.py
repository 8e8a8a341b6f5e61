"""The dedup benchmark's yardstick: exact Jaccard of word 5-gram sets, and the scores it
gives a method's decisions (a wrong edge, a wrong drop and a missed pair must all count)."""

import numpy as np
import pytest

from benchmarks.dedup import ExactJaccard, _components, score

BASE = " ".join(f"word{i}" for i in range(40))


def _docs() -> list[str]:
    near = BASE.replace("word20", "other")  # 5 of 36 shingles change: Jaccard 31/41
    close = BASE.replace("word39", "other")  # 1 of 36: Jaccard 35/37
    return [BASE, close, near, "an unrelated text of a few more words than five"]


def test_exact_jaccard_of_word_5_gram_sets():
    truth = ExactJaccard(_docs())
    pairs = np.array([[0, 1], [1, 0], [0, 2], [0, 3]])
    assert truth.of(pairs) == pytest.approx([35 / 37, 35 / 37, 31 / 41, 0.0])


def test_scores_count_wrong_edges_wrong_drops_and_missed_pairs():
    truth = ExactJaccard(_docs())
    # joins 0-1 (true) and 0-2 (Jaccard 0.76, below 0.8): keeps 0, drops 1 and 2
    edges = np.array([[0, 1], [0, 2]])
    cluster, keep = _components(4, edges)
    result = score(truth, keep, cluster, edges)
    assert result["true_pairs"] == 1 and result["recall"] == 1.0
    assert result["edge_precision"] == 0.5
    assert result["drop_precision"] == 0.5  # row 2 has no near duplicate among the kept rows
    assert result["cluster_precision"] == 1 / 3  # of 0-1, 0-2, 1-2 only 0-1 is true
    missed = score(truth, np.ones(4, bool))
    assert missed["recall"] == 0.0 and missed["drop_precision"] is None
