"""The files of a `files` source: which files its patterns mean, how each is read, and
opening them (local paths or fsspec URLs, compressed as their names say).

A failing store is told apart from a damaged file here. A file gone or forbidden is an
IngestError naming it; any other error of the store (a dropped connection, a 500 from an
object store) propagates as raised, so the flow retries the unit.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
from typing import BinaryIO, Callable, ContextManager, Iterator, NamedTuple

from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

from corpusmill.tasks.ingest.compression import CODECS, READ_SIZE, decompressed
from corpusmill.tasks.errors import MISSING_OR_FORBIDDEN
from corpusmill.tasks.shards import stream_sha256
from corpusmill.tasks.ingest.errors import IngestError, inaccessible
from corpusmill.tasks.recipe import FilesSource, source_name

_GLOB_MAGIC = re.compile(r"[*?\[]")
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class SourceFile(NamedTuple):
    label: str  # the path relative to the fixed directory of its pattern: part of every row id
    url: str
    size: int = 0  # bytes, as listed: how plan() groups small files into one unit


def infer_format(path: str) -> str:
    """jsonl, parquet, csv or text, from the file name (compression suffixes ignored)."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    if infer_compression(name):
        name = name.rsplit(".", 1)[0]
    return _FORMATS.get(os.path.splitext(name)[1], "text")


def file_format(source: FilesSource, url: str) -> str:
    return source.format or infer_format(url)


def expand(source: FilesSource) -> list[SourceFile]:
    """The files of a `files` source, checked against its split_by and format."""
    name = source_name(source)
    files = match(source.paths, name)
    for f in files:
        fmt = file_format(source, f.url)
        if source.split_by != "file" and fmt != "text":
            raise IngestError(
                f"ingest source {name!r}: split_by: {source.split_by} applies to text files, but {f.label} is read as "
                f"{fmt}. Narrow `path:` to text files or set split_by: file."
            )
        codec = infer_compression(f.url)
        if codec is not None and codec not in CODECS:
            raise IngestError(
                f"ingest source {name!r}: {f.label} is compressed as {codec}, which ingest does not read. Extract "
                f"it, or compress it with one of: {', '.join(CODECS)}."
            )
        if codec is not None and fmt == "parquet":
            raise IngestError(
                f"ingest source {name!r}: {f.label} is a {codec}-compressed Parquet file, which cannot be read "
                f"(Parquet needs random access; it compresses its own pages). Decompress it."
            )
    return files


def match(patterns: list[str], name: str) -> list[SourceFile]:
    """Files in order: each pattern's matches sorted, duplicates dropped; labelled by their
    path relative to the fixed directory the patterns share."""
    sizes: dict[str, int] = {}  # url -> size, in order
    prefixes: list[str] = []
    for pattern in patterns:
        fs, path = url_to_fs(pattern)
        with store_access(name, pattern):
            hits, prefix = _lookup(fs, path, pattern, name)
        prefixes.append(fs.unstrip_protocol(prefix))
        for hit, size in hits:
            sizes.setdefault(fs.unstrip_protocol(hit), size)
    root = "/".join(os.path.commonprefix([p.split("/") for p in prefixes]))  # component-wise on lists
    return [SourceFile(url[len(root) + 1 :] if root else url, url, size) for url, size in sizes.items()]


def _lookup(fs, path: str, pattern: str, name: str) -> tuple[list[tuple[str, int]], str]:
    """The files a pattern matches with their sizes, sorted, and the fixed directory their
    labels are relative to."""
    if _GLOB_MAGIC.search(path):
        hits = sorted((p, info.get("size") or 0) for p, info in fs.glob(path, detail=True).items()
                      if info["type"] == "file")
        if not hits:
            raise IngestError(
                f"ingest source {name!r}: the pattern {pattern!r} ({path}) matches no file. Check the directory "
                f"and the pattern (relative paths are read from the current directory, {os.getcwd()})."
            )
        return hits, "/".join(_fixed_parts(path))
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
    return [(path, fs.size(path) or 0)], path.rstrip("/").rsplit("/", 1)[0]


def _fixed_parts(path: str) -> list[str]:
    """The directory components of a glob before its first wildcard."""
    return list(itertools.takewhile(lambda part: not _GLOB_MAGIC.search(part), path.split("/")[:-1]))


_hashes: dict[tuple[str, str], str] = {}


def url_sha256(url: str, source: str) -> str:
    """sha256 of the file's bytes as stored (compressed files are not decompressed).

    Remembered per process while the store describes the file the same way (size,
    modification time, inode or ETag): the flow asks once for a task's cache key and once
    for the manifest, and hashing large inputs twice doubles the cost; a changed file
    must never keep its old hash in a long-lived process (`corpusmill serve`).
    """
    fs, path = url_to_fs(url)
    with store_access(source, url):
        key = (url, json.dumps(fs.info(path), sort_keys=True, default=str))
        if key not in _hashes:
            with fs.open(path, "rb") as f:
                _hashes[key] = stream_sha256(f)
    return _hashes[key]


@contextlib.contextmanager
def store_access(source: str, url: str) -> Iterator[None]:
    """A file gone or forbidden becomes an IngestError naming it; other errors pass as raised."""
    try:
        yield
    except MISSING_OR_FORBIDDEN as e:
        raise inaccessible(source, url, e) from e


class FileReads:
    """Opens one input file, as often as its reader needs, and remembers what the store raised.

    Arrow and the decompressors report damaged data with OSError too (pyarrow's 'Corrupt
    snappy compressed data', gzip's BadGzipFile, bz2's 'Invalid data stream'), so an
    error's type cannot tell a damaged file from a connection that dropped mid-read;
    where it came from can (`from_store`).
    """

    def __init__(self, file: SourceFile):
        self.label, self.url = file.label, file.url
        self._store_error: BaseException | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The file's content, decompressed as its name says, buffered (lines, peek)."""
        with self._store():
            fs, path = url_to_fs(self.url)
            raw = fs.open(path, "rb")
        with raw, io.BufferedReader(_StoreReads(raw, self._store), buffer_size=READ_SIZE) as stored:
            codec = infer_compression(self.url)
            if codec is None:
                yield stored
            else:
                with decompressed(stored, codec) as content:
                    yield content

    def from_store(self, error: BaseException) -> bool:
        """Whether the store raised `error` (rather than a decoder or parser of its bytes)."""
        return error is self._store_error

    @contextlib.contextmanager
    def _store(self) -> Iterator[None]:
        try:
            yield
        except Exception as e:
            self._store_error = e
            raise


class _StoreReads(io.RawIOBase):
    """A stored file's bytes, each call to the store made under `guard`."""

    def __init__(self, raw: BinaryIO, guard: Callable[[], ContextManager[None]]):
        self._raw, self._guard = raw, guard

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def readinto(self, buffer) -> int:
        with self._guard():
            return self._raw.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._guard():
            return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()
