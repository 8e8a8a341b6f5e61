"""A work dir on S3 (moto on loopback) shared by the processes of a Dask cluster: the same
release as a local work dir, every stage served from the bucket's cache on a rerun, and a
missing bucket named before any work."""

from __future__ import annotations

import json
import random

import pytest
import yaml

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytest.importorskip("prefect_dask", reason="needs `pip install -e '.[dask]'`")

from helpers import S3_BUCKET, word_doc  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from corpusmill.flows.cli import app  # noqa: E402
from corpusmill.flows.server import tied_server  # noqa: E402
from corpusmill.flows.release import ValidationFailed  # noqa: E402
from corpusmill.tasks import publish  # noqa: E402

pytestmark = [pytest.mark.timeout(600)]

@pytest.fixture(scope="module")
def prefect_server():
    """A real Prefect server, which the Dask worker processes report to."""
    with tied_server() as url:
        yield url


def _on(url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: url})


def _recipe(tmp_path, root: str, runner: dict | None = None, **keys):
    rng = random.Random(11)
    docs = [word_doc(rng, 30) for _ in range(40)]
    docs += [docs[3], docs[7]]  # exact duplicates, so dedup drops rows into the quarantine
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    recipe = {"name": "shared", "version": "1.0.0",
              "sources": [{"kind": "files", "name": "docs", "path": str(tmp_path / "in.jsonl"), "license": "MIT"}],
              "splits": {"train": 0.6, "validation": 0.2, "test": 0.2},
              "output": {"root": root}, **({"runner": runner} if runner else {}), **keys}
    path = tmp_path / f"{abs(hash(root))}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _run(recipe, work_dir: str, *overrides: str) -> str:
    from corpusmill.flows.release import release

    return release(str(recipe), list(overrides), work_dir)


def _written(s3, prefix: str) -> dict[str, str]:
    """When each stage output and cached result under `prefix` was last written (the quarantine
    folder is collected anew by every run)."""
    return {p: s3.info(p)["LastModified"] for p in s3.find(prefix) if "/quarantine/" not in p}


@pytest.mark.slow
def test_s3_work_dir_on_a_dask_cluster_matches_a_local_build_and_reruns_from_cache(s3, prefect_server, tmp_path):
    from distributed import LocalCluster

    with _on(prefect_server):
        local = _run(_recipe(tmp_path, str(tmp_path / "local-releases")), str(tmp_path / "work"))
    expected = publish.read_manifest(local)

    work = f"s3://{S3_BUCKET}/work"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, _on(prefect_server):
        recipe = _recipe(tmp_path, str(tmp_path / "s3-releases"), {"kind": "dask", "address": cluster.scheduler_address})
        manifest = publish.read_manifest(_run(recipe, work))
        written = _written(s3, f"{S3_BUCKET}/work/shared")
        rerun = publish.read_manifest(_run(recipe, work, "version=1.0.1"))

    assert manifest["fingerprint"] == expected["fingerprint"] == rerun["fingerprint"]
    assert [f["sha256"] for f in manifest["files"]] == [f["sha256"] for f in expected["files"]]
    # the rerun ran no stage: every output and result came from the bucket, none was written again
    assert _written(s3, f"{S3_BUCKET}/work/shared") == written
    shards = list(written)
    assert any("/.results/" in p for p in shards) and any("/ingest/" in p and p.endswith(".parquet") for p in shards)
    assert s3.find(f"{S3_BUCKET}/work/shared/quarantine")  # the dropped duplicates, collected on the bucket
    assert not any(".tmp-" in p for p in shards)


def _ids_by_split(release: str) -> dict[str, set[str]]:
    import pyarrow.parquet as pq

    manifest = publish.read_manifest(release)
    out: dict[str, set[str]] = {}
    for f in manifest["files"]:
        out.setdefault(f["split"], set()).update(pq.read_table(f"{release}/{f['path']}", columns=["id"])["id"].to_pylist())
    return out


@pytest.mark.slow
def test_s3_work_dir_keeps_held_out_rows_of_the_previous_release_out_of_train(s3, prefect_server, tmp_path):
    work = f"s3://{S3_BUCKET}/previous-work"
    recipe = _recipe(tmp_path, str(tmp_path / "releases"))
    with _on(prefect_server):
        first = _run(recipe, work)
        # another seed deals the rows out afresh; the previous release holds its held-out rows in place
        second = _run(recipe, work, "version=1.1.0", "seed=99", f"output.previous={first}")
    before, after = _ids_by_split(first), _ids_by_split(second)
    held_out = before.get("validation", set()) | before.get("test", set())
    assert held_out and not held_out & after["train"]
    assert s3.find(f"{S3_BUCKET}/previous-work/shared/previous")  # prepared once, beside the other work files


@pytest.mark.slow
def test_failed_validation_leaves_its_report_on_the_bucket(s3, prefect_server, tmp_path):
    # a user's step after the redaction puts an e-mail address back into every row
    recipe = _recipe(tmp_path, str(tmp_path / "releases"),
                     filters=[{"step": "pii", "action": "redact"}, {"step": "user_steps:AppendContact"}])
    with _on(prefect_server), pytest.raises(ValidationFailed, match="personal_data.email"):
        _run(recipe, f"s3://{S3_BUCKET}/failing-work")
    assert s3.isfile(f"{S3_BUCKET}/failing-work/shared/validation-failed/results.json")
    assert not (tmp_path / "releases" / "shared").exists() or not any((tmp_path / "releases" / "shared").iterdir())


def test_a_missing_bucket_stops_the_run_before_any_work(s3, prefect_server, tmp_path):
    recipe = _recipe(tmp_path, str(tmp_path / "releases"))
    with _on(prefect_server):
        out = CliRunner().invoke(app, ["run", str(recipe), "--work-dir", "s3://no-such-bucket/work", "--no-progress"])
    assert out.exit_code == 1
    assert "--work-dir s3://no-such-bucket/work cannot be written" in out.output
    assert "Create the bucket" in out.output and "Traceback" not in out.output
