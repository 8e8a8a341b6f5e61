"""Filter steps: the recipe's `filters:` list, each entry one step, run in order.

Built-in steps are named here; a user's own step is named by its import path
(`step: my_pkg.filters:NoTables`) and subclasses `FilterStep` like the built-ins.
Modules are imported when a recipe names their step, so a recipe without `language`
never loads the language model.
"""

from __future__ import annotations

import importlib
from typing import Any

from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict

BUILTIN: dict[str, str] = {
    "tokens": "corpusmill.tasks.filters.tokens:TokenBounds",
    "pii": "corpusmill.tasks.filters.pii:PersonalData",
    "language": "corpusmill.tasks.filters.language:Language",
    "quality": "corpusmill.tasks.filters.quality:Quality",
    "toxicity": "corpusmill.tasks.filters.toxicity:Toxicity",
}


class StepNotFound(ValueError):
    """A `step:` that is neither built in nor an importable FilterStep subclass."""


def step_class(name: str) -> type[FilterStep]:
    """The class behind a recipe's `step:` value."""
    path = BUILTIN.get(name, name)
    module_name, colon, class_name = path.partition(":")
    if not colon or not class_name:
        raise StepNotFound(f"unknown step {name!r}; choose one of {sorted(BUILTIN)}, or name your own step's class "
                           f"as package.module:ClassName")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise StepNotFound(f"step {name!r} cannot be loaded ({type(error).__name__}: {error}); check that "
                           f"{module_name} is importable where corpusmill runs and defines {class_name}") from None
    if not (isinstance(cls, type) and issubclass(cls, FilterStep)):
        raise StepNotFound(f"step {name!r} is not a corpusmill.tasks.filters.FilterStep subclass")
    return cls


def parse_step(entry: Any) -> FilterStep:
    """One recipe entry (`{step: language, languages: [en]}`) as its step; pydantic errors
    propagate so the recipe loader names the key."""
    if isinstance(entry, FilterStep):
        return entry
    if not isinstance(entry, dict) or "step" not in entry:
        raise StepNotFound(f"each filter is a mapping with a `step:` key, such as {{step: tokens, min: 16}}; got {entry!r}")
    return step_class(str(entry["step"])).model_validate(entry)


__all__ = ["BUILTIN", "FilterStep", "StepContext", "StepNotFound", "Verdict", "parse_step", "step_class"]
