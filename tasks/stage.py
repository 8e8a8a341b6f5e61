"""The shape every stage shares: a named, versioned `run` and what its output depends on.

A stage module declares one `Stage` next to its code (`STAGE = Stage("filter", "1", run,
inputs=("in_path",), ...)`), and the flow turns it into a Prefect task with
`flows.release.stage_task`. Its cache key is derived from the declaration, so no
parameter exists only to change a key:

- the stage's name and `version` (bump it when the code changes what `run` writes);
- the sha256 of every file named by a parameter listed in `inputs` (content, not path);
- every other parameter as canonical JSON (settings, output paths);
- `identity(**parameters)`: what else the output depends on that the parameters only
  name, such as the content of a model's weights or of the input files behind a source.

Callables among the parameters (progress callbacks) are how a run reports, never what it
computes, and are left out of the key.

Outputs are content-addressed: `Stage.address` (the same parts, with input files named by
their paths, which are themselves addresses, and without the output parameters) names
the folder a stage writes into for these parameters. A cached result therefore never
names a file that a run with other settings or inputs has since rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from corpusmill.tasks.shards import file_sha256

# Parameters that name what a stage writes: part of its cache key, not of its address.
OUTPUTS = frozenset({"out_path", "out_dir", "quarantine_path", "checkpoint_path"})


def canonical(value: Any) -> Any:
    """A JSON-ready form of a parameter: pydantic models and dataclasses as plain dicts, also
    inside lists and dicts (a list of filter steps)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Stage:
    name: str
    version: str
    run: Callable[..., dict]
    inputs: tuple[str, ...] = ()  # parameters naming input files (a path, a list of paths, or None)
    identity: Callable[..., dict] | None = None  # derived from the parameters; see the module docstring
    label: str | None = None  # task run name suffix, a format string over the parameters, e.g. "{in_path.name}"

    def cache_key(self, parameters: dict[str, Any]) -> str:
        return f"{self.name}-{self._digest(parameters, by_content=True)}"

    def address(self, parameters: dict[str, Any]) -> str:
        """16 hex digits naming this stage's outputs for `parameters` (outputs left out)."""
        return self._digest({k: v for k, v in parameters.items() if k not in OUTPUTS}, by_content=False)[:16]

    def _digest(self, parameters: dict[str, Any], by_content: bool) -> str:
        digest = hashlib.sha256(f"{self.name}/{self.version}".encode())
        for name in sorted(parameters):
            value = parameters[name]
            if callable(value):
                continue
            if name in self.inputs and by_content:
                for path in value if isinstance(value, (list, tuple)) else [value] if value is not None else []:
                    digest.update(f"{name}:{file_sha256(path)}".encode())
            else:
                digest.update(f"{name}={json.dumps(canonical(value), sort_keys=True, default=str)}".encode())
        if self.identity is not None:
            derived = self.identity(**parameters)
            digest.update(f"identity={json.dumps(derived, sort_keys=True, default=str)}".encode())
        return digest.hexdigest()
