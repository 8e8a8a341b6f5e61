"""Personal-data patterns: redacted or dropped by the filter stage, and checked again by
the validation suite, from this one list so the two can never disagree."""

from __future__ import annotations

import re

# name -> (pattern, replacement). Kept narrow on purpose: documentation and books are full of
# numbers and dotted names, and a false positive here silently rewrites good text.
PATTERNS: dict[str, tuple[str, str]] = {
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "<EMAIL>"),
    "us_ssn": (r"\b\d{3}-\d{2}-\d{4}\b", "<SSN>"),
    "credit_card": (r"\b(?:\d{4}[ -]){3}\d{4}\b", "<CARD>"),
}

_COMPILED = {name: re.compile(pattern) for name, (pattern, _) in PATTERNS.items()}


def find(text: str) -> list[str]:
    """Names of the patterns that occur in `text`."""
    return [name for name, rx in _COMPILED.items() if rx.search(text)]


def redact(text: str) -> tuple[str, int]:
    """`text` with every match replaced by its placeholder, and the number of replacements."""
    total = 0
    for name, rx in _COMPILED.items():
        text, n = rx.subn(PATTERNS[name][1], text)
        total += n
    return text, total
