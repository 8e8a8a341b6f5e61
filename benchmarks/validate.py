"""Validation benchmark: does the validate stage's memory stay flat and its time grow
linearly as a release grows, and what does Great Expectations cost per batch?

    python -m benchmarks.validate --json OUT [--rows 20000] [--files 2]

Builds a release of `--files` train files of `--rows` rows (1x) and one of four times as
many files (4x), plus one validation and one test file, from WikiText paragraphs of
../shared/corpora recombined into distinct documents (about 1.5 KB each), and validates
each in a fresh process with the default suite and a pii step (so the safety batches run
too). Reports per scale the wall time, seconds per file, rows/s and the process's peak
RSS above what it held before validating, and the ratios 4x/1x; and GE's fixed cost: the
same validation of a release of 100-row files, per GE batch.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.machine import describe

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"
DOC_CHARS = 1500


def paragraphs() -> list[str]:
    lines = []
    for name in ("test.txt", "valid.txt"):
        text = (CORPORA / "wikitext-2" / name).read_text(encoding="utf-8")
        lines += [line.strip() for line in text.splitlines() if len(line.strip()) > 200]
    return lines


def write_release(folder: Path, train_files: int, rows: int) -> dict[str, list[str]]:
    """Release files of `rows` distinct documents each: `train_files` for train, one each for the others."""
    from corpusmill.tasks import schema

    rng = random.Random(7)
    pool = paragraphs()
    files: dict[str, list[str]] = {}
    for split, count in (("train", train_files), ("validation", 1), ("test", 1)):
        for k in range(count):
            records = []
            for i in range(rows):
                row_id = f"{split}-{k:05d}-{i:06d}"
                text = f"{row_id}: " + " ".join(rng.sample(pool, 3))[:DOC_CHARS]
                records.append({"id": row_id, "text": text, "source": "wikitext", "license": "CC-BY-SA-3.0",
                                "n_tokens": 300, "synthetic": False, "cluster_id": row_id})
            path = folder / "data" / f"{split}-{k:05d}-of-{count:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(records, schema=schema.RELEASE), path)
            files.setdefault(split, []).append(str(path))
    return files


def child(folder: Path) -> None:
    """Validate the release in `folder` (this process: a fresh one) and print the figures."""
    from corpusmill.expectations.default import SuiteParams
    from corpusmill.tasks.filters import parse_step
    from corpusmill.tasks.validate import validate_release

    files = {s: [Path(p) for p in v] for s, v in json.loads((folder / "files.json").read_text()).items()}
    pii = parse_step({"step": "pii", "action": "redact"})
    params = SuiteParams(4, 2048, 0.3, personal_data=("email", "phone"), pii_step=pii)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    summary = validate_release(files, params, folder / "validation")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_before_mb": before / 1024, "peak_rss_mb": peak / 1024,
                      "batches": len(json.loads((folder / "validation" / "results.json").read_text())["results"]),
                      "success": summary["success"], "failures": summary["critical_failures"][:3]}))


def measure(train_files: int, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_release(folder, train_files, rows)
        (folder / "files.json").write_text(json.dumps(files))
        out = subprocess.run([sys.executable, "-m", "benchmarks.validate", "--child", str(folder)], cwd=REPO,
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
    total_files = train_files + 2
    result.update(files=total_files, rows=total_files * rows, seconds_per_file=result["seconds"] / total_files,
                  rows_per_s=total_files * rows / result["seconds"],
                  rss_growth_mb=result["peak_rss_mb"] - result["rss_before_mb"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per release file")
    parser.add_argument("--files", type=int, default=2, help="train files at 1x")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    small = measure(args.files, 100)  # GE's fixed cost: the checks themselves take nothing at 100 rows
    one, four = measure(args.files, args.rows), measure(4 * args.files, args.rows)
    report = {
        "machine": describe(["great-expectations", "pandas", "pyarrow", "xxhash"]),
        "rows_per_file": args.rows,
        "scales": {"1x": one, "4x": four},
        "ratios": {"rss_growth_4x_over_1x": four["rss_growth_mb"] / one["rss_growth_mb"],
                   "peak_rss_4x_over_1x": four["peak_rss_mb"] / one["peak_rss_mb"],
                   "rows_per_s_4x_over_1x": four["rows_per_s"] / one["rows_per_s"]},
        "ge_fixed_cost": {"files": small["files"], "batches": small["batches"], "seconds": small["seconds"],
                          "seconds_per_batch": small["seconds"] / small["batches"],
                          "share_of_1x_time": small["seconds"] / one["seconds"]},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
