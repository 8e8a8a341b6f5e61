"""The local Prefect server lives exactly as long as the corpusmill command that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from corpusmill.flows.server import tied_server


def wait_for(condition, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"gave up after {seconds} s")


def servers_of(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in process.children(recursive=True) if "server" in c.cmdline() and "prefect" in c.cmdline()]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_kill_9_of_the_cli_takes_its_server_down(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cli = subprocess.Popen([sys.executable, "-c", "from corpusmill.flows.server import tied_server\n"
                            "import time\nwith tied_server():\n    print('up', flush=True)\n    time.sleep(600)"],
                           env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert cli.stdout.readline().strip() == "up"
        (server,) = servers_of(psutil.Process(cli.pid))
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, seconds=15)
    finally:
        cli.kill()


def test_the_server_stops_with_the_block_and_an_existing_server_is_used(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with tied_server() as url:
        assert os.environ["PREFECT_API_URL"] == url
        (server,) = servers_of(psutil.Process())
        with tied_server() as inner:  # PREFECT_API_URL is set now: reused, nothing started
            assert inner == url and len(servers_of(psutil.Process())) == 1
    assert "PREFECT_API_URL" not in os.environ
    wait_for(lambda: not server.is_running(), seconds=15)
