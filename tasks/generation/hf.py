"""The transformers backend: batched `model.generate` with left padding, on CPU or CUDA."""

from __future__ import annotations

import threading
from typing import Sequence

from tasks.generation import Generation, Messages, Prepared, cut_at_stop
from tasks.models import load_causal_lm

# One generation at a time per process: the seeded sampling uses torch's global RNG, and two
# shard tasks generating at once on a CPU only fight over the same cores.
generate_lock = threading.Lock()


def stop_token_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings):
        self.settings = settings
        self.model, self.tokenizer, self.device = load_causal_lm(settings.model, settings.device)
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def prepare(self, messages: Sequence[Messages]) -> list[Prepared]:
        rendered = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        # The chat template already wrote the special tokens.
        encoded = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        return [Prepared(r, len(e), e) for r, e in zip(rendered, encoded)]

    def options(self) -> dict:
        s = self.settings
        options = dict(max_new_tokens=s.max_new_tokens, pad_token_id=self.pad_id, eos_token_id=sorted(self.stop_ids))
        if s.stop:
            options.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        if s.temperature > 0:
            # top_k=0 turns off transformers' default top-k, so temperature and top_p are the whole rule.
            options.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            options.update(do_sample=False)
        return options

    def generate(self, batch: Sequence[Prepared], seed: int) -> list[Generation]:
        import torch

        encoded = [p.payload for p in batch]
        width = max(len(e) for e in encoded)
        # Left padding, since a decoder-only model continues from each row's last position.
        # Built here rather than by tokenizer.pad: the shared tokenizer's padding_side stays
        # untouched, and models without a pad token (Llama 3, Mistral) pad with eos.
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            input_ids[row, width - len(e) :] = torch.tensor(e, dtype=torch.long)
            attention[row, width - len(e) :] = 1
        with generate_lock, torch.inference_mode():
            if self.settings.temperature > 0:
                torch.manual_seed(seed)
            result = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **self.options()
            )
        new = result[:, width:].cpu().tolist()
        out = []
        for tokens in new:
            end = next((k + 1 for k, t in enumerate(tokens) if t in self.stop_ids), None)
            produced = tokens[:end] if end is not None else tokens
            text = self.tokenizer.decode(produced, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, self.settings.stop)
            n = len(produced)
            if stopped and end is None:
                # A row ended by a stop sequence is padded to the batch's length afterwards.
                n = next((k for k, t in enumerate(tokens) if t == self.pad_id), n)
            finished = end is not None or stopped
            out.append(Generation(text.strip(), "stop" if finished else "length", n))
        return out
