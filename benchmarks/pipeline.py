"""Pipeline benchmark: the whole release flow on a JSONL corpus at 1x, 4x and 16x a base size.

    python -m benchmarks.pipeline --json OUT [--mb 16] [--factors 1 4 16] [--kill]

The corpus is real text from ../shared/corpora recombined into distinct documents
(`distinct_documents`), plus planted duplicates: EXACT_SHARE of the documents are
verbatim copies of an earlier one and NEAR_SHARE are copies with NEAR_EDIT of their words
replaced (word 5-gram Jaccard about 0.95, well over the 0.8 threshold). The recipe is what a
user starting out writes: the default filters (`pii: redact`) plus a `tokens` step with the
SmolLM2 tokenizer, default dedup and splits, no augmentation; `work_shard_rows: 1000`, so the
base size is already cut into several shards and 1x and 16x use both cores alike.

Each size runs `corpusmill run` as a child process, as a user runs it, against one Prefect
server started here (so the flow's task runs can be read back). Reported per size:

- per stage, from the Prefect task runs of that flow run (read with the Prefect client):
  wall span (first task start to last task end), busy seconds (the sum of its task runs),
  MB/s and rows/s over the span, and the peak RSS sampled while the stage had a task running;
- the whole run: wall time, MB/s, rows/s, and the peak RSS of the run's process tree (the
  CLI and any worker it starts; the Prefect server is reported apart), sampled every
  SAMPLE_SECONDS with psutil, and `getrusage(RUSAGE_CHILDREN)`'s max RSS of one process;
- the dedup recall of the planted pairs: a pair is caught when dedup dropped its copy or its
  original (they share a cluster and one of them is kept); dedup drops outside the planted
  pairs are counted too (recombined runs of units can overlap).

After the largest size, on the base size's ingest shards: the tokens step as the filter
stage calls it, shard by shard (`TokenBounds.filter`), against the raw `tokenizers`
`encode_batch` over the same texts with the same tokenizer (both use every core; the step
counts with tiktoken's rank BPE built from the tokenizer's merges, `tasks/filters/tokens.py`).

`--kill` (item 5 of the scale issue) SIGKILLs a build of the base size at a seeded random
point, reruns it, and reports whether the fingerprint equals the uninterrupted run's and how
many stage outputs the rerun wrote, and how many of those had been finished before the kill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Sequence
from pathlib import Path

import psutil

from benchmarks.filters import CORPORA, units
from benchmarks.machine import describe

LIBRARIES = ["corpusmill", "prefect", "pyarrow", "tokenizers", "transformers", "great-expectations", "psutil"]
NAME = "bench"
SOURCE = "corpus"  # the recipe's source name: part of every row id
SEED = 7
EXACT_SHARE, NEAR_SHARE, NEAR_EDIT = 0.02, 0.02, 0.01
FILE_MB = 8  # the corpus is cut into JSONL files of about this size, as a user's export would be
SAMPLE_SECONDS = 0.2
# Prefect task names of the flow, in flow order (task run names are "<name>-<label>" or the name).
STAGES = ("decontaminate-index", "ingest", "filter", "augment", "signatures", "bands", "cluster", "assign-splits",
          "finalize", "write-release", "validate", "publish")
RECIPE = """name: bench
version: 1.0.0
seed: 1
sources:
  - {kind: files, name: corpus, path: "corpus/*.jsonl", license: CC-BY-SA-3.0}
tokenizer: {gguf: smollm2}
filters:
  - {step: pii, action: redact}
  - {step: tokens, min: 16}
work_shard_rows: 1000  # the base size is a few thousand documents: several shards keep both cores busy at 1x too
output: {root: releases}
"""


# --- the corpus -----------------------------------------------------------------------------


class Documents(Sequence[str]):
    """The corpus as what each document is made of, its text joined when it is read: the text
    of a 10 GB corpus never sits in memory, only its documents' unit numbers (and the text of
    the near copies). An entry is (source, unit numbers) or a near copy's text."""

    def __init__(self, pool: dict[str, list[str]], entries: list[tuple[str, array] | str]):
        self.pool, self.entries = pool, entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        entry = self.entries[i]
        if isinstance(entry, str):
            return entry
        source, picked = entry
        return ("\n" if source == "wikitext" else "\n\n").join(self.pool[source][k] for k in picked)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Documents) and self.entries == other.entries


def distinct_documents(megabytes: float, seed: int) -> Documents:
    """About `megabytes` MB of documents, each 3 to 30 units (`benchmarks.filters.units`) of one
    source drawn at random, in random order. `benchmarks.filters.corpus` joins *consecutive*
    units, and at this scale its runs overlap: 29% of a 64 MB corpus were near duplicates of
    each other, which would make dedup's work grow with size for want of distinct text."""
    pool, rng = units(), random.Random(seed)
    docs = Documents(pool, [])
    sources, size = sorted(pool), 0
    while size < megabytes * 1e6:
        source = rng.choice(sources)
        docs.entries.append((source, array("I", rng.sample(range(len(pool[source])), rng.randint(3, 30)))))
        size += len(docs[-1].encode())
    return docs


def planted_corpus(megabytes: float, seed: int = SEED) -> tuple[Documents, list[tuple[int, int, str]]]:
    """Documents of about `megabytes` MB and the planted pairs (original index, copy index, kind).

    Copies are inserted at seeded places after their original; only originals of at least
    100 words are copied, so a few replaced words keep the copy a near duplicate."""
    base = distinct_documents(megabytes * (1 - EXACT_SHARE - NEAR_SHARE), seed)
    rng = random.Random(seed)
    kinds = ["exact"] * round(len(base) * EXACT_SHARE) + ["near"] * round(len(base) * NEAR_SHARE)
    long_enough = [i for i, d in enumerate(base) if len(d.split()) >= 100]
    copies: dict[int, list[tuple[int, str, tuple | str]]] = {}  # index in base after which they go -> (original, kind, entry)
    for kind in kinds:
        original = rng.choice(long_enough)
        after = rng.randrange(original, len(base))
        entry = _near_copy(base[original], rng) if kind == "near" else base.entries[original]
        copies.setdefault(after, []).append((original, kind, entry))
    docs, where, pairs = Documents(base.pool, []), {}, []
    for i, entry in enumerate(base.entries):
        where[i] = len(docs)
        docs.entries.append(entry)
        for original, kind, copy in copies.get(i, []):
            pairs.append((where[original], len(docs), kind))
            docs.entries.append(copy)
    return docs, pairs


def _near_copy(doc: str, rng: random.Random) -> str:
    words = doc.split(" ")
    for k in rng.sample(range(len(words)), max(1, round(len(words) * NEAR_EDIT))):
        words[k] = f"planted{rng.randrange(10**6)}"
    return " ".join(words)


def write_corpus(docs: Sequence[str], folder: Path) -> list[str]:
    """JSONL files of about FILE_MB each; returns each document's row position (`<file>:<line>`)."""
    (folder / "corpus").mkdir(parents=True)
    positions, lines, size, index = [], [], 0, 0

    def flush() -> None:
        (folder / "corpus" / f"part-{index:04d}.jsonl").write_text("".join(lines), encoding="utf-8")

    for doc in docs:
        line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
        lines.append(line)
        size += len(line.encode())
        positions.append(f"part-{index:04d}.jsonl:{len(lines)}")
        if size >= FILE_MB * 1e6:
            flush()
            lines, size, index = [], 0, index + 1
    if lines:
        flush()
    (folder / "recipe.yaml").write_text(RECIPE)
    return positions


# --- one run --------------------------------------------------------------------------------


class TreeSampler:
    """Samples the summed RSS of a process and its descendants every SAMPLE_SECONDS."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []  # (unix time, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.samples.append((time.time(), total))
            self._stop.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = 0, end: float = float("inf")) -> int:
        """The highest sample from `start` to `end`, widened by one interval so a short task has one."""
        return max((rss for t, rss in self.samples if start - SAMPLE_SECONDS <= t <= end + SAMPLE_SECONDS), default=0)


def start_build(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "corpusmill", "run", "recipe.yaml", "--no-progress"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stage_of(task_run_name: str) -> str:
    return next(s for s in sorted(STAGES, key=len, reverse=True) if task_run_name == s or
                task_run_name.startswith(f"{s}-"))


def task_runs() -> list[dict]:
    """Name, start and end (unix seconds) of every task run of the newest flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        runs, offset = [], 0
        while batch := client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                                             limit=200, offset=offset):
            runs += batch
            offset += len(batch)
    return [{"stage": stage_of(r.name), "start": r.start_time.timestamp(), "end": r.end_time.timestamp()}
            for r in runs if r.start_time and r.end_time]


def per_stage(runs: list[dict], sampler: TreeSampler, megabytes: float, manifest: dict) -> dict:
    """Each stage's span, busy time, MB/s and rows/s over its span, and peak RSS while it ran.
    Rows are the stage report's rows in (signatures, bands and cluster: dedup's); from
    assign-splits on, the release's rows. MB are the whole corpus's, for every stage."""
    rows_in = {name: r["rows_in"] for name, r in manifest["stages"].items()}
    rows_out = manifest["accounting"]["rows_out"]
    out = {}
    for stage in STAGES:
        mine = [r for r in runs if r["stage"] == stage]
        if not mine:
            continue
        start, end = min(r["start"] for r in mine), max(r["end"] for r in mine)
        span = max(end - start, 1e-3)
        rows = rows_in.get(stage, rows_in["dedup"] if stage in ("signatures", "bands", "cluster") else rows_out)
        out[stage] = {"tasks": len(mine), "wall_s": round(span, 2), "busy_s": round(sum(r["end"] - r["start"] for r in mine), 2),
                      "mb_s": round(megabytes / span, 2), "rows_s": round(rows / span, 1),
                      "peak_rss_mb": round(sampler.peak(start, end) / 1e6, 1)}
    return out


def dedup_recall(folder: Path, positions: list[str], pairs: list[tuple[int, int, str]]) -> dict:
    import pyarrow.parquet as pq

    from corpusmill.tasks.ingest.documents import row_id

    dropped = set()
    for path in (folder / "work" / NAME / "quarantine").glob("*.parquet"):
        table = pq.read_table(path, columns=["id", "stage"])
        dropped.update(i for i, s in zip(table.column("id").to_pylist(), table.column("stage").to_pylist()) if s == "dedup")
    ids = [row_id(SOURCE, p) for p in positions]
    out, planted = {}, set()
    for kind in ("exact", "near"):
        mine = [(ids[a], ids[b]) for a, b, k in pairs if k == kind]
        planted.update(x for pair in mine for x in pair)
        caught = sum(a in dropped or b in dropped for a, b in mine)
        out[kind] = {"planted": len(mine), "caught": caught, "recall": round(caught / max(len(mine), 1), 4)}
    out["dedup_drops"] = len(dropped)
    out["drops_outside_planted_pairs"] = len(dropped - planted)
    return out


def run_size(folder: Path, megabytes: float) -> dict:
    docs, pairs = planted_corpus(megabytes)
    positions = write_corpus(docs, folder)
    size = sum(p.stat().st_size for p in (folder / "corpus").glob("*.jsonl")) / 1e6
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    load = os.getloadavg()  # the machine is shared: say how busy it was
    started = time.time()
    build = start_build(folder)
    sampler = TreeSampler(build.pid)
    out, _ = build.communicate()
    sampler.stop()
    wall = time.time() - started
    if build.returncode:
        raise SystemExit(f"the {megabytes} MB build failed:\n{out[-4000:]}")
    child_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    manifest = json.loads((folder / "releases" / NAME / "1.0.0" / "manifest.json").read_text())
    accounting = manifest["accounting"]
    return {
        "megabytes": round(size, 2), "documents": len(docs), "rows_out": accounting["rows_out"],
        "load_avg_at_start": load, "load_avg_at_end": os.getloadavg(),
        "wall_s": round(wall, 1), "mb_s": round(size / wall, 3), "rows_s": round(len(docs) / wall, 1),
        "peak_rss_mb": round(sampler.peak() / 1e6, 1),
        # max RSS of the largest single child so far (a larger earlier child would mask it)
        "largest_process_max_rss_mb": round(child_max / 1e3, 1) if child_max > before else None,
        "stages": per_stage(task_runs(), sampler, size, manifest),
        "dedup": dedup_recall(folder, positions, pairs),
        "dropped": accounting["dropped"], "fingerprint": manifest["fingerprint"],
    }


# --- the tokenize step against its ceiling --------------------------------------------------


def tokenize_ceiling(folder: Path, rounds: int = 2) -> dict:
    """The tokens step shard by shard, as the filter stage calls it, against one raw
    `encode_batch` over the same texts; best of `rounds`, after a warm-up."""
    import pyarrow.parquet as pq

    from corpusmill.tasks.filters.step import StepContext
    from corpusmill.tasks.filters.tokens import TokenBounds, rank_bpe
    from corpusmill.tasks.recipe import ModelRef

    shards = [pq.read_table(p, columns=["id", "text"]) for p in sorted((folder / "work" / NAME / "ingest").rglob("*.parquet"))
              if not p.name.startswith("quarantine")]
    texts = [t for s in shards for t in s.column("text").to_pylist()]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    context = StepContext(tokenizer_ref=ModelRef(gguf="smollm2"))
    step, backend = TokenBounds(step="tokens", min=16), context.tokenizer.backend_tokenizer
    backend.encode_batch(texts[:1000], add_special_tokens=False)
    step_s, raw_s = float("inf"), float("inf")
    for _ in range(rounds):  # interleaved, so a busy moment of the machine hits both
        start = time.perf_counter()
        for shard in shards:
            step.filter(shard, context)
        step_s = min(step_s, time.perf_counter() - start)
        start = time.perf_counter()
        backend.encode_batch(texts, add_special_tokens=False)
        raw_s = min(raw_s, time.perf_counter() - start)
    return {"documents": len(texts), "megabytes": round(megabytes, 2), "shards": len(shards),
            "step_mb_s": round(megabytes / step_s, 3), "raw_encode_batch_mb_s": round(megabytes / raw_s, 3),
            "ratio": round(raw_s / step_s, 3), "counter": "tiktoken rank BPE" if rank_bpe(context.tokenizer) else "tokenizers"}


# --- killed and resumed ---------------------------------------------------------------------


def stage_outputs(work: Path) -> dict[Path, int]:
    """Every finished stage output (Parquet and side files) with its modification time."""
    return {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and p.suffix in (".parquet", ".npz")
            and ".results" not in p.parts and "quarantine" not in p.parts and not p.name.startswith(".")}


def kill_and_resume(folder: Path, megabytes: float, reference: dict, seed: int) -> dict:
    """SIGKILL a build once it has finished a seeded number of the stage outputs the
    uninterrupted build wrote (`reference`: its output count and fingerprint), rerun it to the end."""
    write_corpus(planted_corpus(megabytes)[0], folder)
    target = random.Random(seed).randint(1, reference["outputs"] - 1)
    build = start_build(folder)  # with the benchmark's Prefect server, the build has no child processes
    while build.poll() is None and len(stage_outputs(folder / "work")) < target:
        time.sleep(SAMPLE_SECONDS)
    build.send_signal(signal.SIGKILL)
    build.wait()
    finished = stage_outputs(folder / "work")
    resumed = start_build(folder)
    out, _ = resumed.communicate()
    if resumed.returncode:
        return {"failed": out[-2000:]}
    now = stage_outputs(folder / "work")
    manifest = json.loads((folder / "releases" / NAME / "1.0.0" / "manifest.json").read_text())
    return {"killed_after_outputs": len(finished), "outputs_total": len(now),
            "outputs_written_by_resume": sum(1 for p, t in now.items() if finished.get(p) != t),
            "finished_outputs_recomputed": sum(1 for p, t in finished.items() if now.get(p) not in (None, t)),
            "same_fingerprint": manifest["fingerprint"] == reference["fingerprint"]}


# --- the Prefect server and main ------------------------------------------------------------

def start_server(home: Path) -> subprocess.Popen:
    """A Prefect server with its services (the task-run recorder writes the task runs read here)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api", DO_NOT_TRACK="1",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from corpusmill.flows.server import _healthy

    deadline = time.monotonic() + 120
    while not _healthy(os.environ["PREFECT_API_URL"]):
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("the Prefect server did not start")
        time.sleep(0.5)
    return server


def targets(sizes: list[dict], tokenize: dict | None) -> dict:
    first, last = sizes[0], sizes[-1]
    found = {"peak_rss_ratio": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
             "peak_rss_ratio_at_most_1.5": last["peak_rss_mb"] <= 1.5 * first["peak_rss_mb"],
             "throughput_ratio": round(last["mb_s"] / first["mb_s"], 3),
             "throughput_ratio_at_least_0.8": last["mb_s"] >= 0.8 * first["mb_s"]}
    if tokenize:
        found |= {"tokenize_vs_encode_batch": tokenize["ratio"], "tokenize_at_least_0.9": tokenize["ratio"] >= 0.9}
    return found


def extrapolate(sizes: list[dict], megabytes: float = 10_000) -> dict:
    """Time and peak RSS of a `megabytes` run, growing from the largest run at the rates
    measured between the two largest (time) and between the smallest and the largest (RSS):
    the fixed start-up is counted once, not once per base size."""
    a, b = sizes[-2], sizes[-1]
    seconds_per_mb = (b["wall_s"] - a["wall_s"]) / (b["megabytes"] - a["megabytes"])
    per_mb_rss = (b["peak_rss_mb"] - sizes[0]["peak_rss_mb"]) / (b["megabytes"] - sizes[0]["megabytes"])
    return {"megabytes": megabytes,
            "wall_minutes": round((b["wall_s"] + seconds_per_mb * (megabytes - b["megabytes"])) / 60, 1),
            "marginal_mb_s": round(1 / seconds_per_mb, 3),
            "peak_rss_mb_if_linear": round(b["peak_rss_mb"] + max(per_mb_rss, 0) * (megabytes - b["megabytes"]), 1),
            "how": "wall: the largest run's, plus the extra megabytes at the marginal rate between the two largest "
                   "runs; peak RSS if linear: the largest run's plus the growth per MB from the smallest run to the "
                   "largest (an upper bound: most of that growth is buffers that stop growing; none when it did not "
                   "grow)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--mb", type=float, default=16, help="the base size in MB (default 16)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16], help="multiples of the base size")
    parser.add_argument("--kill", action="store_true", help="also kill a base-size build and resume it")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the tokens step against encode_batch (long at 1 GB)")
    args = parser.parse_args()
    if not CORPORA.is_dir():
        sys.exit(f"the shared corpora are not at {CORPORA}")
    result = {"machine": describe(LIBRARIES), "base_mb": args.mb, "factors": args.factors, "recipe": RECIPE,
              "planted": {"exact_share": EXACT_SHARE, "near_share": NEAR_SHARE, "near_words_replaced": NEAR_EDIT},
              "sample_seconds": SAMPLE_SECONDS, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="corpusmill-bench-pipeline-") as tmp:
        server = start_server(Path(tmp) / "prefect")
        server_rss = TreeSampler(server.pid)
        try:
            for factor in args.factors:
                print(f"{factor}x: {args.mb * factor} MB ...", file=sys.stderr)
                figures = run_size(Path(tmp) / f"x{factor}", args.mb * factor)
                result["sizes"].append({"factor": factor, **figures})
                _write(result, args.json)  # each figure as soon as it is measured
            if not args.no_ceiling:
                print("tokenize step against encode_batch ...", file=sys.stderr)
                result["tokenize"] = tokenize_ceiling(Path(tmp) / f"x{args.factors[0]}")
                _write(result, args.json)
            if args.kill:
                print("kill and resume ...", file=sys.stderr)
                base = Path(tmp) / f"x{args.factors[0]}"
                reference = {"outputs": len(stage_outputs(base / "work")), "fingerprint": result["sizes"][0]["fingerprint"]}
                result["kill_and_resume"] = kill_and_resume(Path(tmp) / "killed", args.mb * args.factors[0], reference, SEED)
        finally:
            server_rss.stop()
            server.terminate()
            server.wait()
    result["prefect_server_peak_rss_mb"] = round(server_rss.peak() / 1e6, 1)
    if len(result["sizes"]) > 1:
        result["targets"] = targets(result["sizes"], result.get("tokenize"))
        result["extrapolated"] = extrapolate(result["sizes"])
    print(_write(result, args.json))


def _write(result: dict, path: Path | None) -> str:
    text = json.dumps(result, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
