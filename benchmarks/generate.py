"""Generation throughput: a plain `model.generate` loop against corpusmill's engine.

    python -m benchmarks.generate --json OUT.json [--quick]

Both run SmolLM2-135M-Instruct (the offline GGUF, fp32 on the CPU, or bf16 on CUDA) on the
same real paragraphs (Pride and Prejudice, from ../shared/corpora/gutenberg), with the
same chat template (the `paraphrase` prompt), the same `max_new_tokens`, greedy:

- baseline: what a user would write: fixed batches of 8 in input order, the tokenizer's
  left padding, `model.generate`, decode each row;
- corpusmill: `tasks.augment.generate_detailed`: continuous batching under the recipe's
  token budget (longest prompt first, a row that ends makes room for the next at once),
  the template's shared prefix read once, rows dropped from the batch as they end.

Both are measured in the same process, interleaved chunk by chunk (the order alternates),
so noise from other work on a shared machine hits both alike; the ratio is what to read.
The same comparison with the engine held to 8 rows shows how much comes from the engine
rather than from larger batches; at batch size 1 it checks that the engine adds no
overhead. "Equal
output": the share of prompts whose text is identical in both (greedy; padding can flip
a late token in fp32 arithmetic, so it is reported, not assumed).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "gutenberg" / "1342-0.txt"


def paragraphs(n: int) -> list[str]:
    """`n` real paragraphs of 40-140 words, spread over the book, in book order."""
    text = CORPUS.read_text(encoding="utf-8")
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    good = [p for p in paras if 40 <= len(p.split()) <= 140 and "gutenberg" not in p.lower()]
    step = max(len(good) // n, 1)
    return good[::step][:n]


def baseline(model, tokenizer, rendered: list[str], max_new_tokens: int, batch_size: int) -> tuple[list[str], int]:
    """The loop a user would write: fixed batches in input order, left padding."""
    import torch

    eos = tokenizer.eos_token_id
    outputs, tokens = [], 0
    for start in range(0, len(rendered), batch_size):
        batch = rendered[start : start + batch_size]
        enc = tokenizer(batch, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=eos)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            end = row.index(eos) + 1 if eos in row else len(row)
            tokens += end
            outputs.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
    return outputs, tokens


def measure(texts, template, settings_batch: dict, model, tokenizer, max_new_tokens: int, batch_size: int, chunk: int,
            rounds: int = 1):
    """Baseline and engine over `texts`, interleaved chunk by chunk (the order alternates,
    ABBA), `rounds` times over; totals and outputs of the last round."""
    from corpusmill.tasks.augment import generate_detailed
    from corpusmill.tasks.recipe import Augment

    settings = Augment(max_new_tokens=max_new_tokens, **settings_batch)
    result = {name: {"tokens": 0, "seconds": 0.0, "outputs": []} for name in ("baseline", "corpusmill")}
    per_round = []
    turn = 0
    for r in range(rounds):
        seconds = {"baseline": 0.0, "corpusmill": 0.0}
        tokens_round = {"baseline": 0, "corpusmill": 0}
        for name in result:
            result[name]["outputs"] = []
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            rendered = [tokenizer.apply_chat_template(template.messages(t), tokenize=False, add_generation_prompt=True)
                        for t in part]
            order = ("baseline", "corpusmill") if turn % 2 == 0 else ("corpusmill", "baseline")
            turn += 1
            for name in order:
                started = time.perf_counter()
                if name == "baseline":
                    outs, tokens = baseline(model, tokenizer, rendered, max_new_tokens, batch_size)
                else:
                    usage: dict = {}
                    outs = [g.text for g in generate_detailed(part, template, settings, 0, usage=usage)]
                    tokens = usage["new_tokens"]
                elapsed = time.perf_counter() - started
                seconds[name] += elapsed
                tokens_round[name] += tokens
                result[name]["seconds"] += elapsed
                result[name]["tokens"] += tokens
                result[name]["outputs"] += outs
        per_round.append(round((tokens_round["corpusmill"] / seconds["corpusmill"])
                               / (tokens_round["baseline"] / seconds["baseline"]), 3))
    for r in result.values():
        r["tokens_per_s"] = round(r["tokens"] / r["seconds"], 2)
        r["seconds"] = round(r["seconds"], 2)
    same = sum(a == b for a, b in zip(result["baseline"]["outputs"], result["corpusmill"]["outputs"]))
    summary = {
        "prompts": len(texts),
        "baseline": {k: v for k, v in result["baseline"].items() if k != "outputs"},
        "corpusmill": {k: v for k, v in result["corpusmill"].items() if k != "outputs"},
        "corpusmill_settings": settings.model_dump(include={"batch_size", "batch_tokens", "max_new_tokens"}),
        "ratio": round(result["corpusmill"]["tokens_per_s"] / result["baseline"]["tokens_per_s"], 3),
        "ratio_per_round": per_round,
        "equal_output_share": round(same / len(texts), 3),
        "equal_output_set": sorted(result["baseline"]["outputs"]) == sorted(result["corpusmill"]["outputs"]),
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    parser.add_argument("--prompts", type=int, help="prompts for the batched comparison (default 32, quick 16)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 64, quick 32")
    parser.add_argument("--batch-tokens", type=int, default=None, help="corpusmill's budget (default: the recipe default)")
    parser.add_argument("--batch-size", type=int, default=None, help="corpusmill's row bound (default: the recipe default)")
    args = parser.parse_args(argv)

    if not CORPUS.is_file():
        print(f"skipped: the shared corpus {CORPUS} is absent (the benchmark needs ../shared/corpora)", file=sys.stderr)
        return 0
    import torch

    from corpusmill.tasks.augment import load_templates
    from corpusmill.tasks.models import load_causal_lm
    from corpusmill.tasks.recipe import Augment, ModelRef

    n = args.prompts or (16 if args.quick else 32)
    n_single = 4 if args.quick else 8
    max_new = args.max_new_tokens or (32 if args.quick else 64)
    texts = paragraphs(n)
    [template] = load_templates(["paraphrase"])
    model, tokenizer, device = load_causal_lm(ModelRef(gguf="smollm2"), "auto")
    engine = {k: v for k, v in {"batch_tokens": args.batch_tokens, "batch_size": args.batch_size}.items() if v is not None}
    defaults = Augment()
    engine.setdefault("batch_size", defaults.batch_size)
    engine.setdefault("batch_tokens", defaults.batch_tokens)

    baseline(model, tokenizer, [tokenizer.apply_chat_template(template.messages(texts[0]), tokenize=False,
                                                              add_generation_prompt=True)], 4, 1)  # warm-up
    started = time.perf_counter()
    # The engine's gain comes from sorting a whole shard's prompts, so each turn runs the whole
    # set; three rounds in alternating order spread the noise of a shared machine over both.
    batched = measure(texts, template, engine, model, tokenizer, max_new, 8, chunk=n, rounds=3)
    equal_rows = measure(texts, template, {"batch_size": 8, "batch_tokens": None}, model, tokenizer, max_new, 8, chunk=n)
    single = measure(texts[:n_single], template, {"batch_size": 1, "batch_tokens": None}, model, tokenizer, max_new, 1,
                     chunk=1)
    results = {
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "max_new_tokens": max_new,
        "greedy": True,
        "batch_8": batched,
        "batch_8_engine_at_8_rows": equal_rows,
        "batch_1": single,
        "targets": {
            "batch_8_ratio_min": 1.3, "batch_8_met": batched["ratio"] >= 1.3,
            "batch_1_ratio_min": 0.95, "batch_1_met": single["ratio"] >= 0.95,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
