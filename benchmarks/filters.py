"""Filters benchmark: docs/s of each built-in filter step and of the whole chain, and, in the
same run on the same documents, datatrove 0.10's own GopherRepetitionFilter,
GopherQualityFilter, C4QualityFilter, FineWebQualityFilter and PIIFormatter; how often the
quality step's keep/drop decisions agree with datatrove's; language ID on 1 KB documents.

    python -m benchmarks.filters --json OUT [--mb 100]

Documents are real text from ../shared/corpora, repeated with variation: each is a run of
1 to 30 consecutive units (Gutenberg paragraphs, WikiText-2 article lines, Tiny Shakespeare
speeches) starting at a seeded random place, so the ~7.6 MB of corpora give --mb megabytes
of distinct documents. Both sides run in 2 worker processes (spawned, one shard each);
each side's docs/s is all documents over the slower worker's compute time (reading the
shard and importing excluded). datatrove runs as its documentation shows: its blocks' `run`
chained over an iterator of `Document`s (what LocalPipelineExecutor does inside a task,
without the JSONL reader and writer around it). datatrove needs the bench extra
(datatrove, spacy); without it only our side is measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.machine import describe

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"
LIBRARIES = ["corpusmill", "datatrove", "spacy", "pyarrow", "numpy", "fasttext-new", "phonenumbers"]
WORKERS = 2
DATATROVE_QUALITY = ("GopherRepetitionFilter", "GopherQualityFilter", "C4QualityFilter", "FineWebQualityFilter")


def units(corpora: Path = CORPORA) -> dict[str, list[str]]:
    """Each source's units in reading order: Gutenberg paragraphs (hard-wrapped lines kept),
    WikiText-2 lines, Tiny Shakespeare speeches."""
    gutenberg = []
    for path in sorted((corpora / "gutenberg").glob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        gutenberg += [u for u in re.split(r"\n\s*\n", text) if u.strip()]
    wikitext = []
    for path in sorted((corpora / "wikitext-2").glob("*.txt")):
        wikitext += [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    speeches = (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    return {"gutenberg": gutenberg, "wikitext": wikitext,
            "shakespeare": [u for u in re.split(r"\n\s*\n", speeches) if u.strip()]}


def documents(pool: dict[str, list[str]], n: int, seed: int) -> list[str]:
    """n documents, each 1 to 30 consecutive units of one source from a random start."""
    rng = random.Random(seed)
    sources = sorted(pool)
    docs = []
    for _ in range(n):
        source = rng.choice(sources)
        size = rng.randint(1, 30)
        start = rng.randrange(len(pool[source]) - size)
        docs.append(("\n" if source == "wikitext" else "\n\n").join(pool[source][start : start + size]))
    return docs


def corpus(megabytes: float, seed: int = 1) -> list[str]:
    pool, docs, size = units(), [], 0
    while size < megabytes * 1e6:
        batch = documents(pool, 100, seed + len(docs))
        docs += batch
        size += sum(len(d.encode()) for d in batch)
    return docs


# ---- workers (one shard each, in a spawned process) -----------------------------------------


def _ours(args: tuple[str, list[dict]]) -> dict:
    """Our steps, or the chain when asked, over one shard: compute seconds and verdicts."""
    shard, entries = args
    from corpusmill.tasks.filters import parse_step
    from corpusmill.tasks.filters.chain import apply_steps
    from corpusmill.tasks.filters.step import StepContext
    from corpusmill.tasks.recipe import ModelRef

    table = pq.read_table(shard)
    chain = entries and entries[0].get("step") == "chain"
    steps = [parse_step(e) for e in (entries[1:] if chain else entries)]
    context = StepContext(tokenizer_ref=ModelRef(gguf="smollm2"))
    if chain:
        context.tokenizer  # loading the tokenizer is not filtering
    start = time.perf_counter()
    if chain:
        kept, _, report = apply_steps(table, steps, context, stage="filter", where=shard)
        return {"seconds": time.perf_counter() - start, "rows": table.num_rows, "kept": kept.num_rows}
    verdict = steps[0].filter(table, context)
    return {"seconds": time.perf_counter() - start, "rows": table.num_rows, "reasons": list(verdict.reasons)}


class _Reasons:
    """An exclusion writer that only remembers why each document was dropped."""

    def __init__(self, name: str, into: dict):
        self.name, self.into = name, into

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, doc, rank: int = 0) -> None:
        self.into[doc.id] = f"{self.name}.{doc.metadata.get('filter_reason')}"


def _datatrove(args: tuple[str, str]) -> dict:
    """datatrove's quality filters (or PIIFormatter) chained over one shard's documents."""
    shard, which = args
    from datatrove.data import Document
    from datatrove.pipeline import filters, formatters

    table = pq.read_table(shard, columns=["id", "text"])
    dropped: dict[str, str] = {}
    if which == "quality":
        blocks = [getattr(filters, name)(exclusion_writer=_Reasons(name, dropped)) for name in DATATROVE_QUALITY]
    else:
        blocks = [formatters.PIIFormatter()]
    start = time.perf_counter()
    docs = (Document(text=t, id=i) for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    for block in blocks:
        docs = block.run(docs)
    kept = sum(1 for _ in docs)
    ids = table.column("id").to_pylist()
    return {"seconds": time.perf_counter() - start, "rows": table.num_rows, "kept": kept,
            "reasons": [dropped.get(i) for i in ids]}


def _parallel(worker, shards: list[str], extra) -> tuple[float, list[dict]]:
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        results = pool.map(worker, [(s, extra) for s in shards])
    rows = sum(r["rows"] for r in results)
    return rows / max(r["seconds"] for r in results), results


# ---- what is measured ------------------------------------------------------------------------


def our_steps(shards: list[str]) -> tuple[dict, list[str | None] | None]:
    """docs/s of each built-in step (tokens aside) with default parameters, and the quality
    step's reasons for the agreement."""
    from corpusmill.tasks.filters import BUILTIN, step_class

    out, quality = {}, None
    for name in sorted(set(BUILTIN) - {"tokens"}):
        try:
            step_class(name)
        except Exception as error:  # the other steps are written alongside: say so and go on
            out[name] = {"status": "missing", "why": str(error)[:200]}
            continue
        try:
            rate, results = _parallel(_ours, shards, [{"step": name}])
        except Exception as error:
            out[name] = {"status": "failed", "why": f"{type(error).__name__}: {str(error)[:300]}"}
            continue
        dropped = sum(r is not None for res in results for r in res["reasons"])
        out[name] = {"docs_s": rate, "dropped": dropped}
        print(f"  {name}: {rate:.0f} docs/s, dropped {dropped}", file=sys.stderr)
        if name == "quality":
            quality = [r for res in results for r in res["reasons"]]
    return out, quality


def our_chain(shards: list[str], steps: dict) -> dict:
    names = [n for n in ("pii", "language", "quality", "toxicity") if "docs_s" in steps.get(n, {})]
    try:
        rate, results = _parallel(_ours, shards, [{"step": "chain"}] + [{"step": n} for n in names])
    except Exception as error:
        return {"steps": names, "status": "failed", "why": f"{type(error).__name__}: {str(error)[:300]}"}
    return {"steps": names + ["n_tokens (SmolLM2 tokenizer)"], "docs_s": rate,
            "kept": sum(r["kept"] for r in results)}


def agreement(ours: list[str | None], theirs: list[str | None]) -> dict:
    both = list(zip(ours, theirs))
    disagree = Counter(f"ours {o or 'kept'} / datatrove {t or 'kept'}" for o, t in both if (o is None) != (t is None))
    reasons = Counter(f"ours {o or 'kept'} / datatrove {t or 'kept'}" for o, t in both)
    return {"documents": len(both), "share": sum((o is None) == (t is None) for o, t in both) / len(both),
            "disagreeing": dict(disagree.most_common()), "decisions": dict(reasons.most_common())}


def language_1kb(docs: list[str]) -> dict:
    """The language step on documents cut to about 1 KB (at a space), in this one process:
    fastText's batch call already spreads over every core (a process per core would run
    twice as many threads as cores). Best of three passes, after a warm-up."""
    from corpusmill.tasks.filters import StepContext, step_class

    try:
        step = step_class("language")(step="language")
    except Exception as error:
        return {"status": "missing", "why": str(error)[:200]}
    short = [d[: d.rfind(" ", 0, 1000)] if len(d) > 1000 else d for d in docs]
    short = [d for d in short if len(d.encode()) >= 900][:100_000]
    table = pa.table({"id": [str(i) for i in range(len(short))], "text": short})
    step.filter(table.slice(0, 1000), StepContext())
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        step.filter(table, StepContext())
        best = min(best, time.perf_counter() - start)
    return {"documents": len(short), "mean_bytes": sum(len(d.encode()) for d in short) / len(short),
            "max_chars": step.max_chars, "docs_s": len(short) / best}


def _write_shards(docs: list[str], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    per = -(-len(docs) // WORKERS)
    for k in range(WORKERS):
        chunk = docs[k * per : (k + 1) * per]
        ids = [f"{k * per + i:09d}" for i in range(len(chunk))]
        path = folder / f"part-{k}.parquet"
        pq.write_table(pa.table({"id": ids, "text": chunk, "source": ["bench"] * len(chunk),
                                 "license": ["various"] * len(chunk)}), path)
        shards.append(str(path))
    return shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--mb", type=float, default=100, help="megabytes of documents (default 100)")
    parser.add_argument("--language-only", action="store_true",
                        help="only the language step on 1 KB documents (minutes, where the whole run takes an hour)")
    args = parser.parse_args()
    if not CORPORA.is_dir():
        sys.exit(f"the shared corpora are not at {CORPORA}")
    docs = corpus(args.mb)
    if args.language_only:
        result = {"machine": describe(LIBRARIES), "language_1kb": language_1kb(docs)}
        result["targets"] = {"language_20k_docs_s": result["language_1kb"].get("docs_s", 0) >= 20_000}
        _write(result, args.json)
        return
    result = {"machine": describe(LIBRARIES), "workers": WORKERS,
              "documents": {"count": len(docs), "megabytes": sum(len(d.encode()) for d in docs) / 1e6,
                            "mean_bytes": sum(len(d.encode()) for d in docs) / len(docs)}}
    print(json.dumps(result, indent=1), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="corpusmill-bench-filters-") as tmp:
        shards = _write_shards(docs, Path(tmp) / "docs")
        print("our steps ...", file=sys.stderr)
        result["ours"], quality = our_steps(shards)
        print("our chain ...", file=sys.stderr)
        result["ours"]["chain"] = our_chain(shards, result["ours"])
        print("language on 1 KB documents ...", file=sys.stderr)
        result["language_1kb"] = language_1kb(docs)
        if importlib.util.find_spec("datatrove") is None:
            result["datatrove"] = {"status": "not installed (pip install -e '.[bench]')"}
        else:
            print("datatrove quality filters ...", file=sys.stderr)
            rate, results = _parallel(_datatrove, shards, "quality")
            theirs = [r for res in results for r in res["reasons"]]
            result["datatrove"] = {"mode": "blocks' run chained over Document iterators, 2 spawned processes",
                                   "quality_docs_s": rate, "quality_kept": sum(r["kept"] for r in results)}
            print("datatrove PIIFormatter ...", file=sys.stderr)
            result["datatrove"]["pii_formatter_docs_s"] = _parallel(_datatrove, shards, "pii")[0]
            if quality is not None:
                result["quality_vs_datatrove"] = {
                    "speed_ratio": result["ours"]["quality"]["docs_s"] / rate, **agreement(quality, theirs)}
    if "quality_vs_datatrove" in result:
        q = result["quality_vs_datatrove"]
        result["targets"] = {"quality_2x_datatrove": q["speed_ratio"] >= 2, "agreement_99.5": q["share"] >= 0.995}
    if "docs_s" in result["language_1kb"]:
        result.setdefault("targets", {})["language_20k_docs_s"] = result["language_1kb"]["docs_s"] >= 20_000
    _write(result, args.json)


def _write(result: dict, path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if path:
        path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
