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

import contextlib
import datetime
import errno
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmill.tasks import schema
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.shards import ParquetSink, file_sha256, iter_batches

NAME = "publish"
MANIFEST = "manifest.json"
CORE_PACKAGES = (
    "corpusmill", "prefect", "transformers", "tokenizers", "torch", "datasets",
    "great_expectations", "datasketch", "pyarrow", "numpy", "pandas",
)


class ReleaseExists(CorpusmillError, FileExistsError):
    pass


class ReleaseNotFound(CorpusmillError, FileNotFoundError):
    pass


def is_remote(location: str | Path) -> bool:
    """True for fsspec URLs of non-local filesystems (s3://, gs://, memory://, ...)."""
    if isinstance(location, Path) or "://" not in str(location):
        return False
    return str(location).split("://", 1)[0] not in ("file", "local")


def _fs(url: str):
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def release_path(root: str | Path, name: str, version: str) -> Path | str:
    """`<root>/<name>/<version>`: a Path for local roots, a URL string for remote ones."""
    if is_remote(root):
        return f"{str(root).rstrip('/')}/{name}/{version}"
    root = str(root)
    return Path(root[len("file://"):] if root.startswith("file://") else root) / name / version


def exists(target: Path | str) -> bool:
    if is_remote(target):
        fs, path = _fs(str(target))
        return fs.exists(f"{path}/{MANIFEST}")  # a version without a manifest is an unfinished upload: absent
    return Path(target).exists()


BUMP = "bump `version:` in the recipe (or --set version=X.Y.Z) to publish a new one."


def check_absent(target: Path | str) -> None:
    if exists(target):
        raise ReleaseExists(f"release {target} already exists and releases are immutable; {BUMP}")


def differences(published: dict, manifest: dict, keys=None) -> list[str]:
    """The top-level fields (all, or `keys`) in which `manifest`, as it would be written,
    differs from the `published` one."""
    ours = json.loads(json.dumps(manifest, ensure_ascii=False))  # tuples as lists, as read back
    return sorted(k for k in (keys or ours.keys() | published.keys()) if ours.get(k) != published.get(k))


def check_rebuildable(target: Path | str, recipe: dict) -> None:
    """Before any work: a version already published is refused unless it was built from this
    (resolved) recipe by this code, the only case in which a rerun can end with that same
    release; whether it does is checked at the end, by `check_same_release`. A rerun after a
    run that was killed once it had published thus succeeds instead of failing."""
    if not exists(target):
        return
    try:
        published = read_manifest(target)
    except CorpusmillError:  # unreadable: not the release of any recipe we know
        return check_absent(target)
    differ = differences(published, {"recipe": recipe, "code_version": code_version()}, ("recipe", "code_version"))
    if differ:
        built_from = {"recipe": "another recipe", "code_version": f"other code ({published.get('code_version')})"}
        raise ReleaseExists(f"release {target} already exists, built from {' and '.join(built_from[k] for k in differ)}, "
                            f"and releases are immutable; {BUMP}")


def check_same_release(target: Path | str, manifest: dict, verify: Callable[[Path | str], list[str]]) -> None:
    """`target` is already published: accept it as this run's release only if its manifest is
    the one this run built (same files, sha256s, inputs, accounting) and its files still match
    it (`verify`, which reads them all, so only once the manifests agree); otherwise refuse,
    naming what differs."""
    differ = differences(read_manifest(target), manifest)
    if differ:
        why = ("it was built from another recipe or by other code" if {"recipe", "code_version"} & set(differ) else
               "it was built from the same recipe by the same code, so its inputs or models have changed since")
        raise ReleaseExists(f"release {target} already exists and differs from the release this run built in "
                            f"{', '.join(differ)}: {why}. Releases are immutable; {BUMP}")
    problems = verify(target)
    if problems:
        raise ReleaseExists(
            f"release {target} is the one this run built, but its published files no longer match its manifest "
            f"({problems[0]}{f', and {len(problems) - 1} more' if len(problems) > 1 else ''}). Releases are "
            f"immutable, so it is not rewritten: restore it from a copy, or {BUMP}")


class NotWritable(CorpusmillError, PermissionError):
    pass


def check_writable(folder: Path | str, role: str) -> None:
    """Fail before any work when `folder` (created if missing) cannot take files: read-only,
    a file, or not creatable. `role` names it for the message (output.root, --work-dir)."""
    if is_remote(folder):
        return _check_writable_remote(str(folder), role)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".corpusmill-probe-"):
            pass
    except OSError as e:
        raise NotWritable(f"{role} {folder} cannot be written ({e.strerror or e}); point {role} at a writable "
                          f"folder, or fix its permissions, before the run starts any work.") from None


def _check_writable_remote(url: str, role: str) -> None:
    """Write and remove a probe object under `url`: a missing bucket or a refused write is
    named now, not after hours of work. Transient errors propagate, to be retried."""
    fs, path = _fs(url)
    probe = f"{path.rstrip('/')}/.corpusmill-probe-{os.urandom(8).hex()}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except (FileNotFoundError, PermissionError) as e:
        raise NotWritable(f"{role} {url} cannot be written ({e}): its bucket does not exist or these credentials "
                          f"may not write there. Create the bucket or grant write access (or point {role} "
                          f"elsewhere) before the run starts any work.") from None


OWNER = ".owner"  # inside a staging folder: "<host> <pid>" of the run writing it


def new_staging(parent: Path, version: str) -> Path:
    """A staging folder of this run's own, `<parent>/.<version>.staging-<random>`: two runs
    publishing one version never write into the same folder. Leftovers of runs that died on
    this host are removed first (and named in the log); those of live runs are left alone."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_staging(parent):
        logging.getLogger(__name__).warning("removing %s, left by a run that is no longer running", stale)
        discard(stale)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.staging-", dir=parent))
    (staging / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
    return staging


def stale_staging(parent: Path) -> list[Path]:
    """Staging folders under `parent` whose run, on this host, is no longer alive."""
    stale = []
    for folder in sorted(parent.glob(".*.staging-*")):
        try:
            host, pid = (folder / OWNER).read_text(encoding="utf-8").split()
        except (OSError, ValueError):  # killed before it wrote its owner: nothing else can be inside yet
            stale.append(folder)
            continue
        if host == socket.gethostname() and not _alive(int(pid)):
            stale.append(folder)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def file_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


@dataclass
class SplitStats:
    rows: int = 0
    tokens: int = 0
    synthetic: int = 0
    synthetic_tokens: int = 0
    by_source: dict = field(default_factory=lambda: defaultdict(
        lambda: {"rows": 0, "tokens": 0, "synthetic": 0, "synthetic_tokens": 0}))
    by_prompt: dict = field(default_factory=lambda: defaultdict(lambda: {"rows": 0, "tokens": 0}))
    by_language: Counter = field(default_factory=Counter)  # rows per `language` ("unknown" where not identified)
    # rows per token count (index = n_tokens): the histogram's data in memory bounded by the
    # longest row, not by the number of rows
    rows_by_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def count_lengths(self, tokens: np.ndarray) -> None:
        counts = np.bincount(tokens, minlength=len(self.rows_by_tokens))
        counts[: len(self.rows_by_tokens)] += self.rows_by_tokens
        self.rows_by_tokens = counts


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

    def write_rows(batch, split: str) -> None:
        rows = batch.filter(pc.equal(batch.column("split"), split)).select(schema.RELEASE.names).cast(schema.RELEASE)
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

    for shard in final_shards:
        for batch in iter_batches(shard):  # the sinks cut row groups by rows, so batches do not change the bytes
            for split in counts:
                write_rows(batch, split)
        if on_progress:
            on_progress(1)
    for split in list(sinks):
        close(split)
    for entry in entries:
        path = data_dir.parent / entry["path"]
        entry.update(sha256=file_sha256(path), bytes=path.stat().st_size, rows=pq.read_metadata(path).num_rows)
    entries.sort(key=lambda e: e["path"])
    return entries, stats


def _accumulate(stats: SplitStats, chunk) -> None:
    tokens = chunk.column("n_tokens").to_numpy()
    synthetic = chunk.column("synthetic").to_numpy(zero_copy_only=False)
    stats.rows += chunk.num_rows
    stats.tokens += int(tokens.sum())
    stats.synthetic += int(synthetic.sum())
    stats.count_lengths(tokens)
    stats.synthetic_tokens += int(tokens[synthetic].sum())
    languages = pc.value_counts(chunk.column("language").fill_null("unknown"))
    stats.by_language.update(dict(zip(languages.field("values").to_pylist(), languages.field("counts").to_pylist())))
    for source, prompt, n_tok, syn in zip(chunk.column("source").to_pylist(), chunk.column("prompt_id").to_pylist(),
                                          tokens, synthetic):
        entry = stats.by_source[source]
        entry["rows"] += 1
        entry["tokens"] += int(n_tok)
        entry["synthetic"] += int(syn)
        if syn:
            entry["synthetic_tokens"] += int(n_tok)
            by_prompt = stats.by_prompt[prompt or "unknown"]
            by_prompt["rows"] += 1
            by_prompt["tokens"] += int(n_tok)


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
    for stage in ("ingest", "filter", "augment", "dedup", "split"):
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


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")


def commit(staging: Path, target: Path) -> Path:
    """Rename the finished staging folder into place; never overwrite a release.

    The rename is the atomic step: when another run published the version meanwhile, the
    target is a non-empty folder and the rename fails, so exactly one run wins.
    """
    check_absent(target)
    (staging / OWNER).unlink(missing_ok=True)
    try:
        os.rename(staging, target)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ReleaseExists(
                f"release {target} was published by another run while this one was building it, and releases are "
                f"immutable; this run's release was not published. Bump `version:` (or --set version=X.Y.Z) and rerun: "
                f"finished shards come from cache."
            ) from None
        raise
    return target


def upload(staging: Path, target: str) -> str:
    """Publish the finished local `staging` folder to the remote `target` URL, atomically for
    readers: every file goes to a temporary prefix beside the version, is copied into place,
    and `manifest.json` is written last. Readers treat a version without a manifest as
    absent, so a crash at any point leaves no release (and the next publish replaces the
    leftovers). Never overwrites a version that has a manifest."""
    import uuid

    check_absent(target)
    (staging / OWNER).unlink(missing_ok=True)
    fs, path = _fs(target)
    parent, version = path.rstrip("/").rsplit("/", 1)
    tmp = f"{parent}/.{version}.staging-{uuid.uuid4().hex[:12]}"
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    files.remove(MANIFEST)
    with _claimed(fs, f"{parent}/.{version}.claim", target):
        check_absent(target)  # published by another run before this one claimed it
        _copy_into_place(fs, staging, files, tmp, path, target)
    return target


def _copy_into_place(fs, staging: Path, files: list[str], tmp: str, path: str, target: str) -> None:
    try:
        for rel in files:
            fs.put_file(str(staging / rel), f"{tmp}/{rel}")
        if fs.exists(path):  # leftovers of an interrupted publish of this version (it has no manifest)
            fs.rm(path, recursive=True)
        for rel in files:
            fs.copy(f"{tmp}/{rel}", f"{path}/{rel}")
        fs.put_file(str(staging / MANIFEST), f"{path}/{MANIFEST}")
    finally:
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)


class PublishInProgress(CorpusmillError):
    pass


CLAIM_LEASE_SECONDS = 6 * 3600  # a claim older than this is of a run that died: taken over


@contextlib.contextmanager
def _claimed(fs, claim: str, target: str):
    """Hold `claim`, created with the store's conditional write (S3's If-None-Match), while
    publishing `target`: of two runs publishing one version at once, one gets it and the
    other stops, before either copies a file into place."""
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + CLAIM_LEASE_SECONDS}
    if not _create(fs, claim, holder):
        other = _read_claim(fs, claim)
        if other.get("expires", 0) > time.time():
            until = datetime.datetime.fromtimestamp(other["expires"], datetime.timezone.utc).isoformat(timespec="seconds")
            raise PublishInProgress(
                f"another run (host {other.get('host')}, pid {other.get('pid')}) is publishing {target}; wait for it, "
                f"then bump the version if it published. If that run died, its claim {claim} lapses at {until} "
                f"(or delete the claim).")
        with contextlib.suppress(FileNotFoundError):
            fs.rm(claim)  # the lapsed claim of a run that died
        if not _create(fs, claim, holder):
            raise PublishInProgress(f"another run took over the lapsed claim {claim} on {target} first; wait for it.")
    try:
        yield
    finally:
        fs.rm(claim)


def _create(fs, path: str, content: dict) -> bool:
    """Write `path` only if it does not exist; False when it does."""
    try:
        with fs.open(path, "xb") as f:
            f.write(json.dumps(content).encode())
    except FileExistsError:
        return False
    return True


def _read_claim(fs, claim: str) -> dict:
    try:
        return json.loads(fs.cat_file(claim))
    except (FileNotFoundError, ValueError):  # released meanwhile, or cut short: treat as lapsed
        return {}


def list_versions(root: str | Path, name: str) -> list[str]:
    """The published versions of dataset `name` under `root`: folders with a manifest only."""
    base = release_path(root, name, "x")
    if is_remote(base):
        fs, path = _fs(str(base).rsplit("/", 1)[0])
        if not fs.exists(path):
            return []
        folders = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        return sorted(v for v in folders if not v.startswith(".") and fs.exists(f"{path}/{v}/{MANIFEST}"))
    parent = Path(base).parent
    return sorted(p.name for p in parent.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()) \
        if parent.is_dir() else []


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


class ManifestInvalid(CorpusmillError, ValueError):
    pass


# What every reader of a manifest relies on.
REQUIRED_KEYS = ("name", "version", "fingerprint", "files")


def read_manifest(release: str | Path) -> dict:
    """The manifest of a published release (a folder or a URL); a ReleaseNotFound naming it when
    there is none, a ManifestInvalid when it is not a whole corpusmill manifest."""
    remote = is_remote(release)
    where = f"{str(release).rstrip('/')}/{MANIFEST}" if remote else Path(release) / MANIFEST
    try:
        if remote:
            fs, path = _fs(str(where))
            raw = fs.cat_file(path)
        else:
            raw = where.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ReleaseNotFound(
            f"{release} has no {MANIFEST}, so it is not a published corpusmill release (or an unfinished one, "
            f"which readers treat as absent); pass the folder or URL <root>/<name>/<version> printed by `corpusmill run`."
        ) from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestInvalid(f"{where} is not valid JSON ({e}), so the release cannot be read or checked; restore "
                              f"it from where the release was published, or rebuild the release.") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise ManifestInvalid(f"{where} lacks {', '.join(missing)}, so it is not a whole corpusmill manifest; restore "
                              f"it from where the release was published, or rebuild the release.")
    return manifest


def compare_files(expected: list[dict], actual: list[dict]) -> list[dict]:
    """Every data file of either manifest with its status: same, different, missing or extra."""
    by_path = {f["path"]: f for f in actual}
    out = []
    for f in sorted(expected, key=lambda f: f["path"]):
        got = by_path.pop(f["path"], None)
        status = "missing" if got is None else ("same" if got["sha256"] == f["sha256"] else "different")
        out.append({"path": f["path"], "status": status, "expected": f["sha256"],
                    "actual": got["sha256"] if got else None})
    out += [{"path": p, "status": "extra", "expected": None, "actual": f["sha256"]} for p, f in sorted(by_path.items())]
    return out
