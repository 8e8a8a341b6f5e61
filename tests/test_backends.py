"""Generation backends behind one interface: the OpenAI-compatible client against a real
HTTP server on 127.0.0.1 (canned completions, a 503 to exercise retries, timeouts), and the
import gate of the vLLM backend."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from corpusmill.tasks import augment, schema
from corpusmill.tasks.augment import generate_detailed, load_templates
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.generation import generator_identity, get_backend, settings_key
from corpusmill.tasks.generation.openai import EndpointUnavailable
from corpusmill.tasks.filters import StepContext
from corpusmill.tasks.filters.chain import apply_steps
from corpusmill.tasks.recipe import Augment, ModelRef, QualityGates
from corpusmill.tasks.shards import read_table, write_table

SOURCES = [
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do.",
    "The Rabbit actually took a watch out of its waistcoat-pocket, and looked at it, and then hurried on.",
    "Down, down, down. Would the fall never come to an end? I wonder how many miles I have fallen by this time?",
]


def canned_answer(user: str) -> str:
    """What the test server answers to a user message: its first eight words reversed; a
    message about a waistcoat is cut off ("length")."""
    return "In other words: " + " ".join(reversed(user.split()[:8])) + (" and then" if "waistcoat" in user else ".")


class Server:
    """A chat completions server: `fail` answers per request number (e.g. {0: 503}), `delay` seconds;
    `slow` seconds for prompts that contain `slow_word`, noting in `requests_when_slow_ended` how
    many requests had arrived by the time it answered."""

    def __init__(self, fail: dict[int, int] | None = None, always: int | None = None, delay: float = 0.0,
                 slow: float = 0.0, slow_word: str = "waistcoat"):
        self.requests: list[dict] = []
        self.requests_when_slow_ended: int | None = None
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                status = always or (fail or {}).get(n)
                if delay:
                    time.sleep(delay)
                if slow and slow_word in body["messages"][-1]["content"]:
                    time.sleep(slow)
                    with outer.lock:
                        outer.requests_when_slow_ended = len(outer.requests)
                if status:
                    payload, code = {"error": {"message": f"canned {status}"}}, status
                else:
                    user = body["messages"][-1]["content"]
                    long = "waistcoat" in user
                    text = canned_answer(user)
                    if "STOP" in body.get("stop", []):
                        text += " STOP ignored by this server"
                    payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                            "finish_reason": "length" if long else "stop"}],
                               "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())}}
                    code = 200
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def settings(endpoint: str, **kw) -> Augment:
    base = dict(backend="openai", endpoint=endpoint, model={"name": "canned-model"}, retry_backoff=0.01,
                max_new_tokens=40, batch_size=2, concurrency=2, request_timeout=5)
    return Augment.model_validate(base | kw)


def test_openai_backend_generates_in_order_with_a_retry(monkeypatch):
    monkeypatch.setenv("CORPUSMILL_TEST_KEY", "secret-123")
    [paraphrase] = load_templates(["paraphrase"])
    with Server(fail={0: 503}) as server:
        usage: dict = {}
        out = generate_detailed(SOURCES, paraphrase, settings(server.endpoint, api_key_env="CORPUSMILL_TEST_KEY",
                                                               stop=["STOP"]), 0, usage=usage)
    assert len(server.requests) == len(SOURCES) + 1  # one 503, retried
    # Each row's own answer, in input order; the stop sequence is enforced on our side too.
    assert [g.text for g in out] == [canned_answer(source) for source in SOURCES]
    assert [g.finish_reason for g in out] == ["stop", "length", "stop"]
    assert usage["new_tokens"] == sum(g.new_tokens for g in out) > 0
    body = server.requests[-1]
    assert body["model"] == "canned-model" and body["max_tokens"] == 40 and body["temperature"] == 0
    assert body["stop"] == ["STOP"] and body["messages"][0]["role"] == "system"
    assert all(h.get("Authorization") == "Bearer secret-123" for h in server.headers)


def test_openai_backend_keeps_every_slot_busy():
    [paraphrase] = load_templates(["paraphrase"])
    sources = [SOURCES[1]] + [f"Alice counted {n} white rabbits running past the old oak tree." for n in range(2, 8)]
    progress: list[int] = []
    with Server(slow=1.0) as server:
        out = generate_detailed(sources, paraphrase, settings(server.endpoint, concurrency=2, batch_size=2), 0,
                                progress.append)
    assert len(out) == len(sources) and all(g.text.startswith("In other words: ") for g in out)
    assert sum(progress) == len(sources)
    # While the first row's answer was slow, the other slot went on through every other row:
    # no batch waited for it.
    assert server.requests_when_slow_ended == len(sources)


def test_openai_backend_bounded_retries_and_clear_errors():
    [paraphrase] = load_templates(["paraphrase"])
    with Server(always=503) as server:
        started = time.monotonic()
        with pytest.raises(EndpointUnavailable, match="failed 3 times.*503"):
            generate_detailed(SOURCES[:1], paraphrase, settings(server.endpoint, max_retries=2), 0)
        assert len(server.requests) == 3 and time.monotonic() - started < 5
    with Server(always=401) as server:
        with pytest.raises(CorpusmillError, match="HTTP 401"):
            generate_detailed(SOURCES[:1], paraphrase, settings(server.endpoint), 0)
        assert len(server.requests) == 1  # not retried: a bad key stays bad
    with Server(delay=1.0) as server:
        started = time.monotonic()
        with pytest.raises(EndpointUnavailable, match="Timeout"):
            generate_detailed(SOURCES[:1], paraphrase, settings(server.endpoint, request_timeout=0.2, max_retries=1), 0)
        assert time.monotonic() - started < 4


def test_an_unavailable_endpoint_is_retried_by_the_flow():
    from corpusmill.flows.release import is_transient

    assert is_transient(EndpointUnavailable("http://127.0.0.1:1/v1 failed 5 times"))


def test_checkpoints_are_keyed_on_the_augment_stage_version(tmp_path, monkeypatch):
    [paraphrase] = load_templates(["paraphrase"])
    checkpoint = tmp_path / "part-00000.jsonl"
    with Server() as server:
        s = settings(server.endpoint)
        usage: dict = {}
        generate_detailed(SOURCES, paraphrase, s, 0, checkpoint_path=checkpoint, usage=usage)
        assert usage["reused"] == 0 and len(server.requests) == len(SOURCES)
        records = [json.loads(line) for line in checkpoint.read_text(encoding="utf-8").splitlines()]
        assert {r["settings"] for r in records} == {settings_key(s, generator_identity(s), 0, augment.STAGE.version)}

        generate_detailed(SOURCES, paraphrase, s, 0, checkpoint_path=checkpoint, usage=usage)
        assert usage["reused"] == len(SOURCES) and len(server.requests) == len(SOURCES)  # the same version: reused

        # A new version of the stage (its code changed what it generates) regenerates every row.
        monkeypatch.setattr(augment, "STAGE", dataclasses.replace(augment.STAGE, version=augment.STAGE.version + "-next"))
        generate_detailed(SOURCES, paraphrase, s, 0, checkpoint_path=checkpoint, usage=usage)
        assert usage["reused"] == 0 and len(server.requests) == 2 * len(SOURCES)


def test_openai_backend_in_the_stage(tmp_path):
    shard, _, _ = apply_steps(pa.table({"id": ["a", "b", "c"], "text": SOURCES, "source": ["alice"] * 3,
                                        "license": ["public-domain"] * 3}, schema=schema.INGEST), [],
                              StepContext(tokenizer_ref=ModelRef(gguf="smollm2")), "filter")
    in_path = write_table(shard, tmp_path / "in.parquet")
    with Server() as server:
        s = settings(server.endpoint, fraction=1.0, repetition_penalty=1.15,
                     gates=QualityGates(min_chars=5, min_length_ratio=0.05))
        report = augment.run(in_path, tmp_path / "out.parquet", tmp_path / "q.parquet", s, 1, ModelRef(gguf="smollm2"),
                             [])
    assert report["rows_in"] == 3 and report["dropped"] == {"truncated": 1} and report["rows_out"] == 2
    rows = read_table(tmp_path / "out.parquet").to_pylist()
    assert {r["generator"] for r in rows} == {f"openai:canned-model@{server.endpoint}"}
    # Each row records the decoding settings it was generated with.
    assert all(r["sampling"]["repetition_penalty"] == 1.15 and r["sampling"]["no_repeat_ngram_size"] == 0 for r in rows)


def test_openai_settings_are_checked_in_the_recipe():
    with pytest.raises(ValueError, match="endpoint"):
        Augment.model_validate({"backend": "openai", "model": {"name": "m"}})
    with pytest.raises(ValueError, match="endpoint"):
        Augment.model_validate({"backend": "openai", "endpoint": "http://127.0.0.1:1/v1"})  # default model is a gguf


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_says_how_to_install():
    with pytest.raises(CorpusmillError, match="pip install vllm on a CUDA machine"):
        get_backend(Augment(backend="vllm"))


def test_openai_backend_sends_the_repetition_penalty_only_when_set():
    [paraphrase] = load_templates(["paraphrase"])
    with Server() as server:
        generate_detailed(SOURCES[:1], paraphrase, settings(server.endpoint), 0)
        generate_detailed(SOURCES[:1], paraphrase, settings(server.endpoint, repetition_penalty=1.2), 0)
    off, on = server.requests
    assert "repetition_penalty" not in off and on["repetition_penalty"] == 1.2


def test_backends_without_an_ngram_ban_refuse_it():
    with pytest.raises(CorpusmillError, match="no_repeat_ngram_size is not part of the chat completions API"):
        get_backend(settings("http://127.0.0.1:1/v1", no_repeat_ngram_size=3))
    # Refused before vLLM is imported, so the recipe's mistake is named even without vLLM.
    with pytest.raises(CorpusmillError, match="no_repeat_ngram_size is not available with backend vllm"):
        get_backend(Augment(backend="vllm", no_repeat_ngram_size=3))


def test_decoding_controls_are_part_of_the_checkpoint_key():
    base = Augment()
    keys = {settings_key(s, "g", 0, "1") for s in (base, base.model_copy(update={"repetition_penalty": 1.2}),
                                                   base.model_copy(update={"no_repeat_ngram_size": 4}))}
    assert len(keys) == 3
