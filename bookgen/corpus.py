"""Stage 1: turn the files a user names into clean text.

Books arrive in every encoding and line-end convention there is (UTF-8 with or without a BOM,
UTF-16, Windows-1252, Latin-1 with NEL line ends, CRLF, CR, stray NULs and form feeds), often
wrapped in a Project Gutenberg licence. Training must see the same text whichever way a book
was saved, so everything here ends in one canonical form: "\\n" line ends, NFC, no control
characters but tab and newline, no licence, exactly one "\\n" at the end.

One reader, in chunks, so that a book larger than memory can be read; it goes over a file twice:

    paths --open_corpus--> BookFile  (a book on disk, not read yet: what training takes)
          --scan_book--> BookScan    (pass 1: encoding, binary or not, where the book's text
                                      begins and ends once the licence and blank ends go)
          --book_text--> str pieces  (pass 2: the cleaned text; training tokenizes them)

    each pass:  bytes, in chunks --_decoded--> str --_cleaned--> str cut just after a "\\n"
                --aozora.stripped--> str    (only for a file from Aozora Bunko: its markup)

What is not reading lives beside this module, one concern each: which encoding a file is in
(bookgen.encodings: `_chosen` asks it, after an encoding the user forced), binary or text
(bookgen.binary: counted as pass 1 decodes), where the Project Gutenberg licence ends and begins
again (bookgen.gutenberg: found during pass 1), and Aozora Bunko's markup (bookgen.aozora).
Bytes become text in one place (`_decoder`). `read_document` is both passes joined into a
Document, a book's text in memory: what `bookgen corpus` (and its --dump), `style` and the copy
guard read. Words used here: a *book* is what a user names, in any form; a `BookFile` is one on
disk, a `Document` one read into memory.

Nothing here writes to disk.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import functools
import glob
import hashlib
import itertools
import re
import unicodedata
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bookgen import aozora, binary, encodings, gutenberg
from bookgen.encodings import UNSURE, WINDOWS_1252
from bookgen.encodings import forced as forced_encoding
from bookgen.errors import BookgenError, BookgenWarning

CHUNK_BYTES = 1 << 23  # 8 MiB read at a time: pieces this size keep numpy fast and memory small


@dataclass(frozen=True)
class Document:
    """A book read into memory: its cleaned text, exactly as training sees it."""

    name: str  # file stem, e.g. "pride-and-prejudice"
    path: str  # the path as given (or as found inside a folder the user gave)
    text: str = field(repr=False)  # a whole book is too long to show in a repr
    encoding: str  # as scan_book detected it
    gutenberg_stripped: bool
    confidence: float | None = None  # as BookScan.confidence
    markup_stripped: bool = False  # Aozora Bunko's legend, ruby, notes and colophon

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def distinct_chars(self) -> int:
        return len(set(self.text))

    @property
    def encoding_unsure(self) -> bool:
        """Was the encoding a detector's guess it was not sure of? (`bookgen corpus` warns.)"""
        return self.confidence is not None and self.confidence < UNSURE


@dataclass(frozen=True)
class Reading:
    """How to read books where the user overrules bookgen's own judgement (`--encoding`,
    `--keep-markup`)."""

    encoding: str | None = None  # the decoder to use; None: detected, book by book
    keep_markup: bool = False  # keep Aozora Bunko's ruby, notes, legend and colophon

    def __post_init__(self) -> None:
        if self.encoding is not None:
            try:
                object.__setattr__(self, "encoding", forced_encoding(self.encoding))
            except LookupError:
                raise BookgenError(
                    f"unknown encoding {self.encoding!r} (try gb18030, big5, shift_jis, "
                    f"euc_kr, cp1251, koi8_r, cp1250, latin-1, windows-1252)"
                ) from None

    def record(self) -> dict:
        """For the checkpoint, so that later commands read the books the same way."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BookFile:
    """A book on disk, not read yet: what `open_corpus` finds."""

    name: str  # file stem, as Document.name
    path: str
    size: int  # bytes
    reading: Reading = Reading()

    def sha256(self, on_bytes: Callable[[int], None] | None = None) -> str:
        """Hash of the file's bytes (streamed, about 1.8 GB/s): the token cache's key."""
        digest = hashlib.sha256()
        for block in _file_blocks(Path(self.path), CHUNK_BYTES):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
        return digest.hexdigest()


@dataclass(frozen=True)
class BookScan:
    """What the first pass over a book found: enough to read its text in pieces."""

    encoding: str
    gutenberg_stripped: bool
    begin: int  # the book's text is [begin, end) of the cleaned file, plus one final "\n"
    end: int
    alphabet: str = field(repr=False)  # every character of the cleaned file and "\n", sorted
    # How sure the detector was of `encoding` (0-1); None when no detector was asked: a
    # byte-order mark, valid UTF-8/16, or Western text read as Windows-1252 without doubt.
    confidence: float | None = None
    markup_stripped: bool = False  # Aozora Bunko's markup (bookgen.aozora)

    @property
    def chars(self) -> int:
        return self.end - self.begin + 1


# --- paths ---------------------------------------------------------------------------------


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


def open_corpus(paths: Sequence[str | Path], reading: Reading = Reading()) -> list[BookFile]:
    """expand_paths, checking that each file can be read, without reading it yet."""
    books = []
    for path in expand_paths(paths):
        with _open(path):
            pass
        size = path.stat().st_size
        books.append(BookFile(name=path.stem, path=str(path), size=size, reading=reading))
    return books


# --- style labels ----------------------------------------------------------------------------


def style_labels(
    books: Sequence[BookFile | Document], style_by: str, own_style: Collection[str] = ()
) -> list[str]:
    """Each book's style label, as `--style-by` takes it: "file", the book's name (its file
    name without the suffix); "folder", the name of the folder it is in (books/austen/emma.txt
    is "austen"); "none", one label for all. A book whose resolved path is in `own_style` (one
    named from the catalogue, kept in a download folder) is its own style, by its name."""
    if style_by == "none":
        return ["" for _ in books]
    own = {str(Path(path).resolve()) for path in own_style}
    labels = []
    for book in books:
        path = Path(book.path)
        if style_by == "file" or str(path.resolve()) in own:
            labels.append(book.name)
        else:
            labels.append(path.absolute().parent.name or book.name)
    return labels


def number_styles(labels: Sequence[str]) -> tuple[list[str], list[int]]:
    """(the distinct labels in order of first appearance, each book's index among them)."""
    names = list(dict.fromkeys(labels))
    return names, [names.index(label) for label in labels]


# --- reading: the two passes ---------------------------------------------------------------


def scan_book(
    path: str | Path,
    chunk_bytes: int = CHUNK_BYTES,
    on_bytes: Callable[[int], None] | None = None,
    reading: Reading = Reading(),
) -> BookScan:
    """Pass 1: decide the encoding, refuse binaries, find where the book's text lies.

    Raises BookgenError for a binary file, a broken byte-order mark, a file with no text or
    one not valid in the encoding `reading` forces. `on_bytes(n)` is called as bytes are read
    (more than the file's size when a first guess at the encoding fails and the file is read
    again). Text read one byte at a time that looks like a double-byte or Cyrillic book read
    wrong is a BookgenWarning (the mojibake guard), never silent.
    """
    path = Path(path)
    scan = functools.partial(
        _scan,
        path,
        chunk_bytes=chunk_bytes,
        on_bytes=on_bytes,
        strip_markup=not reading.keep_markup,
    )
    found = _chosen(path, scan, chunk_bytes, reading.encoding)
    if found.encoding in ("windows-1252", "latin-1"):
        hint = encodings.mojibake_hint(encodings.sample(_head(path, encodings.SAMPLE_BYTES)))
        if hint is not None:
            warnings.warn(
                f"{path}: read as {found.encoding}, the text looks like a double-byte or "
                f"Cyrillic book read one byte at a time (mojibake); try {hint}",
                BookgenWarning,
                stacklevel=2,
            )
    return found


def _chosen(path: Path, scan: Callable[[str], BookScan], chunk_bytes: int, forced: str | None):
    """The first pass in the encoding forced, named by a byte-order mark, or guessed."""
    if forced is not None:
        try:
            return scan(forced)
        except _DecodeFailed as failed:
            raise BookgenError(
                f"{path}: is not valid {forced} ({failed.reason} at byte {failed.position}); "
                f"leave out --encoding to have it detected"
            ) from None
    named = encodings.bom_encodings(_head(path, encodings.BOM_BYTES))
    for encoding in named:
        try:
            return scan(encoding)
        except _DecodeFailed as failed:
            if encoding == named[-1]:  # a byte-order mark promises its encoding: no guessing
                raise BookgenError(
                    f"{path}: starts with a {encoding.upper()} byte-order mark but is not valid "
                    f"{encoding.upper()} ({failed.reason} at byte {failed.position})"
                ) from None
    stats = encodings.ByteStats()
    for block in _file_blocks(path, max(2, chunk_bytes - chunk_bytes % 2)):  # even: parity kept
        stats.add(block)
    head = functools.partial(_head, path, encodings.SAMPLE_BYTES)
    for encoding, confidence in encodings.guesses(stats, head):
        with contextlib.suppress(_DecodeFailed):
            return dataclasses.replace(scan(encoding), confidence=confidence)
    raise AssertionError("unreachable: the last guess, windows-1252, decodes any bytes")


def book_text(path: str | Path, scan: BookScan, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Pass 2: the book's cleaned text in pieces (pieces may be empty; the last ends in "\\n")."""
    offset = 0
    for piece in _text(Path(path), scan.encoding, chunk_bytes, scan.markup_stripped):
        low, high = max(scan.begin - offset, 0), min(scan.end - offset, len(piece))
        offset += len(piece)
        if low < high:
            yield piece[low:high]
    yield "\n"


def read_document(path: str | Path, reading: Reading = Reading()) -> Document:
    """One book read whole: both passes, joined (the text training would tokenize)."""
    path = Path(path)
    scan = scan_book(path, reading=reading)
    return Document(
        name=path.stem,
        path=str(path),
        text="".join(book_text(path, scan)),
        encoding=scan.encoding,
        gutenberg_stripped=scan.gutenberg_stripped,
        confidence=scan.confidence,
        markup_stripped=scan.markup_stripped,
    )


def read_corpus(paths: Sequence[str | Path], reading: Reading = Reading()) -> list[Document]:
    """expand_paths, then read_document for each file, in that order (`bookgen corpus`)."""
    return [read_document(path, reading) for path in expand_paths(paths)]


def read_recorded_books(record: dict, purpose: str) -> list[Document]:
    """The books a checkpoint was trained on, read again from where they were (record: the
    manifest's `corpus`), each checked against its recorded sha256 so no other text stands in.

    `purpose` ends the error a user sees when a book cannot be had: what they can do instead.
    """
    documents = []
    reading = Reading(**record.get("reading", {}))  # as they were read for training
    paths = record.get("paths") or [None] * len(record.get("documents", []))
    for saved, path in zip(record.get("documents", []), paths, strict=False):
        name = saved.get("name", "?")
        if not path or not Path(path).is_file():
            where = f" (was {path})" if path else ""
            raise BookgenError(f"the training book {name!r} is not where it was{where}: {purpose}")
        document = read_document(path, reading)
        if hashlib.sha256(document.text.encode("utf-8")).hexdigest() != saved.get("sha256"):
            raise BookgenError(
                f"{path}: the book has changed since the model was trained: {purpose}"
            )
        documents.append(document)
    if not documents:
        raise BookgenError(f"the checkpoint records no training books: {purpose}")
    return documents


def _scan(
    path: Path,
    encoding: str,
    chunk_bytes: int,
    on_bytes: Callable[[int], None] | None,
    strip_markup: bool = True,
) -> BookScan:
    """Pass 1 in one encoding; raises _DecodeFailed if the bytes are not valid in it."""
    counts = binary.Counts()
    seen = np.zeros(0x110000, dtype=bool)  # by code point: does the cleaned file hold it?
    bounds = gutenberg.Bounds()
    offset = 0
    markup = strip_markup and _is_aozora(path, encoding)
    for piece in _text(path, encoding, chunk_bytes, markup, counts, on_bytes):
        _mark_seen(seen, piece)
        bounds.find(piece, offset)
        offset += len(piece)
    bounds.finish(offset)
    counts.judge(str(path))
    begin, end, stripped = bounds.book()
    if end <= begin:
        raise BookgenError(f"{path}: the file is empty (no text left after cleaning)")
    seen[ord("\n")] = True  # the text always ends with one, even a file with no line end
    alphabet = "".join(map(chr, np.flatnonzero(seen)))
    return BookScan(encoding, stripped, begin, end, alphabet, markup_stripped=markup)


def _text(
    path: Path,
    encoding: str,
    chunk_bytes: int,
    markup: bool,
    counts: binary.Counts | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The cleaned file in pieces, Aozora Bunko's markup stripped if `markup`: what both
    passes read, so that their offsets agree."""
    pieces = _cleaned(_decoded(path, encoding, chunk_bytes, counts, on_bytes))
    return aozora.stripped(pieces) if markup else pieces


AOZORA_EDGE_BYTES = 1 << 14  # the legend and the colophon lie within this of the file's ends


def _is_aozora(path: Path, encoding: str) -> bool:
    """Is the file from Aozora Bunko? Decided from its two ends alone, before pass 1 begins,
    so that both passes strip the same markup."""
    with _open(path) as file:
        head = file.read(AOZORA_EDGE_BYTES)
        file.seek(max(0, path.stat().st_size - AOZORA_EDGE_BYTES))  # even: UTF-16 stays aligned
        tail = file.read()
    if encoding in ("utf-16", "utf-32"):  # the ends' byte order is the byte-order mark's
        little = head.startswith(codecs.BOM_UTF16_LE)
        encoding += "-le" if little else "-be"
    decoder = "cp1252" if encoding == "windows-1252" else encoding
    decode = functools.partial(codecs.decode, encoding=decoder, errors="ignore")
    return aozora.recognised(decode(head), decode(tail))


def _mark_seen(seen: np.ndarray, text: str) -> None:
    if text.isascii():
        seen[np.frombuffer(text.encode("ascii"), dtype=np.uint8)] = True
    else:
        seen[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)] = True


def _file_blocks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    with _open(path) as file:
        while block := file.read(chunk_bytes):
            yield block


def _head(path: Path, size: int) -> bytes:
    """The file's first `size` bytes."""
    with _open(path) as file:
        return file.read(size)


def _open(path: Path):
    if path.is_dir():
        raise BookgenError(f"{path}: is a folder, not a file (read_corpus takes folders)")
    if not path.exists():
        raise BookgenError(f"{path}: no such file")
    try:
        return path.open("rb")
    except PermissionError:
        raise BookgenError(f"{path}: cannot read the file (permission denied)") from None
    except OSError as error:
        raise BookgenError(f"{path}: cannot read the file ({error.strerror})") from None


# --- decoding ----------------------------------------------------------------------------------

# Encodings in which a NUL byte can only be junk: it is dropped before decoding (which also
# rejoins a UTF-8 character that a stray NUL split in two), with a warning (binary.Counts).
# In the others a NUL decodes to U+0000, which cleaning drops, with the same warning.
_NUL_IS_JUNK = ("utf-8", "latin-1", "windows-1252")


def _decoder(encoding: str) -> Callable[[bytes, bool], str]:
    """decode(bytes, is the last piece) -> text, for one pass over a file in `encoding`: a
    character split across two pieces is held until the next. Raises UnicodeDecodeError."""
    if encoding == "windows-1252":
        return lambda block, final: codecs.charmap_decode(block, "strict", WINDOWS_1252)[0]
    return codecs.getincrementaldecoder(encoding)("strict").decode


class _DecodeFailed(Exception):
    """The bytes are not valid in the encoding tried (at `position`, counted in bytes)."""

    def __init__(self, reason: str, position: int) -> None:
        self.reason, self.position = reason, position


def _decoded(
    path: Path,
    encoding: str,
    chunk_bytes: int,
    counts: binary.Counts | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, bool]]:
    """(text, is the last piece) of the file; counts what judging binary needs, if asked."""
    decode = _decoder(encoding)
    drop_nuls = encoding in _NUL_IS_JUNK
    fed = 0  # bytes given to the decoder so far
    for block, final in itertools.chain(
        ((block, False) for block in _file_blocks(path, chunk_bytes)), [(b"", True)]
    ):
        if on_bytes is not None and block:
            on_bytes(len(block))
        if drop_nuls and 0 in block:
            if counts is not None:
                counts.dropped(block.count(0))
            block = block.replace(b"\x00", b"")
        fed += len(block)
        try:
            text = decode(block, final)
        except UnicodeDecodeError as error:
            # error.object is what the decoder held back and this block (less a BOM it
            # skipped): it ends where the bytes fed so far end.
            position = fed - len(error.object) + error.start
            raise _DecodeFailed(error.reason, position) from None
        if counts is not None:
            counts.add(text)
        yield text, final


# --- cleaning --------------------------------------------------------------------------------

# Every Cc but tab and newline (line ends are "\n" by then), plus the BOM / zero-width
# no-break space, which is invisible and only ever there by accident.
_DROPPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_DROPPED_ASCII = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])


def _cleaned(pieces: Iterator[tuple[str, bool]]) -> Iterator[str]:
    """Cleaned text, piece by piece, each cut just after a "\\n" (the last one wherever the
    text ends): so no CRLF, Gutenberg marker line or NFC composition spans a cut.

    `pieces`: (text, is the last piece), as _decoded gives them. A file without any line end
    is held whole (it is one line); that is the one case where a book larger than memory
    cannot be read.
    """
    held = ""  # a trailing CR, which may be the first half of a CRLF
    line = ""  # cleaned text after the last "\n" so far
    for piece, final in pieces:
        text, held = held + piece, ""
        if text.endswith("\r") and not final:
            text, held = text[:-1], "\r"
        text = line + _clean_piece(text)
        cut = len(text) if final else text.rfind("\n") + 1
        line = text[cut:]
        # Drop before NFC, so a control character between a letter and its accent cannot
        # leave them uncomposed; this also makes cleaning idempotent.
        yield unicodedata.normalize("NFC", text[:cut])


def _clean_piece(text: str) -> str:
    """Line ends to "\\n" (a CRLF is one line end), then control characters dropped."""
    if text.isascii():  # the common case, done on bytes: several times faster
        data = text.encode("ascii")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data.translate(None, _DROPPED_ASCII).decode("ascii")
    if "\r" in text:  # str.replace is 10x faster than a regular expression
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for line_end in ("\x85", "\u2028", "\u2029"):
        if line_end in text:
            text = text.replace(line_end, "\n")
    return _DROPPED.sub("", text)
