"""Stage 1: turn the files a user names into clean text documents.

Books arrive in every encoding and line-end convention there is (UTF-8 with or without a BOM,
UTF-16, Windows-1252, Latin-1 with NEL line ends, CRLF, CR, stray NULs and form feeds), often
wrapped in a Project Gutenberg licence. Training must see the same text whichever way a book
was saved, so everything here ends in one canonical form: "\\n" line ends, NFC, no control
characters but tab and newline, no licence, exactly one "\\n" at the end.

    path(s) --expand_paths--> files --read_document--> bytes --decode_bytes--> str
            --clean_text--> str --strip_gutenberg--> Document.text

Nothing here writes to disk.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import glob
import hashlib
import itertools
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bookgen.errors import BookgenError, BookgenWarning


@dataclass(frozen=True)
class Document:
    """One book, as training sees it."""

    name: str  # file stem, e.g. "pride-and-prejudice"
    path: str  # the path as given (or as found inside a folder the user gave)
    text: str = field(repr=False)  # a whole book is too long to show in a repr
    encoding: str  # as detected by decode_bytes
    gutenberg_stripped: bool

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def distinct_chars(self) -> int:
        return len(set(self.text))


# --- decoding ------------------------------------------------------------------------------

# UTF-32 comes first: its little-endian BOM (FF FE 00 00) begins with UTF-16's (FF FE).
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _windows_1252_table() -> dict[int, str]:
    """Latin-1 code point -> Windows-1252 character, for the 27 bytes where they differ.

    Decoding as Latin-1 and then translating gives Windows-1252 in which the five bytes it
    leaves undefined (0x81 0x8D 0x8F 0x90 0x9D) keep their Latin-1 meaning instead of failing.
    """
    table = {}
    for byte in range(0x80, 0xA0):
        try:
            table[byte] = bytes([byte]).decode("windows-1252")
        except UnicodeDecodeError:
            pass
    return table


_WINDOWS_1252 = _windows_1252_table()

# Characters no text holds: U+FFFD (an earlier tool already failed to decode) and the control
# characters but those a text file may legitimately hold (tab, line ends, form feed, the DOS
# end-of-file mark 0x1A). Category Cc is exactly U+0000-001F and U+007F-009F. NUL is judged
# apart (see below).
_NOT_TEXT = re.compile(r"[\x01-\x08\x0e-\x19\x1b-\x1f\x7f-\x84\x86-\x9f\ufffd]")

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


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[str, str]:
    """Return (text, encoding). Raise BookgenError for binary data.

    Order: a byte-order mark, then UTF-16 without one (NULs at every other byte), then strict
    UTF-8, then Latin-1 if 0x85 is the only line end, else Windows-1252 (which never fails).
    In the last three a NUL byte can only be junk, so NULs are dropped before decoding, with a
    BookgenWarning; elsewhere any U+0000 left is dropped by clean_text, after the same warning.
    """
    decoded = _decode_with_bom(data, name) or _decode_utf16_without_bom(data)
    dropped = 0
    if decoded is None:
        # Dropping NULs first rejoins a UTF-8 character that a stray NUL split in two.
        dropped = data.count(0)
        decoded = _decode_without_bom(data.replace(b"\x00", b""))
    text, encoding = decoded
    _reject_binary(text, dropped, name)
    return text, encoding


def _decode_with_bom(data: bytes, name: str) -> tuple[str, str] | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as error:
                # A UTF-16 LE text whose first character is U+0000 also starts FF FE 00 00.
                if encoding == "utf-32" and data.startswith(codecs.BOM_UTF16_LE):
                    continue
                raise BookgenError(
                    f"{name}: starts with a {encoding.upper()} byte-order mark "
                    f"but is not valid {encoding.upper()} ({error.reason} at byte {error.start})"
                ) from None
    return None


def _decode_utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """UTF-16 whose BOM was lost: the high byte of most characters of a Latin, Greek or
    Cyrillic text is 00, so NULs crowd one byte position of each pair and shun the other.

    Stray NULs sprinkled into an 8-bit or UTF-8 text land on both positions alike. Binary data
    that happens to fit (an array of small 16-bit numbers) decodes to control characters, and
    _reject_binary refuses it.
    """
    if len(data) % 2:
        return None
    even, odd = data[0::2].count(0), data[1::2].count(0)
    pairs = len(data) // 2
    for nuls, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if nuls and nuls >= 0.1 * pairs and other <= nuls / 4:
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:  # a lone surrogate: not UTF-16 after all
                return None
    return None


def _decode_without_bom(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # With no LF or CR anywhere, 0x85 can only be a NEL line end (old IBM/Latin-1 files);
    # otherwise it is Windows-1252's ellipsis.
    if b"\x85" in data and b"\n" not in data and b"\r" not in data:
        return data.decode("latin-1"), "latin-1"
    return data.decode("latin-1").translate(_WINDOWS_1252), "windows-1252"


def _reject_binary(text: str, dropped: int, name: str) -> None:
    """Refuse binary data; warn about NULs (`dropped` already gone, plus any in `text`)."""
    _judge_binary(len(text) + dropped, dropped + text.count("\x00"), _count_not_text(text), name)


def _count_not_text(text: str) -> int:
    if text.isascii():  # bytes.translate counts 20x faster than the regular expression
        data = text.encode("ascii")
        return len(data) - len(data.translate(None, _NOT_TEXT_ASCII))
    return len(_NOT_TEXT.findall(text))


_NOT_TEXT_ASCII = bytes([*range(0x01, 0x09), *range(0x0E, 0x1A), *range(0x1B, 0x20), 0x7F])


def _judge_binary(total: int, nuls: int, not_text: int, name: str) -> None:
    """Refuse binary data from its counts; warn about NULs. Shared with the streaming reader."""
    others = total - nuls
    if nuls > others:
        raise BookgenError(
            f"{name}: looks like a binary file, not text "
            f"({nuls / total:.0%} of its {total:,} characters are NUL characters)"
        )
    if not_text > _NOT_TEXT_LIMIT * others:
        raise BookgenError(
            f"{name}: looks like a binary file, not text ({not_text / others:.0%} of its "
            f"{others:,} characters other than NUL are control characters or U+FFFD "
            f"replacement characters)"
        )
    if nuls:
        share = f"{nuls / total:.1%}" if nuls >= 0.001 * total else "under 0.1%"
        warnings.warn(
            f"{name}: dropped {nuls:,} stray NUL{'s' if nuls > 1 else ''} ({share} of its "
            f"characters); the rest reads as text",
            BookgenWarning,
            stacklevel=3,
        )


# --- cleaning ------------------------------------------------------------------------------

# CRLF first so that it counts as one line end, not two.
_LINE_END = re.compile("\r\n|[\r\x85\u2028\u2029]")
# Every Cc but tab and newline (CR and NEL are already gone), plus the BOM / zero-width
# no-break space, which is invisible and only ever there by accident.
_DROPPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[^\S\n]*\n)+")


def clean_text(text: str) -> str:
    """Normalise line ends and Unicode, drop control characters.

    Line ends (CRLF, CR, NEL, U+2028, U+2029) become "\\n"; every control character but "\\n"
    and "\\t" is dropped, and so is U+FEFF; the result is NFC. Blank lines at both ends go
    and the text ends with exactly one "\\n" ("" if nothing is left). Other whitespace,
    including the indentation of the first line, is kept.
    """
    text = _LINE_END.sub("\n", text)
    # Drop before NFC, so a control character between a letter and its accent cannot
    # leave them uncomposed; this also makes clean_text idempotent.
    text = _DROPPED.sub("", text)
    text = unicodedata.normalize("NFC", text)
    return _trim_ends(text)


def _trim_ends(text: str) -> str:
    text = _LEADING_BLANK_LINES.sub("", text).rstrip()
    return text + "\n" if text else ""


# --- Project Gutenberg licence -------------------------------------------------------------

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


def strip_gutenberg(text: str) -> tuple[str, bool]:
    """Remove a Project Gutenberg licence header and footer; report whether one was found.

    Expects cleaned text ("\\n" line ends). Keeps what lies between the header's end marker
    and the first footer marker after it, with blank lines at both ends trimmed as in
    clean_text. A footer without a header is still cut. No marker: the text comes back as is.
    """
    starts = list(_START.finditer(text))
    ends = list(_END.finditer(text))
    if not starts and not ends:
        return text, False
    begin = 0
    if starts:
        ends = [end for end in ends if end.start() >= starts[0].end()]
        # Old headers can hold several start markers (the small print, then "*** START");
        # the book begins after the last one before the footer.
        limit = ends[0].start() if ends else len(text)
        begin = [start for start in starts if start.start() < limit][-1].end()
    finish = ends[0].start() if ends else len(text)
    return _trim_ends(text[begin:finish]), True


# --- files ---------------------------------------------------------------------------------


def read_document(path: str | Path) -> Document:
    """Read, decode, clean and un-licence one text file."""
    path = Path(path)
    text, encoding = decode_bytes(_read_bytes(path), name=str(path))
    text, stripped = strip_gutenberg(clean_text(text))
    if not text:
        raise BookgenError(f"{path}: the file is empty (no text left after cleaning)")
    return Document(
        name=path.stem, path=str(path), text=text, encoding=encoding, gutenberg_stripped=stripped
    )


def read_recorded_books(record: dict, purpose: str) -> list[Document]:
    """The books a checkpoint was trained on, read again from where they were (record: the
    manifest's `corpus`), each checked against its recorded sha256 so no other text stands in.

    `purpose` ends the error a user sees when a book cannot be had: what they can do instead.
    """
    documents = []
    paths = record.get("paths") or [None] * len(record.get("documents", []))
    for saved, path in zip(record.get("documents", []), paths, strict=False):
        name = saved.get("name", "?")
        if not path or not Path(path).is_file():
            where = f" (was {path})" if path else ""
            raise BookgenError(f"the training book {name!r} is not where it was{where}: {purpose}")
        document = read_document(path)
        if hashlib.sha256(document.text.encode("utf-8")).hexdigest() != saved.get("sha256"):
            raise BookgenError(
                f"{path}: the book has changed since the model was trained: {purpose}"
            )
        documents.append(document)
    if not documents:
        raise BookgenError(f"the checkpoint records no training books: {purpose}")
    return documents


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise BookgenError(f"{path}: is a folder, not a file (read_corpus takes folders)")
    if not path.exists():
        raise BookgenError(f"{path}: no such file")
    try:
        return path.read_bytes()
    except PermissionError:
        raise BookgenError(f"{path}: cannot read the file (permission denied)") from None
    except OSError as error:
        raise BookgenError(f"{path}: cannot read the file ({error.strerror})") from None


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files, folders (every *.txt inside, recursively, sorted) or globs, in argument order.

    A file named explicitly is taken whatever its suffix. The same file reached twice (by two
    arguments, or a file and its folder) is kept once, where it first appeared.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]  # a lone path is an easy mistake; a str would iterate by character
    if not paths:
        raise BookgenError("no input files given")
    found: dict[Path, Path] = {}  # resolved -> as the user would recognise it
    for argument in paths:
        for path in _expand_one(Path(argument)):
            found.setdefault(path.resolve(), path)
    return list(found.values())


def _expand_one(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return _texts_in_folder(path)
    if any(character in str(path) for character in "*?["):
        matches = [Path(match) for match in sorted(glob.glob(str(path), recursive=True))]
        matches = [match for match in matches if match.is_file()]
        if not matches:
            raise BookgenError(f"{path}: no file matches")
        return matches
    raise BookgenError(f"{path}: no such file or folder")


def _texts_in_folder(folder: Path) -> list[Path]:
    # Suffix case is ignored (books saved on Windows are often BOOK.TXT); hidden folders
    # such as .ipynb_checkpoints hold copies that would silently count a book twice.
    texts = [
        path
        for path in folder.rglob("*")
        if path.suffix.lower() == ".txt"
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    if not texts:
        raise BookgenError(f"{folder}: no .txt files in this folder")
    return sorted(texts, key=lambda path: path.relative_to(folder).parts)


def read_corpus(paths: Sequence[str | Path]) -> list[Document]:
    """expand_paths, then read_document for each file, in that order."""
    return [read_document(path) for path in expand_paths(paths)]


# --- books larger than memory --------------------------------------------------------------
#
# read_document holds a book several times over (bytes, decoded, cleaned: 3-4x its size). For
# training, a book is instead read in chunks, twice: `scan_book` decides the encoding, refuses
# binaries and finds where the licence and the blank ends begin and end, without keeping the
# text; `book_text` then yields the cleaned text in pieces. "".join(book_text(path, scan))
# equals read_document(path).text (tests hold them together). Chunks are cut after a "\n": no
# line end (CRLF), Gutenberg marker line or NFC composition spans a cut.
#
# A file without any line end is held whole (it is one line); that is the one case where a
# book larger than memory cannot be read.

CHUNK_BYTES = 1 << 23  # 8 MiB: pieces this size keep numpy fast and memory small

# The casefolded words every licence marker line holds: only chunks that hold one of them are
# searched with the (slow) marker patterns.
_MARKER_WORDS = ("gutenberg", "small print")
_NOT_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class BookFile:
    """A book on disk, not read yet: what `open_corpus` finds."""

    name: str  # file stem, as Document.name
    path: str
    size: int  # bytes

    def sha256(self, on_bytes: Callable[[int], None] | None = None) -> str:
        """Hash of the file's bytes (streamed, about 1.8 GB/s): the token cache's key."""
        digest = hashlib.sha256()
        for block in _byte_blocks(Path(self.path), CHUNK_BYTES):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
        return digest.hexdigest()


def open_corpus(paths: Sequence[str | Path]) -> list[BookFile]:
    """expand_paths, checking that each file can be read, without reading it yet."""
    books = []
    for path in expand_paths(paths):
        with _open(path):
            pass
        books.append(BookFile(name=path.stem, path=str(path), size=path.stat().st_size))
    return books


@dataclass(frozen=True)
class BookScan:
    """What the first pass over a book found: enough to read its text in pieces."""

    encoding: str
    gutenberg_stripped: bool
    begin: int  # the book's text is [begin, end) of the cleaned file, plus one final "\n"
    end: int
    characters: str = field(repr=False)  # every character of the cleaned file and "\n", sorted

    @property
    def chars(self) -> int:
        return self.end - self.begin + 1


def scan_book(
    path: str | Path,
    chunk_bytes: int = CHUNK_BYTES,
    on_bytes: Callable[[int], None] | None = None,
) -> BookScan:
    """Decide the encoding as decode_bytes does, refuse binaries, find the book's bounds.

    `on_bytes(n)` is called as bytes are read (more than the file's size when a first guess at
    the encoding fails and the file is read again).
    """
    path = Path(path)
    scan = functools.partial(_scan, chunk_bytes=chunk_bytes, on_bytes=on_bytes)
    with _open(path) as file:
        head = file.read(4)
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            try:
                return scan(path, encoding, False)
            except _DecodeFailed as failed:
                if encoding == "utf-32" and head.startswith(codecs.BOM_UTF16_LE):
                    continue
                raise BookgenError(
                    f"{path}: starts with a {encoding.upper()} byte-order mark but is not valid "
                    f"{encoding.upper()} ({failed.reason} at byte {failed.position})"
                ) from None
    stats = _byte_stats(path, chunk_bytes)
    if stats.size % 2 == 0:
        pairs = stats.size // 2
        odd, even = stats.odd_nuls, stats.nuls - stats.odd_nuls
        for nuls, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
            if nuls and nuls >= 0.1 * pairs and other <= nuls / 4:
                with contextlib.suppress(_DecodeFailed):
                    return scan(path, encoding, False)
                break
    with contextlib.suppress(_DecodeFailed):
        return scan(path, "utf-8", True)
    nel_only = stats.has_nel and not stats.has_line_end
    return scan(path, "latin-1" if nel_only else "windows-1252", True)


def book_text(path: str | Path, scan: BookScan, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The book's cleaned text in pieces (pieces may be empty; the last ends in "\\n")."""
    drop_nuls = scan.encoding in ("utf-8", "latin-1", "windows-1252")
    offset = 0
    for piece in _cleaned(_decoded(Path(path), scan.encoding, drop_nuls, chunk_bytes)):
        low, high = max(scan.begin - offset, 0), min(scan.end - offset, len(piece))
        offset += len(piece)
        if low < high:
            yield piece[low:high]
    yield "\n"


class _DecodeFailed(Exception):
    def __init__(self, reason: str, position: int) -> None:
        self.reason, self.position = reason, position


@dataclass
class _ByteStats:
    size: int = 0
    nuls: int = 0
    odd_nuls: int = 0  # NULs at odd byte positions
    has_nel: bool = False
    has_line_end: bool = False


def _byte_stats(path: Path, chunk_bytes: int) -> _ByteStats:
    stats = _ByteStats()
    for block in _byte_blocks(path, max(2, chunk_bytes - chunk_bytes % 2)):  # even: parity kept
        stats.size += len(block)
        stats.nuls += block.count(0)
        stats.odd_nuls += block[1::2].count(0)
        stats.has_nel |= b"\x85" in block
        stats.has_line_end |= b"\n" in block or b"\r" in block
    return stats


def _scan(
    path: Path,
    encoding: str,
    drop_nuls: bool,
    chunk_bytes: int,
    on_bytes: Callable[[int], None] | None,
) -> BookScan:
    counts = dict.fromkeys(("total", "nuls", "not_text", "dropped"), 0)
    seen = np.zeros(0x110000, dtype=bool)
    markers = _Markers()
    offset = 0
    for piece in _cleaned(_decoded(path, encoding, drop_nuls, chunk_bytes, counts, on_bytes)):
        _mark_seen(seen, piece)
        markers.find(piece, offset)
        offset += len(piece)
    markers.finish(offset)
    counts["nuls"] += counts["dropped"]
    counts["total"] += counts["dropped"]
    _judge_binary(counts["total"], counts["nuls"], counts["not_text"], str(path))
    begin, end, stripped = markers.bounds(offset)
    if end <= begin:
        raise BookgenError(f"{path}: the file is empty (no text left after cleaning)")
    seen[ord("\n")] = True  # the text always ends with one, even a file with no line end
    characters = "".join(map(chr, np.flatnonzero(seen)))
    return BookScan(encoding, stripped, begin, end, characters)


def _decoded(
    path: Path,
    encoding: str,
    drop_nuls: bool,
    chunk_bytes: int,
    counts: dict | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, bool]]:
    """(text, is the last piece) of the file; counts what _judge_binary needs, if asked."""
    if encoding == "windows-1252":

        def decode(block: bytes, final: bool) -> str:
            return block.decode("latin-1").translate(_WINDOWS_1252)
    else:
        decode = codecs.getincrementaldecoder(encoding)("strict").decode
    consumed = 0
    blocks = itertools.chain(((b, False) for b in _byte_blocks(path, chunk_bytes)), [(b"", True)])
    for block, final in blocks:
        if on_bytes is not None and block:
            on_bytes(len(block))
        if drop_nuls and 0 in block:
            if counts is not None:
                counts["dropped"] += block.count(0)
            block = block.replace(b"\x00", b"")
        try:
            text = decode(block, final)
        except UnicodeDecodeError as error:
            raise _DecodeFailed(error.reason, consumed + error.start) from None
        consumed += len(block)
        if counts is not None:
            counts["total"] += len(text)
            counts["nuls"] += text.count("\x00")
            counts["not_text"] += _count_not_text(text)
        yield text, final


def _byte_blocks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    with _open(path) as file:
        while block := file.read(chunk_bytes):
            yield block


def _open(path: Path):
    if path.is_dir():
        raise BookgenError(f"{path}: is a folder, not a file (read_corpus takes folders)")
    if not path.exists():
        raise BookgenError(f"{path}: no such file")
    try:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except PermissionError:
        raise BookgenError(f"{path}: cannot read the file (permission denied)") from None
    except OSError as error:
        raise BookgenError(f"{path}: cannot read the file ({error.strerror})") from None


def _cleaned(pieces: Iterator[tuple[str, bool]]) -> Iterator[str]:
    """clean_text without its trimming, piece by piece: cuts fall just after a "\\n"."""
    held = ""  # a trailing CR, which may be the first half of a CRLF
    line = ""  # cleaned text after the last "\n" so far
    for piece, final in pieces:
        text, held = held + piece, ""
        if text.endswith("\r") and not final:
            text, held = text[:-1], "\r"
        text = line + _clean_piece(text)
        cut = len(text) if final else text.rfind("\n") + 1
        line = text[cut:]
        yield unicodedata.normalize("NFC", text[:cut])


def _clean_piece(text: str) -> str:
    if text.isascii():  # the common case, done on bytes: several times faster
        data = text.encode("ascii")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data.translate(None, _DROPPED_ASCII).decode("ascii")
    return _DROPPED.sub("", _LINE_END.sub("\n", text))


_DROPPED_ASCII = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])


def _mark_seen(seen: np.ndarray, text: str) -> None:
    if text.isascii():
        seen[np.frombuffer(text.encode("ascii"), dtype=np.uint8)] = True
    else:
        seen[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)] = True


class _Markers:
    """strip_gutenberg's and _trim_ends' decisions, from marker lines found piece by piece."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, int, int]] = []  # (match start, match end, text begins)
        self.ends: list[tuple[int, int]] = []  # (match start, last non-space before it + 1)
        self.pending: list[int] = []  # indexes into starts still looking for the next text
        self.last_text = 0  # just after the last non-space character so far
        self.first_text = 0  # where the text begins when no start marker is taken
        self.seeking_first = True

    def find(self, piece: str, offset: int) -> None:
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
        folded = piece.casefold()
        if any(word in folded for word in _MARKER_WORDS):
            for match in _START.finditer(piece):
                begins = self._text_begins(piece, match.end())
                self.starts.append((offset + match.start(), offset + match.end(), -1))
                if begins is None:
                    self.pending.append(len(self.starts) - 1)
                else:
                    self.starts[-1] = (*self.starts[-1][:2], offset + begins)
            for match in _END.finditer(piece):
                before = len(piece[: match.start()].rstrip())
                text_ends = offset + before if before else self.last_text
                self.ends.append((offset + match.start(), text_ends))
        stripped = len(piece.rstrip())
        if stripped:
            self.last_text = offset + stripped

    def finish(self, length: int) -> None:
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

    def bounds(self, length: int) -> tuple[int, int, bool]:
        """(begin, end, stripped) as strip_gutenberg(clean_text(text)) would cut."""
        starts, ends = self.starts, self.ends
        if not starts and not ends:
            return self.first_text, self.last_text, False
        begin = self.first_text
        if starts:
            ends = [end for end in ends if end[0] >= starts[0][1]]
            limit = ends[0][0] if ends else length
            begin = [start for start in starts if start[0] < limit][-1][2]
        end = ends[0][1] if ends else self.last_text
        return begin, max(end, begin), True
