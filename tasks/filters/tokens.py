"""`tokens`: token counts with the recipe's tokenizer, and bounds on them.

A GPT-2-style byte-level BPE tokenizer (SmolLM2's is one) is counted with tiktoken's rank
BPE, built from the tokenizer's own merges: on two cores about four times the `tokenizers`
batch encoder, with the same count for every text (`tests/test_filters_tokens.py` compares
them on the shared corpora and on fuzzed text). Any other tokenizer is counted by the
`tokenizers` batch encoder itself.
"""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import tiktoken
from pydantic import Field, model_validator
from transformers.convert_slow_tokenizer import bytes_to_unicode

from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict

ENCODE_BATCH = 1_000  # documents per encode call: bounds the memory held by token ids
# the byte-level pre-tokenizer's split, as tiktoken spells GPT-2's
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def count_tokens(texts: list[str], tokenizer) -> np.ndarray:
    """Token counts without special tokens (added tokens in the text count as one each)."""
    encoding = rank_bpe(tokenizer)
    if encoding is None:
        return _count_with_tokenizers(texts, tokenizer)
    workers = os.cpu_count() or 1
    # tiktoken releases the GIL while it encodes: one slice of the texts per core
    step = -(-len(texts) // workers) or 1
    slices = [texts[start : start + step] for start in range(0, len(texts), step)]
    with ThreadPoolExecutor(workers) as pool:
        counted = pool.map(lambda part: [len(encoding.encode(t, allowed_special="all")) for t in part], slices)
        return np.fromiter((n for part in counted for n in part), dtype=np.int32, count=len(texts))


def _count_with_tokenizers(texts: list[str], tokenizer) -> np.ndarray:
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    counts = np.empty(len(texts), dtype=np.int32)
    for start in range(0, len(texts), ENCODE_BATCH):
        batch = texts[start : start + ENCODE_BATCH]
        # len(encoding), not len(encoding.ids): no list of ids is built per row
        counts[start : start + len(batch)] = [len(e) for e in encode(batch, add_special_tokens=False)]
    return counts


@functools.lru_cache(maxsize=8)
def rank_bpe(tokenizer) -> tiktoken.Encoding | None:
    """tiktoken's encoding with `tokenizer`'s merges, where `tokenizer` is plain GPT-2-style
    byte-level BPE (whose merges tiktoken applies in the same order); None otherwise."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if not _plain_byte_level_bpe(spec):
        return None
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    ranks = {bytes([byte]): byte for byte in range(256)}
    for rank, pair in enumerate(spec["model"]["merges"], start=256):
        left, right = pair.split(" ") if isinstance(pair, str) else pair
        merged = bytes(byte_of[char] for char in left + right)
        if merged in ranks:  # two merges make one token: the orders could then differ
            return None
        ranks[merged] = rank
    added = {token["content"]: len(ranks) + i for i, token in enumerate(spec["added_tokens"])}
    return tiktoken.Encoding("corpusmill-rank-bpe", pat_str=GPT2_SPLIT, mergeable_ranks=ranks, special_tokens=added)


def _plain_byte_level_bpe(spec: dict) -> bool:
    model, split = spec["model"], spec.get("pre_tokenizer") or {}
    return (
        spec.get("normalizer") is None
        and split.get("type") == "ByteLevel" and split.get("use_regex", True) and not split.get("add_prefix_space")
        and model.get("type") == "BPE" and model.get("dropout") is None
        and not model.get("byte_fallback") and not model.get("ignore_merges")
        and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
        and all(not (t.get("single_word") or t.get("lstrip") or t.get("rstrip")) for t in spec["added_tokens"])
    )


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
