"""Decompressing input files by the codec their name says (gzip, bz2, xz/lzma, zstd)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import BinaryIO, Callable

import zstandard

READ_SIZE = 1 << 16  # compressed bytes read at a time

# What the decoders raise for damaged or cut-short data. gzip (BadGzipFile) and bz2 report
# some of it as OSError, so these types alone do not tell it from a failing store.
DECODE_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


def _zstd(compressed: BinaryIO) -> BinaryIO:
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(compressed), buffer_size=READ_SIZE)


# fsspec's compression names (fsspec.utils.infer_compression) -> a reader of the content
CODECS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    "gzip": lambda compressed: gzip.GzipFile(fileobj=compressed, mode="rb"),
    "bz2": bz2.BZ2File,
    "lzma": lzma.LZMAFile,
    "xz": lzma.LZMAFile,
    "zstd": _zstd,
}


def decompressed(compressed: BinaryIO, codec: str) -> BinaryIO:
    """A buffered reader (with peek and line iteration) of the content of `compressed`."""
    return CODECS[codec](compressed)
