"""The machine a benchmark ran on, recorded in every result JSON beside the figures."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path


def describe(libraries: list[str]) -> dict:
    """CPUs, CPU model, RAM, torch threads and GPU, Python, the load average when the run
    started, and the version of each of `libraries` (None where not installed)."""
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpus": os.cpu_count(), "cpu_model": model.group(1) if model else platform.processor(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "ram_gib": round(pages / 2**30, 1), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(), "load_avg_at_start": os.getloadavg(),
            "versions": {name: _version(name) for name in libraries}}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
