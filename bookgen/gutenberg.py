"""The Project Gutenberg licence, and blank ends: where a book's text lies in a cleaned file.

Project Gutenberg wraps every book in a licence: a header that ends with a start marker line
(`*** START OF THE PROJECT GUTENBERG EBOOK ...`, in older files the small print's
`*END*THE SMALL PRINT! ...`) and a footer that begins with an end marker line. The model should
learn the book, not the licence, so the reader (corpus.py) keeps only what lies between them,
with the blank lines at both ends trimmed. `Bounds` finds that span piece by piece, as the
reader's first pass cleans the file, so a book larger than memory is never held whole; the
second pass then yields [begin, end) of the same cleaned text.

Nothing here reads a file.
"""

from __future__ import annotations

import re

# Marker lines may be indented (Pride and Prejudice's footer is) and are matched whole.
_START = re.compile(
    r"^[ \t]*(?:"
    r"\*+[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG E-?(?:BOOK|TEXT)\b"
    r"|\*END\*THE SMALL PRINT! FOR PUBLIC DOMAIN E-?(?:BOOK|TEXT)S\*"
    r")[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_END = re.compile(
    r"^[ \t]*(?:\*+[ \t]*)?"
    r"END OF (?:THE |THIS )?PROJECT GUTENBERG(?:['’]S\b| E-?(?:BOOK|TEXT)\b)[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
# The casefolded words every marker line holds: only pieces that hold one of them are
# searched with the (slow) marker patterns.
_MARKER_WORDS = ("gutenberg", "small print")
_NOT_SPACE = re.compile(r"\S")


def _marker_lines(piece: str) -> list[tuple[int, int]]:
    """(begin, end) of the lines of `piece` that hold a marker word, in order: the only lines
    a marker pattern can match (searching those alone is 50x faster than the whole piece)."""
    folded = piece.casefold()
    if len(folded) != len(piece):  # casefolding moved characters (ß -> ss): search it whole
        found = any(word in folded for word in _MARKER_WORDS)
        return [(0, len(piece))] if found else []
    lines = set()
    for word in _MARKER_WORDS:
        at = folded.find(word)
        while at >= 0:
            end = piece.find("\n", at)
            end = len(piece) if end < 0 else end
            lines.add((piece.rfind("\n", 0, at) + 1, end))
            at = folded.find(word, end)
    return sorted(lines)


class Bounds:
    """Where the book's text lies in the cleaned file, from what is found piece by piece.

    The book is what lies between a licence header's last start marker and the first footer
    marker after it (old headers hold several start markers: the small print, then "*** START";
    a footer without a header is still cut), with blank lines at both ends trimmed: blank
    lines before the first line with text go, that line's indentation stays, and the text
    ends at its last non-space character. No marker: the whole file, trimmed.
    """

    def __init__(self) -> None:
        self.starts: list[tuple[int, int, int]] = []  # (match start, match end, text begins)
        self.ends: list[tuple[int, int]] = []  # (match start, last non-space before it + 1)
        self.pending: list[int] = []  # indexes into starts still looking for the next text
        self.last_text = 0  # just after the last non-space character so far
        self.first_text = 0  # where the text begins when no start marker is taken
        self.seeking_first = True
        self.length = 0

    def find(self, piece: str, offset: int) -> None:
        """Take the next piece, which begins at `offset` of the cleaned file."""
        if not piece:
            return
        first = self._text_begins(piece, 0)
        if first is not None:
            first += offset
            for index in self.pending:
                self.starts[index] = (*self.starts[index][:2], first)
            self.pending = []
            if self.seeking_first:
                self.first_text, self.seeking_first = first, False
        lines = _marker_lines(piece)
        for match in (m for begin, end in lines for m in _START.finditer(piece, begin, end)):
            begins = self._text_begins(piece, match.end())
            self.starts.append((offset + match.start(), offset + match.end(), -1))
            if begins is None:
                self.pending.append(len(self.starts) - 1)
            else:
                self.starts[-1] = (*self.starts[-1][:2], offset + begins)
        for match in (m for begin, end in lines for m in _END.finditer(piece, begin, end)):
            before = len(piece[: match.start()].rstrip())
            text_ends = offset + before if before else self.last_text
            self.ends.append((offset + match.start(), text_ends))
        stripped = len(piece.rstrip())
        if stripped:
            self.last_text = offset + stripped

    def finish(self, length: int) -> None:
        """The cleaned file ended at `length` characters."""
        self.length = length
        for index in self.pending:  # nothing but blank space after the marker
            self.starts[index] = (*self.starts[index][:2], length)
        if self.seeking_first:
            self.first_text = length

    @staticmethod
    def _text_begins(piece: str, position: int) -> int | None:
        """Where text kept after `position` begins: the start of the line of the first
        non-space character (blank lines before it go, its indentation stays)."""
        found = _NOT_SPACE.search(piece, position)
        if found is None:
            return None
        return max(position, piece.rfind("\n", position, found.start()) + 1)

    def book(self) -> tuple[int, int, bool]:
        """(begin, end, whether a licence was cut) of the book's text."""
        starts, ends = self.starts, self.ends
        if not starts and not ends:
            return self.first_text, self.last_text, False
        begin = self.first_text
        if starts:
            ends = [end for end in ends if end[0] >= starts[0][1]]
            limit = ends[0][0] if ends else self.length
            begin = [start for start in starts if start[0] < limit][-1][2]
        end = ends[0][1] if ends else self.last_text
        return begin, max(end, begin), True
