"""Generation: corpusmill's engine against the loops a user would write and transformers' own
continuous batching, and what the decoding controls do to the share of generations kept.

    python -m benchmarks.generate --json benchmarks/results/generate.json [--quick] [--part speed|controls]

Both parts run on the demo's own rows: the python-docs source, filtered by the demo recipe's
filter steps (decontamination included), the rows its augment settings select, each with the
template (`paraphrase` or `qa`) the stage assigns it. The model is SmolLM2-135M-Instruct
(the offline GGUF; fp32 on the CPU, bf16 on CUDA).

**speed**: the same prompts, chat template and greedy decoding for every contender, with
`max_new_tokens` and the batch limits of the recipe's defaults (`Augment()`):

- `plain_loop`: what transformers' docs show: `model.generate` over batches of 8 in input
  order, left padding;
- `sorted_loop`: the same loop, prompts sorted longest first and batched as the engine
  batches them (`plan_batches`: its row count and token budget);
- `generate_batch`: transformers' continuous batching (`model.generate_batch`, paged KV
  cache) with a cache of the engine's token budget (`batch_tokens` tokens in pages of 64)
  and at most `batch_size` rows, its manager kept between calls and warmed up untimed
  (its defaults size the cache for a GPU, and every step attends over the whole cache:
  about 1.5x slower here);
- `corpusmill`: `tasks.generation.generate_all` (continuous batching, the templates'
  shared prefix read once, rows leave as they end).

By default every contender gets all the selected prompts at once (61 on the demo), as the
augment stage hands the engine a shard's rows: a queue from which it refills its batch as
rows end. `--chunk N` runs them N at a time instead, one chunk through every contender per
turn, the order rotating from turn to turn so a shared machine's noise hits all alike; in
chunks no larger than `batch_size` the engine has nothing to refill from. Every contender
renders and tokenizes its own prompts inside its timer. Reported per contender: new tokens per second
(tokens up to and including the end-of-sequence token), the ratio to each loop, the share
of rows whose text is identical to the plain loop's, and what a faster engine must not
lose: the share of rows kept by the unchanged quality gates (`augment.check_quality`) and
distinct-2 of the kept rows (distinct word bigrams / all word bigrams, over all kept rows).

**controls**: the augment stage itself (`augment.run`: generation, the quality gates, the
filter steps on the generated rows) over the demo's selected rows with the demo's augment
settings, once per decoding setting: rows kept and dropped by reason, distinct-2 of the
kept rows, new tokens per second, kept rows per minute and per 1,000 new tokens (the same
figure without the machine's noise: generation is greedy, so tokens and rows repeat
exactly). Each setting is complete (no controls and no stop sequences but its own, whatever
the recipe sets); `demo` is the demo recipe's own decoding.

`--json FILE` replaces what ran and keeps the rest from the file's earlier runs, each with
the machine it ran on: the part that did not run, and the decoding settings that did not
(marked `earlier_run`).

On 2 cores shared with other work, `--threads 1` (one torch thread per process) waited less
on descheduled peers (about 2x); on idle cores torch's default (2) is faster.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe

REPO = Path(__file__).resolve().parent.parent
DEMO_RECIPE = REPO / "recipes" / "demo.yaml"
LIBRARIES = ["corpusmill", "torch", "transformers", "tokenizers", "gguf"]
CONTENDERS = ("plain_loop", "sorted_loop", "generate_batch", "corpusmill")
# Decoding settings tried on the demo, greedy, each over NO_CONTROLS. (On 16 of its rows,
# repetition_penalty 1.1 with no_repeat_ngram_size 4 kept 3: the penalty also falls on the chat
# template's end-of-turn token, so rows run on to max_new_tokens.)
NO_CONTROLS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "stop": []}
DEMO = "demo"  # the demo recipe's own decoding settings
CONTROLS = {
    "off": {},
    "repetition_penalty_1.2": {"repetition_penalty": 1.2},
    "no_repeat_ngram_3": {"no_repeat_ngram_size": 3},
    "no_repeat_ngram_4": {"no_repeat_ngram_size": 4},
    "no_repeat_ngram_5": {"no_repeat_ngram_size": 5},
}
_WORD = re.compile(r"\w+")


# --- the demo's rows ---------------------------------------------------------------------


def demo_shard(work: Path):
    """(the demo recipe, its filtered python-docs shard, its filter steps, the decontamination index)."""
    from corpusmill.tasks.filters import decontaminate
    from corpusmill.tasks.filters import stage as filter_stage
    from corpusmill.tasks.ingest import stage as ingest
    from corpusmill.tasks.recipe import load_recipe

    recipe = load_recipe(DEMO_RECIPE)
    [source] = recipe.sources
    [unit] = ingest.plan([source])
    [shard] = ingest.run(source, unit, work / "ingest", work / "ingest-quarantine.parquet", 1_000_000)["shards"]
    index = work / "index.npz"
    decontaminate.build_index(recipe.decontaminate, index)
    steps = [*recipe.filters, decontaminate.Decontaminate(step="decontaminate", evals=recipe.decontaminate)]
    filtered = work / "filtered.parquet"
    filter_stage.run(Path(shard), filtered, work / "filter-quarantine.parquet", recipe.tokenizer, steps, index)
    return recipe, filtered, steps, index


def demo_prompts(recipe, filtered: Path, n: int | None) -> tuple[list[str], list]:
    """The first `n` (all when None) selected rows' texts and the template each is given."""
    from corpusmill.tasks import augment
    from corpusmill.tasks.shards import read_table

    parents, templates = augment._parents(read_table(filtered), recipe.augment, recipe.seed)
    return [p["text"] for p in parents][:n], templates[:n]


# --- what is kept ------------------------------------------------------------------------


def distinct_2(texts: list[str]) -> float | None:
    """Distinct word bigrams / all word bigrams, over all `texts` together."""
    bigrams: list[tuple[str, str]] = []
    for text in texts:
        words = _WORD.findall(text.lower())
        bigrams += zip(words, words[1:])
    return round(len(set(bigrams)) / len(bigrams), 4) if bigrams else None


def yield_of(sources: list[str], texts: list[str], finishes: list[str]) -> dict:
    """Kept share under the default quality gates, the reasons of the rest, distinct-2 of the kept."""
    from collections import Counter

    from corpusmill.tasks.augment import check_quality
    from corpusmill.tasks.recipe import QualityGates

    verdicts = [check_quality(s, t, QualityGates(), f) for s, t, f in zip(sources, texts, finishes)]
    kept = [t for t, v in zip(texts, verdicts) if v is None]
    return {"kept_share": round(len(kept) / len(texts), 3), "dropped": dict(Counter(v[0] for v in verdicts if v)),
            "distinct_2_kept": distinct_2(kept)}


# --- the contenders ------------------------------------------------------------------------


class Contenders:
    """Each contender turns chats into (texts, finish reasons, new tokens), greedy."""

    def __init__(self, settings, device: str):
        from corpusmill.tasks.generation.hf import stop_token_ids
        from corpusmill.tasks.models import load_causal_lm

        self.settings = settings
        self.model, self.tokenizer, _ = load_causal_lm(settings.model, device)
        self.stop = stop_token_ids(self.model, self.tokenizer)
        tok = self.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def encode(self, messages: list) -> list[list[int]]:
        from corpusmill.tasks.generation import chat_prompts

        return [p.payload for p in chat_prompts(self.tokenizer, messages)]

    def finish(self, rows: list[list[int]]) -> tuple[list[str], list[str], int]:
        """Each row's new tokens cut after its first stop token: (texts, finish reasons, tokens)."""
        texts, finishes, tokens = [], [], 0
        for row in rows:
            end = next((i + 1 for i, t in enumerate(row) if t in self.stop), None)
            row = row[:end] if end else row[: self.settings.max_new_tokens]
            tokens += len(row)
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
            finishes.append("stop" if end else "length")
        return texts, finishes, tokens

    def loop(self, encoded: list[list[int]], batches: list[list[int]]) -> list[list[int]]:
        """`model.generate` over `batches` (positions into `encoded`), left padding; rows in input order."""
        import torch

        out: list[list[int]] = [[] for _ in encoded]
        for batch in batches:
            enc = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding_side="left", return_tensors="pt")
            with torch.inference_mode():
                generated = self.model.generate(**enc.to(self.model.device), max_new_tokens=self.settings.max_new_tokens,
                                                do_sample=False, pad_token_id=self.pad)
            for i, row in zip(batch, generated[:, enc["input_ids"].shape[1] :].tolist()):
                out[i] = row
        return out

    def plain_loop(self, messages: list) -> tuple[list[str], list[str], int]:
        encoded = self.encode(messages)
        return self.finish(self.loop(encoded, [list(range(i, min(i + 8, len(encoded)))) for i in range(0, len(encoded), 8)]))

    def sorted_loop(self, messages: list) -> tuple[list[str], list[str], int]:
        from corpusmill.tasks.generation import plan_batches

        encoded = self.encode(messages)
        return self.finish(self.loop(encoded, plan_batches([len(e) for e in encoded], self.settings)))

    def cb_config(self):
        """transformers' continuous batching with the engine's limits: a paged cache of
        `batch_tokens` tokens, at most `batch_size` rows in flight."""
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        s = self.settings
        page = 64
        generation = GenerationConfig(max_new_tokens=s.max_new_tokens, do_sample=False, eos_token_id=sorted(self.stop),
                                      pad_token_id=self.pad)
        return generation, ContinuousBatchingConfig(page_size=page, num_blocks=s.batch_tokens // page,
                                                    max_batch_tokens=512, max_requests_per_batch=s.batch_size)

    def generate_batch(self, messages: list) -> tuple[list[str], list[str], int]:
        generation, batching = self.cb_config()
        outputs = self.model.generate_batch(self.encode(messages), generation_config=generation,
                                            continuous_batching_config=batching, persistent_manager=True)
        # Request ids are req_0, req_1, ... in input order.
        rows = [outputs[k].generated_tokens for k in sorted(outputs, key=lambda k: int(k.rsplit("_", 1)[1]))]
        return self.finish(rows)

    def corpusmill(self, messages: list) -> tuple[list[str], list[str], int]:
        from corpusmill.tasks.augment import STAGE
        from corpusmill.tasks.generation import generate_all

        usage: dict = {}
        # A new backend each turn: no prefix cache carried over from an earlier turn.
        out = generate_all(messages, self.settings, 0, stage_version=STAGE.version, usage=usage)
        return [g.text for g in out], [g.finish_reason for g in out], usage["new_tokens"]


def speed(recipe, filtered: Path, n: int | None, chunk: int | None, max_new_tokens: int | None, device: str) -> dict:
    """Every contender on the same `n` (all when None) demo prompts, `chunk` at a time (all at
    once when None), the order rotating from turn to turn."""
    from corpusmill.tasks.recipe import Augment

    settings = Augment() if max_new_tokens is None else Augment(max_new_tokens=max_new_tokens)
    settings = settings.model_copy(update={"device": device})
    sources, templates = demo_prompts(recipe, filtered, n)
    messages = [t.messages(s) for s, t in zip(sources, templates)]
    c = Contenders(settings, device)
    c.generate_batch(messages[:2])  # warm-up, untimed: the paged cache and its manager
    c.plain_loop(messages[:1])
    chunk = chunk or len(messages)
    totals = {name: {"seconds": 0.0, "new_tokens": 0, "texts": [], "finishes": []} for name in CONTENDERS}
    for turn, start in enumerate(range(0, len(messages), chunk)):
        part = messages[start : start + chunk]
        for name in CONTENDERS[turn % 4 :] + CONTENDERS[: turn % 4]:
            started = time.perf_counter()
            texts, finishes, tokens = getattr(c, name)(part)
            totals[name]["seconds"] += time.perf_counter() - started
            totals[name]["new_tokens"] += tokens
            totals[name]["texts"] += texts
            totals[name]["finishes"] += finishes
        print(f"speed: {start + len(part)}/{len(messages)} prompts", flush=True)
    c.model.destroy_cached_continuous_batching_manager()
    return {**summarize(totals, sources, settings), "chunk": chunk}


def summarize(totals: dict, sources: list[str], settings) -> dict:
    plain = totals["plain_loop"]
    rates = {name: t["new_tokens"] / t["seconds"] for name, t in totals.items()}
    result = {
        "prompts": len(sources),
        "settings": settings.model_dump(include={"max_new_tokens", "batch_size", "batch_tokens", "device"}),
        "contenders": {
            name: {"seconds": round(t["seconds"], 2), "new_tokens": t["new_tokens"],
                   "tokens_per_s": round(rates[name], 2),
                   "identical_to_plain_loop": round(sum(a == b for a, b in zip(t["texts"], plain["texts"]))
                                                    / len(sources), 3),
                   **yield_of(sources, t["texts"], t["finishes"])}
            for name, t in totals.items()
        },
    }
    result["ratios"] = {f"{name}_vs_{base}": round(rates[name] / rates[base], 3)
                        for name in ("corpusmill", "generate_batch") for base in CONTENDERS if base != name}
    return result


# --- decoding controls on the demo -----------------------------------------------------------


def controls(recipe, filtered: Path, steps: list, index: Path, n: int | None, names: list[str], work: Path) -> dict:
    """The augment stage over the demo's selected rows, once per decoding setting."""
    from corpusmill.tasks import augment
    from corpusmill.tasks.shards import read_table, write_table

    table = read_table(filtered)
    if n is not None:  # the first `n` selected rows, and nothing else selectable
        parents, _ = demo_prompts(recipe, filtered, n)
        keep = set(parents)
        table = table.filter([t in keep for t in table.column("text").to_pylist()])
    shard = write_table(table, work / "controls-in.parquet")
    results = {}
    for name in names:
        settings = recipe.augment if name == DEMO else recipe.augment.model_copy(update={**NO_CONTROLS, **CONTROLS[name]})
        out = work / name
        report = augment.run(shard, out / "out.parquet", out / "q.parquet", settings, recipe.seed, recipe.tokenizer,
                             steps, checkpoint_path=out / "checkpoint.jsonl", decontamination_index=index)
        kept = read_table(out / "out.parquet").column("text").to_pylist()
        seconds = report["extra"]["seconds"]
        results[name] = {
            "settings": settings.model_dump(include=set(NO_CONTROLS)), "generated": report["rows_in"],
            "kept": report["rows_out"],
            "kept_share": round(report["rows_out"] / max(report["rows_in"], 1), 3), "dropped": report["dropped"],
            "finish_reasons": report["extra"]["finish_reasons"], "distinct_2_kept": distinct_2(kept),
            "new_tokens": report["extra"]["new_tokens"], "seconds": seconds,
            "tokens_per_s": round(report["extra"]["new_tokens"] / seconds, 2),
            "kept_rows_per_minute": round(60 * report["rows_out"] / seconds, 2),
            "kept_per_1k_new_tokens": round(1000 * report["rows_out"] / report["extra"]["new_tokens"], 2),
            "examples": [text[:300] for text in kept[:2]],
        }
        print(f"controls: {name}: kept {report['rows_out']}/{report['rows_in']} {report['dropped']}", flush=True)
    return {"rows": next(iter(results.values()))["generated"] if results else 0,
            "augment": recipe.augment.model_dump(include={"templates", "max_new_tokens", "batch_size", "batch_tokens"}),
            "settings": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here (parts not run are kept from the file)")
    parser.add_argument("--quick", action="store_true", help="few prompts and tokens, two decoding settings")
    parser.add_argument("--part", choices=["speed", "controls"], action="append", help="default: both")
    parser.add_argument("--prompts", type=int, help="speed: the first N selected rows (default: all, quick 8)")
    parser.add_argument("--chunk", type=int, help="speed: prompts per turn (default: all at once, quick 8)")
    parser.add_argument("--rows", type=int, help="controls: the first N selected rows (default: all)")
    parser.add_argument("--controls", nargs="+", choices=sorted([*CONTROLS, DEMO]), help="controls: settings to try "
                        f"(default: all; {DEMO}: the demo recipe's own)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; on a CPU shared with other "
                        "work, 1 thread per process waits less on descheduled peers)")
    args = parser.parse_args(argv)
    parts = args.part or ["speed", "controls"]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    results: dict = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)", "greedy": True}
    with tempfile.TemporaryDirectory(prefix="corpusmill-bench-generate-") as tmp:
        work = Path(tmp)
        recipe, filtered, steps, index = demo_shard(work)
        for part in parts:
            started, machine = time.perf_counter(), describe(LIBRARIES)
            if part == "speed":
                result = speed(recipe, filtered, args.prompts or (8 if args.quick else None),
                               args.chunk or (8 if args.quick else None), 32 if args.quick else None, args.device)
            else:
                names = args.controls or (["off", DEMO] if args.quick else [*CONTROLS, DEMO])
                result = controls(recipe, filtered, steps, index, args.rows or (12 if args.quick else None), names, work)
            results[part] = {**result, "machine": machine, "seconds": round(time.perf_counter() - started, 1)}
    if args.json and args.json.is_file():
        results = over_earlier(results, json.loads(args.json.read_text(encoding="utf-8")))
    results["targets"] = targets(results)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def over_earlier(results: dict, earlier: dict) -> dict:
    """`results` with what it lacks from an earlier run's: the part that did not run, and the
    decoding settings that did not (on the same rows; marked `earlier_run`)."""
    merged = {**results, **{part: earlier[part] for part in ("speed", "controls") if part in earlier and part not in results}}
    new, old = results.get("controls"), earlier.get("controls")
    if new and old and new["rows"] == old["rows"]:
        carried = {name: {"machine": old["machine"], **setting, "earlier_run": True}
                   for name, setting in old["settings"].items() if name not in new["settings"]}
        merged["controls"] = {**new, "settings": {**carried, **new["settings"]}}
    return merged


def targets(results: dict) -> dict:
    """The issue's targets, met or not."""
    out = {}
    if "speed" in results:
        r, engine = results["speed"]["ratios"], results["speed"]["contenders"]["corpusmill"]
        out.update(vs_plain_loop_min=2.0, vs_plain_loop_met=r["corpusmill_vs_plain_loop"] >= 2.0,
                   vs_sorted_loop_min=1.3, vs_sorted_loop_met=r["corpusmill_vs_sorted_loop"] >= 1.3,
                   identical_min=0.95, identical_met=engine["identical_to_plain_loop"] >= 0.95)
    if DEMO in results.get("controls", {}).get("settings", {}):
        kept = results["controls"]["settings"][DEMO]["kept_share"]
        out.update(kept_share_min=0.6, demo_kept_share=kept, kept_share_met=kept >= 0.6)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
