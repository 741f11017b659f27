"""Which legacy encoding a book is in, when it has no byte-order mark and is not UTF-8/16.

Measured on real books (docs/research/issue-24-encodings.md): no detector can be trusted on
Western text (chardet says MacRoman or cp737 for short cp1252 strings, charset_normalizer
cp1250 for English books), but chardet is right on every Chinese, Japanese, Korean, Cyrillic
and Central European book when it reads the whole sample. So a cheap measure of the sample read
as Windows-1252 gates it, and Western books, read exactly as before, never import it:

    sample --measure--> S1, S2 past the gate    -> chardet, every encoding  (CJK, Cyrillic)
                        Latin-1 symbols between
                        letters, or C1 bytes     -> chardet, Latin encodings only (cp1250 ...)
                        otherwise                -> windows-1252, no detector

The same measure is the mojibake guard: text decoded single-byte that measures past the gate is
a double-byte or Cyrillic book read wrong (`mojibake_hint`).
"""

from __future__ import annotations

import codecs
import re
import warnings
from dataclasses import dataclass

from bookgen.errors import BookgenWarning

# S1 >= 0.20 and S2 >= 0.50: Western books measured at most 0.038 / 0.003, CJK and Cyrillic
# books at least 0.74 / 0.82 (the research's table), a wide margin on both sides.
_S1_GATE = 0.20
_S2_GATE = 0.50
# Latin-1 symbols between letters (`mo¿e`, `S¹d`: Polish cp1250 read as cp1252) per non-ASCII
# character: 0.000 in every Western book measured, 0.385 or more in Polish.
_S3_GATE = 0.02
# Bytes Windows-1252 leaves undefined, but cp1250 uses (ť Ť Ź); Western books hold none.
_C1_BYTES = b"\x81\x8d\x8f\x90\x9d"

_SPACE = b" \t\n\r\x0b\x0c\x00"
_HIGH = bytes(range(0x80, 0x100))
_HIGH_RUN = re.compile(rb"[\x80-\xff]{3,}")
_SYMBOL_BETWEEN_LETTERS = re.compile(r"(?<=[^\W\d_])[\u00a1-\u00bf\u00d7\u00f7](?=[^\W\d_])")

# chardet's names for encodings whose true superset Python has: a book labelled GB2312 often
# holds GBK characters, Shift_JIS ones Microsoft's, and the supersets read the subsets alike.
# chardet's own prefer_superset is not used: it also maps ISO-8859-2 to cp1250 and ISO-8859-5
# to cp1251, which are not supersets (Polish and Russian came out wrong, measured).
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "cp950",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    # Western answers: today's reading (bookgen's Windows-1252 table).
    "ascii": "windows-1252",
    "iso8859-1": "windows-1252",
    "iso8859-15": "windows-1252",
    "cp1252": "windows-1252",
}
_CENTRAL_EUROPEAN = ("cp1250", "iso8859-2")
# chardet's confidence below which `bookgen corpus` warns: CJK and Korean books measured 1.0,
# Cyrillic 0.86, Polish and Czech 0.45-0.48 (cp1250 against ISO-8859-2: worth a look).
UNSURE = 0.5
_LATIN = ("windows-1252", "iso-8859-1", "iso-8859-15", "windows-1250", "iso-8859-2")


@dataclass(frozen=True)
class Measure:
    """The sample's bytes read as Windows-1252, over its non-space characters."""

    non_ascii: float  # S1: the share of non-ASCII characters
    in_runs: float  # S2: the share of those that lie in runs of 3 or more
    symbols: float  # S3: Latin-1 symbols between two letters, per non-ASCII character
    c1_bytes: int  # bytes Windows-1252 leaves undefined

    @property
    def double_byte(self) -> bool:
        """Does it look like a double-byte or Cyrillic text read one byte at a time?"""
        return self.non_ascii >= _S1_GATE and self.in_runs >= _S2_GATE

    @property
    def central_european(self) -> bool:
        return self.symbols >= _S3_GATE or self.c1_bytes > 0


def measure(sample: bytes, table: str) -> Measure:
    """Measure `sample` (NULs already dropped) as decoded with the Windows-1252 `table`."""
    visible = len(sample.translate(None, _SPACE))
    high = len(sample) - len(sample.translate(None, _HIGH))
    if not high:  # pure ASCII: nothing to measure (and nothing a detector could add)
        return Measure(0.0, 0.0, 0.0, 0)
    # S3 only matters below the gate, and the regular expression is the slow part (0.1 s/MiB).
    in_runs = sum(len(run) for run in _HIGH_RUN.findall(sample)) / high
    symbols = 0.0
    if not (high >= _S1_GATE * visible and in_runs >= _S2_GATE):
        text = codecs.charmap_decode(sample, "strict", table)[0]
        symbols = len(_SYMBOL_BETWEEN_LETTERS.findall(text)) / high
    c1_bytes = sum(sample.count(byte) for byte in _C1_BYTES)
    return Measure(high / max(visible, 1), in_runs, symbols, c1_bytes)


def forced(name: str) -> str:
    """bookgen's decoder for an encoding a user names (`--encoding`): Python's name, a CJK
    subset read by its superset, Windows-1252 and Latin-1 by bookgen's own tables. Raises
    LookupError for a name Python does not know."""
    name = codecs.lookup(name).name
    if name == "iso8859-1":
        return "latin-1"  # asked for by name: not Windows-1252's table, as a detector's answer is
    return _SUPERSETS.get(name, name)


def looks_double_byte(sample: bytes) -> bool:
    """The mojibake guard's test, S1 and S2 alone: the cheap part of `measure` (about 1 ms per
    MiB for a Western book, whose S1 is far below the gate)."""
    visible = len(sample.translate(None, _SPACE))
    high = len(sample) - len(sample.translate(None, _HIGH))
    if not high or high < _S1_GATE * visible:
        return False
    return sum(len(run) for run in _HIGH_RUN.findall(sample)) >= _S2_GATE * high


def mojibake_hint(sample: bytes) -> str | None:
    """For text decoded one byte at a time (Windows-1252, Latin-1): None if it reads as a
    Western text, else what to pass instead (`--encoding gb18030`, the detector's pick)."""
    if not looks_double_byte(sample):
        return None
    picks = [encoding for encoding, _ in detected(sample) if encoding != "windows-1252"]
    return f"--encoding {picks[0]}" if picks else "--encoding NAME"


def normalised(name: str) -> str:
    """Python's name for an encoding, with bookgen's supersets and its Windows-1252 table.
    Raises LookupError for a name Python does not know."""
    name = codecs.lookup(name).name
    return _SUPERSETS.get(name, name)


def detected(sample: bytes, latin_only: bool = False) -> list[tuple[str, float]]:
    """chardet's candidates for `sample`, best first, as (bookgen's encoding, confidence).

    chardet reads the whole sample (its default, the first 200 KB, says "ascii" for books whose
    start is plain English). `latin_only` restricts it to the Latin encodings, of which only a
    Central European answer is taken (its Western ones are today's Windows-1252 anyway).
    """
    try:
        import chardet  # costs 65-80 ms: only books past the gate pay it
    except ImportError:  # a checkout whose environment predates the dependency
        warnings.warn(
            "chardet is not installed, so this book's encoding cannot be detected: "
            "pip install 'chardet>=7.7', or pass --encoding",
            BookgenWarning,
            stacklevel=2,
        )
        return []

    include = list(_LATIN) if latin_only else None
    found = chardet.detect_all(sample, max_bytes=len(sample), include_encodings=include)
    if latin_only:
        found = found[:1]  # its runner-up is often ISO-8859-2 for English: only a clear pick
    candidates: list[tuple[str, float]] = []
    for result in found:
        try:
            encoding = normalised(result["encoding"] or "")
        except LookupError:
            continue
        if encoding.startswith("utf") or latin_only and encoding not in _CENTRAL_EUROPEAN:
            continue  # UTF was tried before the detector was asked
        if encoding not in (known for known, _ in candidates):
            candidates.append((encoding, float(result["confidence"])))
    return candidates


def legacy_guesses(sample: bytes, table: str) -> list[tuple[str, float | None]]:
    """(encoding, confidence) to try in order for a book that is not UTF; the last is
    windows-1252, which never fails. `table`: bookgen's Windows-1252 decoding table."""
    found = measure(sample, table)
    if found.double_byte:
        return [*detected(sample), ("windows-1252", None)]
    if found.central_european:
        return [*detected(sample, latin_only=True), ("windows-1252", None)]
    return [("windows-1252", None)]
