"""`corpusmill rebuild`: re-run a release's recorded recipe and compare the result byte for byte."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow

from corpusmill.tasks import publish
from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.rebuild import compare
from corpusmill.tasks.recipe import recipe_from_manifest


class RebuildTargetExists(CorpusmillError, FileExistsError):
    pass


def rebuild_recipe(manifest: dict, out_root: Path):
    """The manifest's recipe, publishing under `out_root` instead of its original root."""
    recipe = recipe_from_manifest(manifest)
    return recipe.model_copy(update={"output": recipe.output.model_copy(update={"root": str(out_root)})})


@flow(name="corpusmill-rebuild", log_prints=True)
def rebuild_flow(release_dir: str, out_root: str, work_dir: str) -> dict:
    """Build the recipe recorded in `release_dir` under `out_root` and compare the two releases."""
    from corpusmill.flows.release import build

    original = publish.read_manifest(release_dir)
    recipe = rebuild_recipe(original, Path(out_root))
    target = publish.release_path(out_root, recipe.name, recipe.version)
    if target.exists():
        raise RebuildTargetExists(
            f"{target} already exists; `corpusmill rebuild` writes a fresh copy of the release, so pass an "
            f"empty --out folder (or remove {target})."
        )
    rebuilt_dir = build(recipe, work_dir)  # a folder or an fsspec URL, as for `corpusmill run`
    report = compare(original, publish.read_manifest(rebuilt_dir))
    report["rebuilt"] = str(rebuilt_dir)
    return report


def rebuild(release_dir: Path, out_root: Path, work_dir: str | Path | None = None, task_runner=None) -> dict:
    """Rebuild `release_dir` into `out_root`; with no `work_dir`, a fresh one (nothing from cache)."""
    original = publish.read_manifest(release_dir)  # fail fast, before Prefect starts
    flow_ = rebuild_flow if task_runner is None else rebuild_flow.with_options(task_runner=task_runner)
    if work_dir is not None:
        return flow_(str(release_dir), str(out_root), str(work_dir))
    Path(out_root).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".rebuild-{original['name']}-", dir=out_root) as tmp:
        return flow_(str(release_dir), str(out_root), tmp)
