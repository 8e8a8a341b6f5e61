"""The shape every filter step shares: a pydantic model of its parameters with one `filter`.

A step takes a batch of rows (an Arrow table with at least `id`, `text`, `source` and
`synthetic`) and returns a `Verdict`: which rows it drops and why, and for steps that
rewrite text (redaction) or add columns (language), the new values. The filter stage runs
the recipe's steps in order (`tasks.filters.chain.apply_steps`); the augment stage runs the
same steps on generated rows.

A step's recipe entry is its parameters plus `step:` (the built-in name, or `pkg.mod:Class`
for a user's own step). Its `VERSION` and parameters are part of the cache key of the stage
that runs it: bump `VERSION` when the code changes what the step decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict


@dataclass
class StepContext:
    """What a step may need beyond its parameters, loaded once per shard and only when asked for."""

    tokenizer_ref: Any = None  # a recipe ModelRef
    resources: dict[str, Path] = field(default_factory=dict)  # files built for steps, e.g. a decontamination index

    @cached_property
    def tokenizer(self):
        from corpusmill.tasks.models import load_tokenizer

        return load_tokenizer(self.tokenizer_ref)


@dataclass
class Verdict:
    """One step's decision on a batch of n rows.

    - `reasons[i]`: None keeps row i; a rule name (`mean_word_length`) drops it. The stage
      counts the drop as `<stage>.<step>.<rule>`, where `<step>` is the step's `reason_prefix`,
      unless the rule already has a dot (`gopher.mean_word_length`: a step with rule families).
    - `details[i]`: why, for the quarantine (the measured value and the bound), or None.
    - `text`: the batch's text after the step (redaction), or None when unchanged.
    - `columns`: columns the step sets on every row, by release schema name (`language`).
    - `figures`: numbers for the stage report (`{"email": {"redacted": 3}}`): numbers and
      dicts of numbers only, so shards add up.
    """

    reasons: Sequence[str | None]
    details: Sequence[str | None] | None = None
    text: pa.Array | Sequence[str] | None = None
    columns: dict[str, pa.Array] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def keep_all(cls, n: int, **kwargs) -> Verdict:
        return cls([None] * n, **kwargs)

    @classmethod
    def from_rules(cls, n: int, rules: dict[str, tuple[np.ndarray, Sequence[str] | None]], **kwargs) -> Verdict:
        """A verdict from boolean masks, one per rule, in order: a row failing several rules
        is dropped by the first, as the reference implementations do."""
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        for rule, (failed, why) in rules.items():
            for i in np.flatnonzero(failed):
                if reasons[i] is None:
                    reasons[i] = rule
                    details[i] = why[i] if why is not None else None
        return cls(reasons, details, **kwargs)

    @property
    def dropped(self) -> np.ndarray:
        return np.fromiter((r is not None for r in self.reasons), dtype=bool, count=len(self.reasons))


class FilterStep(BaseModel):
    """Base of every step. Subclasses declare their parameters as pydantic fields and
    implement `filter`; `step` is set from the recipe entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str
    VERSION: ClassVar[str] = "1"
    # Drop reasons read `<stage>.<reason_prefix>.<rule>`; None: derived from the class name.
    NAME: ClassVar[str | None] = None
    # Third-party models and word lists the step runs on, with their licenses: the dataset card credits them.
    CREDITS: ClassVar[tuple[str, ...]] = ()

    @property
    def reason_prefix(self) -> str:
        return self.NAME or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What this step's output depends on beyond its parameters (its version; a step
        that reads files adds their content)."""
        return {"step": self.step, "version": self.VERSION}
