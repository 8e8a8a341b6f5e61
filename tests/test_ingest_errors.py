"""Which ingest failures stop the run with an IngestError naming the input, and which
propagate as raised so the flow retries the unit."""

import bz2
import gzip
import io
import json
import lzma
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fsspec.implementations.local import LocalFileSystem

from corpusmill.tasks import ingest
from corpusmill.tasks.ingest import IngestError
from corpusmill.tasks.recipe import FilesSource, HubSource

JSONL = "".join(json.dumps({"text": f"document {i} " + "word " * 40}) + "\n" for i in range(3000)).encode()
COMPRESS = {
    "gz": lambda data: gzip.compress(data, mtime=0),
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": zstandard.ZstdCompressor(write_checksum=True).compress,  # as the zstd command line writes it
}


def files(path, **kw):
    return FilesSource(kind="files", path=str(path), license="CC0-1.0", **kw)


def ingest_file(path, out):
    source = files(path)
    (unit,) = ingest.plan([source])
    return ingest.run(source, unit, out / "shards", out / "quarantine.parquet", 100_000)


# --- damaged files: IngestError naming the file ----------------------------------------------


@pytest.mark.parametrize("codec", ["gz", "bz2", "xz", "zst"])
def test_truncated_compressed_file_is_an_ingest_error(tmp_path, codec):
    data = COMPRESS[codec](JSONL)
    path = tmp_path / f"d.jsonl.{codec}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=rf"d\.jsonl\.{codec} could not be read as jsonl: .*ended before the end"):
        ingest_file(path, tmp_path)
    assert not list((tmp_path / "shards").glob("*.parquet"))  # nothing half-written is left


@pytest.mark.parametrize("codec", ["gz", "bz2", "xz", "zst"])
def test_corrupt_compressed_file_is_an_ingest_error(tmp_path, codec):
    data = bytearray(COMPRESS[codec](JSONL))
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path = tmp_path / f"d.jsonl.{codec}"
    path.write_bytes(bytes(data))
    with pytest.raises(IngestError, match=rf"d\.jsonl\.{codec} could not be read as jsonl"):
        ingest_file(path, tmp_path)


def test_every_zstd_frame_is_read(tmp_path):
    # concatenated frames (pzstd, appended files) are one valid stream
    first, second = JSONL[: len(JSONL) // 3], JSONL[len(JSONL) // 3 :]
    (tmp_path / "d.jsonl.zst").write_bytes(COMPRESS["zst"](first) + COMPRESS["zst"](second))
    report = ingest_file(tmp_path / "d.jsonl.zst", tmp_path)
    assert report["rows_in"] == report["rows_out"] == JSONL.count(b"\n")


def test_corrupt_parquet_page_is_an_ingest_error(tmp_path):
    # pyarrow reports a damaged page with a plain OSError, the type a dropped connection has
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": [f"row {i} " * 20 for i in range(20_000)]}), buffer, compression="snappy")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xff" * 200
    (tmp_path / "t.parquet").write_bytes(bytes(data))
    with pytest.raises(IngestError, match=r"t\.parquet could not be read as parquet: Corrupt"):
        ingest_file(tmp_path / "t.parquet", tmp_path)


def test_unreadable_compression_is_refused_at_planning(tmp_path):
    (tmp_path / "d.jsonl.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(IngestError, match=r"d\.jsonl\.zip is compressed as zip, which ingest does not read"):
        ingest.plan([files(tmp_path / "d.jsonl.zip")])
    (tmp_path / "t.parquet.gz").write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(IngestError, match=r"t\.parquet\.gz is a gzip-compressed Parquet file"):
        ingest.plan([files(tmp_path / "t.parquet.gz")])


# --- the store failing: propagated as raised, or permanent --------------------------------------


class DroppingFile(io.BytesIO):
    """A stored file whose reads raise `error` once `good_reads` reads have been served."""

    def __init__(self, data: bytes, good_reads: int, error: OSError):
        super().__init__(data)
        self.good_reads, self.error = good_reads, error

    def _serve(self):
        if self.good_reads <= 0:
            raise self.error
        self.good_reads -= 1

    def read(self, size=-1):
        self._serve()
        return super().read(size)

    def readinto(self, buffer):
        self._serve()
        return super().readinto(buffer)


def write_input(tmp_path: Path, kind: str) -> Path:
    rows = [f"document {i} " + "word " * 40 for i in range(3000)]
    if kind == "parquet":
        pq.write_table(pa.table({"text": rows}), tmp_path / "d.parquet", row_group_size=500)
        return tmp_path / "d.parquet"
    if kind == "csv":
        (tmp_path / "d.csv").write_text("text\n" + "\n".join(rows) + "\n")
        return tmp_path / "d.csv"
    if kind == "txt":
        (tmp_path / "d.txt").write_text("\n\n".join(rows))
        return tmp_path / "d.txt"
    suffix = {"jsonl": "", "jsonl.gz": ".gz", "jsonl.zst": ".zst"}[kind]
    path = tmp_path / f"d.jsonl{suffix}"
    path.write_bytes(COMPRESS[suffix[1:]](JSONL) if suffix else JSONL)
    return path


@pytest.fixture
def dropping_store(monkeypatch):
    """Local files served through DroppingFile: `fail(error)` arms it for the next open."""
    armed = {}

    def open_dropping(self, path, mode="rb", **kwargs):
        return DroppingFile(Path(path).read_bytes(), armed["good_reads"], armed["error"])

    def fail(error: OSError, good_reads: int = 1):
        armed.update(good_reads=good_reads, error=error)
        monkeypatch.setattr(LocalFileSystem, "_open", open_dropping)

    return fail


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "jsonl.zst", "csv", "parquet", "txt"])
def test_a_dropped_connection_propagates_unwrapped(tmp_path, dropping_store, kind):
    path = write_input(tmp_path, kind)
    source = files(path)
    (unit,) = ingest.plan([source])
    dropped = ConnectionResetError(104, "Connection reset by peer")
    dropping_store(dropped)
    with pytest.raises(ConnectionResetError) as raised:
        ingest.run(source, unit, tmp_path / "shards", tmp_path / "q.parquet", 100_000)
    assert raised.value is dropped  # not an IngestError: the flow retries transient errors
    assert not list((tmp_path / "shards").glob("*.parquet")) and not (tmp_path / "q.parquet").exists()


@pytest.mark.parametrize("error,message", [
    (FileNotFoundError(2, "No such file or directory"), "does not exist"),
    (PermissionError(13, "Access Denied"), "may not be read"),
])
def test_a_file_gone_or_forbidden_mid_read_is_an_ingest_error(tmp_path, dropping_store, error, message):
    path = write_input(tmp_path, "jsonl.gz")
    source = files(path)
    (unit,) = ingest.plan([source])
    dropping_store(error)
    with pytest.raises(IngestError, match=rf"{re.escape(str(path))} {message} \({type(error).__name__}"):
        ingest.run(source, unit, tmp_path / "shards", tmp_path / "q.parquet", 100_000)


# --- hub: a dropped stream propagates, a refusal does not ----------------------------------------


class HubHTTPError(OSError):
    """Like huggingface_hub's HfHubHTTPError: an OSError carrying the response."""

    def __init__(self, status_code: int):
        super().__init__(f"{status_code} from the Hub")
        self.response = type("Response", (), {"status_code": status_code})()


@pytest.fixture
def online_hub(monkeypatch):
    """datasets.load_dataset streaming two rows, then raising `error`; offline mode off."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def stream_then(error: Exception):
        def rows():
            yield {"text": "first"}
            yield {"text": "second"}
            raise error

        monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: rows())

    return stream_then


@pytest.mark.parametrize("error", [ConnectionResetError("stream dropped"), TimeoutError("read timed out"),
                                   HubHTTPError(503), HubHTTPError(429)])
def test_a_dropped_hub_stream_propagates_unwrapped(tmp_path, online_hub, error):
    online_hub(error)
    source = HubSource(kind="hub", dataset="org/data", license="CC0-1.0")
    with pytest.raises(type(error)) as raised:
        ingest.run(source, ingest.plan([source])[0], tmp_path / "shards", tmp_path / "q.parquet", 100)
    assert raised.value is error


@pytest.mark.parametrize("error", [HubHTTPError(404), HubHTTPError(403), ValueError("bad row")])
def test_a_hub_refusal_is_an_ingest_error(tmp_path, online_hub, error):
    online_hub(error)
    source = HubSource(kind="hub", dataset="org/data", license="CC0-1.0")
    with pytest.raises(IngestError, match="reading the dataset 'org/data'.*failed at row 2"):
        ingest.run(source, ingest.plan([source])[0], tmp_path / "shards", tmp_path / "q.parquet", 100)


def test_a_document_over_max_document_bytes_is_dropped_as_too_large_not_read_into_every_stage(tmp_path):
    from corpusmill.tasks.ingest import plan, run
    from corpusmill.tasks.recipe import FilesSource
    from corpusmill.tasks.shards import read_table

    (tmp_path / "docs.jsonl").write_text(
        '{"text": "a short document"}\n' + '{"text": "' + "é" * 600 + '"}\n' + '{"text": "' + "x" * 900 + '"}\n')
    source = FilesSource(kind="files", path=str(tmp_path / "docs.jsonl"), license="CC0-1.0", max_document_bytes=1000)
    (unit,) = plan([source])
    report = run(source, unit, tmp_path / "out", tmp_path / "quarantine.parquet", 100)
    assert report["rows_in"] == 3 and report["rows_out"] == 2 and report["dropped"] == {"too_large": 1}
    (dropped,) = read_table(tmp_path / "quarantine.parquet").to_pylist()
    assert "1,200 bytes" in dropped["detail"] and "max_document_bytes (1,000)" in dropped["detail"]
