"""Test environment: offline, no telemetry, Prefect state in a temporary folder.

These variables must be set before prefect is imported anywhere, so they live at the top
of the conftest rather than in a fixture.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_STATE = Path(tempfile.mkdtemp(prefix="corpusmill-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_STATE / "prefect"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("HF_DATASETS_CACHE", str(_STATE / "hf-datasets"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The shared open corpora; tests that need them skip where ../shared is absent."""
    if not CORPORA.is_dir():
        pytest.skip(f"shared corpora not found at {CORPORA}; these tests need the project's ../shared folder")
    return CORPORA


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and the environment that points s3fs at it; bucket S3_BUCKET."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    patch = pytest.MonkeyPatch()
    for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        patch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    from helpers import S3_BUCKET

    if not fs.exists(S3_BUCKET):  # moto's state is per process: a later module's server already has it
        fs.mkdir(S3_BUCKET)
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    patch.undo()
    server.stop()
