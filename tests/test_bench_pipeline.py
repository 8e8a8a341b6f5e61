"""The pipeline benchmark's corpus (deterministic, with the duplicates it says it plants) and
the benchmark itself, end to end at a tiny size."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.pipeline import EXACT_SHARE, NEAR_SHARE, planted_corpus, write_corpus

REPO = Path(__file__).resolve().parent.parent


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}


@pytest.fixture(scope="module")
def planted(corpora):
    return planted_corpus(0.5)


def test_corpus_is_deterministic(planted):
    assert planted_corpus(0.5) == planted
    assert planted_corpus(0.5, seed=8)[0] != planted[0]


def test_corpus_plants_the_stated_share_of_exact_and_near_duplicates(planted):
    docs, pairs = planted
    originals = len(docs) - len(pairs)
    exact = [(a, b) for a, b, kind in pairs if kind == "exact"]
    near = [(a, b) for a, b, kind in pairs if kind == "near"]
    assert len(exact) == round(originals * EXACT_SHARE) > 0
    assert len(near) == round(originals * NEAR_SHARE) > 0
    assert all(a < b and docs[a] == docs[b] for a, b in exact)
    for a, b in near:
        assert a < b and docs[a] != docs[b]
        first, second = _shingles(docs[a]), _shingles(docs[b])
        assert len(first & second) / len(first | second) >= 0.85  # well over dedup's 0.8


def test_corpus_files_hold_each_document_at_its_position(planted, tmp_path):
    docs, _ = planted
    positions = write_corpus(docs, tmp_path)
    for i in (0, len(docs) // 2, len(docs) - 1):
        name, line = positions[i].rsplit(":", 1)
        lines = (tmp_path / "corpus" / name).read_text(encoding="utf-8").splitlines()
        assert json.loads(lines[int(line) - 1])["text"] == docs[i]


@pytest.mark.slow
def test_benchmark_runs_end_to_end_at_a_tiny_size(corpora, tmp_path):
    out = tmp_path / "pipeline.json"
    subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--mb", "0.3", "--factors", "1", "2", "--json",
                    str(out)], cwd=REPO, check=True, timeout=900, capture_output=True)
    result = json.loads(out.read_text())
    first = result["sizes"][0]
    assert {"ingest", "filter", "signatures", "cluster", "finalize", "validate", "publish"} <= set(first["stages"])
    assert first["peak_rss_mb"] > 0 and first["rows_out"] > 0
    assert first["dedup"]["exact"]["recall"] == 1.0
    assert result["tokenize"]["ratio"] > 0 and "targets" in result
