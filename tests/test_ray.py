"""`runner: {kind: ray}`: a small real release on a local Ray cluster against a real Prefect
server, byte for byte the release of the thread-pool runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason="the Ray test needs `pip install -e '.[ray]'` (ray)")
pytest.importorskip("prefect_ray", reason="the Ray test needs `pip install -e '.[ray]'` (prefect-ray)")

from corpusmill.flows.server import tied_server  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WORDS = "river stone market window garden letter summer harbour lantern violin engine meadow".split()


@pytest.fixture(scope="module")
def prefect_server():
    """A real Prefect server, which Ray's worker processes report to (they inherit PREFECT_API_URL)."""
    with tied_server() as url:
        yield url


@pytest.fixture(scope="module")
def local_ray(prefect_server):
    """A local Ray cluster of 2 CPUs, started after the server so its workers know the server; the
    task runner finds it running and uses it."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


def recipe(tmp_path: Path) -> Path:
    """Two sources of paragraphs with planted duplicates, in shards of 20 rows: several tasks per stage."""
    paragraphs = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(8 + 3 * (i % 9))) + f" number {i % 70}."
                  for i in range(90)]
    for name, part in (("a", paragraphs[:45]), ("b", paragraphs[45:])):
        (tmp_path / f"{name}.txt").write_text("\n\n".join(part) + "\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""name: ray-test
version: 1.0.0
sources:
  - {{kind: files, name: a, path: {tmp_path / 'a.txt'}, format: text, split_by: paragraph, license: CC0-1.0}}
  - {{kind: files, name: b, path: {tmp_path / 'b.txt'}, format: text, split_by: paragraph, license: CC0-1.0}}
filters: [{{step: tokens, min: 4}}]
work_shard_rows: 20
""")
    return path


def test_a_release_on_ray_is_the_release_on_threads(prefect_server, local_ray, tmp_path, monkeypatch):
    from prefect_ray import RayTaskRunner

    from corpusmill.flows.release import release
    from corpusmill.tasks.publish import read_manifest

    submitted = []
    submit = RayTaskRunner.submit
    monkeypatch.setattr(RayTaskRunner, "submit", lambda self, task, *a, **k: submitted.append(task.name) or
                        submit(self, task, *a, **k))

    path = recipe(tmp_path)
    builds = {kind: release(str(path), [f"runner.kind={kind}", f"output.root={tmp_path / kind}"],
                            str(tmp_path / f"work-{kind}"))
              for kind in ("threads", "ray")}

    manifests = {kind: read_manifest(target) for kind, target in builds.items()}
    assert manifests["ray"]["fingerprint"] == manifests["threads"]["fingerprint"]
    assert manifests["ray"]["files"] == manifests["threads"]["files"]
    assert manifests["ray"]["accounting"]["dropped"], "the planted duplicates were found"
    assert {"ingest", "filter", "signatures"} <= set(submitted), "the stages ran on Ray"
