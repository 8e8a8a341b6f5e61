"""Errors caused by input or state the user can fix.

The CLI prints their message as one paragraph and exits non-zero; Prefect does not retry
them, since running the same bad input again cannot succeed.
"""


class CorpusmillError(Exception):
    """Bad input or state; the message names the thing and the fix."""
