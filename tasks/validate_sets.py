"""What validation checks over a whole split or across splits, kept in compact side data.

While the validate stage streams a release's files one at a time, `SplitKeys.add` keeps,
per row, only the 64-bit hashes (xxh3) of its id, text and cluster id and its `synthetic`
flag, plus the hashes of synthetic rows' parents: about 30 bytes a row, never a text. From
these, `split_frame` and `lineage_frame` build the frames the split and lineage suites
check. Failures must name rows, and hashes do not: `flagged` finds the first rows and keys
each check will report, and `resolve` reads only the id, cluster_id and parent_id columns
of the files again to name them; it runs only when something failed.

Two different values with one hash would read as a duplicate: at 64 bits that is about
one chance in 10^6 for a release of 5 million rows, and the report names both rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

KEY_COLUMNS = ("id", "cluster_id", "parent_id")  # a row's lineage keys share one hash space
HASHED = ("id", "text", "cluster_id")  # the split frame's hash columns
NO_LABEL = -1  # a categorical code: no name resolved for this row or key


def hash_strings(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-64 of each value's UTF-8 bytes, and which values are not null.

    Hashes slices of the Arrow data buffer, so no Python string is made (about 1 GB/s).
    """
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    hashes, valid = [np.empty(0, np.uint64)], [np.empty(0, bool)]
    for chunk in chunks:
        chunk = chunk.cast(pa.large_binary())
        _, offsets_buffer, data = chunk.buffers()
        offsets = np.frombuffer(offsets_buffer, np.int64)[chunk.offset: chunk.offset + len(chunk) + 1].tolist()
        view = memoryview(data) if data is not None else memoryview(b"")
        digest = xxhash.xxh3_64_intdigest
        hashes.append(np.fromiter((digest(view[a:b]) for a, b in zip(offsets[:-1], offsets[1:])), np.uint64,
                                  len(chunk)))
        valid.append(chunk.is_valid().to_numpy(zero_copy_only=False))
    return np.concatenate(hashes), np.concatenate(valid)


def _column(table: pa.Table, name: str, kind: pa.DataType) -> pa.ChunkedArray:
    """`table[name]`, or nulls where a file lacks the column (the rows suite reports that)."""
    if name in table.column_names and table.schema.field(name).type == kind:
        return table[name]
    return pa.chunked_array([pa.nulls(table.num_rows, kind)])


@dataclass
class SplitKeys:
    """One split's side data, in row order over its files."""

    rows: int = 0
    file_rows: list[int] = field(default_factory=list)
    hashes: dict[str, list[np.ndarray]] = field(default_factory=lambda: {c: [] for c in HASHED})
    valid: dict[str, list[np.ndarray]] = field(default_factory=lambda: {c: [] for c in HASHED})
    synthetic: list[np.ndarray] = field(default_factory=list)  # int8: 1, 0, or -1 for null
    parents: list[np.ndarray] = field(default_factory=list)  # hashes of synthetic rows' parent ids

    def add(self, table: pa.Table) -> None:
        """Keep what the set-level checks need of one file's rows."""
        for name in HASHED:
            h, v = hash_strings(_column(table, name, pa.string()))
            self.hashes[name].append(h)
            self.valid[name].append(v)
        synthetic = _column(table, "synthetic", pa.bool_())
        self.synthetic.append(synthetic.cast(pa.int8()).fill_null(-1).to_numpy())
        parents, valid = hash_strings(_column(table, "parent_id", pa.string()))
        is_synthetic = pc.fill_null(synthetic, False).to_numpy(zero_copy_only=False)
        self.parents.append(parents[valid & is_synthetic])
        self.rows += table.num_rows
        self.file_rows.append(table.num_rows)

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The hashes of column `name` over the whole split, and which rows have a value."""
        return _joined(self.hashes[name], np.uint64), _joined(self.valid[name], bool)

    def keys(self) -> np.ndarray:
        """The split's distinct lineage key hashes: ids, cluster ids, synthetic rows' parents."""
        parts = [h[v] for h, v in (self.column("id"), self.column("cluster_id"))]
        return np.unique(np.concatenate([*parts, _joined(self.parents, np.uint64)]))


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def repeated(hashes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Which rows share their (non-null) hash with another row."""
    _, inverse, counts = np.unique(hashes[valid], return_inverse=True, return_counts=True)
    out = np.zeros(len(hashes), bool)
    out[valid] = counts[inverse] > 1
    return out


@dataclass
class Lineage:
    """Every lineage key's hash, sorted, with a bit per split (SPLITS order) it occurs in."""

    keys: np.ndarray
    bits: np.ndarray

    @classmethod
    def of(cls, splits: dict[str, SplitKeys], names: tuple[str, ...]) -> Lineage:
        per_split = [(names.index(s), k.keys()) for s, k in splits.items()]
        keys = _joined([k for _, k in per_split], np.uint64)
        bits = _joined([np.full(len(k), 1 << i, np.uint8) for i, k in per_split], np.uint8)
        if not len(keys):
            return cls(keys, bits)
        order = np.argsort(keys, kind="stable")
        keys, bits = keys[order], bits[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        return cls(keys[starts], np.bitwise_or.reduceat(bits, starts))

    def n_splits(self) -> np.ndarray:
        return np.unpackbits(self.bits[:, None], axis=1).sum(axis=1).astype(np.int8)


@dataclass
class Flagged:
    """The rows (by position in their split) and lineage keys a failure report names."""

    rows: dict[str, np.ndarray]
    keys: np.ndarray

    def __bool__(self) -> bool:
        return bool(len(self.keys)) or any(len(r) for r in self.rows.values())


def flagged(splits: dict[str, SplitKeys], lineage: Lineage, sample: int) -> Flagged:
    """The first `sample` rows of each split with a repeated id, text or cluster id, and the
    first `sample` keys in two splits: the ones GE quotes, in frame order."""
    rows = {}
    for split, keys in splits.items():
        found = [np.flatnonzero(repeated(*keys.column(c)))[:sample] for c in HASHED]
        rows[split] = np.unique(np.concatenate(found))
    return Flagged(rows, lineage.keys[np.flatnonzero(lineage.n_splits() > 1)[:sample]])


def resolve(split_files: dict[str, list[Path]], wanted: Flagged,
            read: Callable[[Path, list[str]], pa.Table]) -> tuple[dict[str, dict[int, str]], dict[int, str]]:
    """Name the flagged rows (position -> id) and keys (hash -> value), reading each file's
    key columns once more, one file at a time."""
    row_ids: dict[str, dict[int, str]] = {s: {} for s in split_files}
    key_names: dict[int, str] = {}
    for split, paths in split_files.items():
        start = 0
        for path in paths:
            present = [c for c in KEY_COLUMNS if c in pq.read_schema(path).names]
            table = read(path, present)
            here = wanted.rows.get(split, np.empty(0, np.int64))
            here = here[(here >= start) & (here < start + table.num_rows)]
            if len(here) and "id" in present:
                ids = table["id"].take(pa.array(here - start)).to_pylist()
                row_ids[split].update(zip(here.tolist(), ids))
            for name in present:
                hashes, _ = hash_strings(table[name])
                hit = np.flatnonzero(np.isin(hashes, wanted.keys))
                if len(hit):
                    key_names.update(zip(hashes[hit].tolist(), table[name].take(pa.array(hit)).to_pylist()))
            start += table.num_rows
    return row_ids, key_names


def _labels(size: int, names: dict[int, str]) -> pd.Categorical:
    """A column that is `names[i]` at position i and null elsewhere, in a few bytes a row."""
    categories = sorted(set(names.values()))
    codes = np.full(size, NO_LABEL, np.int32)
    lookup = {c: i for i, c in enumerate(categories)}
    for position, name in names.items():
        codes[position] = lookup[name]
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype="str"))


def split_frame(keys: SplitKeys, row_ids: dict[int, str]) -> pd.DataFrame:
    """The split suite's frame: per row the hashes of id, text and cluster_id (null where the
    value is), synthetic, and row_id: the row's id where a failure names it."""
    frame = pd.DataFrame({name: pd.arrays.IntegerArray(h, ~v) for name, (h, v) in
                          ((c, keys.column(c)) for c in HASHED)})
    synthetic = _joined(keys.synthetic, np.int8)
    frame["synthetic"] = pd.arrays.BooleanArray(synthetic == 1, synthetic < 0)
    frame["row_id"] = _labels(keys.rows, row_ids)
    return frame


def lineage_frame(lineage: Lineage, key_names: dict[int, str], names: Iterable[str]) -> pd.DataFrame:
    """The lineage suite's frame: per key its hash, n_splits, the splits ("train+test") and
    key_name: the key itself where a failure names it."""
    names = list(names)
    label = ["+".join(n for i, n in enumerate(names) if b >> i & 1) for b in range(1 << len(names))]
    positions = {int(np.searchsorted(lineage.keys, np.uint64(h))): name for h, name in key_names.items()}
    return pd.DataFrame({
        "key": pd.arrays.IntegerArray(lineage.keys, np.zeros(len(lineage.keys), bool)),
        "n_splits": lineage.n_splits(),
        "splits": pd.Categorical.from_codes(lineage.bits.astype(np.int16), categories=pd.Index(label, dtype="str")),
        "key_name": _labels(len(lineage.keys), positions),
    })
