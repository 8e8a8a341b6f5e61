"""Errors, sorted by what a rerun can do about them.

- `CorpusmillError`: input or state the user can fix. The CLI prints the message as one
  paragraph and exits non-zero; Prefect does not retry it, since running the same bad input
  again cannot succeed.
- Transient I/O (`is_transient`): a store or the network failing for a moment. It
  propagates as raised, and the flow retries the task with backoff.
- Anything else is a bug: not retried, reported with its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import importlib


class CorpusmillError(Exception):
    """Bad input or state; the message names the thing and the fix."""


# What a store raises for a file that is not there or may not be read: it stays so on a rerun.
MISSING_OR_FORBIDDEN = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# OS errors a rerun cannot get past either.
PERMANENT_OS_ERRORS = (*MISSING_OR_FORBIDDEN, FileExistsError)
FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def out_of_room(error: BaseException) -> bool:
    """A disk that is full or read-only, or a path this user may not write: not bad input,
    not a bug, and not worth a retry; the user frees space or fixes permissions."""
    return isinstance(error, PermissionError) or getattr(error, "errno", None) in FULL_OR_READ_ONLY


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP clients' connection errors, which are not OSErrors: httpx's, and httpx2's
    (which huggingface_hub 2 speaks)."""
    found = []
    for client in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(client).TransportError)
    return tuple(found)


def is_transient(error: BaseException) -> bool:
    """Whether a rerun of the same work can get past `error`: the one place that decides what is retried."""
    if isinstance(error, (CorpusmillError, *PERMANENT_OS_ERRORS)) or out_of_room(error):
        return False
    # ConnectionError, TimeoutError, requests' errors, fsspec/s3fs I/O errors, a dropped Hub stream
    return isinstance(error, (OSError, TimeoutError, *transport_errors()))


def is_transient_hub_error(error: BaseException) -> bool:
    """Whether a rerun can get past a Hugging Face Hub load's `error`: a connection dropped or
    timed out, or the Hub answering 5xx, 408 (timeout) or 429 (rate limit). Never in offline
    mode, where datasets reports a dataset it has not cached as a ConnectionError."""
    import datasets

    if datasets.config.HF_HUB_OFFLINE:
        return False
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    return is_transient(error)
