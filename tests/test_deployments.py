import inspect

import yaml

from corpusmill.flows.cli import DEPLOYMENTS, served_deployments
from corpusmill.flows.release import release


def test_nightly_deployment_of_the_demo_recipe():
    spec = yaml.safe_load(DEPLOYMENTS.read_text())
    (nightly,) = spec["deployments"]
    assert nightly["entrypoint"] == "flows/release.py:release"
    assert set(nightly["parameters"]) <= set(inspect.signature(release.fn).parameters)

    (deployment,) = served_deployments()
    assert deployment.name == "demo-docs-nightly"
    assert deployment.parameters["recipe_path"] == "recipes/demo.yaml" and deployment.parameters["nightly"] is True
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
