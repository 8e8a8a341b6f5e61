import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from corpusmill.flows.cli import DEPLOYMENTS, served_deployments
from corpusmill.flows.release import release


def test_nightly_deployment_of_the_demo_recipe():
    spec = yaml.safe_load(DEPLOYMENTS.read_text())
    (nightly,) = spec["deployments"]
    # The installed module: a Dask or Ray worker can import it to unpickle the build's tasks.
    assert load_flow_from_entrypoint(nightly["entrypoint"]) is release
    assert set(nightly["parameters"]) <= set(inspect.signature(release.fn).parameters)

    (deployment,) = served_deployments()
    assert deployment.name == "demo-docs-nightly" and deployment.entrypoint == nightly["entrypoint"]
    assert deployment.parameters["recipe_path"] == "recipes/demo.yaml" and deployment.parameters["nightly"] is True
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_served_run_applies_the_recipes_runner(tmp_path):
    """`corpusmill serve` starts runs with only the deployment's parameters; the recipe's
    `runner: {kind: dask, address: ...}` must still send the build's tasks to that cluster."""
    pytest.importorskip("prefect_dask", reason="needs `pip install -e '.[dask]'`")
    from distributed import Client, LocalCluster, get_task_stream
    from prefect.deployments import run_deployment

    from corpusmill.flows.server import tied_server

    with tied_server() as url, \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster, Client(cluster) as dask:
        recipe = served_recipe(tmp_path, cluster.scheduler_address)
        spec = {"deployments": [{"name": "served-on-dask", "parameters": {
            "recipe_path": str(recipe), "work_dir": str(tmp_path / "work")}}]}
        (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(spec))
        server = subprocess.Popen([sys.executable, "-m", "corpusmill", "serve", "--file", str(tmp_path / "prefect.yaml")],
                                  env={**os.environ, "PREFECT_API_URL": url})
        try:
            served(server, "corpusmill-release/served-on-dask")
            with get_task_stream(client=dask) as stream:
                run = run_deployment("corpusmill-release/served-on-dask", timeout=480, poll_interval=2)
        finally:
            server.terminate()
            server.wait(timeout=30)
        workers = set(cluster.scheduler_info["workers"])
    assert run.state.is_completed(), run.state
    assert (tmp_path / "releases" / "served" / "1.0.0" / "manifest.json").is_file()
    # The ingest, filter and dedup tasks ran on the cluster's worker, not in the flow's threads.
    assert len(stream.data) >= 4 and {t["worker"] for t in stream.data} <= workers


def served(server: subprocess.Popen, name: str) -> None:
    """Wait until `corpusmill serve` has registered the deployment `name`."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        while server.poll() is None:
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(1)
    raise AssertionError(f"corpusmill serve stopped with exit code {server.returncode}")


def served_recipe(tmp_path: Path, scheduler: str) -> Path:
    (tmp_path / "corpus.txt").write_text("\n\n".join(f"paragraph {i} of the served recipe, with a few words"
                                                     for i in range(40)) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "served", "version": "1.0.0",
        "sources": [{"kind": "files", "path": str(tmp_path / "corpus.txt"), "format": "text",
                     "split_by": "paragraph", "license": "CC0-1.0"}],
        "filters": [{"step": "tokens", "min": 4}],
        "output": {"root": str(tmp_path / "releases")},
        "runner": {"kind": "dask", "address": scheduler},
    }))
    return recipe


def test_a_url_that_lost_a_slash_is_refused_with_what_to_use():
    from corpusmill.flows.release import WorkDirNotLocal

    with pytest.raises(WorkDirNotLocal, match="such as s3://bucket/work"):
        release.fn("recipes/demo.yaml", [], str(Path("s3://bucket/work")))
