"""Running a recipe's filter steps in order over one batch of rows.

`apply_steps` is the one place that turns verdicts into kept rows, quarantine rows and
counts, for the filter stage (original rows) and the augment stage (generated rows) alike,
so a paraphrase must pass what its source passed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from corpusmill.tasks import schema
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict
from corpusmill.tasks.filters.tokens import count_tokens
from corpusmill.tasks.shards import StageReport, merge_extra


class FilterStepError(CorpusmillError, RuntimeError):
    """A filter step that raised or returned a verdict of the wrong shape."""


def apply_steps(
    table: pa.Table, steps: Sequence[FilterStep], context: StepContext, stage: str, where: str = "",
) -> tuple[pa.Table, list[dict], StageReport]:
    """Run `steps` over `table`; return (kept rows in the TOKENIZED schema, quarantine rows, report).

    Every drop is counted as `<step>.<rule>` in the report (the stage name is its prefix in
    the manifest) and quarantined with its detail. `n_tokens` is counted on the final text
    unless a `tokens` step counted it and no later step rewrote the text.
    """
    if "synthetic" not in table.column_names:
        table = schema.with_provenance(table)
    report = StageReport(stage, rows_in=table.num_rows)
    dropped: list[dict] = []
    for step in steps:
        verdict = _run_step(step, table, context, where)
        table = _apply(table, step, verdict, stage, report, dropped)
    if "n_tokens" not in table.column_names:
        counts = count_tokens(table.column("text").to_pylist(), context.tokenizer)
        table = table.append_column("n_tokens", pa.array(counts, pa.int32()))
    for name in schema.FILTER_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.TOKENIZED.field(name).type))
    table = table.select(schema.TOKENIZED.names).cast(schema.TOKENIZED)
    report.rows_out = table.num_rows
    return table, dropped, report


def _run_step(step: FilterStep, table: pa.Table, context: StepContext, where: str) -> Verdict:
    """The step's verdict; a step that raises is named with the shard and the first row that
    makes it raise on its own, so a user can find the input that breaks it."""
    try:
        verdict = step.filter(table, context)
    except CorpusmillError:
        raise
    except Exception as error:
        raise FilterStepError(
            f"filter step {step.step!r} failed on {where or 'a batch'}{_failing_row(step, table, context)}: "
            f"{type(error).__name__}: {error}. Fix the step or the row; nothing was published."
        ) from error
    problems = _shape_problems(verdict, table.num_rows)
    if problems:
        raise FilterStepError(f"filter step {step.step!r} returned a verdict that does not fit {where or 'the batch'} "
                              f"of {table.num_rows} rows: {problems}.")
    return verdict


def _failing_row(step: FilterStep, table: pa.Table, context: StepContext) -> str:
    for i in range(table.num_rows):
        try:
            step.filter(table.slice(i, 1), context)
        except Exception:
            return f", row {i} (id {table.column('id')[i].as_py()})"
    return f" (the batch of {table.num_rows} rows; no single row fails alone)"


def _shape_problems(verdict: Verdict, n: int) -> str:
    sizes = {"reasons": len(verdict.reasons)}
    if verdict.details is not None:
        sizes["details"] = len(verdict.details)
    if verdict.text is not None:
        sizes["text"] = len(verdict.text)
    sizes.update({f"column {k!r}": len(v) for k, v in verdict.columns.items()})
    wrong = [f"{k} has {v} values" for k, v in sizes.items() if v != n]
    unknown = sorted(set(verdict.columns) - set(schema.TOKENIZED.names))
    if unknown:
        wrong.append(f"columns {unknown} are not release columns (choose from {schema.FILTER_COLUMNS + ('n_tokens',)})")
    return "; ".join(wrong)


def _apply(table: pa.Table, step: FilterStep, verdict: Verdict, stage: str, report: StageReport,
           dropped: list[dict]) -> pa.Table:
    if verdict.text is not None:
        text = verdict.text if isinstance(verdict.text, pa.Array) else pa.array(verdict.text, pa.string())
        table = table.set_column(table.column_names.index("text"), schema.INGEST.field("text"), text)
        if "n_tokens" in table.column_names:  # counted before the rewrite: recounted at the end
            table = table.drop_columns(["n_tokens"])
    for name, values in verdict.columns.items():
        field = schema.TOKENIZED.field(name)
        values = values if isinstance(values, pa.Array) else pa.array(values, field.type)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), field, values)
        else:
            table = table.append_column(field, values)
    if verdict.figures:
        report.extra = merge_extra(report.extra, {step.reason_prefix: verdict.figures})
    drop = verdict.dropped
    if not drop.any():
        return table
    details = verdict.details or [None] * len(drop)
    rows = table.filter(pa.array(drop)).select(["id", "source", "text"]).to_pylist()
    for row, i in zip(rows, np.flatnonzero(drop)):
        rule = verdict.reasons[i]
        reason = rule if "." in rule else f"{step.reason_prefix}.{rule}"
        dropped.append({**row, "stage": stage, "reason": reason, "detail": details[i]})
        report.drop(reason)
    return table.filter(pa.array(~drop))
