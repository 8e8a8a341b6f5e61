"""Ingest from an object store that fails: the real Prefect task against moto on loopback,
with errors injected in front of it."""

from __future__ import annotations

import collections
import gzip
import json
import re
import threading
import time

import pytest

pytest.importorskip("s3fs")
werkzeug_app = pytest.importorskip("moto.moto_server.werkzeug_app")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.exceptions import ObjectNotFound  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from corpusmill.flows.release import ingest_unit  # noqa: E402
from corpusmill.tasks import ingest  # noqa: E402
from corpusmill.tasks.ingest import IngestError  # noqa: E402
from corpusmill.tasks.recipe import FilesSource  # noqa: E402
from corpusmill.tasks.shards import file_sha256  # noqa: E402

BUCKET = "corpusmill-ingest"
JSONL = "".join(json.dumps({"text": f"document {i}: " + "word " * 30}) + "\n" for i in range(500)).encode()
S3_ERRORS = {403: "AccessDenied", 500: "InternalError", 503: "ServiceUnavailable"}


class FlakyObjects:
    """WSGI middleware in front of moto: answers the next GET requests of an object with errors."""

    def __init__(self, app):
        self.app = app
        self.faults: dict[str, list[int]] = collections.defaultdict(list)  # "/bucket/key" -> statuses
        self.lock = threading.Lock()

    def fail_next_gets(self, key: str, *statuses: int) -> None:
        with self.lock:
            self.faults[f"/{key}"].extend(statuses)

    def pending(self, key: str) -> list[int]:
        with self.lock:
            return list(self.faults[f"/{key}"])

    def __call__(self, environ, start_response):
        with self.lock:
            queue = self.faults.get(environ["PATH_INFO"]) if environ["REQUEST_METHOD"] == "GET" else None
            status = queue.pop(0) if queue else None
        if status is None:
            return self.app(environ, start_response)
        code = S3_ERRORS[status]
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected</Message></Error>"
        start_response(f"{status} {code}", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body.encode()]


@pytest.fixture(scope="module")
def store():
    """moto's S3 app behind FlakyObjects on 127.0.0.1, and s3fs pointed at it.

    botocore is told not to retry (AWS_MAX_ATTEMPTS=1), so every injected error fails one
    attempt of the task and only the flow's retries can get past it.
    """
    flaky = FlakyObjects(werkzeug_app.DomainDispatcherApplication(werkzeug_app.create_backend_app))
    server = make_server("127.0.0.1", 0, flaky, threaded=True, request_handler=werkzeug_app.MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    patch = pytest.MonkeyPatch()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_MAX_ATTEMPTS": "1"}.items():
        patch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    yield flaky, fs
    s3fs.S3FileSystem.clear_instance_cache()
    patch.undo()
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=60):
        yield


def s3_source(fs, key: str, data: bytes) -> tuple[FilesSource, ingest.IngestUnit]:
    fs.pipe(key, data)
    source = FilesSource(kind="files", path=f"s3://{key}", license="CC0-1.0")
    (unit,) = ingest.plan([source])
    # the task's cache key hashes the input before the task runs; hashed here (and remembered),
    # the injected errors land in the task's own reads
    ingest.unit_fingerprint(source, unit)
    return source, unit


def run_task(source, unit, out):
    """The flow's ingest task, retries without delay: (its final state, how many times it ran)."""
    state = ingest_unit.with_options(retry_delay_seconds=0)(
        source, unit, out / "shards", out / "quarantine.parquet", 200, return_state=True)
    with get_client(sync_client=True) as client:
        for _ in range(100):  # the server records the run, and its states, a moment after the client set them
            try:
                run = client.read_task_run(state.state_details.task_run_id)
            except ObjectNotFound:
                run = None
            if run is not None and run.state_type == state.type:
                return state, run.run_count
            time.sleep(0.1)
    raise AssertionError(f"the server never recorded the task run's final state {state.type}")


def test_failed_object_reads_are_retried_to_the_same_rows(store, prefect_api, tmp_path):
    flaky, fs = store
    key = f"{BUCKET}/flaky/docs.jsonl.gz"
    source, unit = s3_source(fs, key, gzip.compress(JSONL, mtime=0))
    clean = ingest.run(source, unit, tmp_path / "clean", tmp_path / "clean-quarantine.parquet", 200)

    flaky.fail_next_gets(key, 500, 503)
    state, runs = run_task(source, unit, tmp_path / "retried")
    assert state.is_completed() and runs == 3 and flaky.pending(key) == []
    retried = state.result()
    assert retried["rows_out"] == clean["rows_out"] == 500 and len(retried["shards"]) == 3
    assert [file_sha256(p) for p in retried["shards"]] == [file_sha256(p) for p in clean["shards"]]


@pytest.mark.parametrize("problem", ["forbidden", "deleted"])
def test_a_forbidden_or_missing_object_fails_at_once(store, prefect_api, tmp_path, problem):
    flaky, fs = store
    key = f"{BUCKET}/{problem}/docs.jsonl"
    source, unit = s3_source(fs, key, JSONL)
    if problem == "forbidden":
        flaky.fail_next_gets(key, *[403] * 4)
    else:  # gone between planning and reading
        fs.rm(key)

    state, runs = run_task(source, unit, tmp_path)
    assert state.is_failed() and runs == 1  # not retried
    message = "may not be read" if problem == "forbidden" else "does not exist"
    with pytest.raises(IngestError, match=re.escape(f"s3://{key} {message}")):
        state.result()


def test_a_pattern_matching_no_object_names_the_url(store):
    with pytest.raises(IngestError, match=rf"'s3://{BUCKET}/nothing/\*\.jsonl'.* matches no file"):
        ingest.plan([FilesSource(kind="files", path=f"s3://{BUCKET}/nothing/*.jsonl", license="CC0-1.0")])
