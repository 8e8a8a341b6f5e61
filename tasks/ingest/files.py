"""The files of a `files` source: which files its patterns mean, how each is read, and
opening them (local paths or fsspec URLs, compressed as their names say)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
from typing import Iterable, Iterator, NamedTuple

import fsspec
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

from corpusmill.tasks.ingest.errors import IngestError
from corpusmill.tasks.recipe import FilesSource, source_name

_GLOB_MAGIC = re.compile(r"[*?\[]")
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class SourceFile(NamedTuple):
    label: str  # the path relative to the fixed directory of its pattern: part of every row id
    url: str


def infer_format(path: str) -> str:
    """jsonl, parquet, csv or text, from the file name (compression suffixes ignored)."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    if infer_compression(name):
        name = name.rsplit(".", 1)[0]
    return _FORMATS.get(os.path.splitext(name)[1], "text")


def file_format(source: FilesSource, url: str) -> str:
    return source.format or infer_format(url)


def expand(source: FilesSource) -> list[SourceFile]:
    """The files of a `files` source, checked against its split_by."""
    name = source_name(source)
    files = match(source.paths, name)
    for f in files:
        fmt = file_format(source, f.url)
        if source.split_by != "file" and fmt != "text":
            raise IngestError(
                f"ingest source {name!r}: split_by: {source.split_by} applies to text files, but {f.label} is read as "
                f"{fmt}. Narrow `path:` to text files or set split_by: file."
            )
    return files


def match(patterns: list[str], name: str) -> list[SourceFile]:
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
    return [SourceFile(url[len(root) + 1 :] if root else url, url) for url in dict.fromkeys(urls)]


def _fixed_parts(path: str) -> list[str]:
    """The directory components of a glob before its first wildcard."""
    return list(itertools.takewhile(lambda part: not _GLOB_MAGIC.search(part), path.split("/")[:-1]))


_hashes: dict[tuple[str, str], str] = {}


def url_sha256(url: str) -> str:
    """sha256 of the file's bytes as stored (compressed files are not decompressed).

    Remembered per process while the store describes the file the same way (size,
    modification time, inode or ETag): the flow asks once for a task's cache key and once
    for the manifest, and hashing large inputs twice doubles the cost; a changed file
    must never keep its old hash in a long-lived process (`corpusmill serve`).
    """
    fs, path = url_to_fs(url)
    key = (url, json.dumps(fs.info(path), sort_keys=True, default=str))
    if key not in _hashes:
        digest = hashlib.sha256()
        with fs.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def open_file(url: str):
    return fsspec.open(url, "rb", compression="infer")


@contextlib.contextmanager
def open_lines(url: str) -> Iterator[Iterable[bytes]]:
    with open_file(url) as f:
        # zstandard's reader cannot iterate over lines; a buffer in front of it can
        yield io.BufferedReader(f) if infer_compression(url) == "zstd" else f
