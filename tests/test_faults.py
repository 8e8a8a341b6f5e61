"""Fault injection: kill -9 and SIGTERM at seeded points, and two publishers at once, on small inputs.

Each case runs the real `corpusmill run` in a subprocess, as a user or a scheduler would,
and checks what an on-call engineer needs: a rerun gives the same bytes and does not redo
finished shards, no Prefect server outlives its run, no staging folder is left visible,
and two runs publishing one version leave exactly one intact release.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import WORDS

from corpusmill.tasks.verify import verify

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="uses Linux process signals")]

CLI = [sys.executable, "-m", "corpusmill"]


def make_recipe(folder: Path, name: str = "faults") -> Path:
    """Three files of paragraphs (three ingest tasks, three shards), a few exact duplicates.
    Paths are relative (runs start in `folder`), so runs in different folders give the same bytes."""
    rng = random.Random(7)
    for f in range(3):
        paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))) for _ in range(150)]
        paragraphs += paragraphs[:5]
        (folder / f"part-{f}.txt").write_text("\n\n".join(paragraphs) + "\n")
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"""name: {name}
version: 1.0.0
sources:
  - {{kind: files, path: "part-*.txt", format: text, split_by: paragraph, license: CC0-1.0}}
tokenizer: {{gguf: smollm2}}
filters: [{{step: tokens, min: 8}}]
work_shard_rows: 100
output: {{root: releases}}
""")
    return recipe


def start(recipe: Path, work: Path, *overrides: str) -> subprocess.Popen:
    args = [a for o in overrides for a in ("--set", o)]
    return subprocess.Popen(CLI + ["run", str(recipe), "--work-dir", str(work), "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=recipe.parent,
                            env=os.environ.copy())


def start_flow(recipe: Path, work: Path) -> subprocess.Popen:
    """A run, returned once its flow has begun (the Prefect server is up, the stages start)."""
    run = start(recipe, work)
    for line in run.stdout:
        if "Beginning flow run" in line:
            return run
    raise AssertionError(f"the run ended before its flow began: exit {run.wait()}")


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def release_of(recipe: Path, version: str = "1.0.0") -> Path:
    return recipe.parent / "releases" / "faults" / version


def data_bytes(release: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((release / "data").glob("*.parquet"))}


def stage_files(work: Path) -> dict[Path, int]:
    """Every finished stage output under the work dir, with its modification time."""
    return {p: p.stat().st_mtime_ns for p in work.rglob("*.parquet")
            if ".results" not in p.parts and "quarantine" not in p.parts and not p.name.startswith(".")}


def servers_alive() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "prefect" in cmd and "server" in cmd and "start" in cmd and p.status() != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[dict[str, bytes], float]:
    """An uninterrupted run: the bytes every faulted run must reproduce, and the seconds from
    its flow's start to its last stage (write-release), the span a kill must land in."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = make_recipe(folder)
    run = start_flow(recipe, folder / "work")
    began, stages_seconds = time.monotonic(), None
    for line in run.stdout:
        if stages_seconds is None and "Task run 'write-release" in line:
            stages_seconds = time.monotonic() - began
    code, out = finish(run)
    assert code == 0 and stages_seconds is not None, out
    return data_bytes(release_of(recipe)), stages_seconds


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[str, bytes]:
    return reference_run[0]


def kill_when(run: subprocess.Popen, reached, timeout: float = 300) -> None:
    """SIGKILL `run` as soon as `reached()` is true."""
    deadline = time.monotonic() + timeout
    while not reached():
        assert run.poll() is None, "the run ended before the point it was to be killed at"
        assert time.monotonic() < deadline, "the run did not reach the point it was to be killed at"
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()


@pytest.mark.parametrize("point", ["seed 1", "seed 2", "publishing"])
def test_kill_9_at_a_seeded_point_then_rerun(tmp_path, reference_run, point):
    reference, stages_seconds = reference_run
    recipe, work = make_recipe(tmp_path), tmp_path / "work"
    staging_of = (tmp_path / "releases" / "faults").glob
    if point == "publishing":  # the splits being written and validated in the staging folder
        reached = lambda: any(staging_of(".*staging*/data/*.parquet"))  # noqa: E731
    else:  # a seeded share of the uninterrupted run's stages, so the kill lands in them on a fast
        # machine as on a slow one (at most half, where a warm rerun is faster than the reference)
        kill_at = time.monotonic() + random.Random(point).uniform(0.05, 0.5) * stages_seconds
        reached = lambda: time.monotonic() >= kill_at  # noqa: E731
    before = set(servers_alive())
    kill_when(start_flow(recipe, work), reached)
    deadline = time.monotonic() + 15
    while set(servers_alive()) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(servers_alive()) - before, "the run's Prefect server outlived kill -9"
    assert not release_of(recipe).exists(), "the run was killed after it published"
    finished = stage_files(work)
    code, out = finish(start(recipe, work))
    assert code == 0, out
    assert data_bytes(release_of(recipe)) == reference
    assert verify(release_of(recipe)) == []
    redone = [p for p, mtime in finished.items() if p.exists() and p.stat().st_mtime_ns != mtime]
    assert not redone, f"finished shards were recomputed: {redone}"
    assert not list(staging_of(".*staging*"))


def test_sigterm_stops_promptly_and_says_how_to_resume(tmp_path, reference):
    recipe, work = make_recipe(tmp_path), tmp_path / "work"
    before = set(servers_alive())
    run = start_flow(recipe, work)
    run.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code, out = finish(run, timeout=60)
    assert code == 130 and time.monotonic() - stopped < 30
    assert "rerun the same command to resume" in out and "Traceback" not in out
    assert not set(servers_alive()) - before
    code, out = finish(start(recipe, work))
    assert code == 0, out
    assert data_bytes(release_of(recipe)) == reference


def test_a_rerun_after_the_release_was_published_ends_with_it_unchanged(tmp_path, reference):
    """As after a kill between publishing and exiting: the same command again exits 0 with the
    release as it was, and the same version from another recipe is refused."""
    recipe, work = make_recipe(tmp_path), tmp_path / "work"
    assert finish(start(recipe, work))[0] == 0
    published = {p: p.stat().st_mtime_ns for p in release_of(recipe).rglob("*")}
    code, out = finish(start(recipe, work))
    assert code == 0 and "Already published" in out, out
    assert {p: p.stat().st_mtime_ns for p in release_of(recipe).rglob("*")} == published
    assert data_bytes(release_of(recipe)) == reference
    message = user_error(*finish(start(recipe, work, "filters.0.min=30")))
    assert "built from another recipe" in message and "bump `version:`" in message


@pytest.mark.parametrize("same_work_dir, settings", [(False, ("filters.0.min=8", "filters.0.min=30")),
                                                      (False, ("seed=0", "seed=0")),
                                                      (True, ("seed=0", "seed=0"))])
def test_two_runs_publishing_one_version_at_once(tmp_path, same_work_dir, settings):
    """Of two runs of one version, one publishes; the other ends with that release where it
    built the same one, and is refused where it built another."""
    recipe = make_recipe(tmp_path)
    works = [tmp_path / "work"] * 2 if same_work_dir else [tmp_path / "w1", tmp_path / "w2"]
    runs = [start(recipe, work, setting) for work, setting in zip(works, settings)]
    results = [finish(r) for r in runs]
    codes = sorted(code for code, _ in results)
    if settings[0] == settings[1]:
        assert codes == [0, 0], results
        assert sum("Already published" in out for _, out in results) == 1, results
    else:
        assert codes == [0, 1], results
        loser = next(out for code, out in results if code == 1)
        assert "already exists" in loser or "published by another run" in loser
        assert "Traceback" not in loser and "Please report" not in loser
    release = release_of(recipe)
    assert verify(release) == []
    winner = next(s for (code, _), s in zip(results, settings) if code == 0)
    assert json.loads((release / "manifest.json").read_text())["recipe"]["filters"][0]["min"] == (
        30 if winner.endswith("=30") else 8)
    assert not list(release.parent.glob(".*staging*"))


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (root only): `mount(size, read_only)` returns its folder."""
    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        folder = tmp_path / f"tmpfs-{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); these tests need root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def user_error(code: int, out: str) -> str:
    assert code == 1, out
    assert "Traceback" not in out and "Please report" not in out, out
    return out.split("error: ", 1)[-1].replace("\n", " ")


def test_a_full_output_disk_stops_at_publish_with_one_paragraph_and_leaves_nothing(tmp_path, tmpfs):
    recipe, root = make_recipe(tmp_path), tmpfs("200k")
    code, out = finish(start(recipe, tmp_path / "work", f"output.root={root}"))
    message = user_error(code, out)
    assert "No space left on device" in message and "rerun the same command" in message
    assert not list(root.rglob("manifest.json")) and not list(root.rglob(".*staging*"))


def test_a_full_work_dir_is_not_retried_and_says_where(tmp_path, tmpfs):
    recipe, work = make_recipe(tmp_path), tmpfs("64k")
    started = time.monotonic()
    code, out = finish(start(recipe, work))
    assert "No space left on device" in user_error(code, out)
    assert "Retry" not in out and time.monotonic() - started < 300  # 3 backoff retries would show


def test_a_read_only_output_root_stops_before_any_work(tmp_path, tmpfs):
    recipe, root = make_recipe(tmp_path), tmpfs("1m", read_only=True)
    code, out = finish(start(recipe, tmp_path / "work", f"output.root={root}"))
    assert "output.root" in user_error(code, out) and "cannot be written" in out
    assert not (tmp_path / "work").exists()
