"""Plain text into documents: the whole file, paragraphs, or chapters by their headings.

Each splitter takes (line number, line) pairs and yields (first non-blank line number,
document text) pairs, streaming.
"""

from __future__ import annotations

import collections
import itertools
import re
from typing import Iterator, Sequence

Lines = Iterator[tuple[int, str]]

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|"
    "eighteen|nineteen|twenty|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last"
)
_HEADING = re.compile(
    rf"(?:CHAPTER|Chapter|BOOK|Book|PART|Part|VOLUME|Volume)\s+(?:\d+|[IVXLCDM]+|(?i:{_NUMBER_WORDS}))\b(?P<title>.*)"
)


def split_file(lines: Lines) -> Lines:
    numbered = list(lines)
    first = next((n for n, line in numbered if line.strip()), numbered[0][0] if numbered else 1)
    yield first, "\n".join(line for _, line in numbered)


def split_paragraphs(lines: Lines) -> Lines:
    block: list[str] = []
    first = 0
    for lineno, line in lines:
        if line.strip():
            if not block:
                first = lineno
            block.append(line)
        elif block:
            yield first, "\n".join(block)
            block = []
    if block:
        yield first, "\n".join(block)


def is_heading(line: str, after: Sequence[str] = ()) -> bool:
    """A chapter heading: 'CHAPTER XII. THE LAST', 'Chapter 1', 'BOOK ONE', 'PART II' on a line of its own.

    `after` holds the (up to) two lines that follow. A heading with a title must end its
    paragraph within two lines (titles wrap), so a paragraph that merely begins
    'BOOK I. (Folio), CHAPTER I. (Sperm Whale).--This whale, among the' is not one.
    """
    title = _heading_title(line)
    if title is None:
        return False
    return not title or len(after) < 2 or not (after[0].strip() and after[1].strip())


def _heading_title(line: str) -> str | None:
    """The title of a heading-shaped line ('' for a bare 'CHAPTER I.'), or None."""
    match = _HEADING.fullmatch(line.strip())
    return match.group("title").strip(" .:-\u2013\u2014") if match else None


def split_chapters(lines: Lines) -> Lines:
    """Split before each heading; text before the first heading is its own document.

    A section holding nothing but its heading (a table of contents) stays with what
    follows instead of becoming a one-line document.
    """
    section: list[str] = []
    first = None
    has_body = False
    in_title = False  # a heading's title may wrap onto the next line, which is not body text
    window = collections.deque(itertools.islice(lines, 3))  # the line and the two after it
    while window:
        lineno, line = window.popleft()
        heading = is_heading(line, [text for _, text in window])
        window.extend(itertools.islice(lines, 1))
        if heading and has_body:
            yield first, "\n".join(section)
            section, first, has_body = [], None, False
        section.append(line)
        in_title = bool(heading and _heading_title(line)) or (in_title and bool(line.strip()))
        if line.strip():
            first = lineno if first is None else first
            has_body = has_body or not (heading or in_title)
    if first is not None:
        yield first, "\n".join(section)


SPLITTERS = {"file": split_file, "paragraph": split_paragraphs, "chapter": split_chapters}
