"""How dedup compiles its loops: numba's `njit`, without the GIL, with the compiled code
cached on disk (compiling them takes about 10 s per process).

numba caches next to the source (`__pycache__`) or, where that is read-only (a site-packages
owned by root), in the user's cache folder. Where neither can be written (a service account
without a home, a read-only container) it refuses to cache, and importing dedup would fail:
the cache then goes to a folder of this user's under the system's temporary folder.
"""

from __future__ import annotations

import os
import stat
import tempfile

import numba
from numba.core import config


def njit(function):
    """`numba.njit(cache=True, nogil=True)(function)`, with a cache folder this process can write."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        # Set in the environment, so numba's config reload keeps it and worker processes inherit it.
        os.environ["NUMBA_CACHE_DIR"] = _temporary_cache()
        config.reload_config()
        return numba.njit(cache=True, nogil=True)(function)


def _temporary_cache() -> str:
    """A folder under the temporary folder that only this user can write, kept between runs.
    numba loads cached code as pickles, so where someone else could have written that folder,
    this process takes a new one of its own instead."""
    path = os.path.join(tempfile.gettempdir(), f"corpusmill-numba-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    status = os.lstat(path)
    if stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid() and not status.st_mode & 0o022:
        return path
    return tempfile.mkdtemp(prefix="corpusmill-numba-")
