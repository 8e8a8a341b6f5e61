"""The tokens step's counter: tiktoken's rank BPE built from the tokenizer's merges must
give the `tokenizers` count for every text, or not be used at all."""

from __future__ import annotations

import json
import random

import pytest
from transformers import PreTrainedTokenizerFast
from tokenizers import Tokenizer

from corpusmill.tasks.filters.tokens import count_tokens, rank_bpe
from corpusmill.tasks.models import load_tokenizer
from corpusmill.tasks.recipe import ModelRef

# Character classes where a byte-level BPE and its regex split are easiest to get wrong:
# Unicode letters and numbers outside ASCII, every kind of space, contractions, joiners and
# combining marks, emoji sequences, and the tokenizer's own added tokens inside the text.
CLASSES = ["abc XYZ", " \t\n\r\u00a0\u2003\u3000", "0123456789٠١٢³½Ⅻ", "'sdmtllvreSDMT", "éüßçñøÅ",
           "中文日本語한국어", "Ελληνικάкириллица", "😀👍🏽\u200d♀️🇫🇷", "!?.,;:-_()[]{}<>@#$%^&*+=/\\|~`\"",
           "\u200b\u200d\ufeff\u0301\u0300", "\x00\x01\x7f\ud7ff\ue000\U0010ffff"]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelRef(gguf="smollm2"))


def reference(texts, tokenizer) -> list[int]:
    return [len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]


def fuzzed(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = CLASSES + [" " * 5, "\n\n", "'ll", "1234567"]
    return ["".join(rng.choice(SPECIAL) if rng.random() < 0.03 else rng.choice(rng.choice(pieces))
                    for _ in range(rng.randint(0, 80))) for _ in range(n)]


def test_smollm2_is_counted_with_rank_bpe(tokenizer):
    assert rank_bpe(tokenizer) is not None


def test_rank_bpe_counts_equal_the_tokenizers_on_fuzzed_text(tokenizer):
    texts = fuzzed(20_000)
    assert count_tokens(texts, tokenizer).tolist() == reference(texts, tokenizer)


def test_rank_bpe_counts_equal_the_tokenizers_on_long_unbroken_runs(tokenizer):
    texts = ["a" * 50_000, "7" * 20_000, " " * 30_000, "ab1!" * 10_000, "x<|endoftext|>" * 2_000]
    assert count_tokens(texts, tokenizer).tolist() == reference(texts, tokenizer)


def test_rank_bpe_counts_equal_the_tokenizers_on_every_corpus_paragraph(tokenizer, corpora):
    texts = [p for path in sorted(corpora.rglob("*.txt")) for p in path.read_text(encoding="utf-8").split("\n\n")]
    assert len(texts) > 10_000
    assert count_tokens(texts, tokenizer).tolist() == reference(texts, tokenizer)


def test_a_tokenizer_rank_bpe_cannot_mimic_is_counted_by_its_own_encoder(tokenizer):
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["pre_tokenizer"]["add_prefix_space"] = True  # a leading space tiktoken's split would not add
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    texts = ["Hello world.", "12 apples", "'s", ""]
    assert rank_bpe(other) is None
    assert count_tokens(texts, other).tolist() == reference(texts, other)
    assert count_tokens(texts, other).tolist() != count_tokens(texts, tokenizer).tolist()


def test_no_texts_give_no_counts(tokenizer):
    assert count_tokens([], tokenizer).tolist() == []
