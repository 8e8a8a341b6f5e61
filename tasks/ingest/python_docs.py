"""The `python-docs` source: pydoc topics and the docstrings of the standard library's
public modules, from the Python that runs the ingest."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from functools import lru_cache
from typing import Iterator

from corpusmill.tasks.ingest.documents import Doc

# Modules skipped: importing them opens windows or browsers, prints, touches the terminal
# or the install (lib2to3 may write grammar caches; distutils is swapped for setuptools'
# copy when setuptools is installed), so their docstring is not worth it.
_SKIP_MODULES = frozenset({
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo",
    "readline", "rlcompleter", "distutils", "lib2to3",
})


def documents() -> Iterator[Doc]:
    """A document per topic and module, keyed 'topic:NAME' / 'module:NAME'; a module
    without a docstring is dropped as missing_text."""
    for key, text in topics_and_modules():
        if text is None:
            yield Doc(key, key, None, "missing_text", "no docstring")
        else:
            yield Doc(key, key, text)


@lru_cache(maxsize=1)
def topics_and_modules() -> tuple[tuple[str, str | None], ...]:
    """('topic:NAME', text) for every pydoc topic, then ('module:NAME', docstring) for every
    public stdlib module and submodule that imports cleanly, each sorted by name.

    Cached: importing the whole standard library once per process is enough.
    """
    from pydoc_data.topics import topics

    docs = [(f"topic:{name}", topics[name]) for name in sorted(topics)]
    modules: dict[str, str | None] = {}
    pending = sorted((name for name in sys.stdlib_module_names if _public_module(name)), reverse=True)
    while pending:
        name = pending.pop()
        module = _import_quietly(name)
        if module is None:
            continue
        modules[name] = module.__doc__ if isinstance(module.__doc__, str) else None
        if hasattr(module, "__path__"):  # a package: its public submodules are stdlib modules too
            pending += [m.name for m in pkgutil.iter_modules(module.__path__, f"{name}.") if _public_module(m.name)]
    docs += [(f"module:{name}", modules[name]) for name in sorted(modules)]
    return tuple(docs)


def _public_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] in _SKIP_MODULES or parts[0].startswith("turtle"):
        return False
    # private modules, __main__ (runs the package's CLI on import) and test suites
    return not any(p.startswith("_") or p in ("test", "tests", "idle_test") for p in parts)


def _import_quietly(name: str):
    """The module, or None when it cannot be imported here (platform modules, missing libs)."""
    try:
        with warnings.catch_warnings(action="ignore"):  # deprecated modules warn on import
            return importlib.import_module(name)
    except (Exception, SystemExit):
        return None
