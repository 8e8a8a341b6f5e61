"""Validate stage: run the Great Expectations suite over every split of a release.

Each split is one batch checked by `expectations.default.split_suite`; a frame derived from
all splits together is checked by `lineage_suite` (no id, cluster or parent in two splits),
and one of what the filters' own detectors still find in each row by `safety_suite`.
GE runs in an ephemeral context whose only Data Docs site is `out_dir/data_docs`, so
nothing is written outside `out_dir` and no GE project folder is created.
"""

from __future__ import annotations

import os

# Before great_expectations is imported: releases are built offline, with no telemetry.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import json
import math
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

from corpusmill.expectations.default import SUITE, SuiteParams, lineage_suite, safety_columns, safety_suite, split_suite
from corpusmill.tasks import schema
from corpusmill.tasks.datadocs import make_offline

LINEAGE = "lineage"
SAFETY = "safety"
SAMPLE = 5  # unexpected values quoted per failure
VALUE_CHARS = 60  # characters quoted per unexpected value (texts can be long)


def read_split(paths: list[Path]) -> pd.DataFrame:
    """All rows of one split's Parquet files as one frame (0 rows, release columns, if none)."""
    if not paths:
        return schema.RELEASE.empty_table().to_pandas()
    try:
        # No schema promotion: a column missing from one file would turn into nulls and hide.
        table = pa.concat_tables([pq.read_table(p) for p in paths])
    except pa.ArrowInvalid as e:
        names = ", ".join(str(p) for p in paths)
        raise ValueError(
            f"the files of one split ({names}) have different schemas; they must load as one table: {e}"
        ) from None
    return table.to_pandas()


def lineage_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per lineage key with the splits it occurs in: columns key, n_splits, splits.

    Keys are every row's id and cluster_id and every synthetic row's parent_id, so a row,
    its near duplicates and its paraphrases share keys. Columns a split lacks are skipped;
    the split suite reports the schema error.
    """
    parts = [pd.DataFrame({"key": pd.Series(dtype="str"), "split": pd.Series(dtype="str")})]
    for split, df in frames.items():
        for column in ("id", "cluster_id"):
            if column in df.columns:
                parts.append(pd.DataFrame({"key": df[column], "split": split}))
        if "parent_id" in df.columns and "synthetic" in df.columns:
            parents = df.loc[df["synthetic"].eq(True), "parent_id"]
            parts.append(pd.DataFrame({"key": parents, "split": split}))
    long = pd.concat(parts, ignore_index=True).dropna(subset=["key"])
    # Key x split membership; `any` per group is vectorised, unlike crosstab's default count.
    member = pd.get_dummies(long["split"], dtype=bool).groupby(long["key"], sort=True).any()
    out = pd.DataFrame(index=member.index)
    out["n_splits"] = member.sum(axis=1).astype("int64")
    # Readable list of splits per key ("train+test"), in the order the splits were given.
    names = pd.Series("", index=member.index, dtype="str")
    for split in (s for s in frames if s in member.columns):
        names = names.where(~member[split], names + "+" + split)
    out["splits"] = names.str.removeprefix("+")
    return out.reset_index()


def safety_frame(frames: dict[str, pd.DataFrame], params: SuiteParams,
                 decontamination_index: Path | None = None) -> pd.DataFrame:
    """One row per release row (id, split) with a count column per `safety_columns`: the
    personal data of each type and the n-grams of each eval set the filter steps' own
    detectors still find in its text."""
    parts = [pd.DataFrame({"id": df["id"], "split": split, "text": df["text"]})
             for split, df in frames.items() if "id" in df.columns and "text" in df.columns]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"id": [], "split": [], "text": []})
    texts = rows.pop("text").tolist()
    if params.personal_data:
        from corpusmill.tasks.filters.pii import types_found

        found = [set(f) for f in types_found(texts, params.pii_step)]
        for kind in params.personal_data:
            rows[f"personal_data.{kind}"] = [int(kind in f) for f in found]
    if params.eval_sets:
        from corpusmill.tasks.filters.decontaminate import count_hits

        for name, hits in count_hits(texts, decontamination_index, params.eval_sets).items():
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


def _observed(result: dict, exception_info: dict | None) -> str:
    """What GE saw, in one short line."""
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
            sample = [{k: _short(v) for k, v in row.items()} for row in sample]
        else:
            sample = [_short(v) for v in sample]
        return (
            f"{result['unexpected_count']} unexpected of {result['element_count']} rows checked, e.g. {sample[:SAMPLE]}"
        )
    observed = f"observed {_short(result.get('observed_value'))}"
    if result.get("details", {}).get("mismatched"):
        observed += f"; mismatched {result['details']['mismatched']}"
    return observed


def _finding(batch: str, expectation_result) -> dict:
    config = expectation_result.expectation_config
    return {
        "batch": batch,
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "observed": _observed(expectation_result.result, expectation_result.exception_info),
        "why": config.meta.get("why", ""),
    }


def validate_release(split_files: dict[str, list[Path]], params: SuiteParams, out_dir: Path,
                     decontamination_index: Path | None = None) -> dict:
    """Validate the release's splits; write `out_dir/results.json` and `out_dir/data_docs/`.

    Returns the summary: success is False when any critical expectation failed.
    """
    unknown = sorted(set(split_files) - set(schema.SPLITS))
    if unknown:
        raise ValueError(f"unknown split names {unknown}; a release has splits {list(schema.SPLITS)}")
    out_dir = Path(out_dir).resolve()  # GE's Data Docs site refuses relative folders
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = out_dir / "data_docs"

    frames = {s: read_split([Path(p) for p in split_files[s]]) for s in schema.SPLITS if s in split_files}
    batches = {s: (df, split_suite(params, s, empty=len(df) == 0)) for s, df in frames.items()}
    batches[LINEAGE] = (lineage_frame(frames), lineage_suite())
    if safety_columns(params):
        batches[SAFETY] = (safety_frame(frames, params, decontamination_index), safety_suite(params))

    context = _context(docs_dir)
    source = context.data_sources.add_pandas("release")
    # One run id for all batches, so Data Docs lists them as one validation run.
    run_id = RunIdentifier(run_name=f"corpusmill-{SUITE}")
    results = {}
    for batch, (df, suite) in batches.items():
        definition = source.add_dataframe_asset(batch).add_batch_definition_whole_dataframe("all rows")
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=batch, data=definition, suite=context.suites.add(suite))
        )
        # Name failing rows by their id (the lineage frame: by key and splits) in the report.
        index_columns = ["key", "splits"] if batch == LINEAGE else [c for c in ("id", "split") if c in df.columns]
        # A checkpoint per batch: a checkpoint passes the same dataframe to all its validations.
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"release-{batch}",
                validation_definitions=[validation],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": SAMPLE,
                    "unexpected_index_column_names": index_columns,
                },
            )
        )
        (results[batch],) = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id).run_results.values()
    make_offline(docs_dir)  # no CDN stylesheets or scripts: the reports read offline, inside the release

    critical, warnings = [], []
    for batch, result in results.items():
        for expectation_result in result.results:
            if not expectation_result.success:
                finding = _finding(batch, expectation_result)
                (critical if expectation_result.expectation_config.meta.get("critical", True) else warnings).append(
                    finding
                )

    summary = {
        "success": not critical,
        "suite": SUITE,
        "evaluated": sum(r.statistics["evaluated_expectations"] for r in results.values()),
        "failed": sum(r.statistics["unsuccessful_expectations"] for r in results.values()),
        "critical_failures": critical,
        "warnings": warnings,
        "per_batch": {b: {"rows": len(batches[b][0]), "success": r.success} for b, r in results.items()},
        "results": str(out_dir / "results.json"),
        "data_docs": str(docs_dir / "index.html"),
    }
    report = {"summary": summary, "results": {b: r.to_json_dict() for b, r in results.items()}}
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
        items.append(f"{where}: {f['observed']} (why: {f['why']})")
    return (
        f"Validation failed: {len(failures)} critical expectation(s) of suite {summary['suite']} failed, "
        f"so the release was not published. " + "; ".join(items) + ". "
        f"Details: {summary['data_docs']} (Data Docs) and {summary['results']}."
    )
