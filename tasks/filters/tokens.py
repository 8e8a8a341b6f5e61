"""`tokens`: token counts with the recipe's tokenizer, and bounds on them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict

ENCODE_BATCH = 1_000  # documents per encode call: bounds the memory held by token ids


def count_tokens(texts: list[str], tokenizer) -> np.ndarray:
    """Token counts without special tokens, with the Rust tokenizer's parallel batch encoder."""
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    counts = np.empty(len(texts), dtype=np.int32)
    for start in range(0, len(texts), ENCODE_BATCH):
        batch = texts[start : start + ENCODE_BATCH]
        # len(encoding), not len(encoding.ids): no list of ids is built per row
        counts[start : start + len(batch)] = [len(e) for e in encode(batch, add_special_tokens=False)]
    return counts


class TokenBounds(FilterStep):
    """Drops rows with fewer than `min` or more than `max` tokens; sets `n_tokens`."""

    NAME = "tokens"
    min: int = Field(0, ge=0, description="fewest tokens a row may have")
    max: int | None = Field(None, ge=1, description="most tokens a row may have; null: no bound")

    @model_validator(mode="after")
    def _bounds(self) -> TokenBounds:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        counts = count_tokens(table.column("text").to_pylist(), context.tokenizer)
        upper = self.max if self.max is not None else np.iinfo(np.int32).max
        why = [f"{n} tokens" for n in counts]
        return Verdict.from_rules(
            len(counts),
            {"too_few_tokens": (counts < self.min, why), "too_many_tokens": (counts > upper, why)},
            columns={"n_tokens": pa.array(counts, pa.int32())},
        )
