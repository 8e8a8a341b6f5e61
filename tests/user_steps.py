"""A user's own filter steps, loaded by import path (`step: user_steps:NoTables`) in tests.

`NoTables` is the README's worked example: it drops rows with more than `max_rows`
Markdown table rows.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from corpusmill.tasks.filters import FilterStep, StepContext, Verdict


class NoTables(FilterStep):
    VERSION = "1"
    max_rows: int = Field(3, ge=0, description="most Markdown table rows a document may have")

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        rows = pc.count_substring_regex(table.column("text"), r"(?m)^\|.*\|$").to_numpy(zero_copy_only=False)
        return Verdict.from_rules(len(rows), {"too_many_table_rows": (rows > self.max_rows, [f"{n} rows" for n in rows])})


class Explodes(FilterStep):
    """Raises on any row whose text contains "boom"."""

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        if any("boom" in t for t in table.column("text").to_pylist()):
            raise ValueError("cannot parse this row")
        return Verdict.keep_all(table.num_rows)


class WrongLength(FilterStep):
    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        return Verdict.keep_all(table.num_rows + 1)


class NotAStep:
    pass


class FirstWord(FilterStep):
    """Rewrites each text to its first word: a step that changes text."""

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        return Verdict.keep_all(table.num_rows, text=[t.split(" ")[0] for t in table.column("text").to_pylist()])


class AppendContact(FilterStep):
    """Appends an e-mail address to every text: a step that undoes an earlier redaction."""

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        return Verdict.keep_all(table.num_rows, text=[t + " Write to jane.doe@example.org."
                                                      for t in table.column("text").to_pylist()])
