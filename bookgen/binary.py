"""Binary or text? A file a user names as a book may be anything: judged as it is decoded.

The reader (corpus.py) feeds `Counts` every piece its first pass decodes, then asks it to
`judge`: a file of control characters or undecodable bytes, or of more NUL than anything else,
is refused as binary, whatever its name; a text with a few stray NULs (rescued from an old disk)
is read, with a warning. The limits were measured, on real books with junk in them and on real
binaries (the table below).

Nothing here reads a file.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from bookgen.errors import BookgenError, BookgenWarning

# Characters no text holds: U+FFFD (an earlier tool already failed to decode) and the control
# characters but those a text file may legitimately hold (tab, line ends, form feed, the DOS
# end-of-file mark 0x1A). Category Cc is exactly U+0000-001F and U+007F-009F. NUL is judged
# apart (see below).
_NOT_TEXT = re.compile(r"[\x01-\x08\x0e-\x19\x1b-\x1f\x7f-\x84\x86-\x9f\ufffd]")
_NOT_TEXT_ASCII = bytes([*range(0x01, 0x09), *range(0x0E, 0x1A), *range(0x1B, 0x20), 0x7F])

# Binary or text? Measured, decoding as here, on real texts with junk in them and real
# binaries. "not text": the share of _NOT_TEXT among the characters other than NUL; "NUL": the
# share of NUL among all characters. NULs were sprinkled at random bytes, splitting characters.
#
#     file                                                   not text      NUL
#     6 shared books: ASCII, UTF-8, Windows-1252                 0.0%       0%
#       the same with 5% / 10% / 20% / 40% NULs                 0.0%   5%-40%
#     a book as UTF-16 with and without BOM, as Latin-1 NEL,
#       with form feeds; Russian as UTF-16, cp1251, KOI8-R       0.0%       0%
#     a book with ANSI colour codes                              0.2%       0%
#     a book with 1% U+FFFD                                      1.0%       0%
#     the short Windows-1252 string in test_corpus.py that
#       holds 5 of the bytes Windows-1252 leaves undefined       3.3%       0%
#     ------------------------------------------------------ limit 4% -- limit 50% --
#     gettext .mo catalogue                                      5.1%      15%
#     safetensors of randn: float64, float16, bfloat16      6.2%-7.3%   0%-39%
#     PDFs in /usr/share/doc                               7.4%-11.8%       0%
#     safetensors of randn: float32                              9.7%       0%
#     zip, wheel, gzip, PNG, JPEG, WOFF2, .npy, random     11.1%-16.1%   0%-13%
#     ELF (/bin/ls, libc.so.6), .pyc, TrueType font        17.6%-33.0%  10%-35%
#     NUL over half: a sqlite database (0.7% not text, 75% NUL), safetensors of zeros
#       (5.6%, 98%), the python launcher ELF (26%, 82%), UTF-32 without BOM (0%, 75%)
#
# NUL has no place in the first share: counted in it, a book with 5% NULs (5%) sits next to
# float16 tensors (6.7%), and one with 20% NULs above random bytes (12.5%). A file is refused
# when either limit is passed; a file of more NUL than anything else is no text with junk in it.
_NOT_TEXT_LIMIT = 0.04


@dataclass
class Counts:
    """What deciding "text or binary?" needs, counted as the bytes are decoded."""

    characters: int = 0  # decoded, and NUL bytes dropped before decoding
    nuls: int = 0  # NUL characters, and NUL bytes dropped before decoding
    not_text: int = 0  # characters of _NOT_TEXT

    def dropped(self, nul_bytes: int) -> None:
        self.characters += nul_bytes
        self.nuls += nul_bytes

    def add(self, text: str) -> None:
        self.characters += len(text)
        self.nuls += text.count("\x00")
        if text.isascii():  # bytes.translate counts 20x faster than the regular expression
            data = text.encode("ascii")
            self.not_text += len(data) - len(data.translate(None, _NOT_TEXT_ASCII))
        else:
            self.not_text += len(_NOT_TEXT.findall(text))

    def judge(self, name: str) -> None:
        """Refuse binary data; warn about NULs (cleaning drops the ones still in the text)."""
        total, nuls = self.characters, self.nuls
        others = total - nuls
        if nuls > others:
            raise BookgenError(
                f"{name}: looks like a binary file, not text "
                f"({nuls / total:.0%} of its {total:,} characters are NUL characters)"
            )
        if self.not_text > _NOT_TEXT_LIMIT * others:
            raise BookgenError(
                f"{name}: looks like a binary file, not text ({self.not_text / others:.0%} of "
                f"its {others:,} characters other than NUL are control characters or U+FFFD "
                f"replacement characters)"
            )
        if nuls:
            share = f"{nuls / total:.1%}" if nuls >= 0.001 * total else "under 0.1%"
            warnings.warn(
                f"{name}: dropped {nuls:,} stray NUL{'s' if nuls > 1 else ''} ({share} of its "
                f"characters); the rest reads as text",
                BookgenWarning,
                stacklevel=2,
            )
