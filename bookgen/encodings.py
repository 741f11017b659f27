"""Which encoding a book is in: decided here, from its bytes (corpus.py reads the file).

    a byte-order mark          -> the encoding it names (UTF-8, UTF-16/32, GB18030): no guess
    otherwise, `guesses`, in order; the first the whole file is strictly valid in wins:
        UTF-16 whose mark was lost, Latin or Cyrillic    (NULs crowd one byte of each pair)
        UTF-8
        UTF-16 whose mark was lost, any script (CJK)     (`utf16_without_bom`: it reads as text)
        Latin-1                                          (0x85, NEL, is the only line end)
        the legacy encodings                             (`legacy_guesses`, below)
        windows-1252                                     (never fails: today's Western text)

Legacy encodings, when a book has no byte-order mark and is not UTF-8/16. Measured on real
books (docs/research/issue-24-encodings.md): no detector can be trusted on Western text (chardet
says MacRoman or cp737 for short cp1252 strings, charset_normalizer cp1250 for English books),
but chardet is right on every Chinese, Japanese, Korean, Cyrillic and Central European book
when it reads the whole sample. So a cheap measure of the sample read as Windows-1252 gates it,
and Western books, read exactly as before, never import it:

    sample --measure--> S1, S2 past the gate    -> chardet, every encoding  (CJK, Cyrillic)
                        Latin-1 symbols between
                        letters, or C1 bytes     -> chardet, Latin encodings only (cp1250 ...)
                        otherwise                -> windows-1252, no detector

The same measure is the mojibake guard: text decoded single-byte that measures past the gate is
a double-byte or Cyrillic book read wrong (`mojibake_hint`).

Nothing here reads a file: corpus.py hands over the bytes.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bookgen.errors import BookgenWarning

# --- which encoding: a byte-order mark, else guesses ---------------------------------------------

# UTF-32 comes first: its little-endian BOM (FF FE 00 00) begins with UTF-16's (FF FE), and a
# UTF-16 LE text whose first character is U+0000 also starts FF FE 00 00.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    # GB18030's own mark (U+FEFF in GB18030): Chinese books saved by Windows tools start with it.
    (b"\x84\x31\x95\x33", "gb18030"),
)
BOM_BYTES = 4  # the longest mark


def bom_encodings(head: bytes) -> list[str]:
    """The encodings a file's byte-order mark may name, in the order to try them (`head`: the
    file's first BOM_BYTES)."""
    return [encoding for bom, encoding in _BOMS if head.startswith(bom)]


@dataclass
class ByteStats:
    """What guessing an encoding needs, counted over the whole file, block by block (blocks of
    even length, so that byte positions keep their parity)."""

    size: int = 0
    nuls: int = 0
    odd_nuls: int = 0  # NULs at odd byte positions
    has_nel: bool = False  # 0x85
    has_line_end: bool = False  # LF or CR

    def add(self, block: bytes) -> None:
        self.size += len(block)
        self.nuls += block.count(0)
        self.odd_nuls += block[1::2].count(0)
        self.has_nel |= b"\x85" in block
        self.has_line_end |= b"\n" in block or b"\r" in block


SAMPLE_BYTES = 1 << 20  # what the detector reads: 1 MiB is 0.1 s of chardet, plenty of text


def guesses(stats: ByteStats, head: Callable[[], bytes]) -> Iterator[tuple[str, float | None]]:
    """(encoding, the detector's confidence or None), in the order to try them, for a file
    without a byte-order mark; the last one never fails. The one place a guess is made, lazily:
    `head()` (the file's first SAMPLE_BYTES) is read, and the detector run, only once UTF-16
    and UTF-8 have failed.

    UTF-16 whose BOM was lost comes first: the high byte of most characters of a Latin, Greek
    or Cyrillic text is 00, so NULs crowd one byte position of each pair and shun the other
    (stray NULs sprinkled into an 8-bit or UTF-8 text land on both alike; binary data that
    happens to fit, an array of small 16-bit numbers, decodes to control characters and is
    refused as binary). Then strict UTF-8; then UTF-16 of a script whose characters have no
    00 byte (Chinese, Japanese: `utf16_without_bom`), for a file with NULs; then Latin-1 if
    0x85 is the only line end (old IBM/Latin-1 files mark line ends with NEL), else the legacy
    encodings.
    """
    head = functools.cache(head)  # the UTF-16 test and the detector read the same bytes
    tried = None
    if stats.size % 2 == 0:
        pairs = stats.size // 2
        odd, even = stats.odd_nuls, stats.nuls - stats.odd_nuls
        for nuls, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
            if nuls and nuls >= 0.1 * pairs and other <= nuls / 4:
                tried = encoding
                yield encoding, None
                break
    yield "utf-8", None
    # A line end in UTF-16 is 0A 00 or 00 0A: a file without NULs cannot be UTF-16 text.
    if stats.nuls and stats.size % 2 == 0:
        found = utf16_without_bom(head())
        if found is not None and found != tried:
            yield found, None
    if stats.has_nel and not stats.has_line_end:
        yield "latin-1", None
        return
    yield from legacy_guesses(sample(head()))


# Characters a text does not hold, but bytes paired wrongly give: controls other than tab,
# line ends and form feed, lone surrogates, private use, unassigned code points, U+FFFD.
_UNLIKELY = ("Cc", "Cs", "Co", "Cn")
# UTF-16 decoding with too many of them is not text. Measured on the first MiB of the nine
# shared books: each book's text in UTF-16, right byte order, 0% (one character in 红楼梦,
# 0.0002%); the Western books' files (UTF-8, Windows-1252), with 0-20% NULs sprinkled in, read
# as UTF-16 in either order, 2.1%-8.9%; 红楼梦 (GB18030) and こころ (Shift_JIS) fail to decode.
# Texts of 600 bytes (English, Chinese, Japanese, Korean, Russian, Polish, in UTF-8 or their
# legacy encoding) with 1-40% NULs sprinkled in: none of about 8,000 passed this test.
_UNLIKELY_LIMIT = 0.001


def utf16_without_bom(head: bytes) -> str | None:
    """The UTF-16 in whose byte order `head`, a file's first bytes, reads as text and in whose
    other order it does not ("utf-16-le" or "utf-16-be"); None if neither or both.

    For a Chinese or Japanese text the NULs do not crowd one byte of each pair (一 is 00 4E,
    the ideographic space 00 30), so what is decoded decides: strictly valid, with line ends,
    and next to no characters a text never holds. Read in the wrong byte order a line end
    is U+0A00, and Han characters land on surrogates and private use; bytes of another
    encoding paired up wrongly give unassigned code points and controls (`_UNLIKELY_LIMIT`);
    binary data fails at once. Where both byte orders pass, it is no guess to make.
    """
    head = head[: len(head) - len(head) % 2]
    fits = [encoding for encoding in ("utf-16-le", "utf-16-be") if _reads_as_text(head, encoding)]
    return fits[0] if len(fits) == 1 else None


def _reads_as_text(data: bytes, encoding: str) -> bool:
    try:  # not final: a character cut by the end of the head is no error
        text = codecs.getincrementaldecoder(encoding)("strict").decode(data, False)
    except UnicodeDecodeError:
        return False
    if "\n" not in text and "\r" not in text:
        return False
    unlikely = sum(
        text.count(character)
        for character in set(text)  # a few thousand distinct characters at most
        if character == "\ufffd"
        or character not in "\t\n\r\f"
        and unicodedata.category(character) in _UNLIKELY
    )
    return unlikely <= _UNLIKELY_LIMIT * len(text)


def sample(head: bytes) -> bytes:
    """What the detector and the mojibake guard read of a file whose first SAMPLE_BYTES are
    `head`: cut after the last line end (never inside a character), NULs dropped as decoding
    drops them."""
    if len(head) == SAMPLE_BYTES and b"\n" in head:
        head = head[: head.rfind(b"\n") + 1]
    return head.replace(b"\x00", b"")


def _windows_1252_table() -> str:
    """Byte -> character: Windows-1252, but the five bytes it leaves undefined (0x81 0x8D 0x8F
    0x90 0x9D) keep their Latin-1 meaning instead of failing. A charmap table: decoding with it
    runs in C, 60x faster than translating Latin-1 text."""
    table = []
    for byte in range(256):
        try:
            table.append(bytes([byte]).decode("windows-1252"))
        except UnicodeDecodeError:
            table.append(chr(byte))
    return "".join(table)


# How bookgen reads "windows-1252" (codecs.charmap_decode(data, "strict", WINDOWS_1252)).
WINDOWS_1252 = _windows_1252_table()


# --- legacy encodings ----------------------------------------------------------------------------

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
# The symbol first, then a look back over it: the same matches as a look-behind first (checked on
# 20,000 random strings), about 8x faster, since the scan now stops only at the rare symbols.
_SYMBOL_BETWEEN_LETTERS = re.compile(r"[\u00a1-\u00bf\u00d7\u00f7](?<=[^\W\d_].)(?=[^\W\d_])")

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


def measure(sample: bytes) -> Measure:
    """Measure `sample` (NULs already dropped) as decoded with bookgen's Windows-1252."""
    visible = len(sample.translate(None, _SPACE))
    high = len(sample) - len(sample.translate(None, _HIGH))
    if not high:  # pure ASCII: nothing to measure (and nothing a detector could add)
        return Measure(0.0, 0.0, 0.0, 0)
    # S3 only matters below the gate, and the regular expression is the slow part (0.1 s/MiB).
    in_runs = sum(len(run) for run in _HIGH_RUN.findall(sample)) / high
    symbols = 0.0
    if not (high >= _S1_GATE * visible and in_runs >= _S2_GATE):
        text = codecs.charmap_decode(sample, "strict", WINDOWS_1252)[0]
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


def legacy_guesses(sample: bytes) -> list[tuple[str, float | None]]:
    """(encoding, confidence) to try in order for a book that is not UTF; the last is
    windows-1252, which never fails."""
    found = measure(sample)
    if found.double_byte:
        return [*detected(sample), ("windows-1252", None)]
    if found.central_european:
        return [*detected(sample, latin_only=True), ("windows-1252", None)]
    return [("windows-1252", None)]
