"""Validate stage: run the Great Expectations suite over a release, one file at a time.

Memory does not grow with the release: each data file is read, checked and let go before
the next (a file with more than `PIECE_TEXT_BYTES` of text, in pieces of whole row groups).
Its rows are one batch of `expectations.default.rows_suite` (named after the file, e.g.
`train-00001-of-00004`, or `train-00001-of-00004 rows 0-19999` for a piece), and what the filter steps' own detectors still find in them
one of `safety_suite` (`train-00001-of-00004 safety`). What holds over a whole split or
across splits (unique ids and texts, the synthetic share, one row per cluster, no lineage in
two splits) is checked on compact frames of hashes gathered while streaming
(`tasks.validate_sets`): one batch of `split_suite` per split and one of `lineage_suite`.

All batches are one validation run. GE runs in an ephemeral context whose only Data Docs
site is `out_dir/data_docs`, built once at the end, so nothing is written outside `out_dir`
and no GE project folder is created. The summary reports per split (and `lineage`,
`safety`); a failure found in several files is one finding that names them.
"""

from __future__ import annotations

import os

# Before great_expectations is imported: releases are built offline, with no telemetry.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import json
import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import great_expectations as gx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from corpusmill.expectations.default import (
    SUITE,
    SuiteParams,
    lineage_suite,
    rows_suite,
    safety_columns,
    safety_suite,
    split_suite,
)
from corpusmill.tasks import schema
from corpusmill.tasks.datadocs import make_offline
from corpusmill.tasks.validate_sets import Lineage, SplitKeys, flagged, lineage_frame, resolve, split_frame

LINEAGE = "lineage"
SAFETY = "safety"
SAMPLE = 5  # unexpected values quoted per failure
VALUE_CHARS = 60  # characters quoted per unexpected value (texts can be long)
SITE_BUILDER_LOGGER = "great_expectations.render.renderer.site_builder"
FILES_QUOTED = 3  # files quoted per finding when one expectation fails in several
# Text per GE batch: validation's memory grows by about eight times this (pandas strings,
# GE's metrics), whatever the size of a release file. Files of 180 MB of text: +1,140 MB
# read whole, +516 MB in 64 MB pieces, +204 MB in 16 MB pieces but a third slower (each
# batch costs GE about 1.5 s on top).
PIECE_TEXT_BYTES = 64 * 2**20


def read_file(path: Path, columns: list[str] | None = None, row_groups: list[int] | None = None,
              footer: pq.FileMetaData | None = None) -> pa.Table:
    """One release file's rows (or those of some of its row groups): the only way validation
    reads data, one piece at a time. `footer`: the file's metadata, where it was read already."""
    file = pq.ParquetFile(path, metadata=footer)
    return file.read(columns=columns) if row_groups is None else file.read_row_groups(row_groups, columns=columns)


def pieces(path: Path, footer: pq.FileMetaData) -> list[tuple[list[int] | None, str]]:
    """The row groups validated together, and each piece's label: the whole file where its text
    is at most `PIECE_TEXT_BYTES`, else runs of row groups of about that much text (from the
    footer), so a file's size never decides validation's memory."""
    name = Path(path).name.removesuffix(".parquet")
    text = footer.schema.to_arrow_schema().get_field_index("text")
    groups = [footer.row_group(g) for g in range(footer.num_row_groups)]
    sizes = [group.column(text).total_uncompressed_size if text >= 0 else 0 for group in groups]
    if sum(sizes) <= PIECE_TEXT_BYTES:
        return [(None, name)]
    runs, run, size = [], [], 0
    for group, group_size in enumerate(sizes):
        if run and size + group_size > PIECE_TEXT_BYTES:
            runs.append(run)
            run, size = [], 0
        run, size = run + [group], size + group_size
    runs.append(run)
    first_row = list(accumulate((group.num_rows for group in groups), initial=0))
    return [(run, f"{name} rows {first_row[run[0]]}-{first_row[run[-1] + 1] - 1}") for run in runs]


def read_footers(split_files: dict[str, list[Path]]) -> dict[Path, pq.FileMetaData]:
    """Every file's footer, read once for the whole validation. The files of each split must
    share one schema (no rows read)."""
    footers = {path: pq.read_metadata(path) for paths in split_files.values() for path in paths}
    for paths in split_files.values():
        schemas = [footers[p].schema.to_arrow_schema() for p in paths]
        if any(not s.equals(schemas[0]) for s in schemas[1:]):
            names = ", ".join(str(p) for p in paths)
            raise ValueError(f"the files of one split ({names}) have different schemas; they must load as one table")
    return footers


def safety_frame(table: pa.Table, split: str, params: SuiteParams,
                 decontamination_index: Path | None = None) -> pd.DataFrame:
    """One row per row of `table` (id, split) with a count column per `safety_columns`: the
    personal data of each type and the n-grams of each eval set the filter steps' own
    detectors still find in its text."""
    rows = pd.DataFrame({"id": table["id"].to_pandas(), "split": split})
    texts = table["text"]
    if params.personal_data:
        from corpusmill.tasks.filters.pii import types_found

        found = [set(f) for f in types_found(texts, params.pii_step)]
        for kind in params.personal_data:
            rows[f"personal_data.{kind}"] = [int(kind in f) for f in found]
    if params.eval_sets:
        from corpusmill.tasks.filters.decontaminate import count_hits

        for name, hits in count_hits(texts.to_pylist(), decontamination_index, params.eval_sets).items():
            rows[f"eval_hits.{name}"] = hits
    return rows


def _context(docs_dir: Path):
    """An in-memory GE context whose only Data Docs site is `docs_dir`."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "release": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _short(value) -> object:
    """A JSON-friendly, truncated copy of one unexpected value."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and len(value) > VALUE_CHARS:
        return value[:VALUE_CHARS] + "..."
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _observed(result: dict, exception_info: dict | None, quoted: tuple[str, ...] | None = None) -> str:
    """What GE saw, in one short line; a failing row is quoted by the columns in `quoted` (all
    GE gives, the failing value included, when None)."""
    messages = []
    if exception_info:
        # Flat ({"raised_exception": ...}) or keyed by metric id, depending on where GE failed.
        infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
        messages = [i["exception_message"] for i in infos if isinstance(i, dict) and i.get("raised_exception")]
    if messages:
        return "error: " + "; ".join(sorted(set(messages)))
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_index_list") or result.get("partial_unexpected_list") or []
        if sample and isinstance(sample[0], dict):
            sample = [{k: _short(v) for k, v in row.items() if quoted is None or k in quoted} for row in sample]
        else:
            sample = [_short(v) for v in sample]
        return (
            f"{result['unexpected_count']} unexpected of {result['element_count']} rows checked, e.g. {sample[:SAMPLE]}"
        )
    observed = f"observed {_short(result.get('observed_value'))}"
    if result.get("details", {}).get("mismatched"):
        observed += f"; mismatched {result['details']['mismatched']}"
    return observed


@dataclass
class Batch:
    """One GE batch's outcome: `report` is what the summary files it under (a split, lineage
    or safety), `file` the release file it came from (None for the split and lineage frames),
    `quoted` the columns a failing row is quoted by (None: all, the failing value included)."""

    name: str
    report: str
    file: str | None
    rows: int
    result: object  # GE's ExpectationSuiteValidationResult
    quoted: tuple[str, ...] | None = None


class Run:
    """One GE validation run over many batches, each suite added once and reused."""

    def __init__(self, docs_dir: Path):
        self.docs_dir = docs_dir
        self.context = _context(docs_dir)
        self.source = self.context.data_sources.add_pandas("release")
        self.suites: dict[str, gx.ExpectationSuite] = {}
        # One run id for all batches, so Data Docs lists them as one validation run.
        self.run_id = RunIdentifier(run_name=f"corpusmill-{SUITE}")
        self.batches: list[Batch] = []

    def check(self, name: str, report: str, file: str | None, frame: pd.DataFrame, suite: gx.ExpectationSuite,
              index_columns: list[str], *, hashed: bool = False) -> None:
        """Validate `frame` as batch `name` against `suite`, naming failing rows by `index_columns`
        (only by them where the frame holds hashes, which mean nothing to a reader)."""
        if suite.name not in self.suites:
            self.suites[suite.name] = self.context.suites.add(suite)
        definition = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all rows")
        validation = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=definition, suite=self.suites[suite.name]))
        # A validation definition, not a checkpoint per batch, and Data Docs built once at the
        # end: each checkpoint and docs update cost about as much again as the checks themselves.
        result = validation.run(batch_parameters={"dataframe": frame}, run_id=self.run_id, result_format={
            "result_format": "SUMMARY", "partial_unexpected_count": SAMPLE,
            "unexpected_index_column_names": [c for c in index_columns if c in frame.columns]})
        self.batches.append(Batch(name, report, file, len(frame), result, tuple(index_columns) if hashed else None))
        self._forget_data()

    def _forget_data(self) -> None:
        """Drop the batch GE just checked: its engine keeps every batch's frame, and every
        metric computed on it (full-length row masks among them), for the context's life."""
        engine = self.source.get_execution_engine()
        engine.batch_manager.reset_batch_cache()
        engine.batch_manager.batch_data_cache.clear()
        engine._metric_cache.clear()  # no public way; without it memory grows with every file

    def check_file(self, split: str, name: str, table: pa.Table, params: SuiteParams,
                   decontamination_index: Path | None) -> None:
        """The row-level suites on the rows of one release file (or piece of one, `name`)."""
        empty = table.num_rows == 0
        self.check(name, split, name, table.to_pandas(), rows_suite(params, "rows", empty=empty), ["id"])
        if safety_columns(params) and {"id", "text"} <= set(table.column_names):
            frame = safety_frame(table, split, params, decontamination_index)
            self.check(f"{SAFETY}-{name}", SAFETY, name, frame, safety_suite(params), ["id", "split"])

    def finish(self) -> None:
        """Write the Data Docs of every batch, readable offline."""
        with _raising(SITE_BUILDER_LOGGER):
            self.context.build_data_docs()
        make_offline(self.docs_dir)  # no CDN stylesheets or scripts: the reports read offline, inside the release


class _Caught(logging.Handler):
    """Keeps the exceptions a logger reports while they are being handled."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(sys.exc_info()[1] or RuntimeError(record.getMessage()))


@contextmanager
def _raising(logger_name: str) -> Iterator[None]:
    """Raise what `logger_name` only logged: GE's site builder catches an error writing a Data
    Docs page (a full disk) and logs it with its traceback, which would publish incomplete
    docs; instead the error stops the release like any other write."""
    logger, caught = logging.getLogger(logger_name), _Caught()
    logger.addHandler(caught)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(caught)
        logger.propagate = propagate
    if caught.errors:
        raise caught.errors[0]


def _findings(batches: list[Batch]) -> tuple[list[dict], list[dict]]:
    """Critical failures and warnings, one per report and expectation: a failure found in
    several files of a split is one finding naming them, not one per file."""
    merged: dict[tuple, dict] = {}
    for batch in batches:
        for expectation_result in batch.result.results:
            if expectation_result.success:
                continue
            config = expectation_result.expectation_config
            finding = merged.setdefault((batch.report, config.type, config.kwargs.get("column")), {
                "batch": batch.report, "expectation": config.type, "column": config.kwargs.get("column"),
                "files": [], "observed": {}, "why": config.meta.get("why", ""),
                "critical": config.meta.get("critical", True)})
            finding["files"] += [batch.file] if batch.file else []
            finding["observed"][batch.file] = _observed(expectation_result.result, expectation_result.exception_info,
                                                        batch.quoted)
    critical, warnings = [], []
    for finding in merged.values():
        finding["observed"] = _across_files(finding["observed"])
        (critical if finding.pop("critical") else warnings).append(finding)
    return critical, warnings


def _across_files(observed: dict[str | None, str]) -> str:
    """One line for what several files showed: once if they all showed the same, else per file."""
    if len(set(observed.values())) == 1:
        return next(iter(observed.values()))
    quoted = [f"{file}: {seen}" for file, seen in list(observed.items())[:FILES_QUOTED]]
    more = len(observed) - FILES_QUOTED
    return "; ".join(quoted) + (f"; and {more} more files" if more > 0 else "")


def _per_report(batches: list[Batch], splits: list[str]) -> dict[str, dict]:
    """Rows and success per split, lineage and safety (a split's rows counted once, from its files)."""
    out = {s: {"rows": 0, "success": True} for s in splits}
    for batch in batches:
        entry = out.setdefault(batch.report, {"rows": 0, "success": True})
        if batch.file or batch.report == LINEAGE:
            entry["rows"] += batch.rows
        entry["success"] = entry["success"] and batch.result.success
    return out


def validate_release(split_files: dict[str, list[Path]], params: SuiteParams, out_dir: Path,
                     decontamination_index: Path | None = None) -> dict:
    """Validate the release's splits; write `out_dir/results.json` and `out_dir/data_docs/`.

    Returns the summary: success is False when any critical expectation failed.
    """
    unknown = sorted(set(split_files) - set(schema.SPLITS))
    if unknown:
        raise ValueError(f"unknown split names {unknown}; a release has splits {list(schema.SPLITS)}")
    split_files = {s: [Path(p) for p in split_files[s]] for s in schema.SPLITS if s in split_files}
    footers = read_footers(split_files)
    out_dir = Path(out_dir).resolve()  # GE's Data Docs site refuses relative folders
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = out_dir / "data_docs"

    run = Run(docs_dir)
    keys = {split: SplitKeys() for split in split_files}
    for split, paths in split_files.items():
        for path in paths:
            for row_groups, name in pieces(path, footers[path]):
                table = read_file(path, row_groups=row_groups, footer=footers[path])
                run.check_file(split, name, table, params, decontamination_index)
                keys[split].add(table)
                del table  # before the next piece is read
    lineage = Lineage.of(keys, schema.SPLITS)
    wanted = flagged(keys, lineage, SAMPLE)
    row_ids, key_names = resolve(split_files, wanted, read_file) if wanted else ({}, {})
    for split, split_keys in keys.items():
        if split_keys.rows:  # an empty split has no share or duplicates to check
            run.check(split, split, None, split_frame(split_keys, row_ids.get(split, {})),
                      split_suite(params, "split"), ["row_id"], hashed=True)
    run.check(LINEAGE, LINEAGE, None, lineage_frame(lineage, key_names, schema.SPLITS), lineage_suite(),
              ["key_name", "splits"], hashed=True)
    run.finish()

    critical, warnings = _findings(run.batches)
    summary = {
        "success": not critical,
        "suite": SUITE,
        "evaluated": sum(b.result.statistics["evaluated_expectations"] for b in run.batches),
        "failed": sum(b.result.statistics["unsuccessful_expectations"] for b in run.batches),
        "critical_failures": critical,
        "warnings": warnings,
        "per_batch": _per_report(run.batches, list(split_files)),
        "results": str(out_dir / "results.json"),
        "data_docs": str(docs_dir / "index.html"),
    }
    report = {"summary": summary, "results": {b.name: b.result.to_json_dict() for b in run.batches}}
    (out_dir / "results.json").write_text(json.dumps(report, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    return summary


def format_failures(summary: dict) -> str:
    """One paragraph naming every critical failure, for the CLI's error message."""
    failures = summary["critical_failures"]
    if not failures:
        return f"Validation passed (suite {summary['suite']}, {summary['evaluated']} expectations)."
    items = []
    for f in failures:
        where = f"[{f['batch']}] {f['expectation']}" + (f" on column {f['column']}" if f["column"] else "")
        if f.get("files"):
            more = len(f["files"]) - FILES_QUOTED
            where += f" in {', '.join(f['files'][:FILES_QUOTED])}" + (f" and {more} more files" if more > 0 else "")
        items.append(f"{where}: {f['observed']} (why: {f['why']})")
    return (
        f"Validation failed: {len(failures)} critical expectation(s) of suite {summary['suite']} failed, "
        f"so the release was not published. " + "; ".join(items) + ". "
        f"Details: {summary['data_docs']} (Data Docs) and {summary['results']}."
    )
