"""Soak: kill a build again and again, feed the CLI bad input, and count what was lost.

    python -m benchmarks.soak --json OUT.json [--kills 8] [--seed 1]

1. An uninterrupted run of a small recipe (real text from ../shared/corpora when present,
   generated words otherwise) gives the reference fingerprint.
2. The same recipe in a fresh work dir is started and killed with SIGKILL at a seeded
   point of its stages, `--kills` times, then left to finish. Each resume's redone work
   is counted: stage outputs that were finished before the kill and were written again.
3. Bad inputs run through `corpusmill run`; each must exit 1 with one paragraph (no
   "Traceback", no "Please report").

Reported: kills survived, files redone per resume, whether the final fingerprint equals
the reference, rows lost (the manifest's accounting: rows in minus rows out and dropped),
and the bad inputs tried and handled. Wall times are for orientation only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
CLI = [sys.executable, "-m", "corpusmill"]
RECIPE = """name: soak
version: 1.0.0
sources:
  - {kind: files, path: "corpus/*.txt", format: text, split_by: paragraph, license: CC0-1.0}
tokenizer: {gguf: smollm2}
filters: [{step: tokens, min: 8}]
work_shard_rows: 400
output: {root: releases}
"""


def write_corpus(folder: Path, seed: int) -> str:
    (folder / "corpus").mkdir(parents=True)
    books = sorted((CORPORA / "gutenberg").glob("*.txt"))[:3] if CORPORA.is_dir() else []
    for i, book in enumerate(books):
        (folder / "corpus" / f"{i}.txt").write_text(book.read_text(encoding="utf-8", errors="replace")[:400_000])
    if not books:
        rng = random.Random(seed)
        words = "river stone market window garden letter summer harbour lantern violin engine meadow".split()
        for i in range(3):
            paragraphs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 90))) for _ in range(800)]
            (folder / "corpus" / f"{i}.txt").write_text("\n\n".join(paragraphs))
    (folder / "recipe.yaml").write_text(RECIPE)
    return "shared corpora (gutenberg)" if books else "generated words"


def run(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(CLI + ["run", "recipe.yaml", "--no-progress", *args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finished_outputs(work: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in work.rglob("*.parquet")
            if ".results" not in p.parts and "quarantine" not in p.parts and not p.name.startswith(".")}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "releases" / "soak" / "1.0.0" / "manifest.json").read_text())


def kill_and_resume(folder: Path, kills: int, rng: random.Random) -> tuple[list[int], float]:
    """Kill the build `kills` times at seeded points, then let it finish; files redone per resume."""
    redone, started = [], time.monotonic()
    for _ in range(kills):
        before = finished_outputs(folder / "work")
        build = run(folder)
        for line in build.stdout:
            if "Beginning flow run" in line:
                break
        time.sleep(rng.uniform(0.5, 10))
        build.send_signal(signal.SIGKILL)
        build.wait()
        redone.append(sum(1 for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t))
    before = finished_outputs(folder / "work")
    last = run(folder)
    out, _ = last.communicate()
    if last.returncode:
        raise SystemExit(f"the final resume failed:\n{out[-3000:]}")
    redone.append(sum(1 for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t))
    return redone, time.monotonic() - started


def bad_inputs(folder: Path) -> dict[str, bool]:
    """Each bad input through the CLI: True when it ended in one paragraph with exit 1."""
    corpus = folder / "corpus"
    cases = {
        "--set sources.9.path=x": ["--set", "sources.9.path=x"],
        "--set dedup.threshold=[": ["--set", "dedup.threshold=["],
        "missing file": ["--set", "sources.0.path=nowhere/*.txt"],
        "output root is a file": ["--set", "output.root=recipe.yaml"],
    }
    files = {"truncated.jsonl.gz": gzip.compress(b'{"text": "a line"}\n' * 500)[:300],
             "random-bytes.txt": bytes(range(128, 256)) * 50}
    results = {}
    for name, content in files.items():
        (corpus / name).write_bytes(content)
        fmt = "jsonl" if name.endswith("gz") else "text"
        cases[name] = ["--set", f"sources.0.path=corpus/{name}", "--set", f"sources.0.format={fmt}",
                       "--set", "sources.0.split_by=file"]
    for name, args in cases.items():
        out, _ = run(folder, "--work-dir", f"bad-{len(results)}", *args).communicate()
        results[name] = ("error:" in out and "Traceback" not in out and "Please report" not in out)
    (folder / "not-utf8.yaml").write_bytes(RECIPE.replace("soak", "s\xe9ak").encode("latin-1"))
    out = subprocess.run(CLI + ["run", "not-utf8.yaml"], cwd=folder, capture_output=True, text=True)
    results["recipe not UTF-8"] = out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="corpusmill-soak-") as tmp:
        reference, soaked = Path(tmp) / "reference", Path(tmp) / "soaked"
        text = write_corpus(reference, args.seed)
        write_corpus(soaked, args.seed)
        out, _ = run(reference).communicate()
        expected = manifest(reference)
        redone, seconds = kill_and_resume(soaked, args.kills, rng)
        got = manifest(soaked)
        accounting = got["accounting"]
        lost = accounting["rows_in"] + accounting["synthetic_in"] - accounting["rows_out"] - sum(
            accounting["dropped"].values())
        handled = bad_inputs(reference)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "corpus": text, "rows_in": accounting["rows_in"], "seed": args.seed,
        "kills_survived": args.kills, "files_redone_per_resume": redone, "soak_seconds": round(seconds, 1),
        "same_fingerprint_as_uninterrupted": got["fingerprint"] == expected["fingerprint"],
        "rows_lost": lost,
        "bad_inputs_tried": len(handled), "bad_inputs_handled": sum(handled.values()), "bad_inputs": handled,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
