"""The generation engine: token-budget batching, stop sequences, finish reasons, the
`truncated` gate, and batch-granular resume. Model tests use the real offline SmolLM2-135M.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from samples import ALICE
from corpusmill.tasks import augment, schema
from corpusmill.tasks.augment import generate_detailed, load_templates, quality_gate
from corpusmill.tasks.generation import Checkpoint, Generation, cut_at_stop, generate_all, plan_batches
from corpusmill.tasks.generation import hf
from corpusmill.tasks.generation.hf import (
    RowHistory,
    TransformersBackend,
    apply_controls,
    growing_layer_class,
    next_tokens,
    shared_prefixes,
    stop_token_ids,
    vocabulary_weight,
)
from corpusmill.tasks.models import load_causal_lm
from corpusmill.tasks.filters.tokens import TokenBounds
from corpusmill.tasks.recipe import Augment, ModelRef, QualityGates, load_recipe
from corpusmill.tasks.shards import read_table, write_table
from corpusmill.tasks.filters import StepContext
from corpusmill.tasks.filters.chain import apply_steps

SMOLLM2 = ModelRef(gguf="smollm2")
DEMO_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"

SENTENCES = [*ALICE, "Alice laughed."]


# --- batching --------------------------------------------------------------------------


def budget(max_new_tokens: int, batch_size: int, batch_tokens: int | None) -> Augment:
    return Augment(max_new_tokens=max_new_tokens, batch_size=batch_size, batch_tokens=batch_tokens)


def test_plan_batches_sorts_by_length_and_respects_the_token_budget():
    lengths = [10, 50, 30, 200, 40, 45, 12]
    plan = plan_batches(lengths, budget(50, 16, 300))
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    flat = [i for b in plan for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for batch in plan:
        width = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * (width + 50) <= 300
    assert plan[0] == [3]  # 200 + 50 tokens: alone
    # batch_size stays an upper bound on rows
    assert max(map(len, plan_batches(lengths, budget(1, 2, 10_000)))) == 2
    # no budget: fixed rows, still sorted
    assert plan_batches(lengths, budget(50, 3, None)) == [[3, 1, 5], [4, 2, 6], [0]]
    # a prompt over the budget on its own still gets a batch
    assert plan_batches([1000], budget(50, 8, 100)) == [[0]]
    assert plan_batches([], budget(50, 8, 100)) == []


def test_cut_at_stop_takes_the_earliest_sequence():
    assert cut_at_stop("Question: a\nAnswer: b\n\nQuestion: c", ["\n\n", "Question: c"]) == ("Question: a\nAnswer: b", True)
    assert cut_at_stop("no stop here", ["###"]) == ("no stop here", False)
    assert cut_at_stop("text", []) == ("text", False)


def test_truncated_gate():
    source = "The committee met on Tuesday to review the budget for the new library and the reading room."
    text = "On Tuesday the committee looked at the new library's budget, including"
    assert quality_gate(source, text, QualityGates()) is None  # no finish reason known: not judged
    assert quality_gate(source, text, QualityGates(), "stop") is None
    assert quality_gate(source, text, QualityGates(), "length") == "truncated"
    assert quality_gate(source, text, QualityGates(allow_truncated=True), "length") is None
    # content gates name the more specific cause first
    assert quality_gate(source, "and then the roof " * 20, QualityGates(), "length") == "repetition"


def test_recipe_keys_for_generation():
    a = Augment.model_validate({"batch_tokens": 2048, "stop": ["\n\n"], "gates": {"allow_truncated": True}})
    assert a.batch_tokens == 2048 and a.stop == ["\n\n"] and a.gates.allow_truncated
    assert Augment().gates.allow_truncated is False and Augment().batch_tokens == 8192
    assert Augment(batch_tokens=None).batch_tokens is None
    with pytest.raises(ValueError):
        Augment.model_validate({"batch_tokens": 0})


# --- the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    loaded = load_causal_lm(SMOLLM2, "auto")
    vocabulary_weight(loaded[0])  # the backend's one probe of the model, before any test counts forward passes
    return loaded


def test_finish_reasons_and_stop_sequences(model):
    [paraphrase] = load_templates(["paraphrase"])
    short = generate_detailed(SENTENCES[:2], paraphrase, Augment(max_new_tokens=4), 0)
    assert [g.finish_reason for g in short] == ["length", "length"]
    assert all(g.new_tokens == 4 for g in short)

    full = generate_detailed(SENTENCES[:2], paraphrase, Augment(max_new_tokens=120), 0)
    assert all(g.finish_reason == "stop" and 0 < g.new_tokens < 120 for g in full)

    # A stop sequence taken from the greedy output ends generation right before it.
    word = full[0].text.split()[3]
    stopped = generate_detailed(SENTENCES[:2], paraphrase, Augment(max_new_tokens=120, stop=[" " + word]), 0)
    assert stopped[0].finish_reason == "stop"
    assert stopped[0].text == full[0].text[: full[0].text.index(" " + word)].strip()
    assert stopped[0].new_tokens < full[0].new_tokens


# A module docstring from the demo's python-docs source.
DOM_DOCSTRING = """W3C Document Object Model implementation for Python.

The Python mapping of the Document Object Model is documented in the
Python Library Reference in the section on the xml.dom package.

This package contains the following modules:

minidom -- A simple implementation of the Level 1 DOM with namespace
           support added (based on the Level 2 specification) and other
           minor Level 2 functionality.

pulldom -- DOM builder supporting on-demand tree-building for selected
           subtrees of the document."""


def test_the_demos_stop_sequence_ends_a_qa_generation_after_its_first_answer(model):
    # Left to run on, the small model asks and answers more questions until it loops or hits
    # max_new_tokens, and the row is dropped; the demo's stop sequence keeps the first pair.
    settings = load_recipe(DEMO_RECIPE).augment
    [qa] = load_templates(["qa"])
    # Without it, up to the start of the second question (48 tokens, to keep the test short).
    [running_on] = generate_detailed([DOM_DOCSTRING], qa, settings.model_copy(update={"stop": [], "max_new_tokens": 48}), 0)
    [stopped] = generate_detailed([DOM_DOCSTRING], qa, settings, 0)
    assert "\n\nQuestion" in running_on.text
    assert stopped.finish_reason == "stop" and stopped.new_tokens < running_on.new_tokens
    assert stopped.text == running_on.text[: running_on.text.index("\n\nQuestion")].strip()
    assert stopped.text.startswith("Question:") and "\n\nAnswer:" in stopped.text
    assert quality_gate(DOM_DOCSTRING, stopped.text, settings.gates, stopped.finish_reason) is None


def test_rows_join_a_running_batch_and_leave_when_they_end(model):
    lm = model[0]
    [paraphrase] = load_templates(["paraphrase"])
    calls: list[tuple[int, int]] = []  # (rows, input width) of every forward pass

    def record(module, args, kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))

    handle = lm.base_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        progress: list[int] = []
        joined = generate_detailed(SENTENCES, paraphrase, Augment(max_new_tokens=120, batch_size=2, batch_tokens=None), 0,
                                   progress.append)
    finally:
        handle.remove()
    assert sum(progress) == 4 and all(g.finish_reason == "stop" for g in joined)

    # The template's prefix is read once; then each prefill reads only the rows' own tokens.
    prefix_rows, prefix_width = calls[0]
    lengths = [p.length for p in TransformersBackend(Augment()).prepare([paraphrase.messages(t) for t in SENTENCES])]
    assert prefix_rows == 1 and 8 <= prefix_width < min(lengths)
    prefill_widths = [width for _, width in calls[1:] if width > 1]
    assert prefill_widths and max(prefill_widths) == max(lengths) - prefix_width
    assert max(rows for rows, width in calls if width == 1) == 2  # batch_size bounds the rows in flight
    # A row joined while another was still generating: a one-row prefill, then a two-row step.
    assert any(calls[k][0] == 1 and calls[k][1] > 1 and calls[k + 1] == (2, 1) for k in range(1, len(calls) - 1))

    # Each row still sees exactly its own prompt: the same greedy text as generating it alone
    # (fp32 sums over other batch shapes may flip a late token on another CPU, so 3 of 4).
    alone = [generate_detailed([t], paraphrase, Augment(max_new_tokens=120, batch_size=1), 0)[0] for t in SENTENCES]
    assert sum(a.text == b.text for a, b in zip(joined, alone)) >= 3
    assert all(a.text.split()[:6] == b.text.split()[:6] for a, b in zip(joined, alone))


@pytest.mark.slow
def test_greedy_engine_equals_model_generate_row_by_row():
    """The engine (continuous batching, shared prefix, rows joining and leaving) writes what
    `model.generate` writes for each prompt alone: same chat template, greedy, same
    max_new_tokens. On the CPU in fp32, where the tests run, the padded batch does not
    change a token."""
    torch = pytest.importorskip("torch")
    lm, tokenizer, _ = load_causal_lm(SMOLLM2, "cpu")
    [paraphrase] = load_templates(["paraphrase"])
    # Prompts of different lengths, some ending within a few tokens, some running to the limit.
    texts = ["Alice laughed.", SENTENCES[0], SENTENCES[1], " ".join(SENTENCES[:3]), "The cat smiled."]
    settings = Augment(max_new_tokens=32, batch_size=3, batch_tokens=None, device="cpu")
    widths: list[int] = []  # input width of every forward pass: 1 for a decode step
    handle = lm.base_model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    try:
        engine = generate_detailed(texts, paraphrase, settings, 0)
    finally:
        handle.remove()
    first_step = widths.index(1)
    assert any(w > 1 for w in widths[first_step:]), "no row joined a running batch"

    eos = stop_token_ids(lm, tokenizer)
    for text, got in zip(texts, engine):
        inputs = tokenizer.apply_chat_template(paraphrase.messages(text), add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = lm.generate(**inputs, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        ended = next((i + 1 for i, token in enumerate(new) if token in eos), None)
        expected = Generation(tokenizer.decode(new[:ended], skip_special_tokens=True).strip(),
                              "stop" if ended else "length", ended or 32, got.seed)
        assert got == expected, text
    assert {g.finish_reason for g in engine} == {"stop", "length"}  # rows left at different steps


def test_the_first_rows_keep_to_the_token_budget(model):
    lm = model[0]
    [paraphrase] = load_templates(["paraphrase"])
    texts = [" ".join(SENTENCES * 3), " ".join(SENTENCES * 2), "Alice laughed.", "The cat smiled."]
    lengths = [p.length for p in TransformersBackend(Augment()).prepare([paraphrase.messages(t) for t in texts])]
    settings = Augment(max_new_tokens=1, batch_size=16, batch_tokens=2 * (max(lengths) + 1))  # two rows of the widest
    calls: list[tuple[int, int]] = []
    handle = lm.base_model.register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        generate_detailed(texts, paraphrase, settings, 0)
    finally:
        handle.remove()
    prefills = [rows for rows, width in calls if width > 1][1:]  # after the template prefix
    # The widest row came first; the short ones would fit beside the second but not beside it.
    assert prefills[0] == 2 and sum(prefills) == 4


def test_growing_layer_appends_in_place_and_matches_dynamic_layer():
    torch = pytest.importorskip("torch")
    from transformers.cache_utils import DynamicLayer

    grow, plain = growing_layer_class()(), DynamicLayer()
    first = torch.randn(2, 3, 5, 4)
    for layer in (grow, plain):
        layer.update(first, first + 1)
    buffer = grow.buffers[0].data_ptr()
    for _ in range(10):
        step = torch.randn(2, 3, 1, 4)
        for layer in (grow, plain):
            layer.update(step, step * 2)
    assert grow.buffers[0].data_ptr() == buffer  # each step wrote into the first buffer: no copy of the cache
    assert torch.equal(grow.keys, plain.keys) and torch.equal(grow.values, plain.values)
    # A row leaves (the tensors are replaced): the next update moves into a new buffer of one row.
    for layer in (grow, plain):
        layer.batch_select_indices(torch.tensor([1]))
        layer.update(first[:1, :, :1], first[:1, :, :1])
    assert grow.buffers[0].shape[0] == 1 and torch.equal(grow.keys, plain.keys) and torch.equal(grow.values, plain.values)


def test_the_engine_computes_logits_itself_only_where_the_model_does_the_same():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    plain = LlamaForCausalLM(config).eval()
    assert vocabulary_weight(plain) is plain.lm_head.weight
    biased = LlamaForCausalLM(config).eval()
    biased.lm_head = torch.nn.Linear(16, 64, bias=True)
    assert vocabulary_weight(biased) is None
    scaled = LlamaForCausalLM(config).eval()
    scaled.lm_head.register_forward_hook(lambda module, args, out: out * 2)  # a logit scale the product would miss
    assert vocabulary_weight(scaled) is None


def test_greedy_text_is_the_same_with_the_models_own_output_layer(model):
    [paraphrase] = load_templates(["paraphrase"])
    settings = Augment(max_new_tokens=48, batch_size=3)
    backend = TransformersBackend(settings)
    assert backend.vocabulary is not None
    messages = [paraphrase.messages(t) for t in SENTENCES]
    own = [g.text for g in generate_all(messages, settings, 0, stage_version="t", backend=backend)]
    backend.vocabulary = None  # the model's forward computes the logits
    assert own == [g.text for g in generate_all(messages, settings, 0, stage_version="t", backend=backend)]


def test_shared_prefixes_take_each_templates_whole_prefix():
    template_a, template_b = list(range(100, 120)), list(range(100, 110)) + list(range(300, 310))
    rows = [template_a + [1, 2, 3], template_a + [1, 2, 4], template_a + [7], template_b + [5, 6], template_b + [9],
            [1, 2, 3]]
    # a and b share 10 tokens: the shortest shared prefix of 8+ tokens covers both templates
    assert shared_prefixes(rows, min_length=8) == [10, 10, 10, 10, 10, 0]
    assert shared_prefixes(rows[:3], min_length=8) == [20, 20, 20]  # not 22: "1, 2" is text, not template
    assert shared_prefixes([template_a, template_a], min_length=8) == [19, 19]  # a row keeps a token of its own
    assert shared_prefixes([[1, 2, 3], [1, 2, 4]], min_length=8) == [0, 0]


def test_top_p_keeps_the_nucleus_and_seeds_make_draws_repeatable():
    torch = pytest.importorskip("torch")
    # Row 0: tokens 0 and 1 make the 0.5 nucleus (0.46 + 0.42), tokens 2 and 3 hold 0.12 of the
    # mass, so 200 draws without the cut would reach them with near certainty.
    logits = torch.tensor([[2.0, 1.9, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    draws = {tuple(next_tokens(logits, 1.0, 0.5, [torch.Generator().manual_seed(s)] * 2).tolist()) for s in range(200)}
    assert {d[0] for d in draws} == {0, 1}  # row 0: the nucleus only, both of it
    assert len({d[1] for d in draws}) > 1  # row 1: drawn, not always its argmax
    assert next_tokens(logits, 0.0, 1.0, None).tolist() == [0, 0]  # greedy: the argmax
    first = next_tokens(logits, 1.0, 1.0, [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)])
    again = next_tokens(logits, 1.0, 1.0, [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)])
    assert first.tolist() == again.tolist()


def test_truncated_generations_are_quarantined(model, tmp_path):
    shard, _, _ = apply_steps(
        pa.table({"id": [f"a{i}" for i in range(3)], "text": SENTENCES[:3], "source": ["alice"] * 3,
                  "license": ["public-domain"] * 3}, schema=schema.INGEST),
        [], StepContext(tokenizer_ref=SMOLLM2), "filter")
    in_path = write_table(shard, tmp_path / "in.parquet")
    settings = Augment(fraction=1.0, max_new_tokens=6, gates=QualityGates(min_chars=1, min_length_ratio=0.01))
    report = augment.run(in_path, tmp_path / "out.parquet", tmp_path / "q.parquet", settings, 1, SMOLLM2, [])
    assert report["dropped"] == {"truncated": 3} and report["rows_out"] == 0
    assert report["extra"]["finish_reasons"] == {"length": 3}
    assert set(read_table(tmp_path / "q.parquet").column("reason").to_pylist()) == {"truncated"}
    allowed = settings.model_copy(update={"gates": settings.gates.model_copy(update={"allow_truncated": True})})
    report = augment.run(in_path, tmp_path / "out.parquet", tmp_path / "q.parquet", allowed, 1, SMOLLM2, [])
    assert "truncated" not in report["dropped"]


# --- resume ----------------------------------------------------------------------------


def test_checkpoint_skips_a_torn_line_and_compacts_other_settings(tmp_path):
    path = tmp_path / "c.jsonl"
    old = Checkpoint(path, "old-settings")
    old.append([old.key("p1")], [Generation("stale", "stop", 3)])
    cp = Checkpoint(path, "new-settings")
    cp.append([cp.key("p1"), cp.key("p2")], [Generation("a", "stop", 1), Generation("b", "length", 2)])
    with path.open("a", encoding="utf-8") as f:
        f.write('{"key": "torn')  # a crash in the middle of a write
    again = Checkpoint(path, "new-settings")
    assert again.done == {cp.key("p1"): Generation("a", "stop", 1), cp.key("p2"): Generation("b", "length", 2)}
    assert again.stale == 1
    again.compact({cp.key("p1")})
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in lines] == ["a"]


class Crash(RuntimeError):
    pass


def test_a_failed_consumer_releases_the_generation_lock(model):
    from corpusmill.tasks.generation.hf import generate_lock

    [paraphrase] = load_templates(["paraphrase"])

    def fail(rows: int) -> None:
        raise Crash("the task failed while rows were still generating")

    # `kept` holds the traceback, and with it the engine's frames, as a failed task's state does.
    with pytest.raises(Crash) as kept:
        generate_detailed(SENTENCES[:3], paraphrase, Augment(max_new_tokens=4, batch_size=1), 0, fail)
    assert kept.value.__traceback__ is not None
    assert generate_lock.acquire(blocking=False), "a failed generation left the device lock held"
    generate_lock.release()


def test_a_crash_after_the_first_rows_resumes_with_the_same_text(model, tmp_path):
    shard, _, _ = apply_steps(
        pa.table({"id": [f"a{i}" for i in range(4)], "text": SENTENCES, "source": ["alice"] * 4,
                  "license": ["public-domain"] * 4}, schema=schema.INGEST),
        [TokenBounds(step="tokens", min=1)], StepContext(tokenizer_ref=SMOLLM2), "filter")
    in_path = write_table(shard, tmp_path / "in.parquet")
    # Sampling, so "the same text" means each row drew from the same seed, not just greedy.
    settings = Augment(fraction=1.0, max_new_tokens=12, batch_size=2, temperature=1.0, top_p=0.95,
                       gates=QualityGates(min_chars=1, min_length_ratio=0.01, allow_truncated=True))

    finished_before_crash = []

    def crash_after_first_rows(rows: int) -> None:
        finished_before_crash.append(rows)
        raise Crash("injected failure once the first rows have ended")

    out, q = tmp_path / "augment" / "part-00000.parquet", tmp_path / "q.parquet"
    with pytest.raises(Crash):
        augment.run(in_path, out, q, settings, 7, SMOLLM2, [TokenBounds(step="tokens", min=1)], crash_after_first_rows)
    checkpoint = tmp_path / "augment" / "checkpoints" / "part-00000.jsonl"
    [finished] = finished_before_crash
    assert 1 <= finished < 4
    assert len(checkpoint.read_text(encoding="utf-8").splitlines()) == finished  # the rows that ended, nothing more
    assert not out.exists()

    resumed = augment.run(in_path, out, q, settings, 7, SMOLLM2, [TokenBounds(step="tokens", min=1)])
    assert resumed["extra"]["reused"] == finished and resumed["rows_in"] == 4
    resumed_rows = read_table(out).to_pylist()

    fresh_out = tmp_path / "fresh" / "part-00000.parquet"
    fresh = augment.run(in_path, fresh_out, tmp_path / "fq.parquet", settings, 7, SMOLLM2, [TokenBounds(step="tokens", min=1)])
    assert fresh["extra"]["reused"] == 0
    assert read_table(fresh_out).to_pylist() == resumed_rows  # same text as a run that never crashed

    # Changing only a gate regenerates nothing.
    stricter = settings.model_copy(update={"gates": settings.gates.model_copy(update={"min_chars": 5})})
    again = augment.run(in_path, out, q, stricter, 7, SMOLLM2, [TokenBounds(step="tokens", min=1)])
    assert again["extra"]["reused"] == 4 and again["extra"]["new_tokens"] == 0


# --- decoding controls ---------------------------------------------------------------------

LOOPING = "List fifty fruits, separated by commas."  # greedy SmolLM2 answers "Apples, Apples, Apples, ..."


def test_controls_compute_what_transformers_logits_processors_compute():
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    logits = torch.randn(2, 20, generator=torch.Generator().manual_seed(0))
    prompts, outputs = [[1, 2, 3, 9], [4]], [[5, 6, 7, 5, 6], [8, 8]]
    histories = [RowHistory(p, 20, 3, "cpu") for p in prompts]
    for history, output in zip(histories, outputs):
        for end in range(1, len(output) + 1):
            history.add(output[:end])
    got = apply_controls(logits.clone(), histories, outputs, 1.3)
    for k, (prompt, output) in enumerate(zip(prompts, outputs)):
        # The penalty over the prompt and the output, the n-gram ban over the output alone.
        expected = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prompt + output]), logits[k : k + 1].clone())
        expected = NoRepeatNGramLogitsProcessor(3)(torch.tensor([output]), expected)
        assert torch.equal(got[k], expected[0])
    assert got[0, 7] == float("-inf") and torch.isfinite(got[1]).all()  # (5, 6) was followed by 7 before
    assert got[0, 9] == logits[0, 9] / 1.3 if logits[0, 9] > 0 else logits[0, 9] * 1.3  # seen in the prompt only


def produced_tokens(monkeypatch) -> list[list[int]]:
    """The token ids of every row the engine finishes from now on."""
    rows: list[list[int]] = []
    finished = hf.Decoding.finished

    def record(self, row, reason):
        rows.append(list(self.produced[row]))
        return finished(self, row, reason)

    monkeypatch.setattr(hf.Decoding, "finished", record)
    return rows


def repeated_share(tokens: list, n: int = 3) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams)


@pytest.mark.slow
def test_no_repeat_ngram_size_leaves_no_token_ngram_twice(model, monkeypatch):
    chat = [[{"role": "user", "content": LOOPING}], [{"role": "user", "content": f"Paraphrase: {SENTENCES[0]}"}]]
    rows = produced_tokens(monkeypatch)
    generate_all(chat, Augment(max_new_tokens=60), 0, stage_version="test")
    assert max(repeated_share(r) for r in rows) > 0.3  # the looping prompt loops without the control
    rows.clear()
    generate_all(chat, Augment(max_new_tokens=60, no_repeat_ngram_size=3), 0, stage_version="test")
    assert len(rows) == 2 and all(repeated_share(r) == 0 for r in rows)


@pytest.mark.slow
def test_repetition_penalty_breaks_a_loop_as_model_generate_does(model):
    torch = pytest.importorskip("torch")
    lm, tokenizer, _ = model
    chat = [{"role": "user", "content": LOOPING}]
    plain, penalized = (generate_all([chat], Augment(max_new_tokens=60, repetition_penalty=p), 0, stage_version="test")[0]
                        for p in (1.0, 1.3))
    # Fewer repeated word 3-grams, the share the `repetition` gate measures.
    assert repeated_share(penalized.text.lower().split()) < repeated_share(plain.text.lower().split())
    # The same greedy text as transformers' own repetition penalty on this prompt alone.
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = lm.generate(**inputs.to(lm.device), max_new_tokens=60, do_sample=False, repetition_penalty=1.3,
                          pad_token_id=tokenizer.eos_token_id)
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert penalized.text == tokenizer.decode(new, skip_special_tokens=True).strip()


# --- progress, style, language -------------------------------------------------------------


def test_throughput_line_reports_rate_and_eta():
    from corpusmill.tasks.generation import Throughput

    now = [100.0]
    meter = Throughput(clock=lambda: now[0])
    meter.start(40)
    assert "ETA ?" in meter.line()
    now[0] = 110.0
    meter.add(10, 250)
    assert meter.line() == "10/40 rows, 250 new tokens, 25.0 tokens/s, ETA 30 s"


def test_generate_bar_shows_tokens_per_second():
    from types import SimpleNamespace

    from corpusmill.flows import progress

    with progress.shown():
        progress.begin("generate", 10)
        progress.advance("generate", 0, tokens=120)  # a batch's tokens, before its rows end
        progress.advance("generate", 4, tokens=80)
        [task] = progress._progress.tasks
        assert task.completed == 4 and task.fields["tokens"] == 200
    progress.advance("generate", 1, tokens=5)  # no bars shown: a no-op, not an error
    column = progress.TokenRateColumn()
    assert column.render(SimpleNamespace(fields={"tokens": 200}, elapsed=4.0)).plain == "50.0 tok/s"
    assert column.render(SimpleNamespace(fields={}, elapsed=4.0)).plain == ""  # bars that count no tokens


def test_style_template_loads():
    [style] = load_templates(["style"])
    assert style.prompt_id.startswith("style@") and "fact" in style.system


def test_wrong_language_gate():
    source = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
              "to do: once or twice she had peeped into the book her sister was reading.")
    french = ("Alice commençait à se sentir très lasse de rester assise à côté de sa sœur sur le talus, "
              "sans rien faire, et elle avait jeté un coup d'œil sur le livre que lisait sa sœur.")
    english = ("Alice grew bored sitting next to her sister on the riverbank with nothing to do, and she glanced "
               "once or twice at the book her sister was reading.")
    assert quality_gate(source, french, QualityGates()) == "wrong_language"
    assert quality_gate(source, french, QualityGates(check_language=False)) is None
    assert quality_gate(source, english, QualityGates()) is None
    # a source that is not English by the check: nothing to compare against
    assert quality_gate(french, "Alice s'ennuyait au bord de l'eau à côté de sa sœur, sans rien faire du tout.",
                        QualityGates()) is None
