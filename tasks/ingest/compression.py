"""Decompressing input files, so that a damaged or cut-short file is an error, never a
silently shorter one.

gzip, bz2 and xz/lzma go through the standard library, whose readers raise EOFError when
the data ends before the end-of-stream marker. zstandard's stream reader does not: it
returns what it has when the input ends inside a frame. `ZstdFrames` reads frame after
frame and raises EOFError for a cut one.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import BinaryIO, Callable

import zstandard

READ_SIZE = 1 << 16  # compressed bytes read at a time
# zstandard's decompressobj returns all the output of what it is given, with no limit;
# feeding it small slices bounds that (text inflates a slice to tens of KiB).
ZSTD_SLICE = 1 << 13

# What the decoders raise for damaged or cut-short data. gzip (BadGzipFile) and bz2 report
# some of it as OSError, so these types alone do not tell it from a failing store.
DECODE_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


class ZstdFrames(io.RawIOBase):
    """The decompressed content of every zstd frame in `compressed`, in order.

    Raises EOFError when the input ends inside a frame; bytes after a frame that do not
    start another one raise zstandard.ZstdError.
    """

    def __init__(self, compressed: BinaryIO):
        self._input = compressed
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = None  # the decompressobj of the current frame, None before the first
        self._pending = memoryview(b"")  # input not yet given to a frame
        self._output = memoryview(b"")  # decompressed, not yet read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._output:
            if not self._decode_slice():
                return 0
        n = min(len(buffer), len(self._output))
        buffer[:n] = self._output[:n]
        self._output = self._output[n:]
        return n

    def _decode_slice(self) -> bool:
        """Decompress the next slice of input into `_output`; False at the end of the input."""
        if not self._pending:
            self._pending = memoryview(self._input.read(READ_SIZE))
            if not self._pending:
                if self._frame is not None and not self._frame.eof:
                    # the standard library's readers' words for the same thing
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                return False
        if self._frame is None or self._frame.eof:
            self._frame = self._decompressor.decompressobj()
        piece, self._pending = self._pending[:ZSTD_SLICE], self._pending[ZSTD_SLICE:]
        self._output = memoryview(self._frame.decompress(piece))
        if self._frame.eof and self._frame.unused_data:  # the next frame starts inside this slice
            self._pending = memoryview(self._frame.unused_data + self._pending.tobytes())
        return True


def _zstd(compressed: BinaryIO) -> BinaryIO:
    return io.BufferedReader(ZstdFrames(compressed), buffer_size=READ_SIZE)


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
