"""The augment stage: templates, row selection, quality gates, generation and provenance.

Generation tests use the real offline SmolLM2-135M model, loaded once for the module, with
short outputs so the file stays within a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import random
import re
import shutil

import pyarrow as pa
import pytest

from samples import ALICE
from corpusmill.tasks import augment, schema
from corpusmill.tasks.augment import (
    PromptTemplate,
    TemplateError,
    assign_templates,
    generate_detailed,
    load_templates,
    quality_gate,
    select_rows,
)
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.generation import chat_prompts, row_seed
from corpusmill.tasks.models import load_causal_lm, load_tokenizer, resolve
from corpusmill.tasks.recipe import Augment, ModelRef, QualityGates
from corpusmill.tasks.shards import read_table, write_table
from corpusmill.tasks.filters import StepContext
from corpusmill.tasks.filters.chain import apply_steps

SMOLLM2 = ModelRef(gguf="smollm2")
GATES = QualityGates()


def generate(*args, **kwargs) -> list[str]:
    """The generated texts alone."""
    return [g.text for g in generate_detailed(*args, **kwargs)]

SENTENCES = ALICE


# --- templates -------------------------------------------------------------------------


def test_packaged_templates_load_with_stable_prompt_ids():
    first = load_templates(["paraphrase", "qa", "summary"])
    again = load_templates(["summary", "paraphrase"])
    assert [t.id for t in first] == ["paraphrase", "qa", "summary"]
    for t in first:
        assert isinstance(t, PromptTemplate)
        assert re.fullmatch(rf"{t.id}@[0-9a-f]{{12}}", t.prompt_id)
        assert "{text}" in t.user and t.system
    assert {t.id: t.prompt_id for t in again} == {t.id: t.prompt_id for t in first if t.id != "qa"}
    assert len({t.prompt_id for t in first}) == 3


def test_prompt_id_follows_content_not_layout(tmp_path):
    shutil.copy(augment.PROMPTS_DIR / "paraphrase.yaml", tmp_path / "paraphrase.yaml")
    [packaged] = load_templates(["paraphrase"])
    [copied] = load_templates(["paraphrase"], tmp_path)
    assert copied == packaged

    path = tmp_path / "paraphrase.yaml"
    path.write_text("# a comment changes nothing\n\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_templates(["paraphrase"], tmp_path)[0].prompt_id == packaged.prompt_id

    path.write_text(path.read_text(encoding="utf-8").replace("in different words", "in other words"), encoding="utf-8")
    [reworded] = load_templates(["paraphrase"], tmp_path)
    assert reworded.prompt_id != packaged.prompt_id
    assert reworded.prompt_id.startswith("paraphrase@")


def test_template_messages_insert_text_verbatim():
    [qa] = load_templates(["qa"])
    text = "A dict literal looks like {'a': 1} and {text} stays as written."
    messages = qa.messages(text)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert text in messages[1]["content"]


def test_unknown_or_invalid_template_is_a_users_error(tmp_path):
    # A CorpusmillError: the CLI prints it as the reason and the flow does not retry it.
    assert issubclass(TemplateError, CorpusmillError)
    with pytest.raises(TemplateError, match=r"unknown prompt template 'poem'.*paraphrase, qa, style, summary"):
        load_templates(["paraphrase", "poem"])
    with pytest.raises(TemplateError, match="twice"):
        load_templates(["qa", "qa"])
    (tmp_path / "broken.yaml").write_text("id: broken\ndescription: no slot\nuser: Rewrite this.\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"broken.yaml is invalid.*\{text\}"):
        load_templates(["broken"], tmp_path)
    (tmp_path / "renamed.yaml").write_text("id: other\ndescription: d\nuser: '{text}'\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="set its id to the file name, 'renamed'"):
        load_templates(["renamed"], tmp_path)


# --- selection -------------------------------------------------------------------------


def test_select_rows_is_deterministic_and_near_the_fraction():
    ids = [f"doc-{i}" for i in range(10_000)]
    n_tokens = [100] * len(ids)
    picked = select_rows(ids, 0.1, 7, n_tokens, 512)
    assert picked == select_rows(ids, 0.1, 7, n_tokens, 512)
    assert 900 <= len(picked) <= 1100  # binomial(10k, 0.1): sd 30
    assert select_rows(ids, 0.1, 8, n_tokens, 512) != picked  # the seed matters
    assert select_rows(ids, 0.0, 7, n_tokens, 512) == []
    assert len(select_rows(ids, 1.0, 7, n_tokens, 512)) == len(ids)


def test_select_rows_ignores_order_and_shard_boundaries():
    ids = [f"doc-{i}" for i in range(10_000)]
    n_tokens = [(i * 37) % 700 for i in range(len(ids))]
    whole = {ids[i] for i in select_rows(ids, 0.2, 3, n_tokens, 512)}

    shuffled = list(zip(ids, n_tokens))
    random.Random(0).shuffle(shuffled)
    s_ids, s_tokens = zip(*shuffled)
    assert {s_ids[i] for i in select_rows(s_ids, 0.2, 3, s_tokens, 512)} == whole

    sharded = set()
    for start in range(0, len(ids), 3_333):
        part_ids, part_tokens = ids[start : start + 3_333], n_tokens[start : start + 3_333]
        sharded |= {part_ids[i] for i in select_rows(part_ids, 0.2, 3, part_tokens, 512)}
    assert sharded == whole
    assert all(n_tokens[int(i.split("-")[1])] <= 512 for i in whole)


def test_templates_split_rows_deterministically():
    paraphrase, qa, summary = load_templates(["paraphrase", "qa", "summary"])
    ids = [f"doc-{i}" for i in range(4_000)]
    two = assign_templates(ids, [paraphrase, qa], 5)
    assert two == assign_templates(ids, [qa, paraphrase], 5)  # the recipe's list order does not matter
    assert 1_850 <= sum(t is paraphrase for t in two) <= 2_150
    # Adding a template moves rows only to the new template.
    three = assign_templates(ids, [paraphrase, qa, summary], 5)
    assert all(new is old or new is summary for old, new in zip(two, three))
    assert 1_200 <= sum(t is summary for t in three) <= 1_470


# --- quality gates ---------------------------------------------------------------------

SOURCE = (
    "The committee met on Tuesday to review the budget for the new library, and after a long debate "
    "it agreed to fund the children's reading room but postponed the decision on the roof repairs."
)


@pytest.mark.parametrize(
    ("generated", "reason"),
    [
        ("   \n ", "empty"),
        ("I'm sorry, but I can't help with rewriting this text about a committee.", "refusal"),
        ("As an AI language model, I would say the committee agreed to fund a reading room.", "refusal"),
        (SOURCE.upper() + "  ", "copy_of_source"),
        ("the budget was fine " * 12, "repetition"),
        ("Budget approved.", "too_short"),  # under min_chars
        ("The committee funded a room.", "too_short"),  # length ratio under 0.2
        (
            "On Tuesday the library committee went over the budget for the new building. After much discussion, "
            "members chose to pay for a reading room for children, yet they delayed any ruling on fixing the roof "
            "until a later meeting, when more estimates from local builders would be ready for everyone to compare. "
            "Several members spoke about costs, others about schedules, one about the weather, and the chair closed "
            "by thanking the volunteers who keep the shelves in order and the lights on every evening of the week. "
            "Later still the treasurer wrote a long letter to the town explaining each of these choices in turn, "
            "with tables of figures, a note on grants from the county, and an apology for the delay with the roof. "
            "The letter was printed in the weekly paper, where readers argued about it for the rest of the month.",
            "too_long",
        ),
    ],
)
def test_quality_gate_reasons(generated, reason):
    assert quality_gate(SOURCE, generated, GATES) == reason


def test_quality_gate_passes_a_real_paraphrase():
    paraphrase = (
        "On Tuesday the library committee went over the new building's budget. After much discussion, "
        "members chose to pay for a reading room for children, yet they delayed any ruling on fixing the roof."
    )
    assert quality_gate(SOURCE, paraphrase, GATES) is None


def test_quality_gate_edge_rules():
    # A phrase the source itself contains is not a refusal.
    source = "'I cannot explain myself, I'm afraid, sir,' said Alice, 'because I'm not myself, you see.'"
    carried_over = "I cannot explain myself, said Alice, for I am changed."
    assert quality_gate(source, carried_over, GATES) is None
    assert quality_gate(SOURCE, carried_over, GATES) == "refusal"
    # Texts too short for 5-grams are compared word by word.
    assert quality_gate("Rain fell today.", "rain fell today", QualityGates(min_chars=1)) == "copy_of_source"
    # Most specific reason wins: a short refusal is a refusal, a long loop is repetition.
    assert quality_gate(SOURCE, "I am unable to.", GATES) == "refusal"
    assert quality_gate(SOURCE, "and then the roof " * 200, GATES) == "repetition"


def test_synthetic_id_is_stable_and_depends_on_every_part():
    a = augment.synthetic_id("p1", "paraphrase@abc", "m@sha256:1")
    assert re.fullmatch(r"[0-9a-f]{24}", a)
    assert a == augment.synthetic_id("p1", "paraphrase@abc", "m@sha256:1")
    others = [("p2", "paraphrase@abc", "m@sha256:1"), ("p1", "qa@abc", "m@sha256:1"), ("p1", "paraphrase@abc", "m@sha256:2")]
    assert len({a} | {augment.synthetic_id(*parts) for parts in others}) == 4


# --- generation with the real model ----------------------------------------------------


@pytest.fixture(scope="module")
def model():
    """SmolLM2 loaded once for the module; `generate` finds it in models' cache (device 'auto')."""
    return load_causal_lm(SMOLLM2, "auto")


def test_greedy_generation_is_deterministic(model):
    [paraphrase] = load_templates(["paraphrase"])
    settings = Augment(max_new_tokens=16, batch_size=2)
    first = generate(SENTENCES[:2], paraphrase, settings, seed=1)
    assert first == generate(SENTENCES[:2], paraphrase, settings, seed=2)  # greedy ignores the seed
    assert all(isinstance(t, str) and t and t == t.strip() for t in first)


def test_sampling_is_reproducible_from_the_seed(model):
    [paraphrase] = load_templates(["paraphrase"])
    settings = Augment(max_new_tokens=16, batch_size=2, temperature=1.0, top_p=0.95)
    first = generate(SENTENCES[:2], paraphrase, settings, seed=11)
    assert first == generate(SENTENCES[:2], paraphrase, settings, seed=11)
    assert first != generate(SENTENCES[:2], paraphrase, settings, seed=12)
    # Each row samples from its own seed: alone, or beside other rows, it draws the same text.
    alone = generate_detailed(SENTENCES[1:2], paraphrase, settings.model_copy(update={"batch_size": 1}), seed=11)
    assert alone[0].text == first[1]
    beside = generate_detailed(SENTENCES[:3], paraphrase, settings.model_copy(update={"batch_size": 3}), seed=11)
    assert [g.text for g in beside[:2]] == first and beside[1].seed == alone[0].seed


def test_generate_returns_outputs_in_input_order(model):
    [paraphrase] = load_templates(["paraphrase"])
    texts = [SENTENCES[0], SENTENCES[1] + " " + SENTENCES[2], "Alice laughed."]  # middle, longest, shortest
    progress: list[int] = []
    usage: dict = {}
    batched = generate(texts, paraphrase, Augment(max_new_tokens=24, batch_size=3), 0, progress.append, usage)
    assert sum(progress) == 3 and 0 < usage["new_tokens"] <= 3 * 24  # rows as they end: increments, not a total
    alone = []
    for text in texts:
        alone += generate([text], paraphrase, Augment(max_new_tokens=24, batch_size=1), 0)

    # Left padding changes the fp32 arithmetic of the shorter prompts, so a greedy continuation
    # may flip a late token on another CPU (on this one they were identical). Order is checked
    # by a property that survives that: each batched output is nearest to its own prompt's
    # unpadded output.
    def overlap(a: str, b: str) -> float:
        wa, wb = set(a.lower().split()), set(b.lower().split())
        return len(wa & wb) / max(len(wa | wb), 1)

    for i, out in enumerate(batched):
        assert max(range(len(alone)), key=lambda j: overlap(out, alone[j])) == i


def test_run_writes_synthetic_rows_with_provenance(model, tmp_path):
    tokenizer = load_tokenizer(SMOLLM2)
    originals = pa.table(
        {
            "id": [f"alice-{i}" for i in range(len(SENTENCES))] + ["alice-long"],
            "text": SENTENCES + [" ".join(SENTENCES * 4)],
            "source": ["alice"] * (len(SENTENCES) + 1),
            "license": ["public-domain"] * (len(SENTENCES) + 1),
        },
        schema=schema.INGEST,
    )
    shard, _, _ = apply_steps(originals, [], StepContext(tokenizer_ref=SMOLLM2), "filter")
    in_path = write_table(shard, tmp_path / "tokenized" / "part-00000.parquet")

    settings = Augment(
        templates=["paraphrase", "qa"],
        fraction=1.0,
        max_source_tokens=100,  # the long row is not augmented
        max_new_tokens=24,
        batch_size=2,
        gates=QualityGates(min_chars=5, min_length_ratio=0.05),
    )
    out_path, quarantine = tmp_path / "augment" / "part-00000.parquet", tmp_path / "q" / "part-00000.parquet"
    progress: list[int] = []
    report = augment.run(in_path, out_path, quarantine, settings, 1234, SMOLLM2, [], progress.append)

    assert report["stage"] == "augment"
    assert report["extra"]["selected"] == report["rows_in"] == len(SENTENCES)
    assert report["rows_in"] == report["rows_out"] + sum(report["dropped"].values())
    assert sum(progress) == len(SENTENCES)  # rows reported as they end
    assert report["extra"]["new_tokens"] > 0 and report["extra"]["seconds"] > 0
    by_prompt_id = {t.prompt_id: t for t in load_templates(["paraphrase", "qa"])}
    templates = set(by_prompt_id)
    assert set(report["extra"]["prompt_ids"]) <= templates
    assert sum(c["generated"] for c in report["extra"]["prompt_ids"].values()) == report["rows_in"]

    out = read_table(out_path)
    assert out.schema == schema.TOKENIZED
    assert out.num_rows == report["rows_out"] >= 1
    generator = resolve(SMOLLM2).identity
    assert "@sha256:" in generator
    parents = {r["id"]: r for r in shard.to_pylist()}
    for row in out.to_pylist():
        parent = parents[row["parent_id"]]
        assert row["synthetic"] is True and row["parent_id"] != "alice-long"
        assert row["generator"] == generator
        assert row["prompt_id"] in templates
        # The seed recorded is the row's own: from the run's seed and its rendered prompt.
        [prompt] = chat_prompts(tokenizer, [by_prompt_id[row["prompt_id"]].messages(parent["text"])])
        assert row["sampling"] == {"backend": "transformers", "temperature": 0.0, "top_p": 1.0,
                                   "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "max_new_tokens": 24,
                                   "stop": [], "seed": row_seed(1234, prompt.key)}
        assert row["license"] == parent["license"] and row["source"] == parent["source"]
        assert row["id"] == augment.synthetic_id(row["parent_id"], row["prompt_id"], generator)
        assert row["n_tokens"] == len(tokenizer(row["text"], add_special_tokens=False)["input_ids"])
        assert row["text"] and row["text"] != parent["text"]

    # Gates that nothing can pass: every candidate goes to the quarantine with its reason.
    strict = settings.model_copy(update={"gates": QualityGates(min_chars=10_000)})
    report = augment.run(in_path, out_path, quarantine, strict, 1234, SMOLLM2, [])
    assert report["rows_out"] == 0 and sum(report["dropped"].values()) == len(SENTENCES)
    assert read_table(out_path).schema == schema.TOKENIZED and read_table(out_path).num_rows == 0
    dropped = read_table(quarantine)
    assert dropped.schema == schema.DROPPED
    assert set(dropped.column("stage").to_pylist()) == {"augment"}
    assert all("parent_id=alice-" in d for d in dropped.column("detail").to_pylist())
    assert all(t for t in dropped.column("text").to_pylist())


def test_run_with_nothing_selected_writes_an_empty_shard_and_no_quarantine(tmp_path):
    shard, _, _ = apply_steps(
        pa.table({"id": ["a"], "text": [SENTENCES[0]], "source": ["alice"], "license": ["public-domain"]}, schema=schema.INGEST),
        [], StepContext(tokenizer_ref=SMOLLM2), "filter",
    )
    in_path = write_table(shard, tmp_path / "in.parquet")
    (tmp_path / "q.parquet").write_bytes(b"left by an earlier run")
    report = augment.run(in_path, tmp_path / "out.parquet", tmp_path / "q.parquet", Augment(fraction=0.0), 1, SMOLLM2, [])
    assert (report["rows_in"], report["rows_out"], report["dropped"]) == (0, 0, {})
    assert read_table(tmp_path / "out.parquet").schema == schema.TOKENIZED
    assert not (tmp_path / "q.parquet").exists()


@pytest.mark.gpu
def test_generation_uses_bf16_on_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible")
    lm, _, device = load_causal_lm(SMOLLM2, "auto")
    assert device == "cuda"
    assert next(lm.parameters()).device.type == "cuda"
    if torch.cuda.is_bf16_supported():
        assert lm.dtype == torch.bfloat16
    [paraphrase] = load_templates(["paraphrase"])
    settings = Augment(max_new_tokens=16, batch_size=2)
    outputs = generate(SENTENCES[:2], paraphrase, settings, 0)
    assert len(outputs) == 2 and all(outputs)
    assert outputs == generate(SENTENCES[:2], paraphrase, settings, 0)


def test_truncated_copy_of_the_source_is_rejected():
    source = ("The committee met on Tuesday to review the budget for the new library, and after a long "
              "discussion about the roof, the windows and the heating they agreed to postpone the vote until spring.")
    truncated = "The committee met on Tuesday to review the budget for the new library, and after a long discussion"
    assert quality_gate(source, truncated, QualityGates(min_length_ratio=0.1)) == "copy_of_source"
