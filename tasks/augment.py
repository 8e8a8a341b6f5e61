"""Augment stage: synthetic rows generated from source rows by an LLM, gated, then filtered.

Per shard: choose rows by a hash of (seed, id) -> give each one prompt template -> generate
with `tasks.generation` (longest first under a token budget, continuously batched,
checkpointed row by row; transformers, vLLM or an OpenAI-compatible endpoint) -> quality gates -> the
recipe's filter steps, as on the source rows -> write the surviving synthetic rows with their provenance;
every rejected generation goes to the quarantine with its reason. The synthetic share cap
is applied later, across shards.

Prompt templates are data: YAML files in `tasks/prompts/` (id, description, optional
system, user with `{text}`). A template's `prompt_id` carries a hash of its content, so a
reworded template is a different prompt in every synthetic row it produces.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import xxhash
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from corpusmill.tasks import schema
from corpusmill.tasks.dedup import jaccard, shingles
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.generation import Generation, generate_all, generator_identity
from corpusmill.tasks.models import resolve
from corpusmill.tasks.recipe import Augment, ModelRef, QualityGates
from corpusmill.tasks.shards import StageReport, dropped_table, read_table, write_table
from corpusmill.tasks.stage import Stage
from corpusmill.tasks.filters import stage as filter_stage
from corpusmill.tasks.filters.chain import apply_steps
from corpusmill.tasks.filters.step import FilterStep

NAME = "augment"
PROMPTS_DIR = Path(__file__).parent / "prompts"

# Generated rows before the filter steps add `n_tokens` and the language columns.
CANDIDATE = pa.schema(list(schema.INGEST) + schema.PROVENANCE)


# --- prompt templates ------------------------------------------------------------------


class TemplateError(CorpusmillError):
    """`augment.templates` names a template that is missing, listed twice or invalid."""


class _TemplateFile(BaseModel):
    """The content of one template file; unknown keys are errors, as in the recipe."""

    model_config = ConfigDict(extra="forbid")

    id: str
    description: str
    system: str | None = None
    user: str

    @field_validator("user")
    @classmethod
    def _has_text_slot(cls, user: str) -> str:
        if "{text}" not in user:
            raise ValueError("must contain {text}, where the source document is inserted")
        return user


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    system: str | None
    user: str
    prompt_id: str  # f"{id}@{content hash}", recorded on every synthetic row

    def messages(self, text: str) -> list[dict[str, str]]:
        """Chat messages for one source document."""
        # str.replace, not str.format: documents and templates may contain other braces.
        user = {"role": "user", "content": self.user.replace("{text}", text)}
        return [{"role": "system", "content": self.system}, user] if self.system else [user]


def load_templates(names: Sequence[str], directory: Path | None = None) -> list[PromptTemplate]:
    """The named templates from `directory` (default: the packaged `tasks/prompts/`)."""
    directory = Path(directory) if directory is not None else PROMPTS_DIR
    available = sorted(p.stem for p in directory.glob("*.yaml"))
    if len(set(names)) != len(names):
        raise TemplateError(f"augment.templates {list(names)} names one template twice; list each once")
    templates = []
    for name in names:
        if name not in available:
            raise TemplateError(f"augment.templates: unknown prompt template {name!r}; "
                                f"use one of the available templates: {', '.join(available)}")
        path = directory / f"{name}.yaml"
        try:
            content = _TemplateFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as e:
            raise TemplateError(f"prompt template {path} is not valid YAML; fix the file: {e}") from None
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'the file'}: {err['msg']}" for err in e.errors())
            raise TemplateError(f"prompt template {path} is invalid; fix the file: {problems}") from None
        if content.id != name:
            raise TemplateError(f"prompt template {path} has id {content.id!r}; "
                                f"set its id to the file name, {name!r}")
        # Canonical JSON of the parsed content: comments and YAML layout do not change the id,
        # any change to the text does.
        canonical = json.dumps(content.model_dump(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
        templates.append(PromptTemplate(content.id, content.system, content.user, f"{content.id}@{digest}"))
    return templates


# --- which rows, which template ------------------------------------------------------


def _unit(*parts: object) -> float:
    """A number in [0, 1) from a hash of `parts`: the same on every machine, run and shard layout."""
    # The top 53 bits fit a double exactly, so the result can never round up to 1.0.
    return (xxhash.xxh3_64_intdigest("\x1f".join(map(str, parts)).encode("utf-8")) >> 11) / 2.0**53


def select_rows(ids: Sequence[str], fraction: float, seed: int, n_tokens: Sequence[int], max_source_tokens: int) -> list[int]:
    """Positions of the rows to augment: hash(seed, id) < fraction and not longer than the limit.

    Each decision depends on the row alone, so it does not change with row order or shard size.
    """
    return [
        i
        for i, (row_id, n) in enumerate(zip(ids, n_tokens, strict=True))
        if n <= max_source_tokens and _unit("select", seed, row_id) < fraction
    ]


def assign_templates(ids: Sequence[str], templates: Sequence[PromptTemplate], seed: int) -> list[PromptTemplate]:
    """One template per row, by rendezvous hashing on (seed, id, template id).

    Rendezvous hashing makes the choice independent of the order of the recipe's list, and
    adding a template moves only the rows the new one wins; keyed on the template id (not
    the content hash) so rewording a template does not reshuffle rows between templates.
    """
    return [max(templates, key=lambda t: _unit("template", seed, row_id, t.id)) for row_id in ids]


# --- generation ------------------------------------------------------------------------
# The engine (batching by token budget, stop sequences, finish reasons, checkpoints and the
# backends) lives in `tasks.generation`; this wrapper gives it the augment stage's templates.


def generate_detailed(
    texts: Sequence[str],
    templates: PromptTemplate | Sequence[PromptTemplate],
    settings: Augment,
    seed: int,
    on_progress: Callable[[int], None] | None = None,
    usage: dict | None = None,
    checkpoint_path: Path | None = None,
    on_generated: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """One `Generation` (text, finish_reason, new_tokens) per source text, in the order given.

    `templates` is one template for all texts or one per text. Prompts run longest first
    within `settings.batch_tokens` (at most `settings.batch_size` rows at once); greedy when
    `settings.temperature == 0`, else sampling with each row's own seed, so a rerun on the
    same device gives the same text. `on_progress(n)` is called with the rows that ended
    (an increment, as a progress bar's advance takes); `usage`, if given, receives
    `prompt_tokens` and `new_tokens`. With `checkpoint_path`, finished rows are appended
    there as they end and reused by a rerun (see `tasks.generation`).
    """
    if isinstance(templates, PromptTemplate):
        templates = [templates] * len(texts)
    if len(templates) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(templates)} templates; give one template or one per text")
    messages = [t.messages(x) for x, t in zip(texts, templates)]
    return generate_all(messages, settings, seed, stage_version=STAGE.version, on_progress=on_progress, usage=usage,
                        checkpoint_path=checkpoint_path, on_generated=on_generated)


# --- quality gates ---------------------------------------------------------------------

REFUSAL = re.compile(
    r"\b(?:as an ai|as a language model|as an assistant|i cannot|i can not|i can't|i'm sorry|i am sorry"
    r"|i am unable|i'm unable|i am not able|i'm not able|i apologi[sz]e)\b"
)
_WORD = re.compile(r"\w+")


# The commonest English function words: English prose is ~40-60% these, other languages
# written in Latin letters under ~10% (a few shared spellings: "a", "an", "die", "in").
ENGLISH_STOPWORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below between both"
    " but by can could did do does doing down during each few for from further had has have having he her here hers"
    " herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on"
    " once only or other our ours out over own same she should so some such than that the their theirs them"
    " themselves then there these they this those through to too under until up very was we were what when where"
    " which while who whom why will with would you your yours yourself".split()
)
_LETTERS = re.compile(r"[^\W\d_]+")


def english_share(text: str) -> tuple[float, int]:
    """(share of words that are English stopwords, number of words): a cheap language check."""
    words = _LETTERS.findall(text.lower())
    return sum(w in ENGLISH_STOPWORDS for w in words) / max(len(words), 1), len(words)


def is_english(text: str) -> bool | None:
    """True or False when the text is long enough to tell, else None."""
    share, n = english_share(text)
    return None if n < 8 else share >= 0.25


def _fold(text: str) -> str:
    return text.lower().replace("\u2019", "'")


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def check_quality(
    source: str, generated: str, gates: QualityGates, finish_reason: str | None = None
) -> tuple[str, str] | None:
    """The first gate `generated` fails, as (reason, detail), or None when it passes.

    Checked most specific first, so a rejection names its cause rather than a symptom:
    empty, refusal, wrong_language, copy_of_source, repetition, truncated, too_short, too_long. A refusal is
    usually also short, and a looping generation usually also runs into max_new_tokens: the
    truncation and length gates come last because they explain least. `finish_reason`
    "length" (the generation hit max_new_tokens) fails `truncated` unless
    `gates.allow_truncated`.
    """
    text = generated.strip()
    if not text:
        return "empty", "nothing but whitespace"
    folded, folded_source = _fold(text), _fold(source)
    for phrase in dict.fromkeys(m.group(0) for m in REFUSAL.finditer(folded)):
        # A phrase the source itself contains was carried over, not refused: novels say "I cannot" too.
        if phrase not in folded_source:
            return "refusal", f"contains {phrase!r}"

    if gates.check_language and is_english(source):
        # Lenient on the output side (under 12% where English prose has 40%+), so terse English passes.
        share, n = english_share(text)
        if n >= 5 and share < 0.12:
            return "wrong_language", f"source is English, output is not ({share:.2f} English stopwords)"

    # The same word 5-grams and Jaccard as dedup, so "copy of the source" and "near duplicate" agree;
    # a text under five words is one shingle, so it is a copy exactly when it has the same words.
    generated_shingles, source_shingles = shingles(text, 5), shingles(source, 5)
    if generated_shingles and source_shingles:
        similarity = jaccard(generated_shingles, source_shingles)
        if similarity > gates.max_source_jaccard:
            return "copy_of_source", f"word 5-gram Jaccard {similarity:.3f} > {gates.max_source_jaccard}"
        # A truncated verbatim copy has a low Jaccard (it is shorter) but is mostly the source's own 5-grams.
        contained = len(generated_shingles & source_shingles) / len(generated_shingles)
        if contained > gates.max_source_containment:
            return "copy_of_source", f"{contained:.3f} of word 5-grams copied from the source > {gates.max_source_containment}"

    words = _WORD.findall(folded)
    trigrams = _ngrams(words, 3)
    if trigrams:
        repeated = 1 - len(set(trigrams)) / len(trigrams)
        if repeated > gates.max_repeated_ngram_ratio:
            return "repetition", f"{repeated:.3f} of word 3-grams repeated > {gates.max_repeated_ngram_ratio}"

    if finish_reason == "length" and not gates.allow_truncated:
        return "truncated", "hit max_new_tokens before an end-of-sequence token or stop sequence"

    ratio = len(text) / max(len(source.strip()), 1)
    if len(text) < gates.min_chars:
        return "too_short", f"{len(text)} characters < {gates.min_chars}"
    if ratio < gates.min_length_ratio:
        return "too_short", f"length ratio {ratio:.3f} < {gates.min_length_ratio}"
    if ratio > gates.max_length_ratio:
        return "too_long", f"length ratio {ratio:.3f} > {gates.max_length_ratio}"
    return None


def quality_gate(source: str, generated: str, gates: QualityGates, finish_reason: str | None = None) -> str | None:
    """The reason `generated` is rejected, or None when it is kept (see `check_quality`)."""
    failed = check_quality(source, generated, gates, finish_reason)
    return failed[0] if failed else None


# --- the stage -------------------------------------------------------------------------


def synthetic_id(parent_id: str, prompt_id: str, generator: str) -> str:
    """Stable id of a generated row: the same parent, prompt and model give the same id."""
    return xxhash.xxh3_128_hexdigest("\x1f".join((parent_id, prompt_id, generator)).encode("utf-8"))[:24]


def run(
    in_path: Path,
    out_path: Path,
    quarantine_path: Path,
    settings: Augment,
    seed: int,
    tokenizer_ref: ModelRef,
    steps: list[FilterStep],
    on_progress: Callable[[int], None] | None = None,
    checkpoint_path: Path | None = None,
    on_start: Callable[[int], None] | None = None,
    on_generated: Callable[[int, int], None] | None = None,
    decontamination_index: Path | None = None,
) -> dict:
    """Augment one tokenized shard: synthetic rows (TOKENIZED schema) to `out_path`, always
    written, even empty; rejected generations to `quarantine_path` when there are any.

    Finished rows are appended to `checkpoint_path` (default: `<out dir>/checkpoints/
    <shard>.jsonl`) as they end, so a crash loses at most the rows in flight and a rerun
    reuses the rest. `on_start(rows)` is called once with the number of rows to generate,
    `on_generated(rows, new_tokens)` after each group of rows generated.
    The report counts generated candidates as `rows_in`, so rows_in == rows_out + sum(dropped).
    """
    parents, templates = _parents(read_table(in_path), settings, seed)
    if checkpoint_path is None:
        checkpoint_path = Path(out_path).parent / "checkpoints" / f"{Path(out_path).stem}.jsonl"
    if on_start is not None:
        on_start(len(parents))
    usage: dict = {}
    started = time.perf_counter()
    outputs = generate_detailed(
        [p["text"] for p in parents], templates, settings, seed, on_progress, usage, checkpoint_path, on_generated
    )
    seconds = time.perf_counter() - started

    report = StageReport(NAME, rows_in=len(parents))
    candidates, dropped = _gate(parents, templates, outputs, settings, report)
    # The same filter steps as the originals: a paraphrase must pass what its source passed.
    kept, filtered, filter_report = apply_steps(
        pa.Table.from_pylist(candidates, schema=CANDIDATE), steps,
        filter_stage.context(tokenizer_ref, decontamination_index), NAME, where=f"the generated rows of {Path(in_path).name}",
    )
    report.dropped.update(filter_report.dropped)
    dropped.extend(filtered)
    report.rows_out = kept.num_rows
    _write(kept, dropped, out_path, quarantine_path)

    kept_by_prompt = Counter(kept.column("prompt_id").to_pylist())
    report.extra.update(
        selected=len(parents),
        new_tokens=usage["new_tokens"],
        reused=usage["reused"],
        finish_reasons=dict(sorted(Counter(g.finish_reason for g in outputs).items())),
        seconds=round(seconds, 3),
        tokens=int(pc.sum(kept.column("n_tokens")).as_py() or 0),
        prompt_ids={
            pid: {"generated": n, "kept": kept_by_prompt[pid]}
            for pid, n in sorted(Counter(t.prompt_id for t in templates).items())
        },
        **filter_report.extra,
    )
    return report.to_dict()


def _parents(table: pa.Table, settings: Augment, seed: int) -> tuple[list[dict], list[PromptTemplate]]:
    """The rows of `table` to augment (id, text, source, license) and each one's template."""
    picked = select_rows(
        table.column("id").to_pylist(), settings.fraction, seed, table.column("n_tokens").to_pylist(), settings.max_source_tokens
    )
    parents = table.take(pa.array(picked, pa.int64())).select(["id", "text", "source", "license"]).to_pylist()
    return parents, assign_templates([p["id"] for p in parents], load_templates(settings.templates), seed)


def _gate(
    parents: list[dict], templates: list[PromptTemplate], outputs: list[Generation], settings: Augment,
    report: StageReport,
) -> tuple[list[dict], list[dict]]:
    """(candidate rows with their provenance, rejected rows for the quarantine): each
    generation through the quality gates; rejections are counted in `report`."""
    generator = generator_identity(settings)
    sampling = settings.model_dump(include={"backend", "temperature", "top_p", "repetition_penalty", "no_repeat_ngram_size",
                                            "max_new_tokens", "stop"})
    candidates, dropped = [], []
    for parent, template, generation in zip(parents, templates, outputs):
        row = {
            "id": synthetic_id(parent["id"], template.prompt_id, generator),
            "text": generation.text,
            "source": parent["source"],
            "license": parent["license"],  # a generated text is derived from its parent: same terms
            "synthetic": True,
            "parent_id": parent["id"],
            "generator": generator,
            "prompt_id": template.prompt_id,
            "sampling": {**sampling, "seed": generation.seed},
        }
        failed = check_quality(parent["text"], generation.text, settings.gates, generation.finish_reason)
        if failed:
            reason, detail = failed
            dropped.append({
                "id": row["id"], "source": row["source"], "stage": NAME, "reason": reason,
                "detail": f"{detail}; parent_id={parent['id']}; prompt_id={template.prompt_id}", "text": row["text"],
            })
            report.drop(reason)
        else:
            candidates.append(row)
    return candidates, dropped


def _write(kept: pa.Table, dropped: list[dict], out_path: Path, quarantine_path: Path) -> None:
    """The shard's synthetic rows, always (even none), and its quarantine when anything was dropped."""
    write_table(kept, out_path)
    if dropped:
        write_table(dropped_table(dropped), quarantine_path)
    else:  # a quarantine left by an earlier run with other settings would be counted as this run's
        Path(quarantine_path).unlink(missing_ok=True)


def _identity(settings: Augment, tokenizer_ref: ModelRef, steps: list[FilterStep], **_) -> dict:
    """The weights, tokenizer and template texts behind the parameters: a changed file regenerates."""
    return {"generator": generator_identity(settings), "tokenizer": resolve(tokenizer_ref).identity,
            "prompts": [t.prompt_id for t in load_templates(settings.templates)], "steps": [s.identity() for s in steps]}


STAGE = Stage(NAME, "4", run, inputs=("in_path", "decontamination_index"), label="{in_path.name}", identity=_identity)
