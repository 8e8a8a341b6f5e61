"""Dedup benchmark: MinHash signature speed against datasketch and rensa on the same
documents, end-to-end dedup time and peak RSS at 1x, 4x and 16x corpus size, and pair
precision and recall on the two editions of each Gutenberg book.

    python -m benchmarks.dedup --json OUT [--quick]

Documents are real text from ../shared/corpora (paragraphs of Gutenberg, WikiText-2 and
Tiny Shakespeare joined into ~2 KB documents), with 10% planted near duplicates (a copy
with 1% of its words replaced). Every figure and ratio comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"
NUM_PERM, NGRAM = 128, 5


def paragraphs() -> list[str]:
    out = []
    files = sorted((CORPORA / "gutenberg").glob("*.txt")) + sorted((CORPORA / "wikitext-2").glob("*.txt")) + [
        CORPORA / "tinyshakespeare" / "input.txt"]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        out += [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 20]
    return out


def documents(n: int, seed: int, pool: list[str]) -> list[str]:
    """n documents of 3-6 random paragraphs; every tenth is a near copy of an earlier one."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        if i % 10 == 9:
            words = docs[rng.randrange(len(docs))].split(" ")
            for k in rng.sample(range(len(words)), max(1, len(words) // 100)):
                words[k] = f"planted{rng.randrange(10**6)}"
            docs.append(" ".join(words))
        else:
            docs.append("\n\n".join(rng.choice(pool) for _ in range(rng.randint(3, 6))))
    return docs


def _rate(fn, docs) -> float:
    start = time.perf_counter()
    fn(docs)
    return len(docs) / (time.perf_counter() - start)


def speed(n: int, pool: list[str]) -> dict:
    from datasketch import MinHash

    from corpusmill.tasks import dedup
    from corpusmill.tasks.dedup.stage import READ_BATCH

    docs = documents(n, 1, pool)
    dedup.features(docs[:10], NGRAM)  # build the Unicode tables once, outside the timing

    def datasketch_update(texts):
        for t in texts:
            m = MinHash(num_perm=NUM_PERM)
            for s in dedup.shingles(t, NGRAM):
                m.update(s)

    def datasketch_bulk(texts):
        MinHash.bulk([dedup.shingles(t, NGRAM) for t in texts], num_perm=NUM_PERM)

    def corpusmill(texts):
        array = pa.array(texts)
        for lo in range(0, len(texts), READ_BATCH):
            _, shingle, counts = dedup.features(array.slice(lo, READ_BATCH), NGRAM)
            dedup.minhash(shingle, counts, NUM_PERM, 1)

    out = {"documents": n, "mean_bytes": int(np.mean([len(d.encode()) for d in docs])),
           "datasketch_update_docs_s": _rate(datasketch_update, docs[: max(200, n // 10)]),
           "datasketch_bulk_docs_s": _rate(datasketch_bulk, docs[: max(500, n // 4)]),
           "corpusmill_docs_s": _rate(corpusmill, docs)}
    try:
        from rensa import RMinHash

        def rensa(texts):
            for t in texts:
                m = RMinHash(num_perm=NUM_PERM, seed=1)
                m.update([s.decode() for s in dedup.shingles(t, NGRAM)])
                m.digest()

        out["rensa_docs_s"] = _rate(rensa, docs)
    except ImportError:
        out["rensa_docs_s"] = None
    out["corpusmill_vs_datasketch_update"] = out["corpusmill_docs_s"] / out["datasketch_update_docs_s"]
    out["corpusmill_vs_datasketch_bulk"] = out["corpusmill_docs_s"] / out["datasketch_bulk_docs_s"]
    if out["rensa_docs_s"]:
        out["corpusmill_vs_rensa"] = out["corpusmill_docs_s"] / out["rensa_docs_s"]
    return out


# --- end to end, one fresh process per size ------------------------------------------------


def _generate(work: Path, n: int, shard_rows: int) -> None:
    from corpusmill.tasks.shards import write_table

    pool = paragraphs()
    docs = documents(n, 2, pool)
    for k, lo in enumerate(range(0, n, shard_rows)):
        chunk = docs[lo : lo + shard_rows]
        write_table(pa.table({"id": [f"{lo + i:09d}" for i in range(len(chunk))], "text": chunk}),
                    work / "in" / f"part-{k:05d}.parquet")


def _run(work: Path) -> dict:
    from corpusmill.tasks import dedup
    from corpusmill.tasks.recipe import Dedup

    settings = Dedup(num_perm=NUM_PERM, ngram=NGRAM)
    shards = sorted((work / "in").glob("*.parquet"))
    start = time.perf_counter()
    sides = [work / "sig" / p.name for p in shards]
    for p, s in zip(shards, sides):
        dedup.signatures(p, s, settings)
    signed = time.perf_counter()
    bands, _ = dedup.lsh_params(settings)
    pairs = [work / "bands" / f"band-{k:03d}.parquet" for k in range(bands)]
    for k, p in enumerate(pairs):
        dedup.band_pairs(sides, k, p, settings)
    banded = time.perf_counter()
    report = dedup.cluster(list(zip(sides, shards)), work / "clusters.parquet", settings, pair_paths=pairs)
    done = time.perf_counter()
    return {"rows": report["rows_in"], "seconds": done - start, "signatures_s": signed - start,
            "bands_s": banded - signed, "cluster_s": done - banded, "dropped": report["dropped"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def scale(base: int, factors: list[int]) -> dict:
    out = {}
    for f in factors:
        with tempfile.TemporaryDirectory(prefix="corpusmill-bench-") as tmp:
            cmd = [sys.executable, "-m", "benchmarks.dedup", "--child", tmp, "--docs", str(base * f)]
            subprocess.run(cmd + ["--generate"], check=True, cwd=REPO)
            result = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True)
            out[f"{f}x"] = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"  {f}x: {out[f'{f}x']}", file=sys.stderr)
    first = out[f"{factors[0]}x"]
    for f in factors[1:]:
        r = out[f"{f}x"]
        r["time_ratio"] = r["seconds"] / first["seconds"]
        r["time_ratio_per_size"] = r["time_ratio"] / (f / factors[0])
        r["rss_ratio"] = r["peak_rss_mb"] / first["peak_rss_mb"]
    return out


# --- accuracy on two editions of each Gutenberg book ---------------------------------------


def _edition_units(text: str) -> list[str]:
    text = text.replace("\r\n", "\n")
    paras = [p for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 30]
    chapters = [c for c in re.split(r"\n\s*(?:CHAPTER|Chapter)\b", text) if len(c.split()) >= 200]
    return paras + chapters


def accuracy(threshold: float = 0.8) -> dict:
    import scipy.sparse as sp

    from corpusmill.tasks import dedup
    from corpusmill.tasks.recipe import Dedup
    from corpusmill.tasks.shards import read_table, write_table

    settings = Dedup(threshold=threshold, num_perm=NUM_PERM, ngram=NGRAM)
    texts = []
    for new in sorted((CORPORA / "gutenberg").glob("*-0.txt")):
        for path in [new] + sorted(new.parent.glob(f"{new.name.split('-')[0]}-old-*.txt")):
            texts += _edition_units(path.read_text(encoding="utf-8", errors="replace"))
    n = len(texts)
    with tempfile.TemporaryDirectory(prefix="corpusmill-acc-") as tmp:
        shard = write_table(pa.table({"id": [f"{i:06d}" for i in range(n)], "text": texts}), Path(tmp) / "part.parquet")
        dedup.signatures(shard, Path(tmp) / "sig.parquet", settings)
        report = dedup.cluster([(Path(tmp) / "sig.parquet", shard)], Path(tmp) / "c.parquet", settings)
        cluster_of = np.array([int(c) for c in read_table(Path(tmp) / "c.parquet").column("cluster_id").to_pylist()])
    # exact Jaccard of every pair sharing a shingle: sparse (docs x shingles) @ its transpose
    _, shingle, counts = dedup.features(texts, NGRAM)
    doc = np.repeat(np.arange(n), counts)
    _, col = np.unique(shingle, return_inverse=True)
    x = sp.csr_matrix((np.ones(len(doc), np.float32), (doc, col)), shape=(n, int(col.max()) + 1))
    x.data[:] = 1  # duplicates within a document summed: back to a set
    x.sum_duplicates()
    x.data[:] = 1
    size = np.asarray(x.sum(axis=1)).ravel()
    inter = sp.triu(x @ x.T, k=1).tocoo()
    jac = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    true = jac >= threshold
    same = cluster_of[inter.row] == cluster_of[inter.col]
    # co-clustered pairs that share no shingle at all (exact copies of shingle-less texts aside) are false
    cluster_pairs = sum(int(c) * (int(c) - 1) // 2 for c in np.bincount(cluster_of) if c > 1)
    true_pos = int((true & same).sum())
    return {"documents": n, "true_pairs": int(true.sum()), "co_clustered_pairs": cluster_pairs,
            "recall": true_pos / max(int(true.sum()), 1), "precision": true_pos / max(cluster_pairs, 1),
            "edge_precision": 1.0 if report["extra"]["verified_pairs"] else None,
            "report": {k: report["extra"][k] for k in ("bands", "rows_per_band", "candidate_pairs", "verified_pairs",
                                                        "rejected_pairs", "clusters", "largest_cluster")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="smaller corpora (about a minute)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--docs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.generate:
            _generate(args.child, args.docs, 10_000)
        else:
            print(json.dumps(_run(args.child)))
        return
    if not CORPORA.is_dir():
        sys.exit(f"the shared corpora are not at {CORPORA}")
    pool = paragraphs()
    result = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}, "quick": args.quick}
    print("signature speed ...", file=sys.stderr)
    result["speed"] = speed(4_000 if args.quick else 20_000, pool)
    print(json.dumps(result["speed"], indent=1), file=sys.stderr)
    print("accuracy ...", file=sys.stderr)
    result["accuracy"] = accuracy()
    print(json.dumps(result["accuracy"], indent=1), file=sys.stderr)
    print("scale ...", file=sys.stderr)
    result["scale"] = scale(1_000 if args.quick else 5_000, [1, 4, 16])
    s, a, e = result["speed"], result["accuracy"], result["scale"]
    result["targets"] = {
        "signatures_20x_datasketch_update": s["corpusmill_vs_datasketch_update"] >= 20,
        "signatures_at_least_rensa": (s.get("corpusmill_vs_rensa") or 0) >= 1,
        "time_no_worse_than_linear": all(e[k]["time_ratio_per_size"] <= 1.1 for k in ("4x", "16x")),
        "rss_16x_under_2x_of_1x": e["16x"]["rss_ratio"] < 2,
        "recall_at_least_0.95": a["recall"] >= 0.95,
        "precision_at_least_0.99": a["precision"] >= 0.99,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
