"""A local Prefect server that lives exactly as long as the command that needs it.

Without `PREFECT_API_URL`, Prefect starts a temporary server per process, and a run killed
with `kill -9` leaves it running (a uvicorn process under PID 1, one more per kill). The
CLI starts its own instead, `prefect server start` as a child that the kernel stops when
the CLI dies (Linux's parent-death signal), and stops it itself on every normal exit.
With `PREFECT_API_URL` set (or a profile's API URL), that server is used and nothing is started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from corpusmill.tasks.errors import CorpusmillError

STARTUP_SECONDS = 90  # a loaded 2-core machine has taken 30 s
_PR_SET_PDEATHSIG = 1


class ServerDidNotStart(CorpusmillError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: ask the kernel for SIGTERM when the parent dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def tied_server() -> Iterator[str]:
    """Yield the API URL of a Prefect server for this process: `PREFECT_API_URL` when set (in the
    environment or Prefect's profile), else a local server started here and stopped when the
    block (or the process) ends."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return

    url = f"http://127.0.0.1:{_free_port()}/api"
    log = Path(tempfile.mkstemp(prefix="corpusmill-prefect-server-", suffix=".log")[1])
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", url.rsplit(":", 1)[1].split("/")[0], "--no-services"]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PREFECT_UI_ENABLED": "false"},
                                  preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        _wait_until_healthy(server, url, log)
        os.environ["PREFECT_API_URL"] = url  # worker processes of a Dask or Ray runner inherit it
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        try:
            _drain_to(server)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    log.unlink(missing_ok=True)


def _drain_to(server: subprocess.Popen) -> None:
    """Send the logs and events still queued while the server is up, or they fail loudly at exit."""
    if server.poll() is not None:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()


def _wait_until_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        if _healthy(url):
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:]
    raise ServerDidNotStart(
        f"the local Prefect server did not start within {STARTUP_SECONDS} s (its log: {log}; last lines: {tail!r}). "
        f"Rerun, or start one yourself (`prefect server start`) and export PREFECT_API_URL=http://127.0.0.1:4200/api."
    )
