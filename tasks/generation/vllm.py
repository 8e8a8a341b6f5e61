"""The vLLM backend (CUDA machines): continuous batching inside vLLM; our batches only set
the checkpoint granularity. Import-gated: vLLM is not a dependency of corpusmill."""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.generation import Generation, Messages, Prepared, chat_prompts, cut_at_stop, plan_batches
from corpusmill.tasks.models import load_tokenizer, resolve

INSTALL_HINT = "augment.backend 'vllm' needs the vllm package: pip install vllm on a CUDA machine (or use backend: transformers)"


def import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise CorpusmillError(f"{INSTALL_HINT} ({e})") from None
    return vllm


@functools.lru_cache(maxsize=1)
def _engine(ref):
    vllm = import_vllm()
    resolved = resolve(ref)
    if resolved.gguf_file:
        # vLLM reads a GGUF file directly, with the tokenizer of the original model.
        model = f"{resolved.location}/{resolved.gguf_file}"
        return vllm.LLM(model=model, tokenizer=resolved.identity.split("@")[0], seed=0)
    return vllm.LLM(model=resolved.location, revision=resolved.revision, seed=0)


class VLLMBackend:
    name = "vllm"

    def __init__(self, settings):
        if settings.no_repeat_ngram_size:
            # vLLM's sampling parameters have a repetition penalty but no n-gram ban.
            raise CorpusmillError("augment.no_repeat_ngram_size is not available with backend vllm; set it to 0 "
                                  "(repetition_penalty is) or use backend transformers")
        import_vllm()
        self.settings = settings
        self.tokenizer = load_tokenizer(settings.model)
        self.llm = _engine(settings.model)

    def prepare(self, messages: Sequence[Messages]) -> list[Prepared]:
        return chat_prompts(self.tokenizer, messages)

    def stream(self, rows: Sequence[Prepared], seeds: Sequence[int]) -> Iterator[list[tuple[int, Generation]]]:
        # vLLM batches continuously inside each call; the plan's batches bound what a crash loses.
        for batch in plan_batches([r.length for r in rows], self.settings):
            yield list(zip(batch, self.generate([rows[i] for i in batch], [seeds[i] for i in batch])))

    def generate(self, batch: Sequence[Prepared], seeds: Sequence[int]) -> list[Generation]:
        vllm = import_vllm()
        s = self.settings
        params = [
            vllm.SamplingParams(
                max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
                repetition_penalty=s.repetition_penalty,
                stop=list(s.stop) or None, seed=row_seed if s.temperature > 0 else None,
            )
            for row_seed in seeds
        ]
        results = self.llm.generate([{"prompt_token_ids": p.payload} for p in batch], params, use_tqdm=False)
        out = []
        for r, row_seed in zip(results, seeds):
            c = r.outputs[0]
            text, _ = cut_at_stop(c.text, s.stop)
            reason = "length" if c.finish_reason == "length" else "stop"
            out.append(Generation(text.strip(), reason, len(c.token_ids), row_seed))
        return out
