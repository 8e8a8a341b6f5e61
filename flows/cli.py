"""`corpusmill`: build, verify and serve dataset releases from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

# Offline-friendly defaults; a user's own settings win.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tasks.errors import CorpusmillError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Validated, versioned, reproducible dataset releases for language-model training.")

DEPLOYMENTS = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(code)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="the recipe YAML")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe key: key.sub=value")] = None,
    work_dir: Annotated[Path, typer.Option(help="where intermediate shards and caches go")] = Path("work"),
    progress_bars: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")] = True,
) -> None:
    """Build a release from RECIPE and print the release folder."""
    from flows import progress
    from flows.release import release, task_runner_for
    from tasks.recipe import load_recipe

    try:
        parsed = load_recipe(recipe, set_ or [])
        flow = release.with_options(task_runner=task_runner_for(parsed.runner))
        if progress_bars and sys.stderr.isatty():
            with progress.shown():
                target = flow(str(recipe), set_ or [], str(work_dir))
        else:
            target = flow(str(recipe), set_ or [], str(work_dir))
    except CorpusmillError as e:
        _fail(str(e))
    except Exception as e:  # a bug, not bad input: one paragraph here, the traceback is in the log above
        _fail(f"the run stopped on an unexpected {type(e).__name__}: {e}. Finished shards are cached in "
              f"{work_dir}; rerunning resumes from them. Please report this with the log above.")
    typer.echo(target)


@app.command()
def verify(release_dir: Annotated[Path, typer.Argument(help="a published release folder")]) -> None:
    """Re-hash every data file of RELEASE_DIR against its manifest."""
    from tasks.publish import verify as verify_release

    problems = verify_release(release_dir)
    if problems:
        _fail(f"{release_dir} does not match its manifest: " + "; ".join(problems) + ".")
    manifest = json.loads((release_dir / "manifest.json").read_text(encoding="utf-8"))
    typer.echo(f"ok: {len(manifest['files'])} files match the manifest (fingerprint {manifest['fingerprint']})")


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
    from tasks.dedup import dedup_file

    if not input_path.is_file():
        _fail(f"{input_path} does not exist; pass a Parquet file.")
    try:
        report = dedup_file(input_path, out, text_column=text_column, threshold=threshold, num_perm=num_perm, ngram=ngram)
    except (CorpusmillError, ValueError) as e:
        _fail(str(e))
    dropped = report["dropped"]
    typer.echo(f"{out}: {report['rows_in']} rows, {report['rows_out']} kept, "
               f"{dropped.get('exact_duplicate', 0)} exact and {dropped.get('near_duplicate', 0)} near duplicates")


def served_deployments(path: Path = DEPLOYMENTS) -> list:
    """The deployments of `path` as runner deployments of the release flow, schedules included."""
    import yaml
    from prefect.schedules import Cron

    from flows.release import release

    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        release.to_deployment(
            name=d["name"], description=d.get("description"), parameters=d.get("parameters", {}), tags=d.get("tags"),
            schedules=[Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in d.get("schedules", [])],
        )
        for d in spec["deployments"]
    ]


@app.command()
def serve() -> None:
    """Serve the deployments in deployments/prefect.yaml from this process (no work pool needed)."""
    from prefect import serve as prefect_serve

    prefect_serve(*served_deployments())


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
