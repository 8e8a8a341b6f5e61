"""Publish stage: the immutable release folder.

    <root>/<name>/<version>/
      README.md          dataset card (HF front matter, statistics, plots)
      manifest.json      recipe, inputs, versions, files with sha256, accounting, validation
      data/<split>-00000-of-0000N.parquet
      plots/token_lengths.png
      validation/        Great Expectations results and Data Docs

Everything is written into a staging folder beside the release and renamed into place
only after validation passed, so a release either exists whole or not at all. Nothing
time-dependent goes into the data files or the manifest: the same recipe and inputs give
the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import yaml

from tasks import schema
from tasks.errors import CorpusmillError
from tasks.shards import ParquetSink, file_sha256, read_table

STAGE = "publish"
MANIFEST = "manifest.json"
CORE_PACKAGES = (
    "corpusmill", "prefect", "transformers", "tokenizers", "torch", "datasets",
    "great_expectations", "datasketch", "pyarrow", "numpy", "pandas",
)


class ReleaseExists(CorpusmillError, FileExistsError):
    pass


def release_path(root: str | Path, name: str, version: str) -> Path:
    return Path(root) / name / version


def check_absent(target: Path) -> None:
    if target.exists():
        raise ReleaseExists(
            f"release {target} already exists and releases are immutable; "
            f"bump `version:` in the recipe (or --set version=X.Y.Z) to publish a new one."
        )


def staging_path(target: Path) -> Path:
    return target.parent / f".{target.name}.staging"


def file_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


@dataclass
class SplitStats:
    rows: int = 0
    tokens: int = 0
    synthetic: int = 0
    by_source: dict = field(default_factory=lambda: defaultdict(lambda: {"rows": 0, "tokens": 0, "synthetic": 0}))
    token_counts: list = field(default_factory=list)


def write_splits(final_shards: list[Path], data_dir: Path, split_rows: dict[str, int], shard_rows: int,
                 on_progress=None) -> tuple[list[dict], dict[str, SplitStats]]:
    """Stream the finalized shards, in order, into HF-style split files of `shard_rows` rows.

    Row order is the order of the shards (originals in input order, then synthetic rows in
    parent order), which does not depend on how many shards the work was cut into.
    """
    counts = {s: max(1, math.ceil(n / shard_rows)) for s, n in split_rows.items() if n}
    stats = {s: SplitStats() for s in counts}
    sinks: dict[str, ParquetSink] = {}
    written: dict[str, int] = defaultdict(int)
    entries = []

    def close(split: str) -> None:
        path = sinks.pop(split).close()
        entries.append({"path": f"data/{path.name}", "split": split})

    for shard in final_shards:
        table = read_table(shard)
        for split in counts:
            rows = table.filter(pc.equal(table.column("split"), split)).select(schema.RELEASE.names).cast(schema.RELEASE)
            while rows.num_rows:
                if split not in sinks:
                    index = written[split] // shard_rows
                    sinks[split] = ParquetSink(data_dir / file_name(split, index, counts[split]), schema.RELEASE)
                room = shard_rows - written[split] % shard_rows
                chunk, rows = rows.slice(0, room), rows.slice(room)
                sinks[split].write(chunk)
                written[split] += chunk.num_rows
                _accumulate(stats[split], chunk)
                if written[split] % shard_rows == 0:
                    close(split)
        if on_progress:
            on_progress(1)
    for split in list(sinks):
        close(split)
    for entry in entries:
        path = data_dir.parent / entry["path"]
        entry.update(sha256=file_sha256(path), bytes=path.stat().st_size, rows=read_table(path, ["id"]).num_rows)
    entries.sort(key=lambda e: e["path"])
    return entries, stats


def _accumulate(stats: SplitStats, chunk) -> None:
    tokens = chunk.column("n_tokens").to_numpy()
    synthetic = chunk.column("synthetic").to_numpy(zero_copy_only=False)
    stats.rows += chunk.num_rows
    stats.tokens += int(tokens.sum())
    stats.synthetic += int(synthetic.sum())
    stats.token_counts.append(tokens)
    for source, n_tok, syn in zip(chunk.column("source").to_pylist(), tokens, synthetic):
        entry = stats.by_source[source]
        entry["rows"] += 1
        entry["tokens"] += int(n_tok)
        entry["synthetic"] += int(syn)


def fingerprint(files: list[dict]) -> str:
    """One hash over every data file's path and sha256: equal iff the data is equal."""
    lines = "".join(f"{f['path']}\t{f['sha256']}\n" for f in sorted(files, key=lambda f: f["path"]))
    return hashlib.sha256(lines.encode()).hexdigest()


def code_version() -> str:
    version = importlib.metadata.version("corpusmill")
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+{commit}" if commit else version


def package_versions() -> dict[str, str]:
    out = {}
    for name in CORE_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def accounting(reports: dict[str, dict], rows_out: int, synthetic_out: int) -> dict:
    """rows_in + synthetic_in == rows_out + sum(dropped), or a RuntimeError (a bug, not bad input)."""
    dropped: dict[str, int] = defaultdict(int)
    for stage in ("ingest", "tokenize", "augment", "dedup", "split"):
        for reason, n in reports.get(stage, {}).get("dropped", {}).items():
            dropped[f"{stage}.{reason}"] += n
    result = {
        "rows_in": reports["ingest"]["rows_in"],
        "synthetic_in": reports.get("augment", {}).get("rows_in", 0),
        "rows_out": rows_out,
        "synthetic_out": synthetic_out,
        "dropped": dict(sorted(dropped.items())),
    }
    if result["rows_in"] + result["synthetic_in"] != rows_out + sum(dropped.values()):
        raise RuntimeError(f"row accounting does not balance: {result}")
    return result


def plot_token_lengths(stats: dict[str, SplitStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for split, s in stats.items():
        ax.hist(np.concatenate(s.token_counts), bins=50, histtype="step", label=f"{split} ({s.rows:,} rows)")
    ax.set(xlabel="tokens per row", ylabel="rows", title="Token length by split", yscale="log")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def dataset_card(manifest: dict, stats: dict[str, SplitStats], dedup_report: dict) -> str:
    recipe = manifest["recipe"]
    licenses = sorted({s["license"] for s in recipe["sources"]})
    total_rows = sum(s.rows for s in stats.values())
    front = {
        "license": [lic.lower() for lic in licenses] if len(licenses) > 1 else licenses[0].lower(),
        "pretty_name": recipe["name"],
        "size_categories": [_size_category(total_rows)],
        "task_categories": ["text-generation"],
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in stats],
        }],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {recipe['name']} {manifest['version']}", "",
             f"Built by corpusmill {manifest['code_version']} from the recipe stored in `manifest.json`. "
             f"Fingerprint `{manifest['fingerprint']}`; verify with `corpusmill verify <this folder>`.", "",
             "## Sources", "", "| source | license | rows | tokens | synthetic rows |", "|---|---|---:|---:|---:|"]
    by_source: dict[str, dict] = defaultdict(lambda: {"rows": 0, "tokens": 0, "synthetic": 0})
    for s in stats.values():
        for name, e in s.by_source.items():
            for k in e:
                by_source[name][k] += e[k]
    source_license = {i["name"]: i["license"] for i in manifest["inputs"]}
    for name in sorted(by_source):
        e = by_source[name]
        lines.append(f"| {name} | {source_license.get(name, ', '.join(licenses))} | {e['rows']:,} | {e['tokens']:,} | {e['synthetic']:,} |")
    lines += ["", "## Splits", "", "| split | rows | tokens | synthetic share | files |", "|---|---:|---:|---:|---:|"]
    for split, s in stats.items():
        files = sum(1 for f in manifest["files"] if f["split"] == split)
        lines.append(f"| {split} | {s.rows:,} | {s.tokens:,} | {s.synthetic / max(s.rows, 1):.1%} | {files} |")
    acc = manifest["accounting"]
    lines += ["", "Splits are assigned by a hash of each row's lineage root (a synthetic row follows its "
              "parent, near duplicates stay together), so no document or its paraphrase crosses splits.",
              "", "![token lengths](plots/token_lengths.png)", "", "## Where the rows went", "",
              f"{acc['rows_in']:,} source rows and {acc['synthetic_in']:,} generated rows in; "
              f"{acc['rows_out']:,} rows out ({acc['synthetic_out']:,} synthetic).", "",
              "| stage.reason | rows dropped |", "|---|---:|"]
    lines += [f"| {reason} | {n:,} |" for reason, n in acc["dropped"].items()]
    extra = dedup_report.get("extra", {})
    lines += ["", "## Deduplication", "",
              f"MinHash LSH over word {recipe['dedup']['ngram']}-grams, {recipe['dedup']['num_perm']} permutations "
              f"({extra.get('bands', '?')} bands x {extra.get('rows_per_band', '?')} rows), threshold "
              f"{recipe['dedup']['threshold']}; candidate pairs verified by exact Jaccard "
              f"({extra.get('verified_pairs', 0):,} kept, {extra.get('rejected_pairs', 0):,} rejected). "
              f"Kept member of a cluster: original before synthetic, then the lowest id. "
              f"{extra.get('clusters', 0):,} clusters, the largest of {extra.get('largest_cluster', 1)} rows."]
    validation = manifest["validation"]
    lines += ["", "## Validation", "",
              f"Great Expectations suite `{validation.get('suite')}`: {validation.get('evaluated', 0)} expectations evaluated, "
              f"{validation.get('failed', 0)} failed, {len(validation.get('critical_failures', []))} critical. "
              "Reports: `validation/results.json`, `validation/data_docs/index.html`."]
    if recipe.get("augment"):
        aug = recipe["augment"]
        lines += ["", "## Synthetic data", "",
                  f"Generated by `{manifest.get('generator', aug['model'])}` with templates {', '.join(aug['templates'])}; "
                  f"every synthetic row records `parent_id`, `generator` and `prompt_id`. Synthetic rows are capped at "
                  f"{aug['max_synthetic_share']:.0%} of each split and pass quality gates (empty, refusal, repetition, "
                  f"length, copy of the source) before they are kept."]
    return "\n".join(lines) + "\n"


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>10M"


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")


def commit(staging: Path, target: Path) -> Path:
    """Rename the finished staging folder into place; never overwrite a release."""
    check_absent(target)
    os.rename(staging, target)
    return target


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def verify(release: Path) -> list[str]:
    """Problems found re-hashing the release against its manifest; empty when it is intact."""
    manifest_path = release / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing: not a corpusmill release, or an unfinished one"]
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    problems = []
    listed = {f["path"] for f in manifest["files"]}
    for f in manifest["files"]:
        path = release / f["path"]
        if not path.is_file():
            problems.append(f"{f['path']}: missing")
        elif (digest := file_sha256(path)) != f["sha256"]:
            problems.append(f"{f['path']}: sha256 {digest} does not match the manifest's {f['sha256']}")
    for path in sorted((release / "data").glob("*")):
        if f"data/{path.name}" not in listed:
            problems.append(f"data/{path.name}: not listed in the manifest")
    if not problems and fingerprint(manifest["files"]) != manifest["fingerprint"]:
        problems.append("the manifest's fingerprint does not match its file list")
    return problems
