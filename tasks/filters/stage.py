"""The filter stage: the recipe's filter steps over one ingest shard, then token counts.

Kept rows go on in the TOKENIZED schema (with `n_tokens`, `language`, `language_score`);
dropped rows go to the shard's quarantine with `<step>.<rule>` and the detail.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from corpusmill.tasks.filters.chain import apply_steps
from corpusmill.tasks.filters.step import FilterStep, StepContext
from corpusmill.tasks.models import resolve
from corpusmill.tasks.recipe import ModelRef
from corpusmill.tasks.shards import dropped_table, read_table, write_table
from corpusmill.tasks.stage import Stage

NAME = "filter"


def context(tokenizer_ref: ModelRef, decontamination_index: Path | None) -> StepContext:
    """What the steps of one run share: the recipe tokenizer and the files built for steps."""
    resources = {"decontaminate": Path(decontamination_index)} if decontamination_index else {}
    return StepContext(tokenizer_ref=tokenizer_ref, resources=resources)


def run(in_path: Path, out_path: Path, quarantine_path: Path, tokenizer_ref: ModelRef, steps: list[FilterStep],
        decontamination_index: Path | None = None) -> dict:
    """Filter one ingest shard into `out_path`; dropped rows go to `quarantine_path`."""
    table, dropped, report = apply_steps(read_table(in_path), steps, context(tokenizer_ref, decontamination_index),
                                         NAME, where=f"shard {Path(in_path).name}")
    write_table(table, out_path)
    if dropped:
        write_table(dropped_table(dropped), quarantine_path)
    else:
        Path(quarantine_path).unlink(missing_ok=True)  # an earlier run's rejects must not linger
    report.extra["tokens"] = int(pc.sum(table.column("n_tokens")).as_py() or 0)
    return report.to_dict()


def identity(tokenizer_ref: ModelRef, steps: list[FilterStep], **_) -> dict:
    """The tokenizer's content and each step's version and the files it reads."""
    return {"tokenizer": resolve(tokenizer_ref).identity, "steps": [s.identity() for s in steps]}


STAGE = Stage(NAME, "1", run, inputs=("in_path", "decontamination_index"), label="{in_path.name}", identity=identity)
