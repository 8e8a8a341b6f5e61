"""The transformers backend: continuous batching over a transformers causal LM, CPU or CUDA.

It runs the model's forward pass itself rather than `model.generate`, which works batch by
batch and keeps every row of a batch until its longest row ends. Here:

- rows enter the batch longest prompt first while `augment.batch_size` and
  `augment.batch_tokens` allow (the same budget rule as `plan_batches`), and a row leaves
  as soon as it ends (end-of-sequence token, stop sequence or `max_new_tokens`), its place
  taken by the next waiting rows: the batch stays full until the queue runs dry;
- prompts made from the same template share a prefix (chat template, system prompt,
  instruction): its KV cache is computed once and copied into each row, so the prefill
  covers only each row's own tokens;
- each row keeps its own position ids and attention mask (rows are left-padded against
  each other in the cache), so it sees exactly its unpadded prompt;
- the KV cache grows in place in buffers with spare room (`growing_layer_class`) instead of
  being copied by a concatenation every step.

Before a token is chosen, each row's logits go through the recipe's decoding controls, in
transformers' order and with its arithmetic: `repetition_penalty` (every token of the row's
prompt and output so far, as in transformers and vLLM), then `no_repeat_ngram_size` (a token
that would repeat an n-gram of the row's own output is banned; unlike transformers, the
prompt's n-grams stay allowed, so a paraphrase may still name `os.path.join`). Greedy
decoding then takes the argmax; sampling applies temperature, then top-p, and draws from
the row's own `torch.Generator`, seeded with its seed, so a row's text does not depend on
which rows shared the batch with it.

Rows joining a running batch need plain full-attention caches (`DynamicLayer`: Llama,
Qwen, SmolLM, Mistral without a sliding window, ...); for other caches (sliding windows,
recurrent layers) rows enter only once the batch has drained, and no prefix is shared.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from typing import Iterator, Sequence

from corpusmill.tasks.generation import Generation, Messages, Prepared, chat_prompts, cut_at_stop, fits_budget
from corpusmill.tasks.models import load_causal_lm

# One generation at a time per process: two shard tasks generating at once on a CPU (or
# one GPU) only fight over the same cores and memory. Between processes, a GPU is held
# by `generation.holding_gpu`.
generate_lock = threading.Lock()

# A prefix shorter than this is not worth a cache of its own.
MIN_SHARED_PREFIX = 8


def stop_token_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def shared_prefixes(sequences: Sequence[Sequence[int]], min_length: int = MIN_SHARED_PREFIX) -> list[int]:
    """For each sequence, the length of the shared prefix to cache for it (0 for none).

    Candidates are the common prefixes of neighbours in sorted order that are at least
    `min_length` long; of those, only the shortest are kept (none a prefix of another), so
    rows of one template share its whole prefix, not one cache per first word of their text.
    A prefix always leaves its row at least one token of its own.
    """
    def common(a: Sequence[int], b: Sequence[int]) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n

    ordered = sorted(tuple(s) for s in sequences)
    candidates = {a[:n] for a, b in zip(ordered, ordered[1:]) if (n := common(a, b)) >= min_length}
    minimal = [p for p in candidates if not any(q != p and p[: len(q)] == q for q in candidates)]
    lengths = []
    for s in sequences:
        n = next((len(p) for p in minimal if tuple(s[: len(p)]) == p), 0)
        lengths.append(min(n, len(s) - 1) if n >= min_length and len(s) - 1 >= min_length else 0)
    return lengths


@functools.cache  # one probe per loaded model (models are cached too)
def vocabulary_weight(model):
    """The output layer's weight (vocabulary x hidden) where the model's logits are exactly
    that layer applied to its last hidden state, checked on a short probe; else None (a bias,
    a logit scale, soft-capping).

    The engine multiplies by it itself: on the CPU, torch's `linear` with fewer than 16 rows
    takes a path about 2x slower than the product `weight @ hidden.T` for a large vocabulary,
    and continuous batching often runs with fewer rows than that."""
    import torch

    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    probe = torch.arange(1, 9, device=model.device).unsqueeze(0)
    with torch.inference_mode():
        expected = model(input_ids=probe, logits_to_keep=1).logits[:, -1, :].float()
        hidden = model.base_model(input_ids=probe).last_hidden_state[:, -1, :]
        got = torch.mm(head.weight, hidden.T).T.float()
    return head.weight if torch.allclose(got, expected, rtol=1e-3, atol=1e-3) else None


def next_tokens(logits, temperature: float, top_p: float, generators):
    """One token per row of `logits` (rows x vocabulary): the argmax when `temperature` is 0,
    else a draw, with the row's generator, from the temperature-scaled distribution cut to
    its top-p nucleus."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        # Keep the most likely tokens up to and including the one that reaches top_p.
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs > top_p, 0.0)
    drawn = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])
    return drawn if order is None else order.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)


class RowHistory:
    """What the decoding controls need to know of one row: which tokens it has seen (prompt
    and output, for the repetition penalty) and which token followed each (n-1)-gram of its
    output (for the no-repeat rule)."""

    def __init__(self, prompt: Sequence[int], vocabulary: int, ngram: int, device):
        import torch

        self.seen = torch.zeros(vocabulary, dtype=torch.bool, device=device)
        self.seen[torch.tensor(list(prompt), dtype=torch.long, device=device)] = True
        self.ngram = ngram
        self.followers: dict[tuple[int, ...], set[int]] = {}

    def banned(self, output: list[int]) -> set[int]:
        """Tokens that would complete an n-gram `output` already holds."""
        if not self.ngram or len(output) < self.ngram - 1:
            return set()
        return self.followers.get(tuple(output[len(output) - self.ngram + 1 :]), set())

    def add(self, output: list[int]) -> None:
        """Record the newest token of `output`."""
        self.seen[output[-1]] = True
        if self.ngram and len(output) >= self.ngram:
            self.followers.setdefault(tuple(output[-self.ngram : -1]), set()).add(output[-1])


def apply_controls(logits, histories: Sequence[RowHistory], outputs: Sequence[list[int]], penalty: float):
    """`logits` (rows x vocabulary, float32) after the repetition penalty, as transformers'
    `RepetitionPenaltyLogitsProcessor` computes it, then the no-repeat bans, as its
    `NoRepeatNGramLogitsProcessor` computes them over the output alone."""
    import torch

    if penalty != 1.0:
        seen = torch.stack([h.seen for h in histories])
        logits = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    for k, (history, output) in enumerate(zip(histories, outputs)):
        banned = history.banned(output)
        if banned:
            logits[k, sorted(banned)] = float("-inf")
    return logits


@functools.cache
def growing_layer_class():
    """`DynamicLayer` with spare room: its keys and values are views into buffers with free
    columns, so a decode step writes one column in place. `DynamicLayer` concatenates,
    copying the whole cache every step: over half of a CPU decode step at 16 rows x 250
    tokens. A layer whose tensors were replaced (rows selected, joined or trimmed) moves
    into a new buffer on its next update."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        buffers = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            length = self.keys.shape[-2] if self.keys.dim() == 4 else 0
            end = length + key_states.shape[-2]
            held = self.buffers is not None and self.keys.data_ptr() == self.buffers[0].data_ptr() and \
                self.keys.shape[0] == self.buffers[0].shape[0]
            if not held or end > self.buffers[0].shape[-2]:
                rows, heads, _, dim = key_states.shape
                capacity = end + max(64, end // 2)
                buffers = tuple(t.new_empty((rows, heads, capacity, dim)) for t in (key_states, value_states))
                if length:
                    buffers[0][:, :, :length] = self.keys
                    buffers[1][:, :, :length] = self.values
                self.buffers = buffers
            self.buffers[0][:, :, length:end] = key_states
            self.buffers[1][:, :, length:end] = value_states
            self.keys, self.values = self.buffers[0][:, :, :end], self.buffers[1][:, :, :end]
            return self.keys, self.values

    return GrowingLayer


class Batch:
    """The rows in flight: their KV cache, attention mask (rows x cache columns), last
    position id and the token each feeds in next; rows are indices into the stream's input."""

    def __init__(self, cache, mask, positions, pending, rows: list[int]):
        self.cache, self.mask, self.positions, self.pending, self.rows = cache, mask, positions, pending, rows

    def keep(self, kept: list[int]) -> None:
        """Keep only the rows at these places of the batch."""
        import torch

        if len(kept) == len(self.rows):
            return
        index = torch.tensor(kept, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.pending = self.mask[index], self.positions[index], self.pending[index]
        self.rows = [self.rows[k] for k in kept]

    def trim(self, min_columns: int = 16) -> None:
        """Drop leading columns no row attends to any more (left by rows that have left)."""
        import torch

        first = int(torch.argmax(self.mask, dim=-1).min())  # the first column some row still uses
        if first < min_columns:
            return
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        self.mask = self.mask[:, first:]

    def join(self, other: Batch) -> None:
        """Add `other`'s rows: the shorter cache is left-padded with masked columns."""
        import torch

        def left_pad(t, n: int, dim: int):
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            for name in ("keys", "values"):
                a, b = getattr(mine, name), getattr(theirs, name)
                setattr(mine, name, torch.cat([left_pad(a, width - a.shape[2], 2), left_pad(b, width - b.shape[2], 2)]))
        self.mask = torch.cat([left_pad(self.mask, width - self.mask.shape[1], 1),
                               left_pad(other.mask, width - other.mask.shape[1], 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.pending = torch.cat([self.pending, other.pending])
        self.rows = self.rows + other.rows


class Decoding:
    """The rows of one stream as they are decoded: the queue of rows waiting (longest prompt
    first), each row's sampler and tokens so far, and the rules that end a row."""

    def __init__(self, rows: Sequence[Prepared], seeds: Sequence[int], settings, tokenizer, stop_ids: set[int],
                 device: str):
        import torch

        self.rows, self.seeds, self.settings, self.tokenizer = rows, seeds, settings, tokenizer
        self.waiting = deque(sorted(range(len(rows)), key=lambda i: (-rows[i].length, i)))
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.stop_ids = torch.tensor(sorted(stop_ids), dtype=torch.long)
        self.longest_stop = max((len(x) for x in settings.stop), default=0)
        self.produced: dict[int, list[int]] = {}
        self.controlled = settings.repetition_penalty != 1.0 or settings.no_repeat_ngram_size > 0
        self.histories: dict[int, RowHistory] = {}

    def admit(self, in_flight: list[int]) -> list[int]:
        """Take the next waiting rows that fit the budget beside `in_flight` (the first one
        always, when none is in flight)."""
        widest = max((self.rows[r].length for r in in_flight), default=0)
        admitted: list[int] = []
        while self.waiting and (not in_flight and not admitted or fits_budget(
                len(in_flight) + len(admitted) + 1, max(widest, self.rows[self.waiting[0]].length), self.settings)):
            admitted.append(self.waiting.popleft())
            widest = max(widest, self.rows[admitted[-1]].length)
        return admitted

    def choose(self, logits, batch_rows: list[int]):
        """Record each row's next token: (places of the rows going on, rows that ended, the tokens)."""
        import torch

        s = self.settings
        if self.controlled:
            logits = self.apply_controls(logits, batch_rows)
        chosen = next_tokens(logits, s.temperature, s.top_p, [self.generators[r] for r in batch_rows]).cpu()
        ended = torch.isin(chosen, self.stop_ids).tolist()
        going, done = [], []
        for k, (row, token) in enumerate(zip(batch_rows, chosen.tolist())):
            tokens = self.produced.setdefault(row, [])
            tokens.append(token)
            if self.controlled:
                self.histories[row].add(tokens)
            if ended[k] or self.ends_with_stop_sequence(tokens):
                done.append(self.finished(row, "stop"))
            elif len(tokens) >= s.max_new_tokens:
                done.append(self.finished(row, "length"))
            else:
                going.append(k)
        return going, done, chosen

    def apply_controls(self, logits, batch_rows: list[int]):
        """The rows' logits after the recipe's repetition penalty and no-repeat n-grams."""
        for row in batch_rows:
            if row not in self.histories:
                self.histories[row] = RowHistory(self.rows[row].payload, logits.shape[-1],
                                                 self.settings.no_repeat_ngram_size, logits.device)
        return apply_controls(logits.float(), [self.histories[r] for r in batch_rows],
                              [self.produced.get(r, []) for r in batch_rows], self.settings.repetition_penalty)

    def ends_with_stop_sequence(self, tokens: list[int]) -> bool:
        if not self.longest_stop:
            return False
        # A stop sequence can only end in the newest text: look at the tail.
        tail = self.tokenizer.decode(tokens[-2 * self.longest_stop - 4 :], skip_special_tokens=True)
        return any(x and x in tail for x in self.settings.stop)

    def finished(self, row: int, reason: str) -> tuple[int, Generation]:
        tokens = self.produced.pop(row)
        self.histories.pop(row, None)
        text, _ = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), self.settings.stop)
        return row, Generation(text.strip(), reason, len(tokens), self.seeds[row])


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.settings = settings
        self.model, self.tokenizer, self.device = load_causal_lm(settings.model, settings.device)
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # Rows can join a running batch, and copy a cached prefix, only where every layer's
        # cache is a plain growing tensor.
        self.joinable = all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.model.config).layers)
        self.layer_class = growing_layer_class() if self.joinable else None
        self.prefix_caches: dict[tuple[int, ...], object] = {}
        self.vocabulary = vocabulary_weight(self.model)

    def next_logits(self, **inputs):
        """Each row's logits for the token after its last input (rows x vocabulary)."""
        import torch

        if self.vocabulary is None:
            return self.model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        hidden = self.model.base_model(**inputs, use_cache=True).last_hidden_state[:, -1, :]
        return torch.mm(self.vocabulary, hidden.T).T

    def prepare(self, messages: Sequence[Messages]) -> list[Prepared]:
        return chat_prompts(self.tokenizer, messages)

    def new_cache(self):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if self.layer_class is not None:
            cache.layers = [self.layer_class() for _ in cache.layers]
        return cache

    def prefix_cache(self, prefix: tuple[int, ...]):
        """The KV cache of `prefix` (one row), computed on first use."""
        import torch

        if prefix not in self.prefix_caches:
            cache = self.new_cache()
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            self.model.base_model(input_ids=ids, past_key_values=cache, use_cache=True)
            self.prefix_caches[prefix] = cache
        return self.prefix_caches[prefix]

    def prefill(self, encoded: list[list[int]], prefixes: list[int]):
        """A `Batch` of new rows with their prompts read, and the logits of their next token.

        Each row's cached prefix (right-aligned, left-padded) comes first, then its own
        tokens, left-padded to the longest; position ids continue from the row's prefix.
        """
        import torch

        rows = len(encoded)
        widest_prefix = max(prefixes)
        own = [e[p:] for e, p in zip(encoded, prefixes)]
        width = max(len(o) for o in own)
        cache = self.new_cache()
        if widest_prefix:
            cached = [self.prefix_cache(tuple(e[:p])) if p else None for e, p in zip(encoded, prefixes)]
            template = next(c for c in cached if c is not None)
            for i, layer in enumerate(template.layers):
                keys = layer.keys.new_zeros((rows, *layer.keys.shape[1:2], widest_prefix, layer.keys.shape[3]))
                values = torch.zeros_like(keys)
                for row, (c, p) in enumerate(zip(cached, prefixes)):
                    if p:
                        keys[row, :, widest_prefix - p :] = c.layers[i].keys[0]
                        values[row, :, widest_prefix - p :] = c.layers[i].values[0]
                cache.update(keys, values, i)
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, widest_prefix + width), dtype=torch.long)
        positions = torch.zeros((rows, width), dtype=torch.long)
        for row, (o, p) in enumerate(zip(own, prefixes)):
            input_ids[row, width - len(o) :] = torch.tensor(o, dtype=torch.long)
            mask[row, widest_prefix - p : widest_prefix] = 1
            mask[row, widest_prefix + width - len(o) :] = 1
            positions[row, width - len(o) :] = torch.arange(p, p + len(o))
        mask, positions = mask.to(self.device), positions.to(self.device)
        logits = self.next_logits(input_ids=input_ids.to(self.device), attention_mask=mask, position_ids=positions,
                                  past_key_values=cache)
        return Batch(cache, mask, positions[:, -1:], None, []), logits

    def stream(self, rows: Sequence[Prepared], seeds: Sequence[int]) -> Iterator[list[tuple[int, Generation]]]:
        """Generate every row of `rows`; yield the rows that ended at each step, as (index, generation).

        Each turn either admits the next waiting rows (while the budget allows, and rows may
        join) or decodes one token for every row in flight.

        The stream holds `generate_lock` (and torch's inference mode) from its first row to
        its last, also while the caller handles a yielded group: the caller must not start
        another generation from there, and must close the stream if it stops early.
        """
        import torch

        decoding = Decoding(rows, seeds, self.settings, self.tokenizer, self.stop_ids, self.device)
        prefixes = shared_prefixes([p.payload for p in rows]) if self.joinable else [0] * len(rows)
        batch: Batch | None = None
        with generate_lock, torch.inference_mode():
            while decoding.waiting or batch is not None:
                in_flight = batch.rows if batch is not None else []
                admitted = decoding.admit(in_flight) if self.joinable or not in_flight else []
                if admitted:
                    batch, done = self.start_rows(decoding, admitted, prefixes, batch)
                else:
                    batch, done = self.decode_step(decoding, batch)
                if done:
                    yield done

    def start_rows(self, decoding: Decoding, admitted: list[int], prefixes: list[int], batch: Batch | None):
        """Read the prompts of `admitted` and choose their first tokens; (the batch in flight
        with those that go on, the rows that ended at once)."""
        new, logits = self.prefill([decoding.rows[r].payload for r in admitted], [prefixes[r] for r in admitted])
        going, done, chosen = decoding.choose(logits, admitted)
        if going:
            new.pending, new.rows = chosen.to(self.device), admitted
            new.keep(going)
            if batch is None:
                batch = new
            else:
                batch.join(new)
        return batch, done

    def decode_step(self, decoding: Decoding, batch: Batch):
        """One token for every row in flight; (the batch of the rows that go on, or None when
        none does, the rows that ended)."""
        import torch

        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=-1)
        batch.positions = batch.positions + 1
        logits = self.next_logits(input_ids=batch.pending.unsqueeze(-1), attention_mask=batch.mask,
                                  position_ids=batch.positions, past_key_values=batch.cache)
        going, done, chosen = decoding.choose(logits, batch.rows)
        batch.pending = chosen.to(self.device)
        if not going:
            return None, done
        if done:
            batch.keep(going)
            if self.joinable:
                batch.trim()
        return batch, done
