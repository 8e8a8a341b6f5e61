"""The dedup stage's band and cluster tasks on a real local Dask cluster (a scheduler and
two worker processes on loopback) against a real Prefect server: the same clusters as the
thread-pool runner."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("distributed", reason="the Dask test needs `pip install -e '.[dask]'` (distributed)")
pytest.importorskip("prefect_dask", reason="the Dask test needs `pip install -e '.[dask]'` (prefect-dask)")

from corpusmill.flows.server import tied_server  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def prefect_server():
    """A real Prefect server (the CLI's own, `tied_server`), which Dask's worker processes share."""
    with tied_server() as url:
        yield url


def _rows() -> list[dict]:
    rng = random.Random(9)
    rows = []
    for g in range(40):
        words = [f"g{g}w{i}x{rng.randrange(10**6)}" for i in range(200)]
        for v in range(1 + g % 3):
            text = list(words)
            if v:
                text[20 * v] = f"changed{v}"
            rows.append({"id": f"{rng.randrange(10**6):06d}-{g}-{v}", "text": " ".join(text), "synthetic": v == 2})
    return rows


def _run(runner, shards: list[Path], work: Path, url: str) -> list[dict]:
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from corpusmill.flows import release
    from corpusmill.tasks.recipe import Dedup
    from corpusmill.tasks.shards import read_table

    settings = Dedup()

    @flow(name="dedup-scale-out", task_runner=runner)
    def dedup_flow() -> tuple[dict, Path]:
        cached = dict(result_storage=work / ".results")
        sides = [work / f"sig-{p.name}" for p in shards]
        futures = [release.signature_shard.with_options(**cached).submit(p, s, settings) for p, s in zip(shards, sides)]
        [f.result() for f in futures]
        return release.dedup_stage(sides, shards, work, settings, cached)

    with temporary_settings(updates={PREFECT_API_URL: url}):
        report, clusters = dedup_flow()
    assert report["rows_in"] == sum(read_table(p).num_rows for p in shards)
    return read_table(clusters).to_pylist()


def test_dask_cluster_gives_the_same_clusters_as_threads(prefect_server, tmp_path):
    from distributed import LocalCluster
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from corpusmill.tasks.shards import write_table

    rows = _rows()
    shards = [write_table(pa.Table.from_pylist(rows[k::3]), tmp_path / "in" / f"part-{k:05d}.parquet") for k in range(3)]
    threads = _run(ThreadPoolTaskRunner(max_workers=2), shards, tmp_path / "threads", prefect_server)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        dask = _run(DaskTaskRunner(address=cluster.scheduler_address), shards, tmp_path / "dask", prefect_server)
    assert dask == threads
    assert sum(1 for r in threads if not r["keep"]) == sum(g % 3 for g in range(40))
