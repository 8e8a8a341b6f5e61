"""The release flow: ingest -> tokenize -> augment -> dedup -> split -> validate -> publish.

Stages pass Parquet shard *paths* under `<work_dir>/<dataset>/<stage>/`. Each shard task
is cached on the content hash of its input files plus its settings plus the stage's cache
version below, with results persisted under `<work_dir>/<dataset>/.results`, so a killed
run resumes where it stopped and a changed setting recomputes only what depends on it.
The work itself lives in `tasks/`; this module only wires it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from corpusmill.flows import progress
from corpusmill.tasks import augment, card, dedup, ingest, publish, schema, split, tokenize
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.generation import Throughput, generator_identity
from corpusmill.tasks.models import resolve
from corpusmill.tasks.recipe import Recipe, Runner, load_recipe, source_name
from corpusmill.tasks.shards import StageReport, file_sha256
from corpusmill.tasks.validate import validate_release, format_failures
from corpusmill.expectations.default import SuiteParams

# Bump a stage's version when its code changes what it writes: cached shards of older
# versions are then recomputed instead of reused.
CACHE_VERSIONS = {"ingest": "1", "tokenize": "1", "augment": "2", "signatures": "2", "bands": "1", "cluster": "2",
                  "assign": "1", "finalize": "1"}
DEFAULT_WORK_DIR = "work"


class ValidationFailed(CorpusmillError):
    pass


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


def content_key(stage: str, inputs: tuple[str, ...] = ()):
    """A cache_key_fn: the stage and its version, the sha256 of every input file named in
    `inputs`, and every other parameter as JSON (settings and output paths)."""

    def key(_context, parameters: dict[str, Any]) -> str:
        digest = hashlib.sha256(f"{stage}/{CACHE_VERSIONS[stage]}".encode())
        for name in sorted(parameters):
            value = parameters[name]
            if name in inputs:
                for path in value if isinstance(value, (list, tuple)) else [value]:
                    digest.update(file_sha256(path).encode())
            else:
                digest.update(f"{name}={json.dumps(_plain(value), sort_keys=True, default=str)}".encode())
        return f"{stage}-{digest.hexdigest()}"

    return key


def _retry_unless_user_error(_task, _task_run, state) -> bool:
    """Retry I/O hiccups, not bad input: the same bad input fails the same way again."""
    try:
        state.result()
    except CorpusmillError:
        return False
    except Exception:
        return True
    return False


shard_task = dict(persist_result=True, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_unless_user_error)


@task(name="ingest", task_run_name="ingest-{unit.label}", cache_key_fn=content_key("ingest"), **shard_task)
def ingest_unit(source, unit, out_dir: Path, quarantine_path: Path, shard_rows: int, fingerprint: str) -> dict:
    return ingest.run(source, unit, out_dir, quarantine_path, shard_rows, on_progress=lambda n: progress.advance("documents", n))


@task(name="tokenize", task_run_name="tokenize-{in_path.name}", cache_key_fn=content_key("tokenize", ("in_path",)), **shard_task)
def tokenize_shard(in_path: Path, out_path: Path, quarantine_path: Path, tokenizer_ref, filters, tokenizer_identity: str) -> dict:
    return tokenize.run(in_path, out_path, quarantine_path, tokenizer_ref, filters)


@task(name="augment", task_run_name="augment-{in_path.name}", tags=["gpu"],
      cache_key_fn=content_key("augment", ("in_path",)), **shard_task)
def augment_shard(in_path: Path, out_path: Path, quarantine_path: Path, settings, seed: int, tokenizer_ref, filters,
                  generator: str, tokenizer_identity: str, prompt_ids: list[str]) -> dict:
    logger = get_run_logger()
    meter = Throughput()
    last_log = [0.0]

    def started(rows: int) -> None:
        meter.start(rows)
        progress.begin("generate", rows)  # grows the bar's total, so it shows an ETA

    def generated(rows: int, tokens: int) -> None:
        meter.add(0, tokens)
        progress.advance("generate", 0, tokens=tokens)

    def advanced(rows: int) -> None:
        progress.advance("generate", rows)
        meter.add(rows)
        now = time.monotonic()
        if now - last_log[0] >= 30 or meter.rows >= meter.total:  # at most one line per 30 s per shard
            last_log[0] = now
            logger.info("augment %s: %s", in_path.name, meter.line())

    return augment.run(in_path, out_path, quarantine_path, settings, seed, tokenizer_ref, filters,
                       on_progress=advanced, on_start=started, on_generated=generated)


@task(name="signatures", task_run_name="signatures-{in_path.name}", cache_key_fn=content_key("signatures", ("in_path",)), **shard_task)
def signature_shard(in_path: Path, out_path: Path, settings) -> dict:
    return dedup.signatures(in_path, out_path, settings)


@task(name="bands", task_run_name="bands-{band}", cache_key_fn=content_key("bands", ("signature_paths",)), **shard_task)
def band_pairs(signature_paths: list[Path], band: int, out_path: Path, settings) -> dict:
    return dedup.band_pairs(signature_paths, band, out_path, settings)


@task(name="cluster", cache_key_fn=content_key("cluster", ("signature_paths", "text_paths", "pair_paths")), **shard_task)
def cluster_rows(signature_paths: list[Path], text_paths: list[Path], pair_paths: list[Path], out_path: Path, settings) -> dict:
    return dedup.cluster(list(zip(signature_paths, text_paths)), out_path, settings, pair_paths=pair_paths)


def dedup_stage(signature_paths: list[Path], text_paths: list[Path], out_dir: Path, settings, cached: dict) -> dict:
    """One task per LSH band (candidate pairs from the per-shard band keys), then one
    cluster task (exact Jaccard verification, union-find, keep rule)."""
    bands, _ = dedup.lsh_params(settings)
    pair_paths = [out_dir / "bands" / f"band-{k:03d}.parquet" for k in range(bands)]
    _gather("bands", [band_pairs.with_options(**cached).submit(signature_paths, k, path, settings)
                      for k, path in enumerate(pair_paths)])
    return cluster_rows.with_options(**cached).submit(
        signature_paths, text_paths, pair_paths, out_dir / "clusters.parquet", settings).result()


@task(name="assign-splits", cache_key_fn=content_key("assign", ("clusters_path", "shard_paths")), **shard_task)
def assign_splits(clusters_path: Path, shard_paths: list[Path], out_path: Path, splits, max_synthetic_share, seed: int,
                  previous: split.Previous | None = None) -> dict:
    return split.assign(clusters_path, shard_paths, out_path, splits, max_synthetic_share, seed, previous)


@task(name="finalize", task_run_name="finalize-{shard_path.name}",
      cache_key_fn=content_key("finalize", ("shard_path", "assignments_path")), **shard_task)
def finalize_shard(shard_path: Path, assignments_path: Path, out_path: Path, quarantine_path: Path) -> dict:
    return split.finalize(shard_path, assignments_path, out_path, quarantine_path)


def _gather(stage: str, futures: list) -> list[dict]:
    """Wait for a stage's futures, advancing its progress bar; results in submission order."""
    progress.begin(stage, len(futures))
    for _ in as_completed(futures):
        progress.advance(stage)
    return [f.result() for f in futures]


def _artifact_key(name: str, stage: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{name}-{stage}")


def _report_stage(recipe: Recipe, report: dict) -> None:
    rows = [{"metric": "rows in", "value": report["rows_in"]}, {"metric": "rows out", "value": report["rows_out"]}]
    rows += [{"metric": f"dropped: {reason}", "value": n} for reason, n in report["dropped"].items()]
    create_table_artifact(table=rows, key=_artifact_key(recipe.name, report["stage"]),
                          description=f"{recipe.name} {recipe.version}: {report['stage']} stage")
    get_run_logger().info("%s: %d rows in, %d out, dropped %s", report["stage"], report["rows_in"], report["rows_out"],
                          report["dropped"] or "none")


def build(recipe: Recipe, work_dir: Path) -> Path:
    """Run every stage of `recipe` and publish the release; returns its folder."""
    target = publish.release_path(recipe.output.root, recipe.name, recipe.version)
    publish.check_absent(target)  # before hours of work, not after
    base = work_dir / recipe.name
    quarantine = base / "quarantine"
    cached = dict(result_storage=base / ".results")
    reports: dict[str, dict] = {}
    # output.previous: that release's rows, ids and signatures, so held-out lineages stay held out
    previous = parent = None
    if recipe.output.previous:
        parent_manifest = publish.read_manifest(recipe.output.previous)  # once: it may be remote
        parent = {k: parent_manifest[k] for k in ("name", "version", "fingerprint")}
        previous = split.prepare_previous(recipe.output.previous, base / "previous", recipe.dedup)

    def stage_done(stage: str, results: list[dict]) -> StageReport:
        merged = StageReport.merge(stage, results)
        reports[stage] = merged.to_dict()
        _report_stage(recipe, reports[stage])
        return merged

    # ingest: one task per input unit (a file, or a whole source)
    units = ingest.plan(recipe.sources)
    progress.begin("documents", None)
    fingerprints = {u: ingest.unit_fingerprint(recipe.sources[u.source_index], u) for u in units}
    results = _gather("ingest", [
        ingest_unit.with_options(**cached).submit(
            recipe.sources[u.source_index], u, base / "ingest",
            quarantine / f"ingest-s{u.source_index:03d}-u{u.unit_index:05d}.parquet", recipe.work_shard_rows, fingerprints[u])
        for u in units])
    stage_done("ingest", results)
    shards = [Path(p) for r in results for p in r["shards"]]

    # tokenize (+ augment, + signatures) per shard, chained so a shard moves on as soon as it is ready
    tokenizer_identity = resolve(recipe.tokenizer).identity
    tokenized = [base / "tokenize" / s.name for s in shards]
    tokenize_futures = [
        tokenize_shard.with_options(**cached).submit(s, out, quarantine / f"tokenize-{s.name}", recipe.tokenizer,
                                                     recipe.filters, tokenizer_identity)
        for s, out in zip(shards, tokenized)]
    text_shards = list(tokenized)
    augment_futures = []
    if recipe.augment and recipe.augment.fraction > 0:
        # Identities of the weights and the template texts: a changed file regenerates.
        generator = generator_identity(recipe.augment)
        prompt_ids = [t.prompt_id for t in augment.load_templates(recipe.augment.templates)]
        augmented = [base / "augment" / s.name for s in shards]
        progress.begin("generate", None)
        augment_futures = [
            augment_shard.with_options(**cached).submit(
                t, out, quarantine / f"augment-{t.name}", recipe.augment, recipe.seed, recipe.tokenizer, recipe.filters,
                generator, tokenizer_identity, prompt_ids, wait_for=[f])
            for t, out, f in zip(tokenized, augmented, tokenize_futures)]
        text_shards += augmented
    upstream = tokenize_futures + augment_futures
    signature_paths = [base / "dedup" / "signatures" / f"{p.parent.name}-{p.name}" for p in text_shards]
    signature_futures = [signature_shard.with_options(**cached).submit(p, out, recipe.dedup, wait_for=[f])
                         for p, out, f in zip(text_shards, signature_paths, upstream)]
    stage_done("tokenize", _gather("tokenize", tokenize_futures))
    if augment_futures:
        stage_done("augment", _gather("augment", augment_futures))
    _gather("signatures", signature_futures)

    # dedup and split: the only steps that see all rows, through small side files
    clusters_path = base / "dedup" / "clusters.parquet"
    dedup_report = dedup_stage(signature_paths, text_shards, clusters_path.parent, recipe.dedup, cached)
    reports["dedup"] = dedup_report
    _report_stage(recipe, dedup_report)
    create_markdown_artifact(key=_artifact_key(recipe.name, "dedup-report"), markdown=dedup.report_markdown(dedup_report),
                             description=f"{recipe.name} {recipe.version}: dedup report")
    assignments_path = base / "split" / "assignments.parquet"
    cap = recipe.augment.max_synthetic_share if recipe.augment else None
    split_report = assign_splits.with_options(**cached).submit(
        clusters_path, text_shards, assignments_path, recipe.splits, cap, recipe.seed,
        split.Previous(str(previous), tuple(map(str, signature_paths)), recipe.dedup.model_dump(), parent["version"])
        if previous else None).result()
    reports["split"] = split_report
    _report_stage(recipe, split_report)
    final = [base / "final" / f"{p.parent.name}-{p.name}" for p in text_shards]
    _gather("finalize", [finalize_shard.with_options(**cached).submit(
        p, assignments_path, out, quarantine / f"final-{out.name}") for p, out in zip(text_shards, final)])

    return publish_release(recipe, final, target, reports, fingerprints, base, parent)


@task(name="publish", retries=0)
def publish_release(recipe: Recipe, final: list[Path], target: Path, reports: dict, fingerprints: dict, base: Path,
                    parent: dict | None = None) -> Path:
    """Write, validate and commit the release folder; a failed critical expectation stops here."""
    remote = publish.is_remote(target)  # output.root is an fsspec URL: build locally, then upload
    staging = base / f".publish-{recipe.version}.staging" if remote else publish.staging_path(target)
    publish.discard(staging)  # leftovers of a killed run
    try:
        split_rows = {s: v["rows"] for s, v in reports["split"]["extra"]["rows"].items()}
        progress.begin("publish", len(final))
        files, stats = publish.write_splits(final, staging / "data", split_rows, recipe.output.shard_rows,
                                            on_progress=lambda n: progress.advance("publish", n))
        split_files = {s: [staging / f["path"] for f in files if f["split"] == s] for s in schema.SPLITS}
        summary = validate_release(split_files, SuiteParams.from_recipe(recipe), staging / "validation")
        if not summary["success"]:
            failed = base / "validation-failed"
            publish.discard(failed)
            (staging / "validation").rename(failed)
            raise ValidationFailed(format_failures(summary).replace(str(staging / "validation"), str(failed)))

        # Reports are referred to inside the release, not by the staging folder's absolute path.
        summary.update(results="validation/results.json", data_docs="validation/data_docs/index.html")
        rows_out = sum(s.rows for s in stats.values())
        synthetic_out = sum(s.synthetic for s in stats.values())
        manifest = {
            "name": recipe.name,
            "version": recipe.version,
            "fingerprint": publish.fingerprint(files),
            "recipe": recipe.resolved(),
            "inputs": _inputs(recipe, fingerprints),
            "code_version": publish.code_version(),
            "packages": publish.package_versions(),
            "seed": recipe.seed,
            "tokenizer": resolve(recipe.tokenizer).identity,
            **({"generator": generator_identity(recipe.augment)} if recipe.augment else {}),
            "files": files,
            "splits": {s: {"rows": st.rows, "tokens": st.tokens, "synthetic": st.synthetic} for s, st in stats.items()},
            "accounting": publish.accounting(reports, rows_out, synthetic_out),
            "stages": reports,
            "validation": summary,
        }
        if parent:
            manifest["parent"] = parent
        card.write_plots(stats, staging / "plots")
        (staging / "README.md").write_text(card.dataset_card(manifest, stats, reports["dedup"]), encoding="utf-8")
        publish.write_json(manifest, staging / publish.MANIFEST)
        if remote:
            publish.upload(staging, target)
        else:
            publish.commit(staging, target)
    finally:
        publish.discard(staging)
    create_markdown_artifact(
        key=_artifact_key(recipe.name, "release"),
        markdown=f"Published **{recipe.name} {recipe.version}** to `{target}`: {rows_out:,} rows "
                 f"({synthetic_out:,} synthetic), fingerprint `{manifest['fingerprint']}`.",
        description="release summary")
    return target


def _inputs(recipe: Recipe, fingerprints: dict) -> list[dict]:
    inputs = []
    for index, source in enumerate(recipe.sources):
        units = sorted((u for u in fingerprints if u.source_index == index), key=lambda u: u.unit_index)
        combined = hashlib.sha256("".join(fingerprints[u] for u in units).encode()).hexdigest()
        inputs.append({"name": source_name(source), "kind": source.kind, "license": source.license,
                       "fingerprint": combined, "units": [{"label": u.label, "fingerprint": fingerprints[u]} for u in units]})
    return inputs


@flow(name="corpusmill-release", log_prints=True)
def release(recipe_path: str, overrides: list[str] | None = None, work_dir: str = DEFAULT_WORK_DIR,
            nightly: bool = False) -> str:
    """Build and publish the release described by the recipe at `recipe_path`.

    `nightly` publishes `<version>-nightly.<YYYYMMDD>` of the run's scheduled date, so a
    scheduled deployment never collides with the previous night's immutable release.
    """
    overrides = list(overrides or [])
    if nightly:
        from prefect.runtime import flow_run

        base = load_recipe(recipe_path, overrides).version.split("-")[0]
        overrides.append(f"version={base}-nightly.{flow_run.scheduled_start_time:%Y%m%d}")
    recipe = load_recipe(recipe_path, overrides)
    return str(build(recipe, Path(work_dir)))



def task_runner_for(runner: Runner):
    """The Prefect task runner a recipe's `runner:` asks for."""
    if runner.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=runner.workers)
    try:
        if runner.kind == "dask":
            from prefect_dask import DaskTaskRunner

            if runner.address:
                return DaskTaskRunner(address=runner.address)
            return DaskTaskRunner(cluster_kwargs={"n_workers": runner.workers, "processes": True})
        from prefect_ray import RayTaskRunner

        return RayTaskRunner(address=runner.address) if runner.address else RayTaskRunner()
    except ImportError:
        raise CorpusmillError(
            f"runner.kind is {runner.kind!r} but prefect-{runner.kind} is not installed; "
            f"install it with `pip install -e '.[{runner.kind}]'`, and point PREFECT_API_URL at a running Prefect server."
        ) from None
