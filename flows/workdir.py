"""A work dir that may be an fsspec URL (`s3://bucket/work`), shared by workers on several machines.

Stages (`tasks/`) are plain functions on local files. Where a stage task's parameters name
URLs, `staged` runs it on local copies: every input file is fetched into a local cache
(named by the URL and the store's version tag of the object, so it is reused while the
object is unchanged), every output is written into a scratch folder and uploaded when the
stage returns, and the paths in its report are mapped back to their URLs. An object
appears on S3 whole when its upload ends, so a killed task never leaves half a shard.
Cache keys and addresses (`tasks.stage.Stage`) are computed from the URLs and the
objects' content, never from where the local copies are.

A local work dir takes none of these steps: its stages read and write their files in place.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import tempfile
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable

from upath import UPath

from corpusmill.tasks import publish
from corpusmill.tasks.stage import OUTPUTS, Stage


def location(path: str | Path | UPath) -> Path | UPath:
    """A work dir path as an object with `/`, `.name` and `.parent`: a UPath for a URL
    (a `pathlib.Path` would turn `s3://b/w` into `s3:/b/w`), a Path otherwise."""
    if isinstance(path, UPath) or not is_url(path):
        return path if isinstance(path, (Path, UPath)) else Path(path)
    return UPath(str(path))


def is_url(path: Any) -> bool:
    return isinstance(path, (str, UPath)) and publish.is_remote(str(path))


def scratch(purpose: str) -> Path:
    """A local folder on this machine for what one run keeps only while it runs (a release's
    staging folder, the previous release's side file before its upload)."""
    folder = Path(tempfile.gettempdir()) / "corpusmill" / purpose
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cache() -> Path:
    return scratch("work-cache")


def fetched(url: str | UPath | Path | None) -> Path | None:
    """A local copy of the file at `url` (a local path is returned as it is). Copies are kept
    under the temporary folder, named by the URL and the object's version tag (`fs.ukey`),
    so an unchanged object is downloaded once per machine and a rewritten one again."""
    if not is_url(url):
        return url
    path = UPath(str(url))
    local = _cache() / sha256(f"{path}\0{path.fs.ukey(path.path)}".encode()).hexdigest()[:32] / path.name
    if not local.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.{os.getpid()}-{os.urandom(4).hex()}")
        path.fs.get_file(path.path, str(partial))
        os.replace(partial, local)  # two workers fetching one object both end with whole copies
    return local


def _fetched_all(value):
    if isinstance(value, (list, tuple)):
        return type(value)(_fetched_all(v) for v in value)
    return fetched(value)


def upload(local: Path, url: str | UPath) -> None:
    """Put one local file or the files of a folder (by relative path) at `url`."""
    target = UPath(str(url))
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for f in files:
        destination = target if f == local else target / f.relative_to(local).as_posix()
        destination.fs.put_file(str(f), destination.path)


def staged(stage: Stage, fetch: Callable[[str, Any], Any] | None = None) -> Callable[..., dict]:
    """`stage.run`, run on local files where its parameters name URLs (see the module docstring).
    `fetch(name, value)` localizes files that a parameter outside `stage.inputs` names."""

    @functools.wraps(stage.run)
    def run(*args, **kwargs) -> dict:
        parameters = inspect.signature(stage.run).bind(*args, **kwargs).arguments
        outputs = {k: v for k, v in parameters.items() if k in OUTPUTS and is_url(v)}
        if not outputs and not any(is_url(v) for k in stage.inputs for v in _listed(parameters.get(k))):
            return stage.run(**parameters)
        with tempfile.TemporaryDirectory(prefix=f"corpusmill-{stage.name}-") as folder:
            local = {k: _fetched_all(v) if k in stage.inputs else v for k, v in parameters.items()}
            if fetch is not None:
                local = {k: fetch(k, v) for k, v in local.items()}
            written = {k: Path(folder) / k / UPath(str(v)).name for k, v in outputs.items()}
            local.update(written)
            checkpoint = written.get("checkpoint_path")
            if checkpoint is not None and (remote := UPath(str(outputs["checkpoint_path"]))).exists():
                checkpoint.parent.mkdir(parents=True)
                remote.fs.get_file(remote.path, str(checkpoint))  # generations resume from what is there
            try:
                report = stage.run(**local)
            finally:  # a failed task keeps its finished generations for the retry
                if checkpoint is not None and checkpoint.exists():
                    upload(checkpoint, outputs["checkpoint_path"])
            for name, path in written.items():
                if name != "checkpoint_path" and path.exists():
                    upload(path, outputs[name])
            return _renamed(report, {str(written[k]): str(outputs[k]) for k in written})

    return run


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _renamed(value, urls: dict[str, str]):
    """`value` with every path under a local output replaced by its URL (ingest's `shards`)."""
    if isinstance(value, dict):
        return {k: _renamed(v, urls) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, urls) for v in value]
    if isinstance(value, (str, Path)):
        for local, url in urls.items():
            if str(value) == local or str(value).startswith(local + os.sep):
                return url + str(value)[len(local):].replace(os.sep, "/")
    return value


def result_storage(folder: Path | UPath):
    """Where Prefect persists the stage tasks' results: the folder itself when local; a
    RemoteFileSystem block on the URL otherwise, which every worker process can write. Prefect
    takes only a block saved on its server, here under a name that the URL decides."""
    if not is_url(folder):
        return folder
    from prefect.filesystems import RemoteFileSystem

    block = RemoteFileSystem(basepath=str(folder))
    block.save(f"corpusmill-results-{sha256(str(folder).encode()).hexdigest()[:16]}", overwrite=True)
    return block


def replace_folder(folder: Path | UPath, files: dict[Path | UPath, str]) -> None:
    """Make `folder` hold exactly `files` (source path -> name): hard links or copies locally,
    server-side copies on an object store."""
    _discard(folder)
    if is_url(folder):
        for source, name in files.items():
            folder.fs.copy(UPath(str(source)).path, (folder / name).path)
        return
    folder.mkdir(parents=True)
    for source, name in files.items():
        try:
            os.link(source, folder / name)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, folder / name)


def move_folder(local: Path, folder: Path | UPath) -> None:
    """Move a local folder to `folder` (replacing what is there): a rename, or an upload."""
    _discard(folder)
    if is_url(folder):
        upload(local, folder)
    else:
        local.rename(folder)


def _discard(folder: Path | UPath) -> None:
    """Remove `folder` and everything in it, if it is there."""
    if not is_url(folder):
        publish.discard(folder)
    elif folder.exists():
        folder.fs.rm(folder.path, recursive=True)
