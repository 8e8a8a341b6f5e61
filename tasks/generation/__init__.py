"""The generation engine behind the augment stage: one interface, several backends.

`generate_all(messages, settings, seed)` turns one chat (a list of messages) per row into
one `Generation` per row, in the order given:

1. the backend renders and measures each prompt (`Backend.prepare`);
2. rows already in the shard's checkpoint (same prompt, same settings) are reused;
3. the backend generates the rest (`Backend.stream`), longest prompt first, under a token
   budget (`augment.batch_tokens`: rows x (widest prompt + `max_new_tokens`), at most
   `augment.batch_size` rows at once), and reports rows as they end, with why: `"stop"`
   (end-of-sequence token or one of `augment.stop`) or `"length"` (`max_new_tokens` was
   reached, the text is truncated). The transformers backend batches continuously (a row
   that ends makes room for the next at once), openai keeps `augment.concurrency`
   requests in flight, and vllm generates the batches of `plan_batches`;
4. finished rows are appended to the checkpoint as they end, so a crash loses at most the
   rows in flight and a rerun generates only the rest.

When sampling, each row draws from its own generator seeded by `row_seed` (the run's seed
and the prompt), so which rows share its batch, before or after a resume, changes its text
only through floating-point rounding of the padded batch (on this project's CPU tests: not
at all); greedy decoding ignores the seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import xxhash

from corpusmill.tasks.errors import CorpusmillError

Messages = list[dict[str, str]]

FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop": EOS or a stop sequence ended it; "length": max_new_tokens was hit
    new_tokens: int
    seed: int | None = None  # the row's sampling seed (see `row_seed`), as the backend used it


@dataclass(frozen=True)
class Prepared:
    """One prompt as a backend sees it: `key` identifies its content, `length` is its size in tokens."""

    key: str
    length: int
    payload: Any


class Backend(Protocol):
    name: str

    def prepare(self, messages: Sequence[Messages]) -> list[Prepared]: ...

    def stream(self, rows: Sequence[Prepared], seeds: Sequence[int]) -> Iterator[list[tuple[int, Generation]]]:
        """Generate every row of `rows` (sampling row i, when sampling, with `seeds[i]`);
        yield the rows as they end, in groups of (index into `rows`, generation)."""
        ...


def chat_prompts(tokenizer, messages: Sequence[Messages]) -> list[Prepared]:
    """Each chat rendered with the tokenizer's chat template and tokenized: the prompts of
    the backends that run the model locally (transformers, vllm)."""
    rendered = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    # The chat template already wrote the special tokens.
    encoded = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return [Prepared(r, len(e), e) for r, e in zip(rendered, encoded)]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def fits_budget(rows: int, widest: int, settings) -> bool:
    """Whether `rows` rows whose longest prompt has `widest` tokens may generate together."""
    if rows > settings.batch_size:
        return False
    return settings.batch_tokens is None or rows * (widest + settings.max_new_tokens) <= settings.batch_tokens


def plan_batches(lengths: Sequence[int], settings) -> list[list[int]]:
    """Row positions in batches: longest prompt first; a batch grows while `fits_budget`.

    A prompt larger than the budget on its own still gets a batch of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        # The first row of a batch is its widest: sorted longest first.
        if batches and fits_budget(len(batches[-1]) + 1, lengths[batches[-1][0]], settings):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def row_seed(seed: int, prompt_key: str) -> int:
    """A row's sampling seed: from the run's seed and its prompt alone, so a row draws the
    same random numbers whichever rows share its batch (and after a resume), and can be
    sampled again on its own from the seed it records."""
    return xxhash.xxh3_64_intdigest(f"{seed}\x1f{prompt_key}".encode("utf-8")) >> 1


# --- checkpoint --------------------------------------------------------------------------


class Checkpoint:
    """Finished generations of one shard, appended to a JSONL file as rows end.

    Every append is written through to the operating system, so a crash of the process
    loses nothing appended; it is also synced to disk at most once a second, so a
    continuous batch that ends a row every step does not wait on the disk every step.

    Each record is keyed by a hash of the prompt and of every setting that changes what is
    generated, so records of other settings are never reused; `compact()` drops them.
    """

    def __init__(self, path: Path | None, settings_key: str):
        self.path = Path(path) if path is not None else None
        self.settings_key = settings_key
        self.done: dict[str, Generation] = {}
        self.stale = 0
        self.synced = 0.0
        if self.path is not None and self.path.is_file():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                        generation = Generation(record["text"], record["finish_reason"], int(record["new_tokens"]),
                                                record.get("seed"))
                        key = record["key"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash
                    if record.get("settings") == settings_key:
                        self.done[key] = generation
                    else:
                        self.stale += 1

    def key(self, prompt_key: str) -> str:
        return hashlib.sha256(f"{self.settings_key}\x1f{prompt_key}".encode("utf-8")).hexdigest()[:32]

    def append(self, keys: Sequence[str], generations: Sequence[Generation]) -> None:
        for k, g in zip(keys, generations):
            self.done[k] = g
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps({"key": k, "settings": self.settings_key, **asdict(g)}, ensure_ascii=False) + "\n"
            for k, g in zip(keys, generations)
        )
        with self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            if time.monotonic() - self.synced >= 1.0:
                os.fsync(f.fileno())
                self.synced = time.monotonic()

    def compact(self, keep: set[str]) -> None:
        """Rewrite the file with only the records of `keep` (this run's prompts and settings)."""
        if self.path is None or not self.path.is_file():
            return
        if not self.stale and set(self.done) <= keep:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for k in sorted(keep & set(self.done)):
                f.write(json.dumps({"key": k, "settings": self.settings_key, **asdict(self.done[k])}, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)


def settings_key(settings, generator: str, seed: int, stage_version: str) -> str:
    """Every setting that changes the generated text (or, through the rows batched together,
    its floating-point rounding), and the version of the stage that generates it: a new
    version regenerates what older code generated or recorded."""
    fields = settings.model_dump(
        mode="json",
        include={"backend", "max_new_tokens", "batch_size", "batch_tokens", "temperature", "top_p", "repetition_penalty",
                 "no_repeat_ngram_size", "device", "stop", "endpoint"},
    )
    identity = {"generator": generator, "seed": seed, "stage_version": stage_version, **fields}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# --- backends --------------------------------------------------------------------------


def get_backend(settings) -> Backend:
    """The backend named by `settings.backend`."""
    if settings.backend == "transformers":
        from corpusmill.tasks.generation.hf import TransformersBackend

        return TransformersBackend(settings)
    if settings.backend == "vllm":
        from corpusmill.tasks.generation.vllm import VLLMBackend

        return VLLMBackend(settings)
    if settings.backend == "openai":
        from corpusmill.tasks.generation.openai import OpenAIBackend

        return OpenAIBackend(settings)
    raise CorpusmillError(f"unknown augment.backend {settings.backend!r}; use transformers, vllm or openai")


def generator_identity(settings) -> str:
    """What synthetic rows record as `generator`."""
    if settings.backend == "openai":
        return f"openai:{settings.model.name or settings.model.path or settings.model.gguf}@{settings.endpoint}"
    from corpusmill.tasks.models import resolve

    return resolve(settings.model).identity


def generate_all(
    messages: Sequence[Messages],
    settings,
    seed: int,
    *,
    stage_version: str,
    on_progress: Callable[[int], None] | None = None,
    usage: dict | None = None,
    checkpoint_path: Path | None = None,
    backend: Backend | None = None,
    on_generated: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """One `Generation` per chat in `messages`, in the order given (see the module docstring).

    `stage_version` is the version of the stage generating (part of the checkpoint's key).

    `on_progress(rows)` is called with the rows reused from the checkpoint and then with each
    group of rows that ended; `on_generated(rows, new_tokens)` with each generated group; `usage`
    receives `prompt_tokens` and `new_tokens` (generated in this call) and `reused` (rows
    from the checkpoint).
    """
    if usage is not None:
        usage.update(prompt_tokens=0, new_tokens=0, reused=0)
    if not messages:
        return []
    # From loading the model to the last row: another process must not load or run a model
    # on the same GPU meanwhile.
    with holding_gpu(settings):
        backend = backend or get_backend(settings)
        return _generate(messages, settings, seed, backend, stage_version=stage_version, on_progress=on_progress,
                         usage=usage, checkpoint_path=checkpoint_path, on_generated=on_generated)


def _generate(messages: Sequence[Messages], settings, seed: int, backend: Backend, *, stage_version: str,
              on_progress, usage, checkpoint_path, on_generated) -> list[Generation]:
    prepared = backend.prepare(messages)
    checkpoint = Checkpoint(checkpoint_path, settings_key(settings, generator_identity(settings), seed, stage_version))
    keys = [checkpoint.key(p.key) for p in prepared]
    outputs: list[Generation | None] = [checkpoint.done.get(k) for k in keys]
    todo = [i for i, g in enumerate(outputs) if g is None]
    if len(todo) < len(outputs):
        if usage is not None:
            usage["reused"] = len(outputs) - len(todo)
        if on_progress is not None:
            on_progress(len(outputs) - len(todo))
    stream = backend.stream([prepared[i] for i in todo], [row_seed(seed, prepared[i].key) for i in todo])
    # Closed however this loop ends: a backend holds its device lock while it streams, and a
    # failed task's traceback would otherwise keep the suspended stream, and the lock, alive.
    with contextlib.closing(stream):
        for group in stream:
            rows = [todo[j] for j, _ in group]
            generated = [g for _, g in group]
            checkpoint.append([keys[i] for i in rows], generated)
            for i, g in zip(rows, generated):
                outputs[i] = g
            new_tokens = sum(g.new_tokens for g in generated)
            if usage is not None:
                usage["prompt_tokens"] += sum(prepared[i].length for i in rows)
                usage["new_tokens"] += new_tokens
            if on_generated is not None:
                on_generated(len(rows), new_tokens)
            if on_progress is not None:
                on_progress(len(rows))
    checkpoint.compact(set(keys))
    return outputs  # type: ignore[return-value]


# --- one model per GPU at a time, across processes ------------------------------------------


def gpu_in_use(settings) -> str | None:
    """The UUID of the GPU this generation loads its model onto; None on the CPU or a remote server."""
    if settings.backend == "openai":
        return None
    import torch

    from corpusmill.tasks.models import pick_device

    if settings.backend == "transformers" and pick_device(settings.device)[0] != "cuda":
        return None
    if not torch.cuda.is_available():
        return None  # vLLM without CUDA stops on its own, with its own message
    # `cuda` is the current device. A UUID names the physical GPU, whichever machine,
    # container or CUDA_VISIBLE_DEVICES numbering a process sees it through.
    return str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)


@contextlib.contextmanager
def holding_gpu(settings) -> Iterator[None]:
    """Hold the GPU this generation uses (see `exclusive`); nothing to hold on the CPU.

    On the CPU, processes generating at once only share cores and memory, and the OS shares
    them fairly; serialising them would undo a CPU cluster's scale-out. A GPU's memory is
    not shared: a second model loaded onto it, or a second batch's KV cache, can run it out.
    """
    gpu = gpu_in_use(settings)
    with exclusive(f"corpusmill-gpu-{gpu}") if gpu else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """One holder at a time of `name` among all processes that report to this run's Prefect
    server, on any machine: a global concurrency limit of 1 slot, created on first use (raise
    it with `prefect gcl update NAME --limit 2` where a GPU holds two models). A slot of a
    process that dies is freed when its lease lapses, after 5 minutes.

    Without a Prefect server (a bare Python call, a benchmark) there is nothing to share it
    through, and only this process's own lock applies.
    """
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        yield
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass  # another process created it, or an operator set its limit: keep theirs
    # A renewal that fails once must not stop hours of generation; the lease outlives a blip.
    with concurrency(name, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        yield


class Throughput:
    """Rows done, generated tokens per second and an ETA for one shard's generation."""

    def __init__(self, total_rows: int = 0, clock: Callable[[], float] | None = None):
        self.clock = clock or time.monotonic
        self.total = total_rows
        self.rows = self.tokens = 0
        self.started = self.clock()

    def start(self, total_rows: int) -> None:
        self.total, self.started = total_rows, self.clock()

    def add(self, rows: int, new_tokens: int = 0) -> None:
        self.rows += rows
        self.tokens += new_tokens

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.tokens / elapsed
        rows_per_s = self.rows / elapsed
        eta = (self.total - self.rows) / rows_per_s if rows_per_s > 0 else float("nan")
        eta_text = "?" if eta != eta else f"{eta:.0f} s"
        return f"{self.rows}/{self.total} rows, {self.tokens} new tokens, {rate:.1f} tokens/s, ETA {eta_text}"
