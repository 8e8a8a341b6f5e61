"""A GPU is held by one process at a time, across processes that share a Prefect server."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from corpusmill.flows.server import tied_server
from corpusmill.tasks.generation import exclusive, gpu_in_use
from corpusmill.tasks.recipe import Augment

pytestmark = pytest.mark.timeout(300)

# Each worker waits for the test's go, then enters the lock three times, writing when it
# entered and left.
WORKER = """
import os, sys, time
from pathlib import Path
from corpusmill.tasks.generation import exclusive

name, log, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
ready.touch()
while not go.exists():
    time.sleep(0.05)
for _ in range(3):
    with exclusive(name):
        with log.open("a") as f:
            f.write(f"enter {os.getpid()} {time.time_ns()}\\n")
        time.sleep(0.3)  # room for the other worker to enter too, were the lock not held
        with log.open("a") as f:
            f.write(f"leave {os.getpid()} {time.time_ns()}\\n")
"""


@pytest.fixture(scope="module")
def prefect_server():
    with tied_server() as url:
        yield url


@pytest.mark.slow
def test_two_processes_never_hold_one_gpu_at_once(prefect_server, tmp_path):
    log, go = tmp_path / "log", tmp_path / "go"
    ready = [tmp_path / f"ready-{k}" for k in range(2)]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, "corpusmill-gpu-test", str(log), str(r), str(go)])
               for r in ready]
    try:
        while not all(r.exists() for r in ready):
            assert all(w.poll() is None for w in workers), "a worker stopped before the go"
            time.sleep(0.1)
        go.touch()
        assert [w.wait(timeout=240) for w in workers] == [0, 0]
    finally:
        for w in workers:
            w.kill()

    events = sorted((int(t), what, pid) for what, pid, t in (line.split() for line in log.read_text().splitlines()))
    assert len(events) == 12 and len({pid for _, _, pid in events}) == 2
    # Held by one process at a time: every enter is followed by the same process's leave.
    for (_, first, holder), (_, second, leaver) in zip(events[::2], events[1::2]):
        assert (first, second, leaver) == ("enter", "leave", holder), events


@pytest.mark.slow
def test_the_limit_is_created_once_with_one_slot(prefect_server):
    from prefect.client.orchestration import get_client

    for _ in range(2):
        with exclusive("corpusmill-gpu-created"):
            pass
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("corpusmill-gpu-created").limit == 1


def test_the_cpu_and_remote_servers_hold_no_gpu():
    assert gpu_in_use(Augment(device="cpu")) is None
    assert gpu_in_use(Augment(backend="openai", endpoint="http://127.0.0.1:1/v1", model={"name": "m"})) is None
