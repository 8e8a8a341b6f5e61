"""The stage shape: cache keys derived from a stage's declaration, and which failures are retried."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from corpusmill.flows.release import RETRIES, stage_task
from corpusmill.tasks.errors import CorpusmillError, is_transient
from corpusmill.tasks.recipe import Dedup
from corpusmill.tasks.stage import Stage


def copy_lines(in_path: Path, out_path: Path, settings: Dedup, on_progress=None) -> dict:
    text = Path(in_path).read_text()
    Path(out_path).write_text(text)
    return {"lines": text.count("\n")}


def test_cache_key_follows_input_content_not_its_path(tmp_path):
    stage = Stage("copy", "1", copy_lines, inputs=("in_path",))
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one\ntwo\n")
    b.write_text("one\ntwo\n")
    params = dict(in_path=a, out_path=tmp_path / "out.txt", settings=Dedup())
    key = stage.cache_key(params)
    assert stage.cache_key({**params, "in_path": b}) == key
    b.write_text("one\nthree\n")
    assert stage.cache_key({**params, "in_path": b}) != key


def test_cache_key_changes_with_settings_version_and_identity_but_not_callbacks(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    params = dict(in_path=tmp_path / "a.txt", out_path=tmp_path / "out.txt", settings=Dedup())
    weights = {"sha": "1"}
    stage = Stage("copy", "1", copy_lines, inputs=("in_path",), identity=lambda **_: dict(weights))
    key = stage.cache_key(params)
    assert stage.cache_key({**params, "on_progress": lambda n: None}) == key
    assert stage.cache_key({**params, "settings": Dedup(threshold=0.9)}) != key
    assert Stage("copy", "2", copy_lines, inputs=("in_path",), identity=stage.identity).cache_key(params) != key
    weights["sha"] = "2"  # the same parameters, other weights behind them
    assert stage.cache_key(params) != key


@pytest.mark.parametrize("error, transient", [
    (ConnectionResetError("peer reset"), True),
    (TimeoutError("read timed out"), True),
    (OSError(errno.EIO, "Internal Error from the object store"), True),
    (FileNotFoundError("gone.jsonl"), False),
    (PermissionError("read-only"), False),
    (CorpusmillError("bad recipe"), False),
    (type("MissingFile", (CorpusmillError, FileNotFoundError), {})("no such source"), False),
    (TypeError("a bug"), False),
    (ValueError("a bug"), False),
])
def test_only_transient_io_errors_are_retried(error, transient):
    assert is_transient(error) is transient


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=60):
        yield


def flaky(calls: list, error: BaseException, fail_times: int):
    def run(in_path: Path, out_path: Path, settings: Dedup) -> dict:
        calls.append(in_path)
        if len(calls) <= fail_times:
            raise error
        return {"ok": True}

    return Stage("flaky", "1", run)


@pytest.mark.parametrize("error, fail_times, attempts, succeeds", [
    (ConnectionResetError("the object store dropped the connection"), 2, 3, True),
    (CorpusmillError("column 'text' is missing from in.parquet; set text_column"), 1, 1, False),
    (TypeError("unsupported operand"), 1, 1, False),
])
def test_stage_tasks_retry_transient_errors_only(prefect_server, tmp_path, error, fail_times, attempts, succeeds):
    calls: list = []
    flaky_task = stage_task(flaky(calls, error, fail_times)).with_options(retry_delay_seconds=0)

    @flow
    def one_stage():
        return flaky_task(tmp_path / "in", tmp_path / "out", Dedup())

    if succeeds:
        assert one_stage() == {"ok": True}
    else:
        with pytest.raises(type(error), match=str(error)):
            one_stage()
    assert len(calls) == attempts <= RETRIES + 1


def test_a_stage_whose_output_was_deleted_runs_again_and_others_stay_cached(prefect_server, tmp_path):
    """Someone frees disk in the work folder: the next run must redo that work, not hand on missing files."""
    from corpusmill.flows.release import submit

    calls: list = []

    def counted_copy(in_path: Path, out_path: Path, settings: Dedup) -> dict:
        calls.append(Path(out_path).name)
        return copy_lines(in_path, out_path, settings)

    copy = stage_task(Stage("copy", "1", counted_copy, inputs=("in_path",)))
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    outputs = [tmp_path / "first.txt", tmp_path / "second.txt"]

    @flow
    def copies() -> list[dict]:
        cached = dict(result_storage=tmp_path / ".results")
        return [submit(copy, cached, tmp_path / "in.txt", out, Dedup()).result() for out in outputs]

    copies()
    assert calls == ["first.txt", "second.txt"]
    outputs[0].unlink()
    assert copies() == [{"lines": 2}, {"lines": 2}]
    assert calls == ["first.txt", "second.txt", "first.txt"] and outputs[0].read_text() == "one\ntwo\n"
    copies()
    assert len(calls) == 3  # the refreshed entry is cached again


WORDS = "river stone market window garden letter summer harbour lantern violin engine meadow".split()


def tiny_recipe(tmp_path: Path) -> Path:
    """Paragraphs of 5 to 60 words, so token bounds and dedup thresholds change what is kept."""
    paragraphs = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(5 + 5 * (i % 12))) + f" number {i}."
                  for i in range(60)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(paragraphs) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""name: tiny
version: 1.0.0
sources:
  - {{kind: files, path: {tmp_path / 'corpus.txt'}, format: text, split_by: paragraph, license: CC0-1.0}}
tokenizer: {{gguf: smollm2}}
filters: [{{step: tokens, min: 8}}]
output: {{root: {tmp_path / 'releases'}}}
""")
    return recipe


@pytest.mark.slow
@pytest.mark.parametrize("key, values", [("filters.0.min", [8, 30, 8]), ("dedup.threshold", [0.8, 0.95, 0.8])])
def test_settings_changed_back_and_forth_in_one_work_dir_reuse_nothing_stale(prefect_server, tmp_path, key, values):
    """A cached result must never name a file that a run with other settings has since rewritten."""
    from corpusmill.flows.release import release
    from corpusmill.tasks.publish import read_manifest
    from corpusmill.tasks.verify import verify

    recipe, work = tiny_recipe(tmp_path), tmp_path / "work"
    fingerprints = []
    for n, value in enumerate(values):
        target = release(str(recipe), [f"{key}={value}", f"version=1.0.{n}"], str(work))
        assert verify(target) == []
        fingerprints.append(read_manifest(target)["fingerprint"])
    fresh = release(str(recipe), [f"{key}={values[0]}", "version=2.0.0"], str(tmp_path / "fresh-work"))
    assert fingerprints[2] == fingerprints[0] == read_manifest(fresh)["fingerprint"]
    if key == "filters.0.min":
        assert fingerprints[1] != fingerprints[0]  # the setting mattered, so the third run had stale files to meet
