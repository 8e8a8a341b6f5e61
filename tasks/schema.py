"""Arrow schemas of the rows that flow between stages and of a release.

Each stage adds columns to the one before it; the release schema is the contract users
load; the README's "What a release is" describes each column.
"""

from __future__ import annotations

import pyarrow as pa

# After ingest: every row has a stable id, its text and where it came from.
INGEST = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("license", pa.string(), nullable=False),
    ]
)

# How a synthetic row was generated: enough, with `generator` and `prompt_id`, to generate it
# again. `seed` is the row's own sampling seed (unused when temperature is 0);
# `repetition_penalty` 1.0 and `no_repeat_ngram_size` 0 mean those controls were off.
SAMPLING = pa.struct(
    [
        pa.field("backend", pa.string()),
        pa.field("temperature", pa.float64()),
        pa.field("top_p", pa.float64()),
        pa.field("repetition_penalty", pa.float64()),
        pa.field("no_repeat_ngram_size", pa.int32()),
        pa.field("max_new_tokens", pa.int32()),
        pa.field("stop", pa.list_(pa.string())),
        pa.field("seed", pa.int64()),
    ]
)

# Provenance columns; null on original rows.
PROVENANCE = [
    pa.field("synthetic", pa.bool_(), nullable=False),
    pa.field("parent_id", pa.string()),
    pa.field("generator", pa.string()),
    pa.field("prompt_id", pa.string()),
    pa.field("sampling", SAMPLING),
]

# Columns the filter steps set; null where no step measured them (no `language` step).
LANGUAGE = [
    pa.field("language", pa.string()),  # ISO 639-1 code of the most likely language
    pa.field("language_score", pa.float32()),  # that language's probability
]
FILTER_COLUMNS = tuple(f.name for f in LANGUAGE)

# After the filter stage (and for synthetic rows after augment): token counts, language, provenance.
TOKENIZED = pa.schema(list(INGEST) + [pa.field("n_tokens", pa.int32(), nullable=False)] + LANGUAGE + PROVENANCE)

# A published split file.
RELEASE = pa.schema(list(TOKENIZED) + [pa.field("cluster_id", pa.string(), nullable=False)])

# Rows a stage dropped, with the reason (the quarantine).
DROPPED = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("text", pa.string()),
    ]
)

SPLITS = ("train", "validation", "test")


def with_provenance(table: pa.Table) -> pa.Table:
    """Add the provenance columns of an original row (synthetic=false, nulls)."""
    n = table.num_rows
    table = table.append_column(PROVENANCE[0], pa.array([False] * n, pa.bool_()))
    for field in PROVENANCE[1:]:
        table = table.append_column(field, pa.nulls(n, field.type))
    return table
