"""`corpusmill verify`: is a published release (a folder or a URL) exactly what was published?

Three checks, each a list of problems (empty when the release is intact):

- the data files against the manifest: sha256 and row count of every listed file (row
  counts read from each Parquet footer), no unlisted data file, the fingerprint recomputed;
- the manifest against itself: split totals equal the sum of their files, the accounting
  balances (`rows_in + synthetic_in == rows_out + sum(dropped)`) and matches the splits;
- every other file (card, plots, validation reports, the manifest itself) against
  `checksums.sha256`, written last at publish in `sha256sum` format, so
  `sha256sum -c checksums.sha256` works too. It is kept outside the manifest because the
  validation reports carry their run's time, and the manifest must be identical on rebuilds.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from corpusmill.tasks.publish import fingerprint, read_manifest
from corpusmill.tasks.shards import file_sha256, stream_sha256

CHECKSUMS = "checksums.sha256"


def write_checksums(folder: Path) -> Path:
    """`folder/checksums.sha256` over every other file of the finished release folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in files]
    path = folder / CHECKSUMS
    path.write_text("".join(lines), encoding="utf-8")
    return path


def verify(release: Path | str) -> list[str]:
    """Every problem found in the release against its manifest and checksums; empty when it is intact."""
    manifest = read_manifest(release)  # a missing or broken manifest is a ReleaseNotFound / ManifestInvalid
    fs, root = url_to_fs(str(release))
    root = root.rstrip("/")
    return _data_files(fs, root, manifest) + _consistency(manifest) + _other_files(fs, root)


def _hash(fs, path: str) -> str:
    with fs.open(path, "rb") as handle:
        return stream_sha256(handle)


def _data_files(fs, root: str, manifest: dict) -> list[str]:
    problems = []
    for f in manifest["files"]:
        path = f"{root}/{f['path']}"
        if not fs.isfile(path):
            problems.append(f"{f['path']}: missing")
        elif (digest := _hash(fs, path)) != f["sha256"]:
            problems.append(f"{f['path']}: sha256 {digest} does not match the manifest's {f['sha256']}")
        elif (rows := pq.ParquetFile(fs.open(path, "rb")).metadata.num_rows) != f["rows"]:
            problems.append(f"{f['path']}: holds {rows} rows, the manifest says {f['rows']}")
    listed = {f["path"] for f in manifest["files"]}
    if fs.isdir(f"{root}/data"):
        for path in sorted(fs.ls(f"{root}/data", detail=False)):
            name = f"data/{path.rstrip('/').rsplit('/', 1)[-1]}"
            if name not in listed:
                problems.append(f"{name}: not listed in the manifest")
    if fingerprint(manifest["files"]) != manifest["fingerprint"]:
        problems.append("the manifest's fingerprint does not match its file list")
    return problems


def _consistency(manifest: dict) -> list[str]:
    problems = []
    splits = manifest.get("splits", {})
    for split, figures in splits.items():
        listed = sum(f["rows"] for f in manifest["files"] if f["split"] == split)
        if figures.get("rows") != listed:
            problems.append(f"splits.{split}.rows is {figures.get('rows')}, its files hold {listed}")
    accounting = manifest.get("accounting")
    if accounting is None:
        return problems + ["the manifest has no accounting"]
    dropped = sum(accounting.get("dropped", {}).values())
    if accounting["rows_in"] + accounting["synthetic_in"] != accounting["rows_out"] + dropped:
        problems.append(f"accounting does not balance: rows_in {accounting['rows_in']} + synthetic_in "
                        f"{accounting['synthetic_in']} != rows_out {accounting['rows_out']} + dropped {dropped}")
    if accounting["rows_out"] != sum(f["rows"] for f in manifest["files"]):
        problems.append(f"accounting.rows_out is {accounting['rows_out']}, the data files hold "
                        f"{sum(f['rows'] for f in manifest['files'])}")
    synthetic = sum(s.get("synthetic", 0) for s in splits.values())
    if accounting["synthetic_out"] != synthetic:
        problems.append(f"accounting.synthetic_out is {accounting['synthetic_out']}, the splits hold {synthetic}")
    return problems


def _other_files(fs, root: str) -> list[str]:
    path = f"{root}/{CHECKSUMS}"
    if not fs.isfile(path):
        return [f"{CHECKSUMS} is missing, so the card, plots and validation reports cannot be checked"]
    expected = {}
    for line in fs.cat_file(path).decode("utf-8").splitlines():
        digest, _, name = line.partition("  ")
        expected[name] = digest
    problems = []
    for name, digest in sorted(expected.items()):
        if not fs.isfile(f"{root}/{name}"):
            problems.append(f"{name}: missing")
        elif (actual := _hash(fs, f"{root}/{name}")) != digest:
            problems.append(f"{name}: sha256 {actual} does not match {CHECKSUMS}'s {digest}")
    present = {p[len(root) + 1:] for p in fs.find(root)}
    problems += [f"{name}: not listed in {CHECKSUMS}" for name in sorted(present - set(expected) - {CHECKSUMS})]
    return problems
