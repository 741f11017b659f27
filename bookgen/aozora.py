"""Aozora Bunko's markup, stripped as the Gutenberg licence is: the model learns the book.

Aozora Bunko (青空文庫), the big free library of Japanese books, writes into its text files a
legend of its symbols, ruby readings (`見当《けんとう》`, `｜` where a ruby's base begins), editor's
notes (`［＃「一」は中見出し］`, `※［＃「てへん＋劣」、第3水準1-84-77］` for a character Shift_JIS
lacks) and a colophon (`底本：` ... `入力：` ... `青空文庫`). Rules measured on the shared こころ
(docs/research/issue-24-encodings.md, section 5), applied only to a file recognised as Aozora:

    legend     a line of 20+ "-" through the next, around 【テキスト中に現れる記号について】
    colophon   the last line that starts with 底本： to the end, when what follows names the
               typist, proofreader or 青空文庫 (a novel may quote a 底本： line; that stays)
    ruby       《…》 and every ｜ (literal ones are written as gaiji notes, so this goes first)
    gaiji      ※［＃…、第3水準1-84-77］ and ※［＃…U+546D…］: the character itself
    notes      ［＃…］, innermost first (notes nest)

Every rule works within a line, or on the first or the last piece of the text, which the
reader cuts after a line end (corpus.py), so a book is still read in pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

LEGEND_TITLE = "【テキスト中に現れる記号について】"
_HEAD_CHARS = 5000  # the legend comes after the title and author, well within this
_COLOPHON_LINES = 60  # the colophon is a dozen lines; more than this is the book
_COLOPHON_SIGNS = ("入力：", "校正：", "青空文庫")

_LEGEND = re.compile(r"^-{20,}[ \t]*\n(?:.*\n)*?-{20,}[ \t]*(?:\n|$)(?:[ \t]*\n)?", re.MULTILINE)
_COLOPHON = re.compile(r"^底本：", re.MULTILINE)
_RUBY = re.compile(r"《[^《》\n]{1,40}》|｜")
# A JIS X 0213 men-ku-ten number (plane 1 or 2, row, cell), or a Unicode code point.
_GAIJI_JIS = re.compile(r"※［＃[^［］\n]*?(?:第[34]水準)?([12])-(\d{1,2})-(\d{1,2})］")
_GAIJI_UNICODE = re.compile(r"※［＃[^［］\n]*?U\+([0-9A-Fa-f]{4,6})[^［］\n]*］")
_NOTE = re.compile(r"［＃[^［］\n]*］")


def recognised(head: str, tail: str) -> bool:
    """Is this an Aozora Bunko file? `head`: its first characters; `tail`: its last ones."""
    if LEGEND_TITLE in head[:_HEAD_CHARS]:
        return True
    return _colophon_at(tail) is not None


def stripped(pieces: Iterator[str]) -> Iterator[str]:
    """The cleaned pieces of an Aozora file (each ending after a "\\n" but the last) without
    its markup: the legend goes from the first piece, the colophon from the last."""
    held: str | None = None  # one piece held back, to know which is the last
    first = True
    for piece in pieces:
        if held is not None and not piece.endswith("\n"):
            held += piece  # empty, or the last line without a line end: the end of the text
            continue
        if held is not None:
            yield _inline(_without_legend(held) if first else held)
            first = False
        held = piece
    if held is not None:
        last = _without_legend(held) if first else held
        at = _colophon_at(last)
        yield _inline(last if at is None else last[:at])


def _without_legend(text: str) -> str:
    for match in _LEGEND.finditer(text, 0, _HEAD_CHARS + len(LEGEND_TITLE)):
        if LEGEND_TITLE in match.group():
            return text[: match.start()] + text[match.end() :]
    return text


def _colophon_at(text: str) -> int | None:
    """Where the colophon begins in `text` (the end of the book), or None if it has none."""
    starts = [match.start() for match in _COLOPHON.finditer(text)]
    if not starts:
        return None
    colophon = text[starts[-1] :]
    if colophon.count("\n") > _COLOPHON_LINES:
        return None
    return starts[-1] if any(sign in colophon for sign in _COLOPHON_SIGNS) else None


def _inline(text: str) -> str:
    if not any(mark in text for mark in "《｜［"):
        return text  # most lines of most books: nothing to do
    text = _RUBY.sub("", text)
    text = _GAIJI_JIS.sub(_jis_character, text)
    text = _GAIJI_UNICODE.sub(lambda match: chr(int(match.group(1), 16)), text)
    while True:  # notes nest (［＃「※［＃…］」に傍点］): remove the innermost until none is left
        text, removed = _NOTE.subn("", text)
        if not removed:
            return text


def _jis_character(match: re.Match) -> str:
    """The character of a JIS X 0213 plane-row-cell number (1-84-77 is 挘), by EUC-JIS-2004's
    bytes: plane 1 is two bytes 0xA0 + row, 0xA0 + cell; plane 2 the same after 0x8F."""
    plane, row, cell = (int(group) for group in match.groups())
    if not (1 <= row <= 94 and 1 <= cell <= 94):
        return match.group()
    code = bytes([0xA0 + row, 0xA0 + cell])
    try:
        return (code if plane == 1 else b"\x8f" + code).decode("euc_jis_2004")
    except UnicodeDecodeError:
        return match.group()  # a number with no character: the note stays, readable
