"""The OpenAI-compatible backend: any chat completions endpoint (OpenAI, vLLM's server,
llama.cpp's server, TGI, ...).

Rows are sent `augment.concurrency` at a time, and a finished request is followed at once
by the next row's, so a slow answer holds up only its own slot, never a batch of others.
A request is retried on connection errors, timeouts, 429 and 5xx, at most
`augment.max_retries` times with exponential backoff; every request has a timeout
(`augment.request_timeout`), so every row is bounded in time. Other 4xx answers are errors
in the recipe or the key: they stop the stage at once with the server's message.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterator, Sequence

from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.generation import Generation, Messages, Prepared, cut_at_stop

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointUnavailable(ConnectionError):
    """Retries exhausted: not a recipe error but a transient one (a `ConnectionError`), so
    the flow's own task retries try again later."""


class OpenAIBackend:
    name = "openai"

    def __init__(self, settings, sleep=time.sleep):
        import httpx

        if not settings.endpoint:
            raise CorpusmillError("augment.backend 'openai' needs augment.endpoint, e.g. http://127.0.0.1:8000/v1")
        if not settings.model.name:
            raise CorpusmillError("augment.backend 'openai' needs augment.model.name: the model id the endpoint serves")
        if settings.no_repeat_ngram_size:
            raise CorpusmillError("augment.no_repeat_ngram_size is not part of the chat completions API; set it to 0 "
                                  "with backend openai (repetition_penalty is sent to servers that take it)")
        self.settings = settings
        self.url = settings.endpoint.rstrip("/") + "/chat/completions"
        self.sleep = sleep
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(headers=headers, timeout=settings.request_timeout)

    def prepare(self, messages: Sequence[Messages]) -> list[Prepared]:
        # No local tokenizer: about four characters a token is enough to order and batch prompts.
        out = []
        for m in messages:
            key = json.dumps(m, sort_keys=True, ensure_ascii=False)
            out.append(Prepared(key, max(1, len(key) // 4), m))
        return out

    def _body(self, messages: Messages, seed: int) -> dict:
        s = self.settings
        body = {"model": s.model.name, "messages": messages, "max_tokens": s.max_new_tokens, "temperature": s.temperature}
        if s.temperature > 0:
            body.update(top_p=s.top_p, seed=seed)
        if s.stop:
            body["stop"] = list(s.stop)
        if s.repetition_penalty != 1.0:
            # Not in OpenAI's own API; vLLM's server takes it as an extra sampling parameter with the
            # same meaning. An endpoint that refuses it answers 400, which stops the stage with its message.
            body["repetition_penalty"] = s.repetition_penalty
        return body

    def _request(self, messages: Messages, seed: int) -> Generation:
        import httpx

        s = self.settings
        last = ""
        for attempt in range(s.max_retries + 1):
            if attempt:
                self.sleep(min(s.retry_backoff * 2 ** (attempt - 1), 30.0))
            try:
                response = self.client.post(self.url, json=self._body(messages, seed))
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise CorpusmillError(
                    f"the endpoint {self.url} refused the request: HTTP {response.status_code}: {response.text[:300]}"
                )
            try:
                data = response.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
                reason = choice.get("finish_reason") or "stop"
                tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise CorpusmillError(f"the endpoint {self.url} answered something that is not a chat completion: {e}") from None
            text, _ = cut_at_stop(text, s.stop)
            return Generation(text.strip(), "length" if reason == "length" else "stop", tokens, seed)
        raise EndpointUnavailable(f"{self.url} failed {s.max_retries + 1} times; last: {last}")

    def stream(self, rows: Sequence[Prepared], seeds: Sequence[int]) -> Iterator[list[tuple[int, Generation]]]:
        if not rows:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.settings.concurrency, len(rows)))
        # Endpoints take seeds up to 2**31 - 1; the row records the seed it was sent.
        futures = {pool.submit(self._request, row.payload, seed % 2**31): i
                   for i, (row, seed) in enumerate(zip(rows, seeds))}
        try:
            for future in as_completed(futures):
                yield [(futures[future], future.result())]
        finally:  # on an error, requests not yet sent are dropped; those in flight end within their timeout
            pool.shutdown(wait=True, cancel_futures=True)
