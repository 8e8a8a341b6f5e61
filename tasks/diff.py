"""`corpusmill diff A B`: what changed between two releases, row by row.

Rows are matched by `id` (stable across rebuilds). A row is *added* (only in B),
*removed* (only in A), *changed* (same id, any other column differs: text, n_tokens,
cluster_id, ...) and/or *moved* (same id, another split). Counts and token sums are
reported per split and source: added and changed rows under their split and source in B,
removed rows under theirs in A; a moved row counts as `moved_out` of its A split and
`moved_in` to its B split.

Memory: each file is read once and reduced to one 64-bit hash per row and column (plus
id, split, source and n_tokens), so the text itself is never held for a whole release.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.tasks import schema
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.publish import read_manifest

KEY_COLUMNS = ("id", "split", "source", "n_tokens")
COMPARED = [c for c in schema.RELEASE.names if c != "id"]
COUNTS = ("rows_a", "rows_b", "added", "removed", "changed", "moved_in", "moved_out", "tokens_a", "tokens_b")


def release_rows(release: Path) -> pd.DataFrame:
    """id, split, source, n_tokens and one hash column `h:<column>` per compared column."""
    manifest = read_manifest(release)
    frames = []
    for f in sorted(manifest["files"], key=lambda f: f["path"]):
        path = Path(release) / f["path"]
        if not path.is_file():
            raise CorpusmillError(f"{release} lacks its data file {f['path']}, so it cannot be compared; check it with "
                                  f"`corpusmill verify {release}` and restore or rebuild the release.")
        table = pq.read_table(path)
        out = pd.DataFrame({"id": table.column("id").to_pandas(), "split": f["split"],
                            "source": table.column("source").to_pandas(),
                            "n_tokens": table.column("n_tokens").to_pandas().astype("int64")})
        for column in COMPARED:
            if column in table.column_names:
                values = table.column(column)
                if pa.types.is_nested(values.type):  # `sampling`: pandas cannot hash dicts; hash canonical JSON
                    values = pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in values.to_pylist()],
                                      pa.string())
                out[f"h:{column}"] = pd.util.hash_pandas_object(values.to_pandas(), index=False).to_numpy()
        frames.append(out)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "n_tokens" else "str") for c in KEY_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def diff_releases(a: Path, b: Path) -> dict:
    """The JSON-friendly diff of release `a` (old) against `b` (new)."""
    ma, mb = read_manifest(a), read_manifest(b)
    ra, rb = release_rows(a), release_rows(b)
    merged = ra.merge(rb, on="id", how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = merged["_merge"].eq("left_only").to_numpy()
    only_b = merged["_merge"].eq("right_only").to_numpy()
    both = merged["_merge"].eq("both").to_numpy()

    hashed = [c for c in COMPARED if f"h:{c}_a" in merged.columns and f"h:{c}_b" in merged.columns]
    differs = {c: (merged[f"h:{c}_a"].to_numpy() != merged[f"h:{c}_b"].to_numpy()) & both for c in hashed}
    changed = np.zeros(len(merged), dtype=bool)
    for c, mask in differs.items():
        if c != "split":
            changed |= mask
    moved = both & (merged["split_a"].to_numpy() != merged["split_b"].to_numpy())

    table: dict[tuple[str, str], dict] = {}

    def bump(keys: pd.DataFrame, metric: str, values=None) -> None:
        if not len(keys):
            return
        frame = keys.copy()
        frame["v"] = 1 if values is None else values
        for (split, source), v in frame.groupby(list(keys.columns), sort=False)["v"].sum().items():
            row = table.setdefault((split, source), dict.fromkeys(COUNTS, 0))
            row[metric] += int(v)

    def keys(mask, side):
        return merged.loc[mask, [f"split_{side}", f"source_{side}"]].set_axis(["split", "source"], axis=1)

    present_a, present_b = ~only_b, ~only_a
    bump(keys(present_a, "a"), "rows_a")
    bump(keys(present_b, "b"), "rows_b")
    bump(keys(present_a, "a"), "tokens_a", merged.loc[present_a, "n_tokens_a"].to_numpy())
    bump(keys(present_b, "b"), "tokens_b", merged.loc[present_b, "n_tokens_b"].to_numpy())
    bump(keys(only_b, "b"), "added")
    bump(keys(only_a, "a"), "removed")
    bump(keys(changed, "b"), "changed")
    bump(keys(moved, "b"), "moved_in")
    bump(keys(moved, "a"), "moved_out")

    order = {s: i for i, s in enumerate(schema.SPLITS)}
    rows = []
    for (split, source), v in sorted(table.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0])):
        rows.append({"split": split, "source": source, **v, "tokens_delta": v["tokens_b"] - v["tokens_a"]})
    moves = (merged.loc[moved].groupby(["split_a", "split_b"]).size() if moved.any() else pd.Series(dtype="int64"))
    totals = {m: sum(r[m] for r in rows) for m in COUNTS if m not in ("moved_in", "moved_out")}
    totals.update(moved=int(moved.sum()), unchanged=int((both & ~changed & ~moved).sum()),
                  tokens_delta=totals["tokens_b"] - totals["tokens_a"])
    return {
        "a": {"release": str(a), "name": ma["name"], "version": ma["version"], "fingerprint": ma["fingerprint"]},
        "b": {"release": str(b), "name": mb["name"], "version": mb["version"], "fingerprint": mb["fingerprint"]},
        "identical": ma["fingerprint"] == mb["fingerprint"],
        "totals": totals,
        "by_split_source": rows,
        "moves": [{"from": f, "to": t, "rows": int(n)} for (f, t), n in moves.items()],
        "changed_columns": {c: int(m.sum()) for c, m in differs.items() if c != "split" and m.any()},
        "examples": {
            "added": merged.loc[only_b, "id"].head(5).tolist(),
            "removed": merged.loc[only_a, "id"].head(5).tolist(),
            "changed": merged.loc[changed, "id"].head(5).tolist(),
            "moved": merged.loc[moved, "id"].head(5).tolist(),
        },
    }


def render(report: dict, console=None) -> None:
    """The diff as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    a, b = report["a"], report["b"]
    title = f"{a['name']} {a['version']} -> {b['name']} {b['version']}"
    table = Table(title=title + (" (identical data)" if report["identical"] else ""))
    for column in ("split", "source", "rows A", "rows B", "added", "removed", "changed", "moved in", "moved out",
                   "tokens A", "tokens B", "Δ tokens"):
        table.add_column(column, justify="left" if column in ("split", "source") else "right")
    for r in report["by_split_source"]:
        table.add_row(r["split"], r["source"], *(f"{r[k]:,}" for k in (
            "rows_a", "rows_b", "added", "removed", "changed", "moved_in", "moved_out", "tokens_a", "tokens_b")),
            f"{r['tokens_delta']:+,}")
    t = report["totals"]
    table.add_section()
    table.add_row("all", "", *(f"{t[k]:,}" for k in ("rows_a", "rows_b", "added", "removed", "changed")),
                  f"{t['moved']:,}", f"{t['moved']:,}", f"{t['tokens_a']:,}", f"{t['tokens_b']:,}",
                  f"{t['tokens_delta']:+,}")
    console.print(table)
    if report["moves"]:
        console.print("moved between splits: " + ", ".join(f"{m['from']} -> {m['to']}: {m['rows']:,}" for m in report["moves"]))
    if report["changed_columns"]:
        console.print("changed columns: " + ", ".join(f"{c} ({n:,})" for c, n in report["changed_columns"].items()))
