"""Project Gutenberg files: where the book lies between the licence header and footer."""

from __future__ import annotations

import re

# Current files use '*** START OF ... ***' / '*** END OF ... ***'; 1990s editions end their
# header with '*END*THE SMALL PRINT!...' and their text with 'End of (the|this) Project
# Gutenberg Etext ...'.
_START = re.compile(r"\s*(\*\*\*\s*START OF\b|\*END\*?\s*THE SMALL PRINT)", re.IGNORECASE)
_END = re.compile(r"\s*(\*\*\*\s*END OF\b|End of (the |this )?Project Gutenberg)", re.IGNORECASE)


class Boilerplate:
    """Finds the markers in a file's lines, seen in order; the book lies strictly between
    line `start` (0 without a start marker) and line `end` (None without an end marker)."""

    def __init__(self) -> None:
        self.start = 0
        self._end: int | None = None  # the first end marker after the start marker
        self._first_end: int | None = None

    def see(self, lineno: int, line: str) -> None:
        if not self.start and self._first_end is None and _START.match(line):
            self.start = lineno
        elif _END.match(line):
            if self.start and self._end is None:
                self._end = lineno
            if self._first_end is None:
                self._first_end = lineno

    @property
    def end(self) -> int | None:
        # an end marker without a start marker still cuts the licence off
        return self._end if self.start else self._first_end
