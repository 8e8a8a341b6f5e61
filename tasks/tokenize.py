"""Tokenize stage: personal-data handling, token counts and token-length filters.

`filter_rows` is shared with the augment stage, so generated rows are measured and
filtered by exactly the same rules as the originals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusmill.tasks import pii, schema
from corpusmill.tasks.models import load_tokenizer, resolve
from corpusmill.tasks.recipe import Filters, ModelRef
from corpusmill.tasks.shards import StageReport, dropped_table, read_table, write_table
from corpusmill.tasks.stage import Stage

NAME = "tokenize"
ENCODE_BATCH = 1_000  # documents per encode call: bounds the memory held by token ids


def count_tokens(texts: list[str], tokenizer) -> np.ndarray:
    """Token counts without special tokens, with the Rust tokenizer's parallel batch encoder."""
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    counts = np.empty(len(texts), dtype=np.int32)
    for start in range(0, len(texts), ENCODE_BATCH):
        batch = texts[start : start + ENCODE_BATCH]
        counts[start : start + len(batch)] = [len(e.ids) for e in encode(batch, add_special_tokens=False)]
    return counts


def filter_rows(table: pa.Table, tokenizer, filters: Filters, stage: str = NAME) -> tuple[pa.Table, list[dict], StageReport]:
    """Apply the PII rule and token bounds; return kept rows (TOKENIZED schema), dropped rows, report."""
    if "synthetic" not in table.column_names:
        table = schema.with_provenance(table)
    report = StageReport(stage, rows_in=table.num_rows)
    dropped: list[dict] = []

    def quarantine(rows: pa.Table, reason: str, details: list[str]) -> None:
        for row, detail in zip(rows.select(["id", "source", "text"]).to_pylist(), details):
            dropped.append({**row, "stage": stage, "reason": reason, "detail": detail})
        report.drop(reason, rows.num_rows)

    if filters.pii != "keep":
        texts = table.column("text").to_pylist()
        found = [pii.find(t) for t in texts]
        if filters.pii == "drop":
            hit = np.array([bool(f) for f in found], dtype=bool)
            quarantine(table.filter(hit), "pii", [",".join(f) for f in found if f])
            table = table.filter(~hit)
        else:
            redacted = [pii.redact(t) if f else (t, 0) for t, f in zip(texts, found)]
            report.extra["pii_redactions"] = sum(n for _, n in redacted)
            report.extra["pii_rows_redacted"] = sum(1 for _, n in redacted if n)
            table = table.set_column(
                table.column_names.index("text"), schema.INGEST.field("text"), pa.array([t for t, _ in redacted], pa.string())
            )

    counts = count_tokens(table.column("text").to_pylist(), tokenizer)
    max_tokens = filters.max_tokens or np.iinfo(np.int32).max
    for reason, too_far in (("too_few_tokens", lambda c: c < filters.min_tokens), ("too_many_tokens", lambda c: c > max_tokens)):
        bad = too_far(counts)
        if bad.any():
            quarantine(table.filter(bad), reason, [f"{n} tokens" for n in counts[bad]])
            table, counts = table.filter(~bad), counts[~bad]

    table = table.append_column(schema.TOKENIZED.field("n_tokens"), pa.array(counts, pa.int32()))
    table = table.select(schema.TOKENIZED.names).cast(schema.TOKENIZED)
    report.rows_out = table.num_rows
    return table, dropped, report


def run(in_path: Path, out_path: Path, quarantine_path: Path, tokenizer_ref: ModelRef, filters: Filters) -> dict:
    """Tokenize one ingest shard into `out_path`; dropped rows go to `quarantine_path`."""
    table, dropped, report = filter_rows(read_table(in_path), load_tokenizer(tokenizer_ref), filters)
    write_table(table, out_path)
    if dropped:
        write_table(dropped_table(dropped), quarantine_path)
    else:
        Path(quarantine_path).unlink(missing_ok=True)  # an earlier run's rejects must not linger
    report.extra["tokens"] = int(pc.sum(table.column("n_tokens")).as_py() or 0)
    return report.to_dict()


STAGE = Stage(NAME, "1", run, inputs=("in_path",), label="{in_path.name}",
              identity=lambda tokenizer_ref, **_: {"tokenizer": resolve(tokenizer_ref).identity})
