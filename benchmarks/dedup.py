"""Dedup benchmark against the strongest baselines, every figure from one run:

- signatures: docs/s of datasketch `MinHash.bulk` (xxh32, and corpusmill's own 32-bit
  shingle hash, which makes its signatures bit-identical to corpusmill's), rensa's batch
  `RMinHash` (token strings, and corpusmill's 64-bit shingle hashes prehashed) and
  `CMinHash`, and corpusmill (from text, and from its shingle hashes alone). Shingles are
  built once, outside every timer, for every method that takes them; rounds interleave
  the contenders and ratios are taken within a round.
- end to end, from one Parquet input to a deduplicated Parquet output, each contender in a
  fresh process as a user runs it: `corpusmill dedup`; datatrove 0.10's MinHash pipeline
  (signature, buckets, cluster, filter; default `MinhashConfig`; `LocalPipelineExecutor`
  with 2 tasks on 2 workers, 14 bucket tasks); datasketch (`MinHash.bulk`, `MinHashLSH`
  at the threshold) and rensa (`RMinHashDeduplicator` with LSH) as their docs show.
- accuracy of each method's decisions against exact Jaccard of word 5-gram sets (words are
  runs of \\w in the case-folded text) at the threshold 0.8, on the benchmark documents and
  on the two editions of each Gutenberg book: recall of true pairs (by Jaccard bin), and
  the precision of every pair a method joined (its edges), of its drops and of its clusters.
- scale: corpusmill's stage at 1x, 4x and 16x the documents, time and peak RSS.

    python -m benchmarks.dedup --json OUT [--quick] [--docs N] [--rounds R] [--datatrove-path DIR]

datatrove[processing] pins xxhash<4; where this environment has 4.x, install 3.x aside
(`pip install --target DIR 'xxhash<4'`) and pass `--datatrove-path DIR`.

Documents are real text from ../shared/corpora (paragraphs of Gutenberg, WikiText-2 and
Tiny Shakespeare joined into ~2.7 KB documents); every tenth is a near copy of an earlier
one with 0.2-4% of its words replaced, so true Jaccard spreads across the threshold.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.machine import describe

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"
NUM_PERM, NGRAM, THRESHOLD, SEED = 128, 5, 0.8, 1
JACCARD_BINS = [0.8, 0.85, 0.9, 0.95, 1.0001]
LIBRARIES = ["corpusmill", "numpy", "numba", "pyarrow", "scipy", "datasketch", "rensa", "datatrove", "xxhash", "spacy", "torch"]


# --- documents ---------------------------------------------------------------------------------


def paragraphs() -> list[str]:
    out = []
    files = sorted((CORPORA / "gutenberg").glob("*.txt")) + sorted((CORPORA / "wikitext-2").glob("*.txt")) + [
        CORPORA / "tinyshakespeare" / "input.txt"]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        out += [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 20]
    return out


def documents(n: int, seed: int, pool: list[str]) -> list[str]:
    """n documents of 3-6 random paragraphs; every tenth is a near copy of an earlier one
    with 0.2-4% of its words replaced (true Jaccard about 0.65-0.98)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        if i % 10 == 9:
            words = docs[rng.randrange(len(docs))].split(" ")
            for k in rng.sample(range(len(words)), max(1, round(len(words) * rng.uniform(0.002, 0.04)))):
                words[k] = f"planted{rng.randrange(10**6)}"
            docs.append(" ".join(words))
        else:
            docs.append("\n\n".join(rng.choice(pool) for _ in range(rng.randint(3, 6))))
    return docs


def edition_units() -> list[str]:
    """Paragraphs and chapters of both editions of each Gutenberg book: real near duplicates."""
    texts = []
    for new in sorted((CORPORA / "gutenberg").glob("*-0.txt")):
        for path in [new] + sorted(new.parent.glob(f"{new.name.split('-')[0]}-old-*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
            texts += [p for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 30]
            texts += [c for c in re.split(r"\n\s*(?:CHAPTER|Chapter)\b", text) if len(c.split()) >= 200]
    return texts


# --- signatures alone --------------------------------------------------------------------------


def signature_contenders(docs: list[str]) -> tuple[dict, dict]:
    """The timed functions, each taking what its library takes (built here, untimed), and
    what was built (for the checks and the shingling time)."""
    import rensa
    import xxhash
    from datasketch import MinHash

    from corpusmill.tasks import dedup

    start = time.perf_counter()
    shingles = [dedup.shingles(t, NGRAM) for t in docs]  # corpusmill's reference shingling, in Python
    shingling_s = time.perf_counter() - start
    strings = [[s.decode() for s in doc] for doc in shingles]
    texts = pa.array(docs)
    _, hash64, counts = dedup.features(texts, NGRAM)
    same_hash = _shingle_hash32_table(docs, hash64)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.uint64)
    contenders = {
        "datasketch_bulk_xxh32": lambda: MinHash.bulk(shingles, num_perm=NUM_PERM, seed=SEED,
                                                      hashfunc=xxhash.xxh32_intdigest),
        # corpusmill's hash, precomputed: datasketch pays one dict lookup per shingle for it
        "datasketch_bulk_same_hash": lambda: MinHash.bulk(shingles, num_perm=NUM_PERM, seed=SEED,
                                                          hashfunc=same_hash.__getitem__),
        "rensa_rminhash": lambda: rensa.RMinHash.digest_matrix_from_token_sets(strings, NUM_PERM, SEED),
        "rensa_rminhash_prehashed": lambda: rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            hash64, offsets, NUM_PERM, SEED),
        "rensa_cminhash": lambda: rensa.CMinHash.digests_from_token_sets(strings, NUM_PERM, SEED),
        "corpusmill_from_shingle_hashes": lambda: dedup.minhash(hash64, counts, NUM_PERM, SEED),
        "corpusmill_from_text": lambda: dedup.minhash(*dedup.features(texts, NGRAM)[1:], NUM_PERM, SEED),
    }
    return contenders, {"shingling_s": shingling_s, "hash64": hash64, "counts": counts}


def _shingle_hash32_table(docs: list[str], hash64: np.ndarray) -> dict[bytes, int]:
    """`shingle_hash32` of every shingle, read off the vectorised hashes: `features` hashes
    each text's word n-grams in order, so the k-th n-gram of the texts has the k-th hash
    (the Python reference takes ~0.1 ms a shingle). The identical signatures confirm it."""
    word = re.compile(r"\w+")
    ordered = []
    for text in docs:
        words = word.findall(text.casefold())
        ordered += ([" ".join(words[i : i + NGRAM]).encode() for i in range(len(words) - NGRAM + 1)]
                    if len(words) >= NGRAM else [" ".join(words).encode()] if words else [])
    return dict(zip(ordered, (hash64 >> np.uint64(32)).tolist()))


def signatures(n: int, rounds: int, pool: list[str]) -> dict:
    from corpusmill.tasks import dedup

    docs = documents(n, 1, pool)
    # once per process, outside the timing: the Unicode tables, and loading the compiled loops
    dedup.minhash(*dedup.features(docs[:10], NGRAM)[1:], NUM_PERM, SEED)
    contenders, built = signature_contenders(docs)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # a new order each round
            start = time.perf_counter()
            result = contenders[name]()
            rates[name].append(n / (time.perf_counter() - start))
            if name == "datasketch_bulk_same_hash":
                same = np.array([m.hashvalues for m in result], dtype=np.uint32)
    ours = dedup.minhash(built["hash64"], built["counts"], NUM_PERM, SEED)
    out = {"documents": n, "rounds": rounds, "mean_bytes": int(np.mean([len(d.encode()) for d in docs])),
           "mean_shingles": float(np.mean(built["counts"])),
           "python_shingling_docs_s": n / built["shingling_s"],
           "docs_s": {k: float(np.median(v)) for k, v in rates.items()},
           "docs_s_per_round": rates,
           "datasketch_same_hash_signatures_identical": bool((same == ours).all())}
    for base in ("datasketch_bulk_xxh32", "datasketch_bulk_same_hash", "rensa_rminhash", "rensa_rminhash_prehashed",
                 "rensa_cminhash"):
        for mine in ("corpusmill_from_text", "corpusmill_from_shingle_hashes"):
            ratio = np.median(np.array(rates[mine]) / np.array(rates[base]))
            out[f"{mine}_vs_{base}"] = float(ratio)
    # text to signature for a baseline: Python shingling (untimed above) plus its signatures
    shingle_s = 1 / out["python_shingling_docs_s"]
    out["text_to_signature_docs_s"] = {
        name: (rate if name == "corpusmill_from_text" else 1 / (1 / rate + shingle_s))
        for name, rate in out["docs_s"].items() if "shingle_hashes" not in name and "prehashed" not in name}
    return out


# --- end to end: one fresh process per contender and round ------------------------------------


def _components(n: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster label of each row from its edges, and keep: the lowest row of each cluster."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max(initial=-1) + 1, n)
    np.minimum.at(first, label, np.arange(n))
    return label, first[label] == np.arange(n)


def _shingled(in_path: Path) -> tuple[pa.Table, list[set[bytes]]]:
    from corpusmill.tasks import dedup

    table = pq.read_table(in_path)
    return table, [dedup.shingles(t, NGRAM) for t in table.column("text").to_pylist()]


def run_datasketch(in_path: Path, out: Path) -> None:
    """As datasketch's docs show: MinHash.bulk with a fast hash, MinHashLSH at the
    threshold, every query's candidates joined; the lowest row of each cluster kept."""
    import xxhash
    from datasketch import MinHash, MinHashLSH

    table, shingles = _shingled(in_path)
    minhashes = MinHash.bulk(shingles, num_perm=NUM_PERM, seed=SEED, hashfunc=xxhash.xxh32_intdigest)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            session.insert(i, m)
    edges = np.array([(i, j) for i, m in enumerate(minhashes) for j in lsh.query(m) if j > i], np.int64).reshape(-1, 2)
    cluster, keep = _components(len(minhashes), edges)
    pq.write_table(table.filter(pa.array(keep)), out / "out.parquet")
    np.savez(out / "decisions.npz", keep=keep, cluster=cluster, edges=edges)


def run_rensa(in_path: Path, out: Path) -> None:
    """As rensa's docs show: RMinHashDeduplicator with LSH, fed token lists (the shingles)."""
    import rensa

    table, shingles = _shingled(in_path)
    dedup = rensa.RMinHashDeduplicator(threshold=THRESHOLD, num_perm=NUM_PERM, use_lsh=True, seed=SEED)
    keep = np.array(dedup.add_pairs((str(i), [s.decode() for s in doc]) for i, doc in enumerate(shingles)), bool)
    pq.write_table(table.filter(pa.array(keep)), out / "out.parquet")
    np.savez(out / "decisions.npz", keep=keep)


def run_datatrove(in_dir: Path, out: Path) -> None:
    """datatrove's MinHash dedup as its example runs it, on local executors fitting 2 cores."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    if int(importlib.metadata.version("xxhash").split(".")[0]) >= 4:
        sys.exit("datatrove[processing] needs xxhash<4 (4.x refuses the str shingles its default hash gets): "
                 "pip install --target DIR 'xxhash<4' and pass --datatrove-path DIR")
    config, shards = MinhashConfig(), len(list(in_dir.glob("*.parquet")))
    logs = out / "logs"
    stage1 = LocalPipelineExecutor([ParquetReader(str(in_dir)), MinhashDedupSignature(str(out / "signatures"), config)],
                                   tasks=shards, workers=2, logging_dir=str(logs / "1"))
    stage2 = LocalPipelineExecutor([MinhashDedupBuckets(str(out / "signatures"), str(out / "buckets"), config=config)],
                                   tasks=config.num_buckets, workers=2, logging_dir=str(logs / "2"), depends=stage1)
    stage3 = LocalPipelineExecutor([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=config)],
                                   tasks=1, logging_dir=str(logs / "3"), depends=stage2)
    stage4 = LocalPipelineExecutor([ParquetReader(str(in_dir)), MinhashDedupFilter(str(out / "remove")),
                                    ParquetWriter(str(out / "deduplicated"))],
                                   tasks=shards, workers=2, logging_dir=str(logs / "4"), depends=stage3)
    stage4.run()


CHILDREN = {"datasketch": run_datasketch, "rensa": run_rensa, "datatrove": run_datatrove}


def _command(method: str, inputs: dict, out: Path) -> list[str]:
    """The contender's command line; datatrove's runs with `--datatrove-path` first on its path."""
    if method == "corpusmill":
        return [sys.executable, "-m", "corpusmill", "dedup", str(inputs["file"]), "--out", str(out / "out.parquet")]
    source = inputs["halves"] if method == "datatrove" else inputs["file"]
    return [sys.executable, "-m", "benchmarks.dedup", "--child", method, "--input", str(source), "--output", str(out)]


def write_inputs(docs: list[str], folder: Path) -> dict:
    """The same rows as one Parquet file (corpusmill, datasketch, rensa) and as two halves
    (datatrove reads one file per task, so two files let its 2 workers share the work)."""
    table = pa.table({"id": [f"{i:09d}" for i in range(len(docs))], "text": docs})
    file, halves = folder / "in.parquet", folder / "halves"
    halves.mkdir(parents=True)
    pq.write_table(table, file)
    half = (len(docs) + 1) // 2
    for k in range(2):
        pq.write_table(table.slice(k * half, half), halves / f"part-{k}.parquet")
    return {"file": file, "halves": halves, "half": half}


def end_to_end(docs: list[str], methods: list[str], rounds: int, work: Path,
               datatrove_path: Path | None) -> tuple[dict, dict]:
    """Seconds per method and round (rounds rotate the order), and the last round's output folders."""
    inputs = write_inputs(docs, work / "input")
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    outputs = {}
    for r in range(rounds):
        for method in methods[r % len(methods):] + methods[: r % len(methods)]:
            out = work / f"{method}-{r}"
            out.mkdir()
            start = time.perf_counter()
            path = [str(datatrove_path or ""), os.environ.get("PYTHONPATH", "")]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))} if method == "datatrove" else None
            with open(out / "stderr.log", "w") as log:
                done = subprocess.run(_command(method, inputs, out), cwd=REPO, stdout=log, stderr=log, env=env)
            if done.returncode:
                sys.exit(f"{method} failed:\n" + (out / "stderr.log").read_text()[-3000:])
            seconds[method].append(time.perf_counter() - start)
            outputs[method] = out
            print(f"  {method} round {r}: {seconds[method][-1]:.1f} s", file=sys.stderr)
    return {"seconds": seconds, "half": inputs["half"], "file": inputs["file"]}, outputs


# --- what each method decided ------------------------------------------------------------------


def corpusmill_decisions(in_path: Path, out: Path) -> dict:
    """Keep and clusters from the timed run's output; the pairs it joined from a second,
    untimed run that records what the stage hands to its union-find (`join`)."""
    import corpusmill.tasks.dedup.stage as stage
    from corpusmill.tasks.dedup import dedup_file, features
    from corpusmill.tasks.dedup.clusters import DistinctTexts

    result = pq.read_table(out / "out.parquet", columns=["cluster_id", "keep"])
    keep = result.column("keep").to_numpy()
    _, cluster = np.unique(result.column("cluster_id").to_numpy(zero_copy_only=False), return_inverse=True)
    with mock.patch.object(stage, "join", wraps=stage.join) as join:
        dedup_file(in_path, out / "again.parquet")
    pairs, _, verified = join.call_args.args[:3]
    assert (pq.read_table(out / "again.parquet", columns=["keep"]).column("keep").to_numpy() == keep).all()
    # rows are numbered by id, which is the row position here; a text group by its lowest row
    texts = DistinctTexts.of(features(pq.read_table(in_path, columns=["text"]).column(0), NGRAM)[0])
    rows = np.arange(len(keep))
    exact = np.stack([texts.first_row[texts.of_row], rows], axis=1)
    edges = np.concatenate([texts.first_row[pairs[verified]], exact[exact[:, 0] != exact[:, 1]]])
    return {"keep": keep, "cluster": cluster, "edges": edges}


def datatrove_decisions(out: Path, half: int, n: int) -> dict:
    """Its edges are the signature matches in the .dups files, its drops the .remove files;
    (file, doc) becomes a row through the halves' order (task k reads part-k)."""
    def rows(path: Path, fmt: str) -> np.ndarray:
        data = np.frombuffer(path.read_bytes(), dtype="<u4").reshape(-1, struct.calcsize(fmt) // 4)
        return data.astype(np.int64)

    dups = [rows(p, "<4I") for p in sorted((out / "buckets").glob("*.dups"))]
    dups = np.concatenate(dups) if dups else np.zeros((0, 4), np.int64)
    edges = np.stack([dups[:, 0] * half + dups[:, 1], dups[:, 2] * half + dups[:, 3]], axis=1)
    keep = np.ones(n, bool)
    for path in (out / "remove").glob("*.remove"):
        keep[int(path.stem) * half + rows(path, "<I")[:, 0]] = False
    cluster, _ = _components(n, edges)
    kept = sum(pq.read_metadata(p).num_rows for p in (out / "deduplicated").glob("*.parquet"))
    assert kept == keep.sum(), (kept, keep.sum())
    return {"keep": keep, "cluster": cluster, "edges": edges}


def decisions(method: str, out: Path, run: dict, n: int) -> dict:
    if method == "corpusmill":
        return corpusmill_decisions(run["file"], out)
    if method == "datatrove":
        return datatrove_decisions(out, run["half"], n)
    return dict(np.load(out / "decisions.npz"))


# --- exact Jaccard and the scores -------------------------------------------------------------


class ExactJaccard:
    """Exact Jaccard of every pair of documents that share a word 5-gram (all others are 0):
    sparse (documents x shingles) times its transpose."""

    def __init__(self, docs: list[str]):
        import scipy.sparse as sp

        from corpusmill.tasks.dedup import features

        self.n = n = len(docs)
        _, shingle, counts = features(docs, NGRAM)
        _, column = np.unique(shingle, return_inverse=True)
        x = sp.csr_matrix((np.ones(len(shingle), np.float32), (np.repeat(np.arange(n), counts), column.ravel())),
                          shape=(n, int(column.max(initial=-1)) + 1))
        x.sum_duplicates()
        x.data[:] = 1  # a set: shingles repeated within a document count once
        size = np.asarray(x.sum(axis=1)).ravel()
        inter = sp.triu(x @ x.T, k=1).tocoo()
        order = np.argsort(inter.row.astype(np.int64) * n + inter.col)
        self.a, self.b = inter.row[order].astype(np.int64), inter.col[order].astype(np.int64)
        self.key = self.a * n + self.b
        self.jaccard = inter.data[order] / (size[self.a] + size[self.b] - inter.data[order])

    def of(self, pairs: np.ndarray) -> np.ndarray:
        key = np.minimum(pairs[:, 0], pairs[:, 1]) * self.n + np.maximum(pairs[:, 0], pairs[:, 1])
        at = np.minimum(np.searchsorted(self.key, key), max(len(self.key) - 1, 0))
        found = self.key[at] == key if len(self.key) else np.zeros(len(key), bool)
        return np.where(found, self.jaccard[at] if len(self.key) else 0.0, 0.0)


def score(truth: ExactJaccard, keep: np.ndarray, cluster: np.ndarray | None = None,
          edges: np.ndarray | None = None) -> dict:
    """Recall: true pairs (Jaccard >= threshold) that do not both survive, overall and by
    Jaccard bin. Precision: of drops (a dropped row whose near duplicate was kept), of edges
    (every pair the method joined) and of clusters (every pair it put in one cluster)."""
    true = truth.jaccard >= THRESHOLD
    a, b, jac = truth.a[true], truth.b[true], truth.jaccard[true]
    caught = ~(keep[a] & keep[b])
    dropped = ~keep
    justified = np.zeros(truth.n, bool)
    justified[a[keep[b]]] = justified[b[keep[a]]] = True
    bins = {f"{lo:.2f}-{min(hi, 1):.2f}": (jac >= lo) & (jac < hi) for lo, hi in zip(JACCARD_BINS, JACCARD_BINS[1:])}
    out = {"rows": truth.n, "dropped": int(dropped.sum()), "true_pairs": int(true.sum()),
           "recall": float(caught.mean()) if len(caught) else None,
           "recall_by_jaccard": {name: {"pairs": int(sel.sum()), "recall": float(caught[sel].mean())}
                                 for name, sel in bins.items() if sel.any()},
           "drop_precision": float(justified[dropped].mean()) if dropped.any() else None}
    if cluster is not None:
        sizes = np.bincount(cluster)
        together = int((sizes * (sizes - 1) // 2).sum())
        same = cluster[a] == cluster[b]
        out.update({"cluster_recall": float(same.mean()) if len(same) else None, "co_clustered_pairs": together,
                    "cluster_precision": int(same.sum()) / together if together else None,
                    "largest_cluster": int(sizes.max(initial=0))})
    if edges is not None:
        edges = np.unique(np.sort(edges, axis=1), axis=0) if len(edges) else edges.reshape(0, 2)
        jaccard = truth.of(edges)
        out.update({"edges": len(edges), "edge_precision": float((jaccard >= THRESHOLD).mean()) if len(edges) else None,
                    "edges_below_0.5": int((jaccard < 0.5).sum())})
    return out


def compare(docs: list[str], methods: list[str], rounds: int, datatrove_path: Path | None) -> dict:
    """End-to-end seconds of every method on `docs` and the scores of its decisions."""
    with tempfile.TemporaryDirectory(prefix="corpusmill-bench-") as tmp:
        run, outputs = end_to_end(docs, methods, rounds, Path(tmp), datatrove_path)
        truth = ExactJaccard(docs)
        scores = {m: score(truth, **decisions(m, outputs[m], run, len(docs))) for m in methods}
    seconds = run["seconds"]
    out = {"documents": len(docs), "mean_bytes": int(np.mean([len(d.encode()) for d in docs])), "rounds": rounds,
           "seconds": {m: float(np.median(s)) for m, s in seconds.items()}, "seconds_per_round": seconds,
           "docs_s": {m: len(docs) / float(np.median(s)) for m, s in seconds.items()}, "scores": scores}
    for m in methods:
        if m != "corpusmill":  # ratio within each round, then the median
            out[f"corpusmill_vs_{m}"] = float(np.median(np.array(seconds[m]) / np.array(seconds["corpusmill"])))
    return out


# --- scale: the stage at 1x, 4x and 16x, one fresh process per size ---------------------------


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
            cmd = [sys.executable, "-m", "benchmarks.dedup", "--scale-child", tmp, "--docs", str(base * f)]
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


def _datatrove_xxhash(path: Path | None) -> str:
    """The xxhash version datatrove's processes import."""
    found = list(path.glob("xxhash-*.dist-info")) if path else []
    return found[0].name.removesuffix(".dist-info").split("-")[1] if found else importlib.metadata.version("xxhash")


def targets(result: dict) -> dict:
    sig, e2e, editions, scaled = result["signatures"], result["end_to_end"], result["editions"], result["scale"]
    ours, theirs = e2e["scores"]["corpusmill"], e2e["scores"]["datatrove"]
    near = next(iter(ours["recall_by_jaccard"]))  # the bin that starts at the threshold
    on_editions = editions["scores"]
    return {
        "end_to_end_10x_datatrove": e2e["corpusmill_vs_datatrove"] >= 10,
        "recall_at_least_datatrove": ours["recall"] >= theirs["recall"]
                                     and on_editions["corpusmill"]["recall"] >= on_editions["datatrove"]["recall"],
        "recall_at_threshold_at_least_datatrove": ours["recall_by_jaccard"][near]["recall"]
                                                  >= theirs["recall_by_jaccard"][near]["recall"],
        "signatures_5x_datasketch_bulk_same_hash": sig["corpusmill_from_text_vs_datasketch_bulk_same_hash"] >= 5,
        "signatures_identical_to_datasketch_same_hash": sig["datasketch_same_hash_signatures_identical"],
        "editions_recall_at_least_0.95": on_editions["corpusmill"]["recall"] >= 0.95,
        "editions_edge_precision_at_least_0.99": on_editions["corpusmill"]["edge_precision"] >= 0.99,
        "time_no_worse_than_linear": all(scaled[k]["time_ratio_per_size"] <= 1.1 for k in ("4x", "16x")),
        "rss_16x_under_2x_of_1x": scaled["16x"]["rss_ratio"] < 2,
    }


def child(args: argparse.Namespace) -> None:
    if args.scale_child:
        if args.generate:
            _generate(args.scale_child, args.docs, 10_000)
        else:
            print(json.dumps(_run(args.scale_child)))
    else:
        CHILDREN[args.child](args.input, args.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="small corpora, one round (a few minutes)")
    parser.add_argument("--docs", type=int, default=0, help="documents end to end (default 20,000; 4,000 quick)")
    parser.add_argument("--rounds", type=int, default=1, help="end-to-end rounds, the order rotating each round")
    parser.add_argument("--datatrove-path", type=Path, help="a folder put first on datatrove's import path, "
                        "holding what datatrove[processing] pins where this environment differs (xxhash<4)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scale-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.scale_child:
        return child(args)
    if not CORPORA.is_dir():
        sys.exit(f"the shared corpora are not at {CORPORA}")
    pool, n = paragraphs(), args.docs or (4_000 if args.quick else 20_000)
    methods = ["corpusmill", "datatrove", "datasketch", "rensa"]
    result = {"machine": describe(LIBRARIES), "quick": args.quick, "threshold": THRESHOLD, "num_perm": NUM_PERM, "ngram": NGRAM,
              "datatrove_xxhash": _datatrove_xxhash(args.datatrove_path)}
    steps = [("signatures", lambda: signatures(2_000 if args.quick else 10_000, 2 if args.quick else 3, pool)),
             ("end_to_end", lambda: compare(documents(n, 2, pool), methods, args.rounds, args.datatrove_path)),
             ("editions", lambda: compare(edition_units(), methods, 1, args.datatrove_path)),
             ("scale", lambda: scale(1_000 if args.quick else 5_000, [1, 4, 16]))]
    for name, step in steps:
        print(f"{name} ...", file=sys.stderr)
        result[name] = step()
        print(json.dumps(result[name], indent=1)[:3000], file=sys.stderr)
    result["targets"] = targets(result)
    result["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
