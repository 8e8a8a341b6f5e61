"""`corpusmill`: build, verify and serve dataset releases from the command line."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

# Offline-friendly defaults; a user's own settings win.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from corpusmill.tasks.errors import CorpusmillError, out_of_room  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Validated, versioned, reproducible dataset releases for language-model training.")

DEPLOYMENTS = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(code)


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs a failed task or flow with its traceback. A user error's message says what
    to fix (a CorpusmillError's, or a full or read-only disk's); its traceback is noise that
    reads like a crash, so its log line goes without."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (isinstance(record.exc_info[1], CorpusmillError) or out_of_room(record.exc_info[1])):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_errors() -> None:
    importlib.import_module("prefect")  # configures Prefect's logging, whose handlers get the filter
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in logging.root.manager.loggerDict
                                       if name.startswith("prefect")]
    for handler in {h for logger in loggers for h in logger.handlers}:
        if not any(isinstance(f, _UserErrorsWithoutTraceback) for f in handler.filters):
            handler.addFilter(_UserErrorsWithoutTraceback())


@contextlib.contextmanager
def _stopped_by_signals():
    """SIGTERM (a scheduler or `kill`) stops a run the way Ctrl-C does: the local Prefect server
    is stopped, nothing half-written is published, and the exit says how to resume."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="the recipe YAML")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe key: key.sub=value")] = None,
    # a str, not a Path: a Path would turn s3://bucket/work into s3:/bucket/work
    work_dir: Annotated[str, typer.Option(help="where intermediate shards and caches go: a folder, or an fsspec "
                                               "URL such as s3://bucket/work that every worker can reach")] = "work",
    progress_bars: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")] = True,
) -> None:
    """Build a release from RECIPE and print the release folder."""
    from corpusmill.flows import progress
    from corpusmill.flows.release import release, task_runner_for
    from corpusmill.flows.server import tied_server
    from corpusmill.tasks.filters.decontaminate import check_eval_sets
    from corpusmill.tasks.publish import check_rebuildable, release_path
    from corpusmill.tasks.recipe import load_recipe

    _quiet_user_errors()
    parsed = None
    try:
        parsed = load_recipe(recipe, set_ or [])
        # before the server starts
        check_rebuildable(release_path(parsed.output.root, parsed.name, parsed.version), parsed.resolved())
        check_eval_sets(parsed.decontaminate)
        task_runner_for(parsed.runner)  # a missing prefect-dask or prefect-ray is named before the server starts
        with _stopped_by_signals(), tied_server(), \
                (progress.shown() if progress_bars and sys.stderr.isatty() else contextlib.nullcontext()):
            target = release(str(recipe), set_ or [], work_dir)
    except KeyboardInterrupt:
        _fail(f"stopped by a signal. Finished shards are cached in {work_dir}: rerun the same command to resume "
              f"from them.", code=130)
    except CorpusmillError as e:
        _fail(str(e))
    except Exception as e:
        from corpusmill.flows.release import RETRIES
        from corpusmill.tasks.errors import is_transient

        if out_of_room(e):
            where = e.filename or f"the work dir ({work_dir})" + (f" or the output root ({parsed.output.root})"
                                                                  if parsed else "")
            _fail(f"the run stopped: {e.strerror or e}, writing {where}. Free space there or fix its permissions, "
                  f"then rerun the same command: finished shards are cached in {work_dir} and are not recomputed.")
        if is_transient(e):  # the storage or network failed and kept failing: not a bug, not bad input
            _fail(f"the run stopped on an I/O error that persisted after {RETRIES} retries: {type(e).__name__}: {e}. "
                  f"Check the storage or network it names, then rerun the same command: finished shards are "
                  f"cached in {work_dir} and are not recomputed.")
        # a bug, not bad input: one paragraph here, the traceback is in the log above
        _fail(f"the run stopped on an unexpected {type(e).__name__}: {e}. Finished shards are cached in "
              f"{work_dir}; rerunning resumes from them. Please report this with the log above.")
    typer.echo(target)


@app.command()
def verify(release_dir: Annotated[str, typer.Argument(help="a published release folder or URL (s3://...)")]) -> None:
    """Re-hash every data file of RELEASE_DIR against its manifest."""
    from corpusmill.tasks.publish import read_manifest
    from corpusmill.tasks.verify import verify as verify_release

    try:
        problems = verify_release(release_dir)
    except CorpusmillError as e:
        _fail(str(e))
    if problems:
        _fail(f"{release_dir} does not match its manifest: " + "; ".join(problems) + ".")
    manifest = read_manifest(release_dir)
    typer.echo(f"ok: {len(manifest['files'])} files match the manifest (fingerprint {manifest['fingerprint']})")


@app.command()
def diff(
    release_a: Annotated[Path, typer.Argument(help="the older release folder")],
    release_b: Annotated[Path, typer.Argument(help="the newer release folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print the diff as JSON")] = False,
) -> None:
    """Rows added, removed, changed and moved between splits, per split and source, with token deltas."""
    from corpusmill.tasks.diff import diff_releases, render

    try:
        report = diff_releases(release_a, release_b)
    except CorpusmillError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        from rich.console import Console

        render(report, Console(width=160))


@app.command()
def rebuild(
    release_dir: Annotated[Path, typer.Argument(help="a published release folder")],
    out: Annotated[Path, typer.Option("--out", help="root to publish the rebuilt copy under (<out>/<name>/<version>)")],
    work_dir: Annotated[Optional[str], typer.Option(help="work directory, a folder or an fsspec URL (s3://bucket/work); "
                                                          "default: a fresh temporary one, so nothing comes from cache")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Re-run the recipe recorded in RELEASE_DIR's manifest and report whether every file matches.

    Exit 0 when the rebuild is byte-identical, 2 when it differs (the inputs whose
    fingerprint changed are named), 1 on an error.
    """
    from corpusmill.flows.rebuild import rebuild as run_rebuild
    from corpusmill.flows.rebuild import rebuild_recipe
    from corpusmill.flows.release import task_runner_for
    from corpusmill.flows.server import tied_server
    from corpusmill.tasks.publish import read_manifest
    from corpusmill.tasks.rebuild import summary_line

    try:
        runner = task_runner_for(rebuild_recipe(read_manifest(release_dir), out).runner)
        with tied_server():
            report = run_rebuild(release_dir, out, work_dir, task_runner=runner)
    except CorpusmillError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"rebuild of {release_dir} -> {report['rebuilt']}")
        for column in ("file", "status", "sha256 (manifest)", "sha256 (rebuilt)"):
            table.add_column(column)
        for f in report["files"]:
            style = "green" if f["status"] == "same" else "red"
            table.add_row(f["path"], f"[{style}]{f['status']}[/]", (f["expected"] or "-")[:16], (f["actual"] or "-")[:16])
        for i in report["inputs"]:
            table.add_row(f"input: {i['name']}", "[red]changed[/]" if i["changed"] else "[green]same[/]",
                          (i["expected"] or "-")[:16], (i["actual"] or "-")[:16])
        Console(width=140).print(table)
        typer.echo(summary_line(report))
    if not report["identical"]:
        raise typer.Exit(2)


@app.command("publish")
def publish_cmd(
    release_dir: Annotated[Path, typer.Argument(help="a published release folder")],
    hub: Annotated[str, typer.Option("--hub", help="Hugging Face dataset repo id, user-or-org/name")],
    private: Annotated[bool, typer.Option(help="create the repo as private if it does not exist")] = False,
    token: Annotated[Optional[str], typer.Option(help="Hub token; default: HF_TOKEN or your `hf auth login`")] = None,
) -> None:
    """Push RELEASE_DIR to a Hub dataset repo: one commit on main, tagged v<version>."""
    from corpusmill.tasks.hub import push_to_hub

    try:
        result = push_to_hub(release_dir, hub, private=private, token=token)
    except CorpusmillError as e:
        _fail(str(e))
    typer.echo(f"pushed {release_dir} to {result['repo_id']} as tag {result['tag']} (commit {result['commit']}): "
               f"{result['url']}")


@app.command()
def dedup(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT.parquet")],
    out: Annotated[Path, typer.Option("--out", help="output Parquet file")],
    text_column: str = "text",
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
) -> None:
    """Deduplicate one Parquet file: adds `cluster_id` and `keep`, row order unchanged."""
    from corpusmill.tasks.dedup import dedup_file

    if input_path.is_dir():
        _fail(f"{input_path} is a folder; pass one Parquet file (to deduplicate many, run `corpusmill run` "
              f"on a recipe with a files source).")
    if not input_path.is_file():
        _fail(f"{input_path} does not exist; pass a Parquet file.")
    if out.is_dir():
        _fail(f"--out {out} is a folder; pass the path of the Parquet file to write, such as {out / input_path.name}.")
    try:
        report = dedup_file(input_path, out, text_column=text_column, threshold=threshold, num_perm=num_perm, ngram=ngram)
    except CorpusmillError as e:
        _fail(str(e))
    except OSError as e:  # --out in a read-only or full place, or a file that is not Parquet
        _fail(f"could not deduplicate {input_path} into {out}: {e.strerror or e}"
              f"{f' ({e.filename})' if getattr(e, 'filename', None) else ''}; check both paths and rerun.")
    dropped = report["dropped"]
    typer.echo(f"{out}: {report['rows_in']} rows, {report['rows_out']} kept, "
               f"{dropped.get('exact_duplicate', 0)} exact and {dropped.get('near_duplicate', 0)} near duplicates")


def served_deployments(path: Path = DEPLOYMENTS) -> list:
    """The deployments of `path` as runner deployments of the release flow, schedules included."""
    import yaml
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from corpusmill.flows.release import release

    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        release.to_deployment(
            name=d["name"], description=d.get("description"), parameters=d.get("parameters", {}), tags=d.get("tags"),
            schedules=[Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in d.get("schedules", [])],
            # Loaded as the installed module, so Dask and Ray workers can unpickle its tasks.
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for d in spec["deployments"]
    ]


@app.command()
def serve(
    deployments: Annotated[Path, typer.Option("--file", help="the deployments to serve")] = DEPLOYMENTS,
) -> None:
    """Serve the deployments in deployments/prefect.yaml from this process (no work pool needed).

    Each run reads its recipe and applies the recipe's `runner:`; point PREFECT_API_URL at
    the server that schedules them.
    """
    from prefect import serve as prefect_serve

    prefect_serve(*served_deployments(deployments))


@app.command()
def deploy() -> None:
    """Register deployments/prefect.yaml with the Prefect server (`prefect deploy --all`)."""
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(DEPLOYMENTS)],
        cwd=DEPLOYMENTS.parent.parent,
    )
    raise typer.Exit(result.returncode)


if __name__ == "__main__":
    app()
