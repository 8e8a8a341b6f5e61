"""The release flow: ingest -> filter -> augment -> dedup -> split -> validate -> publish.

Stages pass Parquet shard *paths* under `<work_dir>/<dataset>/<stage>/<address>/`, where
the address names the stage's inputs and settings (`Stage.address`). Each stage is
declared once, next to its code, as a `tasks.stage.Stage` (name, version, `run`, the
parameters that name input files, what else its output depends on); `stage_task` turns a
declaration into a Prefect task whose cache key follows from it, with results persisted
under `<work_dir>/<dataset>/.results`, so a killed run resumes where it stopped and a
changed setting recomputes only what depends on it. This module only wires the stages.
"""

from __future__ import annotations

import hashlib
import dataclasses
import inspect
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from upath import UPath

from corpusmill.expectations.default import SuiteParams
from corpusmill.flows import progress, workdir
from corpusmill.tasks import augment, card, dedup, ingest, publish, safety, schema, split
from corpusmill.tasks.filters import decontaminate
from corpusmill.tasks.filters import stage as filtering
from corpusmill.tasks.errors import CorpusmillError, is_transient
from corpusmill.tasks.generation import generator_identity
from corpusmill.tasks.models import resolve
from corpusmill.tasks.recipe import Recipe, Runner, load_recipe, source_name
from corpusmill.tasks.shards import StageReport
from corpusmill.tasks.stage import Stage
from corpusmill.tasks.validate import format_failures, validate_release
from corpusmill.tasks.verify import verify, write_checksums

DEFAULT_WORK_DIR = "work"


class ValidationFailed(CorpusmillError):
    pass


class NothingToPublish(CorpusmillError):
    pass


def _retry_if_transient(_task, _task_run, state) -> bool:
    try:
        state.result()
    except Exception as e:
        return is_transient(e)
    return False


RETRIES = 3
RETRY_POLICY = dict(retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
                    retry_condition_fn=_retry_if_transient)


def stage_task(stage: Stage, fetch=None, **options):
    """The Prefect task of a stage: cached on `stage.cache_key`, transient errors retried with backoff,
    run on local copies where the work dir is a URL (`workdir.staged`, with its `fetch`)."""
    return task(workdir.staged(stage, fetch), name=stage.name,
                task_run_name=f"{stage.name}-{stage.label}" if stage.label else stage.name,
                cache_key_fn=lambda _context, parameters: stage.cache_key(parameters),
                persist_result=True, **RETRY_POLICY, **options)


ingest_unit = stage_task(ingest.STAGE)
filter_shard = stage_task(filtering.STAGE)
index_eval_sets = stage_task(decontaminate.INDEX)
augment_shard = stage_task(augment.STAGE, tags=["gpu"])
signature_shard = stage_task(dedup.SIGNATURES)
band_pairs = stage_task(dedup.BANDS)
cluster_rows = stage_task(dedup.CLUSTER)
def _fetch_previous(name: str, value):
    """assign's `previous` names the previous release's side file and this build's signatures."""
    if name != "previous" or value is None:
        return value
    return dataclasses.replace(value, path=str(workdir.fetched(value.path)),
                               signature_paths=tuple(str(workdir.fetched(p)) for p in value.signature_paths))


assign_splits = stage_task(split.ASSIGN, fetch=_fetch_previous)
finalize_shard = stage_task(split.FINALIZE)


def outputs_missing(parameters: dict) -> bool:
    """Whether the files a stage task writes are gone: its `out_path`, or every shard in its
    `out_dir` (a stage writes at least one)."""
    out_path, out_dir = parameters.get("out_path"), parameters.get("out_dir")
    if out_path is not None and not workdir.location(out_path).exists():
        return True
    return out_dir is not None and not any(workdir.location(out_dir).glob("*.parquet"))


def submit(stage_task_, options: dict, *args, **kwargs):
    """Submit a stage task with `options` (its result storage). A cached result is only as good
    as the files it names, so a task whose outputs were deleted (to free disk) runs again and
    refreshes its cache entry, instead of handing on paths that no longer exist."""
    arguments = {k: v for k, v in kwargs.items() if k != "wait_for"}  # wait_for is the submission's, not the task's
    parameters = inspect.signature(stage_task_.fn).bind_partial(*args, **arguments).arguments
    return stage_task_.with_options(**options, refresh_cache=outputs_missing(parameters)).submit(*args, **kwargs)


def addressed(base: Path, stage: Stage, **parameters) -> Path:
    """The folder `stage` writes into for these parameters: `<base>/<stage>/<Stage.address>`."""
    return base / stage.name / stage.address(parameters)


@dataclass
class Build:
    """One build's recipe, work folders and stage reports, handed from step to step."""

    recipe: Recipe
    base: Path | UPath  # <work_dir>/<name>; a UPath where the work dir is a URL
    reports: dict[str, dict] = field(default_factory=dict)
    quarantined: dict[Path, str] = field(default_factory=dict)  # this run's quarantine files -> their name
    decontamination_index: Path | None = None  # the eval sets' n-gram index, when the recipe lists any
    eval_sets: dict[str, dict] = field(default_factory=dict)  # each eval set's items and n-grams, from the index

    @cached_property  # once per build: a remote work dir's result storage is saved on the server
    def cached(self) -> dict:
        return dict(result_storage=workdir.result_storage(self.base / ".results"))

    def place(self, stage: Stage, **parameters) -> Path:
        return addressed(self.base, stage, **parameters)

    def quarantine(self, folder: Path, name: str) -> Path:
        """A quarantine file in a stage's folder, listed in `<work_dir>/<name>/quarantine/` as `name`."""
        self.quarantined[folder / f"quarantine-{name}"] = name
        return folder / f"quarantine-{name}"

    def submit(self, stage_task_, *args, **kwargs):
        return submit(stage_task_, self.cached, *args, **kwargs)

    def report(self, stage: str, report: dict) -> None:
        self.reports[stage] = report
        _report_stage(self.recipe, report)

    def collect_quarantine(self) -> Path | UPath:
        """`<work_dir>/<name>/quarantine/`: this run's dropped rows, one file per task that dropped any."""
        folder = self.base / "quarantine"
        workdir.replace_folder(folder, {path: name for path, name in sorted(self.quarantined.items(),
                                                                            key=lambda item: item[1]) if path.is_file()})
        return folder


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


def _merged(b: Build, stage: str, results: list[dict]) -> None:
    b.report(stage, StageReport.merge(stage, results).to_dict())


def ingest_sources(b: Build) -> tuple[list[Path], dict]:
    """One task per input unit (a file, or a whole source); returns the shards and each unit's fingerprint."""
    units = ingest.plan(b.recipe.sources)
    progress.begin("documents", None)
    futures = []
    for u in units:
        params = dict(source=b.recipe.sources[u.source_index], unit=u, shard_rows=b.recipe.work_shard_rows)
        folder = b.place(ingest.STAGE, **params)
        quarantine = b.quarantine(folder, f"ingest-s{u.source_index:03d}-u{u.unit_index:05d}.parquet")
        futures.append(b.submit(ingest_unit, **params, out_dir=folder, quarantine_path=quarantine,
                                **progress.ingest_callbacks()))
    results = _gather("ingest", futures)
    _merged(b, "ingest", results)
    fingerprints = {u: ingest.unit_fingerprint(b.recipe.sources[u.source_index], u) for u in units}
    return [workdir.location(p) for r in results for p in r["shards"]], fingerprints


def _shard_step(b: Build, stage_task_, stage: Stage, in_path: Path, quarantine: str | None = None, wait_for=(),
                callbacks: dict | None = None, **settings) -> tuple[Path, Any]:
    """Submit one shard of a per-shard stage into its addressed folder; returns (output path, future)."""
    folder = b.place(stage, in_path=in_path, **settings)
    out = folder / in_path.name
    outputs = dict(out_path=out)
    if quarantine:
        outputs["quarantine_path"] = b.quarantine(folder, f"{quarantine}-{in_path.name}")
    return out, b.submit(stage_task_, in_path=in_path, **settings, **outputs, **(callbacks or {}), wait_for=list(wait_for))


def filter_steps(b: Build) -> tuple[list, Path | None]:
    """The recipe's filter steps, with decontamination last when the recipe lists eval sets,
    and the n-gram index of those eval sets. Built before any other work, so a missing or
    empty eval set (an EvalSetError from the index task) stops the run before ingest."""
    recipe = b.recipe
    if not recipe.decontaminate:
        return list(recipe.filters), None
    params = dict(evals=recipe.decontaminate)
    b.decontamination_index = index = b.place(decontaminate.INDEX, **params) / "index.npz"
    b.eval_sets = b.submit(index_eval_sets, **params, out_path=index).result()["evals"]
    return [*recipe.filters, decontaminate.Decontaminate(step="decontaminate", evals=recipe.decontaminate)], index


def per_shard(b: Build, shards: list[Path], steps: list, index: Path | None) -> tuple[list[Path], list[Path]]:
    """Filter (+ augment, + signatures) each shard, chained so a shard moves on as soon as
    it is ready; returns the text shards (originals, then synthetic) and their signature files."""
    recipe = b.recipe
    filtered = [_shard_step(b, filter_shard, filtering.STAGE, s, "filter", tokenizer_ref=recipe.tokenizer,
                            steps=steps, decontamination_index=index) for s in shards]
    outputs = list(filtered)
    if recipe.augment and recipe.augment.fraction > 0:
        progress.begin("generate", None)
        # Generations are checkpointed by prompt and settings, outside the addressed folders,
        # so changing a filter step refilters them instead of generating them again.
        augmented = [_shard_step(b, augment_shard, augment.STAGE, t, "augment", wait_for=[f],
                                 callbacks=progress.generation_callbacks(t.name), settings=recipe.augment,
                                 seed=recipe.seed, tokenizer_ref=recipe.tokenizer, steps=steps,
                                 decontamination_index=index,
                                 checkpoint_path=b.base / "generations" / f"{t.stem}.jsonl")
                     for t, f in filtered]
        outputs += augmented
    signatures = [_shard_step(b, signature_shard, dedup.SIGNATURES, p, wait_for=[f], settings=recipe.dedup)
                  for p, f in outputs]
    _merged(b, "filter", _gather("filter", [f for _, f in filtered]))
    if len(outputs) > len(filtered):
        _merged(b, "augment", _gather("augment", [f for _, f in outputs[len(filtered):]]))
    _gather("signatures", [f for _, f in signatures])
    return [p for p, _ in outputs], [p for p, _ in signatures]


def dedup_stage(signature_paths: list[Path], text_paths: list[Path], base: Path, settings, cached: dict) -> tuple[dict, Path]:
    """One task per LSH band (candidate pairs from the per-shard band keys), then one
    cluster task (exact Jaccard verification, union-find, keep rule); returns the dedup
    report and the clusters file, each written in its addressed folder under `base`."""
    bands, _ = dedup.lsh_params(settings)
    pair_paths = [addressed(base, dedup.BANDS, side_paths=signature_paths, band=k, settings=settings) / f"band-{k:03d}.parquet"
                  for k in range(bands)]
    _gather("bands", [submit(band_pairs, cached, signature_paths, k, path, settings)
                      for k, path in enumerate(pair_paths)])
    params = dict(signature_paths=signature_paths, text_paths=text_paths, pair_paths=pair_paths, settings=settings)
    clusters_path = addressed(base, dedup.CLUSTER, **params) / "clusters.parquet"
    return submit(cluster_rows, cached, **params, out_path=clusters_path).result(), clusters_path


def deduplicate(b: Build, text_shards: list[Path], signature_paths: list[Path]) -> Path:
    """The dedup stage over every text shard, reported as a table and a Markdown artifact."""
    report, clusters_path = dedup_stage(signature_paths, text_shards, b.base, b.recipe.dedup, b.cached)
    b.report("dedup", report)
    create_markdown_artifact(key=_artifact_key(b.recipe.name, "dedup-report"),
                             markdown=dedup.report_markdown(b.reports["dedup"]),
                             description=f"{b.recipe.name} {b.recipe.version}: dedup report")
    return clusters_path


def assign_and_finalize(b: Build, clusters_path: Path, text_shards: list[Path], signature_paths: list[Path],
                        previous: tuple[Path, dict] | None) -> list[Path]:
    """Choose every lineage's split (the one step that sees all ids), then write each shard's rows with it."""
    recipe = b.recipe
    pinned = split.Previous(str(previous[0]), tuple(map(str, signature_paths)), recipe.dedup.model_dump(),
                            previous[1]["version"]) if previous else None
    params = dict(clusters_path=clusters_path, shard_paths=text_shards, splits=recipe.splits, seed=recipe.seed,
                  max_synthetic_share=recipe.augment.max_synthetic_share if recipe.augment else None, previous=pinned)
    out_dir = b.place(split.ASSIGN, **params)
    b.report("split", b.submit(assign_splits, **params, out_dir=out_dir).result())
    final = []
    futures = []
    for p, assignments_path in zip(text_shards, split.assignment_paths(out_dir, len(text_shards))):
        folder = b.place(split.FINALIZE, shard_path=p, assignments_path=assignments_path)
        final.append(folder / p.name)
        futures.append(b.submit(finalize_shard, p, assignments_path, folder / p.name,
                                b.quarantine(folder, f"final-{p.parent.parent.name}-{p.name}")))
    _gather("finalize", futures)
    return final


def previous_release(b: Build) -> tuple[Path, dict] | None:
    """output.previous: that release's ids and signatures, prepared before any work (it may be
    missing or remote), so held-out lineages stay held out; and its name, version, fingerprint."""
    if not b.recipe.output.previous:
        return None
    manifest = publish.read_manifest(b.recipe.output.previous)  # once: it may be remote
    parent = {k: manifest[k] for k in ("name", "version", "fingerprint")}
    # A folder per previous release and dedup setting, so preparing one never rewrites another's.
    key = hashlib.sha256(json.dumps([parent, b.recipe.dedup.model_dump(mode="json")], sort_keys=True).encode())
    folder = b.base / "previous" / key.hexdigest()[:16]
    if not workdir.is_url(folder):
        return split.prepare_previous(b.recipe.output.previous, folder, b.recipe.dedup), parent
    # prepared here, then uploaded for the assign task, wherever it runs
    local = split.prepare_previous(b.recipe.output.previous, workdir.scratch("previous") / folder.name, b.recipe.dedup)
    if not (folder / local.name).exists():
        workdir.upload(local, folder / local.name)
    return folder / local.name, parent


def build(recipe: Recipe, work_dir: str | Path) -> Path | str:
    """Run every stage of `recipe` and publish the release; returns its folder."""
    target = publish.release_path(recipe.output.root, recipe.name, recipe.version)
    publish.check_rebuildable(target, recipe.resolved())  # before hours of work, not after
    publish.check_writable(publish.release_path(recipe.output.root, recipe.name, ""), "output.root")
    publish.check_writable(work_dir, "--work-dir")
    b = Build(recipe, workdir.location(work_dir) / recipe.name)
    previous = previous_release(b)
    steps, index = filter_steps(b)  # eval sets read and indexed first: a bad one stops the run here
    shards, fingerprints = ingest_sources(b)
    text_shards, signature_paths = per_shard(b, shards, steps, index)
    clusters_path = deduplicate(b, text_shards, signature_paths)
    final = assign_and_finalize(b, clusters_path, text_shards, signature_paths, previous)
    quarantine = b.collect_quarantine()
    if b.reports["split"]["rows_out"] == 0:
        raise NothingToPublish(_nothing_left(b.reports, quarantine))

    # output.root an fsspec URL: build locally (in the work dir, unless that is a URL too), then upload
    local_base = workdir.scratch("staging") if workdir.is_url(b.base) else b.base
    staging = publish.new_staging(local_base if publish.is_remote(target) else target.parent, recipe.version)
    try:
        files, stats = write_release(recipe, [workdir.fetched(p) for p in final], staging, b.reports)
        summary = validate(recipe, staging, files, b.base / "validation-failed", workdir.fetched(b.decontamination_index))
        manifest = release_manifest(recipe, files, stats, b.reports, fingerprints, summary,
                                    previous[1] if previous else None, b.eval_sets)
        published = commit_release(manifest, stats, b.reports["dedup"], staging, target)
    finally:
        publish.discard(staging)
    done = "Published" if published else "Already published, byte for byte the release this run built:"
    get_run_logger().info(f"{done} {recipe.name} {recipe.version} at {target}")
    create_markdown_artifact(
        key=_artifact_key(recipe.name, "release"),
        markdown=f"{done} **{recipe.name} {recipe.version}** at `{target}`: {manifest['accounting']['rows_out']:,} rows "
                 f"({manifest['accounting']['synthetic_out']:,} synthetic), fingerprint `{manifest['fingerprint']}`.",
        description="release summary")
    return target


def _nothing_left(reports: dict, quarantine: Path) -> str:
    dropped = [f"{stage}.{reason}: {n}" for stage, r in reports.items() for reason, n in r["dropped"].items()]
    return (f"every row was dropped, so there is nothing to publish ({'; '.join(dropped) or 'the sources held no rows'}). "
            f"The dropped rows and their reasons are in {quarantine}; check the sources and the recipe's filters.")


@task(name="write-release", retries=0)
def write_release(recipe: Recipe, final: list[Path], staging: Path, reports: dict) -> tuple[list[dict], dict]:
    """Stream the finalized shards into the staging folder's split files."""
    split_rows = {s: v["rows"] for s, v in reports["split"]["extra"]["rows"].items()}
    progress.begin("publish", len(final))
    return publish.write_splits(final, staging / "data", split_rows, recipe.output.shard_rows,
                                on_progress=lambda n: progress.advance("publish", n))


@task(name="validate", retries=0)
def validate(recipe: Recipe, staging: Path, files: list[dict], failed_dir: Path | UPath,
             decontamination_index: Path | None) -> dict:
    """Run the Great Expectations suite over the staged splits; a failed critical expectation
    stops the release, with its report moved to `failed_dir`."""
    split_files = {s: [staging / f["path"] for f in files if f["split"] == s] for s in schema.SPLITS}
    summary = validate_release(split_files, SuiteParams.from_recipe(recipe), staging / "validation",
                               decontamination_index)
    if not summary["success"]:
        workdir.move_folder(staging / "validation", failed_dir)
        raise ValidationFailed(format_failures(summary).replace(str(staging / "validation"), str(failed_dir)))
    # Reports are referred to inside the release, not by the staging folder's absolute path.
    return {**summary, "results": "validation/results.json", "data_docs": "validation/data_docs/index.html"}


def release_manifest(recipe: Recipe, files: list[dict], stats: dict, reports: dict, fingerprints: dict, summary: dict,
                     parent: dict | None, eval_sets: dict[str, dict] | None = None) -> dict:
    rows_out = sum(s.rows for s in stats.values())
    synthetic_out = sum(s.synthetic for s in stats.values())
    accounting = publish.accounting(reports, rows_out, synthetic_out)
    languages = sum((s.by_language for s in stats.values()), Counter())
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
        "accounting": accounting,
        "data_safety": safety.data_safety(recipe.resolved(), reports, accounting, languages, eval_sets or {}),
        "stages": safety.without_item_lists(reports),
        "validation": summary,
    }
    return {**manifest, "parent": parent} if parent else manifest


@task(name="publish", retries=0)
def commit_release(manifest: dict, stats: dict, dedup_report: dict, staging: Path, target: Path | str) -> bool:
    """Add the card, plots and manifest to the validated staging folder and move it into place
    (True). Where the version was published meanwhile, by an earlier run of this recipe that
    was killed after publishing or by a run beside this one, accept it only if it is the
    release this run built and its files are intact (False)."""
    if not publish.exists(target):
        card.write_plots(stats, staging / "plots")
        (staging / "README.md").write_text(card.dataset_card(manifest, stats, dedup_report), encoding="utf-8")
        publish.write_json(manifest, staging / publish.MANIFEST)
        (staging / publish.OWNER).unlink(missing_ok=True)
        write_checksums(staging)
        try:
            if publish.is_remote(target):
                publish.upload(staging, target)
            else:
                publish.commit(staging, target)
            return True
        except publish.ReleaseExists:
            if not publish.exists(target):
                raise
    publish.check_same_release(target, manifest, verify)
    return False


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
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/[^/]", work_dir):  # s3:/..., a URL as a Path has made it
        raise WorkDirNotLocal(
            f"the work dir {work_dir!r} looks like a URL that lost a slash (a path library collapses '//'), "
            f"and would be taken as a local folder named {work_dir.split('/')[0]!r}. Pass the URL as written, "
            f"such as s3://bucket/work.")
    overrides = list(overrides or [])
    if nightly:
        from prefect.runtime import flow_run

        base = load_recipe(recipe_path, overrides).version.split("-")[0]
        overrides.append(f"version={base}-nightly.{flow_run.scheduled_start_time:%Y%m%d}")
    recipe = load_recipe(recipe_path, overrides)
    # The recipe is only known here, inside the run, wherever the run started (`corpusmill run`,
    # `corpusmill serve`, a work pool's worker): its `runner:` applies to the build from here on.
    runner = task_runner_for(recipe.runner)
    get_run_logger().info(f"building {recipe.name} {recipe.version} with {_described(recipe.runner)}")
    return build_release.with_options(task_runner=runner)(recipe, work_dir)


class WorkDirNotLocal(CorpusmillError):
    pass


@flow(name="corpusmill-build", log_prints=True)
def build_release(recipe: Recipe, work_dir: str) -> str:
    """`build` as a subflow, so that `release` can give it the task runner the recipe asks for."""
    return str(build(recipe, work_dir))


def _described(runner: Runner) -> str:
    if runner.kind == "threads":
        return f"{runner.workers} threads"
    return f"the {runner.kind} cluster at {runner.address}" if runner.address else \
        f"a local {runner.kind} cluster of {runner.workers} workers"


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

        if runner.address:
            return RayTaskRunner(address=runner.address, init_kwargs=_ray_job_environment())
        return RayTaskRunner(init_kwargs={"num_cpus": runner.workers})
    except ImportError:
        raise CorpusmillError(
            f"runner.kind is {runner.kind!r} but prefect-{runner.kind} is not installed; "
            f"install it with `pip install -e '.[{runner.kind}]'`, and point PREFECT_API_URL at a running Prefect server."
        ) from None


def _ray_job_environment() -> dict:
    """Ray starts this job's workers on the cluster's nodes, whose environment is the cluster's:
    they are given the Prefect server this run reports to."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return {"runtime_env": {"env_vars": {"PREFECT_API_URL": url}}} if url else {}
