"""The ingest stage: plan the recipe's sources into units, fingerprint their inputs, and
run one unit into INGEST shards and a quarantine file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from corpusmill.tasks.ingest import hub, python_docs
from corpusmill.tasks.ingest.documents import Doc, normalize, row_id
from corpusmill.tasks.ingest.files import SourceFile, expand, match, url_sha256
from corpusmill.tasks.ingest.readers import read_file
from corpusmill.tasks.ingest.writer import Quarantine, ShardWriter, snippet
from corpusmill.tasks.recipe import FilesSource, HubSource, PythonDocsSource, source_name
from corpusmill.tasks.shards import StageReport
from corpusmill.tasks.stage import Stage

NAME = "ingest"
PROGRESS_EVERY = 1000  # documents between on_progress calls

AnySource = PythonDocsSource | FilesSource | HubSource


# Consecutive small files of a source are read by one task, up to this much input or this
# many files: 2,000 tiny files were 2,000 tasks, minutes of scheduling and 17k log lines.
UNIT_BYTES = 64 << 20
UNIT_FILES = 256


@dataclass(frozen=True)
class IngestUnit:
    """One task's worth of input: consecutive files of a `files` source, or a whole source.

    `label` names the unit for people (task names, the manifest's inputs); for one file it
    is the path relative to its pattern's fixed directory, which is also part of every row
    id. `files` are the files read, in order; none when the unit is a whole source
    (python-docs, a hub dataset whose id is `location`, or a files source with `limit`).
    """

    source_index: int
    unit_index: int
    label: str
    location: str | None
    files: tuple[SourceFile, ...] = ()


# --- planning ---------------------------------------------------------------------------


def plan(sources: list[AnySource]) -> list[IngestUnit]:
    """The units of work, in source order; globs expanded (sorted); missing inputs raise."""
    units: list[IngestUnit] = []
    for s, source in enumerate(sources):
        if isinstance(source, FilesSource):
            files = expand(source)
            if source.limit is not None:
                # one unit, so the limit counts documents in file order across all files
                units.append(IngestUnit(s, 0, f"{len(files)} file(s)", None))
            else:
                units.extend(IngestUnit(s, u, _group_label(group), None, tuple(group))
                             for u, group in enumerate(_groups(files)))
        elif isinstance(source, HubSource):
            units.append(IngestUnit(s, 0, source_name(source), source.dataset))
        else:
            units.append(IngestUnit(s, 0, source_name(source), None))
    return units


def _groups(files: list[SourceFile]) -> Iterator[list[SourceFile]]:
    """Consecutive files, a group closing once it holds UNIT_BYTES or UNIT_FILES."""
    group: list[SourceFile] = []
    for f in files:
        group.append(f)
        if sum(g.size for g in group) >= UNIT_BYTES or len(group) >= UNIT_FILES:
            yield group
            group = []
    if group:
        yield group


def _group_label(group: list[SourceFile]) -> str:
    return group[0].label if len(group) == 1 else f"{group[0].label} .. {group[-1].label} ({len(group)} files)"


def unit_fingerprint(source: AnySource, unit: IngestUnit) -> str:
    """sha256 over the unit's input content: the cache key of its task and the manifest's record."""
    if isinstance(source, FilesSource):
        name = source_name(source)
        files = unit.files or expand(source)
        if len(unit.files) == 1:
            return url_sha256(unit.files[0].url, name)
        return _sha256_json([[f.label, url_sha256(f.url, name)] for f in files])
    if isinstance(source, HubSource):
        return _hub_fingerprint(source)
    return _sha256_json([sys.version, python_docs.topics_and_modules()])


def _hub_fingerprint(source: HubSource) -> str:
    settings = [source.dataset, source.config, source.split, source.revision, source.data_files]
    patterns = [source.data_files] if isinstance(source.data_files, str) else list(source.data_files or [])
    if os.path.isdir(source.dataset):  # a local dataset folder: its files are the content
        patterns.append(os.path.join(source.dataset, "**"))
    # local files are hashed; remote ones are named by the settings (and revision) only
    local = [p for p in patterns if isinstance(url_to_fs(p)[0], LocalFileSystem)]
    name = source_name(source)
    files = match(local, name) if local else []
    return _sha256_json([settings, [[f.label, url_sha256(f.url, name)] for f in files]])


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode("utf-8")).hexdigest()


# --- running ----------------------------------------------------------------------------


def run(
    source: AnySource,
    unit: IngestUnit,
    out_dir: Path,
    quarantine_path: Path,
    shard_rows: int,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    """Read one unit into INGEST shards (at most `shard_rows` rows each, at least one file).

    Dropped rows go to `quarantine_path` (DROPPED schema; removed when nothing was dropped).
    Returns the StageReport as a dict plus `shards`: the written paths, in row order.
    """
    name = source_name(source)
    report = StageReport(NAME)
    stem = f"s{unit.source_index:03d}-u{unit.unit_index:05d}"
    shards = ShardWriter(Path(out_dir), stem, shard_rows, name, source.license)
    quarantine = Quarantine(Path(quarantine_path))
    unreported = 0
    try:
        with contextlib.closing(_documents(source, unit)) as docs:
            for doc in docs:
                report.rows_in += 1
                unreported += 1
                rid = row_id(name, doc.key)
                text, reason, detail = _verdict(doc, source.max_document_bytes)
                if reason is None:
                    shards.add(rid, text)
                    report.rows_out += 1
                else:
                    report.drop(reason)
                    quarantine.add({"id": rid, "source": name, "stage": NAME, "reason": reason,
                                    "detail": f"{doc.where}: {detail}", "text": snippet(doc.text)})
                if on_progress and unreported >= PROGRESS_EVERY:
                    on_progress(unreported)
                    unreported = 0
                if source.limit is not None and report.rows_out >= source.limit:
                    break
        paths = shards.close()
        quarantine.close()
    except BaseException:
        shards.abort()
        quarantine.abort()
        raise
    if on_progress and unreported:
        on_progress(unreported)
    return {**report.to_dict(), "shards": [str(p) for p in paths]}


def _verdict(doc: Doc, max_bytes: int) -> tuple[str | None, str | None, str | None]:
    """(normalised text, None, None) for a document to keep, or (None, reason, detail)."""
    if doc.reason is not None:
        return None, doc.reason, doc.detail
    # Before normalising: one huge document would otherwise take many times its size in
    # every later stage (tokenizing 50 MB of one line took 9.6 GB).
    if (size := _utf8_size_if_over(doc.text, max_bytes)) is not None:
        return None, "too_large", (f"{size:,} bytes, over the source's max_document_bytes ({max_bytes:,}); "
                                   f"split it (split_by:) or raise the limit")
    try:
        text = normalize(doc.text)
    except UnicodeEncodeError as e:
        return None, "invalid_utf8", f"lone surrogate at character {e.start}"
    if not text:
        return None, "empty", "no text after normalisation"
    return text, None, None


def _utf8_size_if_over(text: str, limit: int) -> int | None:
    """The UTF-8 size of `text` when it is over `limit`, else None; encodes only texts that
    could be (a character takes 1 to 4 bytes)."""
    if len(text) * 4 <= limit:
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def _documents(source: AnySource, unit: IngestUnit) -> Iterator[Doc]:
    if isinstance(source, PythonDocsSource):
        return python_docs.documents()
    if isinstance(source, HubSource):
        return hub.documents(source)
    files = unit.files or expand(source)
    return _chain(read_file(source, f) for f in files)


def _chain(generators: Iterable[Iterator[Doc]]) -> Iterator[Doc]:
    # a generator (not itertools.chain) so closing it closes the open file's generator too
    for gen in generators:
        with contextlib.closing(gen):
            yield from gen


STAGE = Stage(NAME, "2", run, label="{unit.label}",
              identity=lambda source, unit, **_: {"input": unit_fingerprint(source, unit)})
