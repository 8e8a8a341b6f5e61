"""Ingest stage: read the recipe's sources into Parquet shards of (id, text, source, license).

Work is planned as units (one per file of a `files` source, one per `python-docs` or `hub`
source) so the flow can run and cache them independently. Every candidate document is
either kept or dropped with a recorded reason, so `rows_in == rows_out + sum(dropped)`:

- `empty`: nothing left after normalisation (blank jsonl lines, blank cells, empty files);
- `invalid_utf8`: a line, cell or text file that does not decode as UTF-8 (or holds a lone
  surrogate from a JSON escape, which cannot be stored);
- `malformed_json`: a jsonl line that is not valid JSON, or not a JSON object;
- `malformed_csv`: a CSV row with the wrong number of fields;
- `missing_text`: the text field absent, null or not a string (or a module with no docstring).

Ids hash the source name and a position that does not depend on where the data sits on
disk: a file's path relative to the fixed directory of its pattern plus the line, row or
document number; the row index for hub datasets; the topic or module name for python-docs.
Numbering: lines (`file:17`) count from 1 as editors do; `row N` and `doc N` count from 0
as pyarrow, pandas and datasets index rows.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib
import io
import itertools
import json
import os
import pkgutil
import re
import sys
import unicodedata
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import xxhash
import zstandard
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import infer_compression

from corpusmill.tasks import schema
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.stage import Stage
from corpusmill.tasks.recipe import FilesSource, HubSource, PythonDocsSource, source_name
from corpusmill.tasks.shards import ParquetSink, StageReport, dropped_table, write_table

NAME = "ingest"
SNIPPET_CHARS = 1000  # raw text kept per quarantined row
PROGRESS_EVERY = 1000  # documents between on_progress calls
BATCH_ROWS = 10_000  # rows buffered before a write (= the shard row-group size)
BATCH_BYTES = 64 << 20  # ... or this much text, whichever comes first: bounds memory on long documents
PARQUET_BATCH_ROWS = 1024  # rows read per Parquet batch

AnySource = PythonDocsSource | FilesSource | HubSource

# Errors from reading a file (I/O, decompression, Arrow parsing) that mean "this input is
# unreadable"; they become an IngestError naming the file.
_READ_ERRORS = (OSError, EOFError, ValueError, pa.ArrowException, zstandard.ZstdError, zlib.error)
_GLOB_MAGIC = re.compile(r"[*?\[]")
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}

# Modules skipped by python-docs: importing them opens windows or browsers, prints, touches
# the terminal or the install (lib2to3 may write grammar caches; distutils is swapped for
# setuptools' copy when setuptools is installed), so their docstring is not worth it.
_SKIP_MODULES = frozenset({
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo",
    "readline", "rlcompleter", "distutils", "lib2to3",
})

# Project Gutenberg boilerplate: current files use '*** START OF ... ***' / '*** END OF ... ***';
# 1990s editions end their header with '*END*THE SMALL PRINT!...' and their text with
# 'End of (the|this) Project Gutenberg Etext ...'.
_GUTENBERG_START = re.compile(r"\s*(\*\*\*\s*START OF\b|\*END\*?\s*THE SMALL PRINT)", re.IGNORECASE)
_GUTENBERG_END = re.compile(r"\s*(\*\*\*\s*END OF\b|End of (the |this )?Project Gutenberg)", re.IGNORECASE)

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|"
    "eighteen|nineteen|twenty|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last"
)
_HEADING = re.compile(
    rf"(?:CHAPTER|Chapter|BOOK|Book|PART|Part|VOLUME|Volume)\s+(?:\d+|[IVXLCDM]+|(?i:{_NUMBER_WORDS}))\b(?P<title>.*)"
)


class IngestError(CorpusmillError, ValueError):
    """An input that stops the run; the message names the source, the path and the fix."""


@dataclass(frozen=True)
class IngestUnit:
    """One task's worth of input: a file of a `files` source, or a whole source.

    `label` is location-independent and, for a file, part of every row id (the path
    relative to its pattern's fixed directory). `location` is the URL read, or None when
    the unit is a whole source (python-docs, or a files source with `limit`).
    """

    source_index: int
    unit_index: int
    label: str
    location: str | None


class _Doc(NamedTuple):
    """A candidate document: `text` to keep, or `reason` why not (then `text` is the raw snippet)."""

    key: str  # position part of the row id
    where: str  # where a person finds it, for quarantine details
    text: str | None
    reason: str | None = None
    detail: str | None = None


class _File(NamedTuple):
    label: str
    url: str


# --- public helpers ---------------------------------------------------------------------


def row_id(source: str, position: str) -> str:
    """The stable row id: 24 hex chars of xxh3-128 over source name and position."""
    return xxhash.xxh3_128_hexdigest(f"{source}\x00{position}".encode("utf-8"))[:24]


def normalize(text: str) -> str:
    """NFC, '\\n' line ends, no surrounding whitespace.

    Raises UnicodeEncodeError for a lone surrogate (JSON allows '\\ud800'), which Parquet
    cannot store.
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text.isascii():
        text.encode("utf-8")
    return text


def infer_format(path: str) -> str:
    """jsonl, parquet, csv or text, from the file name (compression suffixes ignored)."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    if infer_compression(name):
        name = name.rsplit(".", 1)[0]
    return _FORMATS.get(os.path.splitext(name)[1], "text")


# --- planning ---------------------------------------------------------------------------


def plan(sources: list[AnySource]) -> list[IngestUnit]:
    """The units of work, in source order; globs expanded (sorted); missing inputs raise."""
    units: list[IngestUnit] = []
    for s, source in enumerate(sources):
        if isinstance(source, FilesSource):
            files = _expand(source)
            if source.limit is not None:
                # one unit, so the limit counts documents in file order across all files
                units.append(IngestUnit(s, 0, f"{len(files)} file(s)", None))
            else:
                units.extend(IngestUnit(s, u, f.label, f.url) for u, f in enumerate(files))
        elif isinstance(source, HubSource):
            units.append(IngestUnit(s, 0, source_name(source), source.dataset))
        else:
            units.append(IngestUnit(s, 0, source_name(source), None))
    return units


_fingerprints: dict[tuple[str, IngestUnit], str] = {}


def unit_fingerprint(source: AnySource, unit: IngestUnit) -> str:
    """sha256 over the unit's input content: the cache key of its task and the manifest's record.

    Remembered per process: the flow asks for it for the manifest after the task's cache
    key did, and hashing every input file twice would double the cost on large inputs.
    """
    key = (source.model_dump_json(), unit)
    if key not in _fingerprints:
        _fingerprints[key] = _content_fingerprint(source, unit)
    return _fingerprints[key]


def _content_fingerprint(source: AnySource, unit: IngestUnit) -> str:
    if isinstance(source, FilesSource):
        if unit.location is not None:
            return _url_sha256(unit.location)
        files = _expand(source)
        return _sha256_json([[f.label, _url_sha256(f.url)] for f in files])
    if isinstance(source, HubSource):
        settings = [source.dataset, source.config, source.split, source.revision, source.data_files]
        patterns = [source.data_files] if isinstance(source.data_files, str) else list(source.data_files or [])
        if os.path.isdir(source.dataset):  # a local dataset folder: its files are the content
            patterns.append(os.path.join(source.dataset, "**"))
        # local files are hashed; remote ones are named by the settings (and revision) only
        local = [p for p in patterns if isinstance(url_to_fs(p)[0], LocalFileSystem)]
        files = _match(local, source_name(source)) if local else []
        return _sha256_json([settings, [[f.label, _url_sha256(f.url)] for f in files]])
    return _sha256_json([sys.version, _python_docs()])


def _expand(source: FilesSource) -> list[_File]:
    """The files of a `files` source, checked against its split_by."""
    name = source_name(source)
    files = _match(source.paths, name)
    for f in files:
        fmt = source.format or infer_format(f.url)
        if source.split_by != "file" and fmt != "text":
            raise IngestError(
                f"ingest source {name!r}: split_by: {source.split_by} applies to text files, but {f.label} is read as "
                f"{fmt}. Narrow `path:` to text files or set split_by: file."
            )
    return files


def _match(patterns: list[str], name: str) -> list[_File]:
    """Files in order: each pattern's matches sorted, duplicates dropped; labelled by their
    path relative to the fixed directory the patterns share."""
    urls: list[str] = []
    prefixes: list[str] = []
    for pattern in patterns:
        fs, path = url_to_fs(pattern)
        if _GLOB_MAGIC.search(path):
            hits = sorted(p for p, info in fs.glob(path, detail=True).items() if info["type"] == "file")
            if not hits:
                raise IngestError(
                    f"ingest source {name!r}: the pattern {pattern!r} ({path}) matches no file. Check the directory "
                    f"and the pattern (relative paths are read from the current directory, {os.getcwd()})."
                )
            prefix = "/".join(_fixed_parts(path))
        else:
            if not fs.exists(path):
                raise IngestError(
                    f"ingest source {name!r}: the file {pattern!r} ({path}) does not exist. Fix `path:` in the recipe "
                    f"(relative paths are read from the current directory, {os.getcwd()})."
                )
            if fs.isdir(path):
                raise IngestError(
                    f"ingest source {name!r}: {pattern!r} is a directory. Give a glob such as "
                    f"'{pattern.rstrip('/')}/*.jsonl' to say which files to read."
                )
            hits = [path]
            prefix = path.rstrip("/").rsplit("/", 1)[0]
        prefixes.append(fs.unstrip_protocol(prefix))
        urls.extend(fs.unstrip_protocol(h) for h in hits)
    root = "/".join(os.path.commonprefix([p.split("/") for p in prefixes]))  # component-wise on lists
    return [_File(url[len(root) + 1 :] if root else url, url) for url in dict.fromkeys(urls)]


def _fixed_parts(path: str) -> list[str]:
    """The directory components of a glob before its first wildcard."""
    return list(itertools.takewhile(lambda part: not _GLOB_MAGIC.search(part), path.split("/")[:-1]))


def _url_sha256(url: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(url, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    shards = _ShardWriter(Path(out_dir), stem, shard_rows, name, source.license)
    quarantine = _Quarantine(Path(quarantine_path))
    unreported = 0
    try:
        with contextlib.closing(_documents(source, unit)) as docs:
            for doc in docs:
                report.rows_in += 1
                unreported += 1
                rid = row_id(name, doc.key)
                reason, detail, text = doc.reason, doc.detail, None
                if reason is None:
                    try:
                        text = normalize(doc.text)
                    except UnicodeEncodeError as e:
                        reason, detail = "invalid_utf8", f"lone surrogate at character {e.start}"
                    else:
                        if not text:
                            reason, detail = "empty", "no text after normalisation"
                if reason is None:
                    shards.add(rid, text)
                    report.rows_out += 1
                else:
                    report.drop(reason)
                    quarantine.add(
                        {"id": rid, "source": name, "stage": NAME, "reason": reason,
                         "detail": f"{doc.where}: {detail}", "text": _snippet(doc.text)}
                    )
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


def _snippet(text: str | bytes | None) -> str | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text[: SNIPPET_CHARS * 4].decode("utf-8", "backslashreplace")
    # backslashreplace turns lone surrogates into '\ud800' so the snippet can be stored
    return text[:SNIPPET_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")


class _ShardWriter:
    """Streams kept rows into numbered shards of at most `shard_rows` rows."""

    def __init__(self, out_dir: Path, stem: str, shard_rows: int, source: str, license: str):
        # parts of an earlier run of this unit (say, with a larger shard_rows) must not linger
        for stale in out_dir.glob(f"{stem}-p*.parquet"):
            stale.unlink()
        self.out_dir, self.stem, self.shard_rows = out_dir, stem, shard_rows
        self.source, self.license = source, license
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.bytes = 0
        self.sink: ParquetSink | None = None
        self.paths: list[Path] = []

    def _path(self) -> Path:
        return self.out_dir / f"{self.stem}-p{len(self.paths):05d}.parquet"

    def add(self, rid: str, text: str) -> None:
        self.ids.append(rid)
        self.texts.append(text)
        self.bytes += len(text)
        in_shard = (self.sink.rows if self.sink else 0) + len(self.ids)
        if len(self.ids) >= BATCH_ROWS or self.bytes >= BATCH_BYTES or in_shard >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.ids:
            return
        n = len(self.ids)
        table = pa.Table.from_arrays(
            [pa.array(self.ids, pa.string()), pa.array(self.texts, pa.string()),
             pa.array([self.source] * n, pa.string()), pa.array([self.license] * n, pa.string())],
            schema=schema.INGEST,
        )
        self.ids, self.texts, self.bytes = [], [], 0
        if self.sink is None:
            self.sink = ParquetSink(self._path(), schema.INGEST)
        self.sink.write(table)
        if self.sink.rows >= self.shard_rows:
            self.paths.append(self.sink.close())
            self.sink = None

    def close(self) -> list[Path]:
        self._flush()
        if self.sink is not None:
            self.paths.append(self.sink.close())
            self.sink = None
        if not self.paths:  # downstream stages expect a file per unit, even an empty one
            self.paths.append(write_table(schema.INGEST.empty_table(), self._path()))
        return self.paths

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


class _Quarantine:
    """Streams dropped rows into one DROPPED file, created on the first drop."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        self.sink: ParquetSink | None = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            if self.sink is None:
                self.sink = ParquetSink(self.path, schema.DROPPED)
            self.sink.write(dropped_table(self.rows))
            self.rows = []

    def close(self) -> None:
        self._flush()
        if self.sink is not None:
            self.sink.close()
        else:  # an earlier run's quarantine no longer describes this unit
            self.path.unlink(missing_ok=True)

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


def _documents(source: AnySource, unit: IngestUnit) -> Iterator[_Doc]:
    if isinstance(source, PythonDocsSource):
        return _python_docs_documents()
    if isinstance(source, HubSource):
        return _hub_documents(source)
    files = [_File(unit.label, unit.location)] if unit.location is not None else _expand(source)
    return _chain(_file_documents(source, f) for f in files)


def _chain(generators: Iterable[Iterator[_Doc]]) -> Iterator[_Doc]:
    # a generator (not itertools.chain) so closing it closes the open file's generator too
    for gen in generators:
        with contextlib.closing(gen):
            yield from gen


# --- files --------------------------------------------------------------------------------


def _file_documents(source: FilesSource, file: _File) -> Iterator[_Doc]:
    fmt = source.format or infer_format(file.url)
    try:
        if fmt == "jsonl":
            yield from _read_jsonl(file, source.text_column)
        elif fmt == "csv":
            yield from _read_csv(file, source.text_column, source_name(source))
        elif fmt == "parquet":
            yield from _read_parquet(file, source.text_column, source_name(source))
        else:
            yield from _read_text(file, source.split_by)
    except IngestError:
        raise
    except FileNotFoundError as e:
        raise IngestError(
            f"ingest source {source_name(source)!r}: {file.url} does not exist ({e}). It may have been moved or "
            f"deleted after planning; restore it or run again."
        ) from e
    except _READ_ERRORS as e:
        raise IngestError(
            f"ingest source {source_name(source)!r}: {file.url} could not be read as {fmt}: {e}. Check that the file "
            f"is {fmt} and not damaged, or set `format:` on the source to the format it really has."
        ) from e


def _open(url: str):
    return fsspec.open(url, "rb", compression="infer")


@contextlib.contextmanager
def _open_lines(url: str) -> Iterator[Iterable[bytes]]:
    with _open(url) as f:
        # zstandard's reader cannot iterate over lines; a buffer in front of it can
        yield io.BufferedReader(f) if infer_compression(url) == "zstd" else f


def _decode_line(raw: bytes, lineno: int) -> str:
    # a UTF-8 byte-order mark is allowed at the start of a file only
    return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")


def _cell(key: str, where: str, value, column: str) -> _Doc:
    """A text value from a table (bytes, str or None) as a candidate document."""
    if value is None:
        return _Doc(key, where, None, "missing_text", f"{column!r} is null")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return _Doc(key, where, value, "invalid_utf8", f"invalid UTF-8 at byte {e.start}: {e.reason}")
    if not isinstance(value, str):
        return _Doc(key, where, None, "missing_text", f"{column!r} is {type(value).__name__}, not a string")
    return _Doc(key, where, value)


def _read_jsonl(file: _File, column: str) -> Iterator[_Doc]:
    with _open_lines(file.url) as f:
        for lineno, raw in enumerate(f, 1):
            key = where = f"{file.label}:{lineno}"
            try:
                line = _decode_line(raw, lineno).rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield _Doc(key, where, raw, "invalid_utf8", f"invalid UTF-8 at byte {e.start}: {e.reason}")
                continue
            if not line.strip():
                yield _Doc(key, where, line, "empty", "blank line")
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                yield _Doc(key, where, line, "malformed_json", str(e))
                continue
            if not isinstance(record, dict):
                yield _Doc(key, where, line, "malformed_json", f"expected a JSON object, got {type(record).__name__}")
            elif column not in record:
                yield _Doc(key, where, line, "missing_text", f"no {column!r} field")
            else:
                doc = _cell(key, where, record[column], column)
                yield doc if doc.reason is None else doc._replace(text=line)


def _missing_column(name: str, file: _File, column: str, columns: list[str]) -> IngestError:
    return IngestError(
        f"ingest source {name!r}: {file.url} has no column {column!r} (columns: {', '.join(columns) or 'none'}). "
        f"Set `text_column:` on the source to the column that holds the text."
    )


def _read_csv(file: _File, column: str, name: str) -> Iterator[_Doc]:
    bad: dict[int, tuple[str, str]] = {}  # data row index -> (raw row, problem)

    def on_invalid(row) -> str:
        # row.number counts the header as row 1 (known because the reader is single-threaded)
        bad[row.number - 2] = (row.text, f"expected {row.expected_columns} fields, got {row.actual_columns}")
        return "skip"

    def malformed(index: int) -> _Doc:
        text, problem = bad.pop(index)
        return _Doc(f"{file.label}:row {index}", f"{file.label}:row {index}", text, "malformed_csv", problem)

    with _open(file.url) as f:
        try:
            reader = pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
                # binary, so one badly encoded cell is dropped instead of failing the whole block
                convert_options=pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.binary()}),
            )
        except pa.ArrowKeyError:
            f.seek(0)
            skip_bad = pacsv.ParseOptions(invalid_row_handler=lambda _: "skip")
            raise _missing_column(name, file, column, pacsv.open_csv(f, parse_options=skip_bad).schema.names) from None
        index = -1
        for batch in reader:
            for value in batch.column(0).to_pylist():
                index += 1
                while index in bad:  # skipped rows take their place in the numbering
                    yield malformed(index)
                    index += 1
                key = f"{file.label}:row {index}"
                yield _cell(key, key, value, column)
        for rest in sorted(bad):
            yield malformed(rest)


def _read_parquet(file: _File, column: str, name: str) -> Iterator[_Doc]:
    with _open(file.url) as f:
        parquet = pq.ParquetFile(f)
        arrow_schema = parquet.schema_arrow
        if column not in arrow_schema.names:
            raise _missing_column(name, file, column, arrow_schema.names)
        kind = arrow_schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
                or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise IngestError(
                f"ingest source {name!r}: column {column!r} of {file.url} holds {kind}, not text. Set `text_column:` "
                f"to a string column."
            )
        index = -1
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[column]):
            for value in batch.column(0).to_pylist():
                index += 1
                key = f"{file.label}:row {index}"
                yield _cell(key, key, value, column)


def _read_text(file: _File, split_by: str) -> Iterator[_Doc]:
    # pass 1: check the encoding before anything is kept, and find Gutenberg markers
    start = 0  # content lies strictly between lines `start` and `end`
    end = first_end = None
    with _open_lines(file.url) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = _decode_line(raw, lineno)
            except UnicodeDecodeError as e:
                where = f"{file.label}:{lineno}"
                yield _Doc(file.label, where, raw, "invalid_utf8",
                           f"the file is not UTF-8 (byte {e.start} of this line: {e.reason}); re-encode it as UTF-8")
                return
            if not start and first_end is None and _GUTENBERG_START.match(line):
                start = lineno
            elif _GUTENBERG_END.match(line):
                if start and end is None:
                    end = lineno
                if first_end is None:
                    first_end = lineno
    if not start:  # an end marker without a start marker still cuts the licence off
        end = first_end

    # pass 2: stream the content lines into documents
    def lines() -> Iterator[tuple[int, str]]:
        with _open_lines(file.url) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno <= start:
                    continue
                if end is not None and lineno >= end:
                    return
                line = _decode_line(raw, lineno).removesuffix("\n").removesuffix("\r")
                for piece in line.split("\r"):  # old Mac line ends
                    yield lineno, piece

    splitter = {"file": _split_file, "paragraph": _split_paragraphs, "chapter": _split_chapters}[split_by]
    count = 0
    for count, (lineno, text) in enumerate(splitter(lines()), 1):
        yield _Doc(f"{file.label}:doc {count - 1}", f"{file.label}:{lineno}", text)
    if not count:  # a blank file is still a (dropped) document, never silently nothing
        yield _Doc(f"{file.label}:doc 0", f"{file.label}:{start + 1}", "")


def _split_file(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    numbered = list(lines)
    first = next((n for n, line in numbered if line.strip()), numbered[0][0] if numbered else 1)
    yield first, "\n".join(line for _, line in numbered)


def _split_paragraphs(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    block: list[str] = []
    first = 0
    for lineno, line in lines:
        if line.strip():
            if not block:
                first = lineno
            block.append(line)
        elif block:
            yield first, "\n".join(block)
            block = []
    if block:
        yield first, "\n".join(block)


def is_heading(line: str, after: Sequence[str] = ()) -> bool:
    """A chapter heading: 'CHAPTER XII. THE LAST', 'Chapter 1', 'BOOK ONE', 'PART II' on a line of its own.

    `after` holds the (up to) two lines that follow. A heading with a title must end its
    paragraph within two lines (titles wrap), so a paragraph that merely begins
    'BOOK I. (Folio), CHAPTER I. (Sperm Whale).--This whale, among the' is not one.
    """
    title = _heading_title(line)
    if title is None:
        return False
    return not title or len(after) < 2 or not (after[0].strip() and after[1].strip())


def _heading_title(line: str) -> str | None:
    """The title of a heading-shaped line ('' for a bare 'CHAPTER I.'), or None."""
    match = _HEADING.fullmatch(line.strip())
    return match.group("title").strip(" .:-\u2013\u2014") if match else None


def _split_chapters(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Split before each heading; text before the first heading is its own document.

    A section holding nothing but its heading (a table of contents) stays with what
    follows instead of becoming a one-line document.
    """
    section: list[str] = []
    first = None
    has_body = False
    in_title = False  # a heading's title may wrap onto the next line, which is not body text
    window = collections.deque(itertools.islice(lines, 3))  # the line and the two after it
    while window:
        lineno, line = window.popleft()
        heading = is_heading(line, [text for _, text in window])
        window.extend(itertools.islice(lines, 1))
        if heading and has_body:
            yield first, "\n".join(section)
            section, first, has_body = [], None, False
        section.append(line)
        in_title = bool(heading and _heading_title(line)) or (in_title and bool(line.strip()))
        if line.strip():
            first = lineno if first is None else first
            has_body = has_body or not (heading or in_title)
    if first is not None:
        yield first, "\n".join(section)


# --- python-docs ----------------------------------------------------------------------------


def _python_docs_documents() -> Iterator[_Doc]:
    for key, text in _python_docs():
        if text is None:
            yield _Doc(key, key, None, "missing_text", "no docstring")
        else:
            yield _Doc(key, key, text)


@lru_cache(maxsize=1)
def _python_docs() -> tuple[tuple[str, str | None], ...]:
    """('topic:NAME', text) for every pydoc topic, then ('module:NAME', docstring) for every
    public stdlib module and submodule that imports cleanly, each sorted by name."""
    from pydoc_data.topics import topics

    docs = [(f"topic:{name}", topics[name]) for name in sorted(topics)]
    modules: dict[str, str | None] = {}
    pending = sorted((name for name in sys.stdlib_module_names if _public_module(name)), reverse=True)
    while pending:
        name = pending.pop()
        module = _import_quietly(name)
        if module is None:
            continue
        modules[name] = module.__doc__ if isinstance(module.__doc__, str) else None
        if hasattr(module, "__path__"):  # a package: its public submodules are stdlib modules too
            pending += [m.name for m in pkgutil.iter_modules(module.__path__, f"{name}.") if _public_module(m.name)]
    docs += [(f"module:{name}", modules[name]) for name in sorted(modules)]
    return tuple(docs)


def _public_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] in _SKIP_MODULES or parts[0].startswith("turtle"):
        return False
    # private modules, __main__ (runs the package's CLI on import) and test suites
    return not any(p.startswith("_") or p in ("test", "tests", "idle_test") for p in parts)


def _import_quietly(name: str):
    """The module, or None when it cannot be imported here (platform modules, missing libs)."""
    try:
        with warnings.catch_warnings(action="ignore"):  # deprecated modules warn on import
            return importlib.import_module(name)
    except (Exception, SystemExit):
        return None


# --- hub -------------------------------------------------------------------------------------


def _hub_documents(source: HubSource) -> Iterator[_Doc]:
    import datasets  # slow to import; only hub sources need it

    name = source_name(source)
    described = (
        f"{source.dataset!r} (config {source.config!r}, split {source.split!r}, revision {source.revision!r}"
        + (f", data_files {source.data_files!r})" if source.data_files else ")")
    )
    try:
        dataset = datasets.load_dataset(
            source.dataset, source.config, split=source.split, revision=source.revision,
            data_files=source.data_files, streaming=source.streaming,
        )
    except Exception as e:
        raise IngestError(
            f"ingest source {name!r}: could not load the dataset {described}: {type(e).__name__}: {e}. Check the "
            f"dataset id, config and split, that this machine can reach the Hugging Face Hub (HF_HUB_OFFLINE unset), "
            f"or point at local files with dataset: json|parquet|csv and data_files."
        ) from e
    features = getattr(dataset, "features", None)
    if features is not None and source.text_column not in features:
        raise IngestError(
            f"ingest source {name!r}: the dataset {described} has no column {source.text_column!r} "
            f"(columns: {', '.join(features)}). Set `text_column:` on the source to the column that holds the text."
        )
    rows = iter(dataset)
    index = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # streaming reads lazily: a lost connection surfaces here
            raise IngestError(
                f"ingest source {name!r}: reading the dataset {described} failed at row {index}: "
                f"{type(e).__name__}: {e}. Check the connection to the Hub or the local data files, then run again."
            ) from e
        key = f"row {index}"
        where = f"{source.dataset}:row {index}"
        if source.text_column not in row:
            yield _Doc(key, where, None, "missing_text", f"no {source.text_column!r} field")
        else:
            yield _cell(key, where, row[source.text_column], source.text_column)
        index += 1


STAGE = Stage(NAME, "1", run, label="{unit.label}",
              identity=lambda source, unit, **_: {"input": unit_fingerprint(source, unit)})
