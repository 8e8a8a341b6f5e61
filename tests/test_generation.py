"""The generation engine: token-budget batching, stop sequences, finish reasons, the
`truncated` gate, and batch-granular resume. Model tests use the real offline SmolLM2-135M.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from samples import ALICE
from tasks import augment, schema
from tasks.augment import generate_detailed, load_templates, quality_gate
from tasks.generation import Checkpoint, Generation, cut_at_stop, plan_batches
from tasks.models import load_causal_lm, load_tokenizer
from tasks.recipe import Augment, Filters, ModelRef, QualityGates
from tasks.shards import read_table, write_table
from tasks.tokenize import filter_rows

SMOLLM2 = ModelRef(gguf="smollm2")

SENTENCES = [*ALICE, "Alice laughed."]


# --- batching --------------------------------------------------------------------------


def test_plan_batches_sorts_by_length_and_respects_the_token_budget():
    lengths = [10, 50, 30, 200, 40, 45, 12]
    plan = plan_batches(lengths, max_new_tokens=50, batch_size=16, batch_tokens=300)
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    flat = [i for b in plan for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for batch in plan:
        width = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * (width + 50) <= 300
    assert plan[0] == [3]  # 200 + 50 tokens: alone
    # batch_size stays an upper bound on rows
    assert max(map(len, plan_batches(lengths, 1, 2, 10_000))) == 2
    # no budget: fixed rows, still sorted
    assert plan_batches(lengths, 50, 3, None) == [[3, 1, 5], [4, 2, 6], [0]]
    # a prompt over the budget on its own still gets a batch
    assert plan_batches([1000], 50, 8, 100) == [[0]]
    assert plan_batches([], 50, 8, 100) == []


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
    assert Augment().gates.allow_truncated is False and Augment().batch_tokens == 4096
    assert Augment(batch_tokens=None).batch_tokens is None
    with pytest.raises(ValueError):
        Augment.model_validate({"batch_tokens": 0})


# --- the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(SMOLLM2, "auto")


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


def test_token_budget_batches_match_the_plan(model):
    [paraphrase] = load_templates(["paraphrase"])
    progress: list[int] = []
    usage: dict = {}
    # budget for two rows of the longest prompt: the two long prompts pair up, short ones too
    settings = Augment(max_new_tokens=8, batch_size=16, batch_tokens=2 * (90 + 8))
    outs = generate_detailed(SENTENCES, paraphrase, settings, 0, progress.append, usage)
    assert len(outs) == 4 and sum(progress) == 4 and len(progress) == usage["batches"] >= 2
    assert max(progress) <= 3


def test_truncated_generations_are_quarantined(model, tmp_path):
    shard, _, _ = filter_rows(
        pa.table({"id": [f"a{i}" for i in range(3)], "text": SENTENCES[:3], "source": ["alice"] * 3,
                  "license": ["public-domain"] * 3}, schema=schema.INGEST),
        load_tokenizer(SMOLLM2), Filters())
    in_path = write_table(shard, tmp_path / "in.parquet")
    settings = Augment(fraction=1.0, max_new_tokens=6, gates=QualityGates(min_chars=1, min_length_ratio=0.01))
    report = augment.run(in_path, tmp_path / "out.parquet", tmp_path / "q.parquet", settings, 1, SMOLLM2, Filters())
    assert report["dropped"] == {"truncated": 3} and report["rows_out"] == 0
    assert report["extra"]["finish_reasons"] == {"length": 3}
    assert set(read_table(tmp_path / "q.parquet").column("reason").to_pylist()) == {"truncated"}
    allowed = settings.model_copy(update={"gates": settings.gates.model_copy(update={"allow_truncated": True})})
    report = augment.run(in_path, tmp_path / "out.parquet", tmp_path / "q.parquet", allowed, 1, SMOLLM2, Filters())
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


def test_a_crash_after_the_first_batch_resumes_with_the_same_text(model, tmp_path):
    shard, _, _ = filter_rows(
        pa.table({"id": [f"a{i}" for i in range(4)], "text": SENTENCES, "source": ["alice"] * 4,
                  "license": ["public-domain"] * 4}, schema=schema.INGEST),
        load_tokenizer(SMOLLM2), Filters(min_tokens=1))
    in_path = write_table(shard, tmp_path / "in.parquet")
    # Sampling, so "the same text" means the same seeds for the same batches, not just greedy.
    settings = Augment(fraction=1.0, max_new_tokens=12, batch_size=2, temperature=1.0, top_p=0.95,
                       gates=QualityGates(min_chars=1, min_length_ratio=0.01, allow_truncated=True))

    def crash_after_first_batch(rows: int) -> None:
        raise Crash("injected failure after the first batch")

    out, q = tmp_path / "augment" / "part-00000.parquet", tmp_path / "q.parquet"
    with pytest.raises(Crash):
        augment.run(in_path, out, q, settings, 7, SMOLLM2, Filters(min_tokens=1), crash_after_first_batch)
    checkpoint = tmp_path / "augment" / "checkpoints" / "part-00000.jsonl"
    assert len(checkpoint.read_text(encoding="utf-8").splitlines()) == 2  # the finished batch, nothing more
    assert not out.exists()

    resumed = augment.run(in_path, out, q, settings, 7, SMOLLM2, Filters(min_tokens=1))
    assert resumed["extra"]["reused"] == 2 and resumed["rows_in"] == 4
    resumed_rows = read_table(out).to_pylist()

    fresh_out = tmp_path / "fresh" / "part-00000.parquet"
    fresh = augment.run(in_path, fresh_out, tmp_path / "fq.parquet", settings, 7, SMOLLM2, Filters(min_tokens=1))
    assert fresh["extra"]["reused"] == 0
    assert read_table(fresh_out).to_pylist() == resumed_rows  # same text as a run that never crashed

    # Changing only a gate regenerates nothing.
    stricter = settings.model_copy(update={"gates": settings.gates.model_copy(update={"min_chars": 5})})
    again = augment.run(in_path, out, q, stricter, 7, SMOLLM2, Filters(min_tokens=1))
    assert again["extra"]["reused"] == 4 and again["extra"]["new_tokens"] == 0


# --- progress, style, language -------------------------------------------------------------


def test_throughput_line_reports_rate_and_eta():
    from tasks.generation import Throughput

    now = [100.0]
    meter = Throughput(clock=lambda: now[0])
    meter.start(40)
    assert "ETA ?" in meter.line()
    now[0] = 110.0
    meter.add(10, 250)
    assert meter.line() == "10/40 rows, 250 new tokens, 25.0 tokens/s, ETA 30 s"


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
