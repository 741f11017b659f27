"""Reading books: every way a book can be saved must give the same training text, whatever
size of chunk the reader takes it in."""

from __future__ import annotations

import codecs
import gzip
import io
import random
import re
import sqlite3
import struct
import sys
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bookgen.corpus import (
    CHUNK_BYTES,
    BookScan,
    Document,
    book_text,
    expand_paths,
    read_corpus,
    read_document,
    scan_book,
)
from bookgen.errors import BookgenError, BookgenWarning

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
NO_CORPORA = "../shared/corpora not found (real books are not part of the repo)"

# What every variant below must clean to, byte for byte.
EXPECTED = (
    "CHAPTER I.\n"
    "\n"
    "\u201cIt is a truth,\u201d said Mrs. Bennet\u2019s friend\u2014of the caf\u00e9.\n"
    "\tAn indented line.\n"
    "It is a truth universally acknowledged, that a single man in possession of a good\n"
    "fortune, must be in want of a wife. However little known the feelings or views of such\n"
)
# Windows-1252 bytes of the same: curly quotes 0x93 0x94, apostrophe 0x92, em dash 0x97.
CP1252_BODY = (
    b"CHAPTER I.\n\n\x93It is a truth,\x94 said Mrs. Bennet\x92s friend\x97of the caf\xe9.\n"
    b"\tAn indented line.\n"
    b"It is a truth universally acknowledged, that a single man in possession of a good\n"
    b"fortune, must be in want of a wife. However little known the feelings or views of such\n"
)


def _lines(newline: str) -> str:
    return EXPECTED.replace("\n", newline)


def _dirty(body: bytes) -> bytes:
    """Add page breaks, stray NULs, CRLF, blank lines at both ends and a DOS end-of-file mark."""
    body = body.replace(b"CHAPTER", b"\x0cCHAPTER").replace(b"line.", b"line.\x0c")
    body = body.replace(b"truth,", b"tru\x00th,").replace(b"Bennet", b"Ben\x00net")
    return b"\r\n\r\n" + body.replace(b"\n", b"\r\n") + b"\r\n  \r\n\x1a"


VARIANTS = {
    "utf-8 LF": (EXPECTED.encode("utf-8"), "utf-8"),
    "utf-8 CRLF": (_lines("\r\n").encode("utf-8"), "utf-8"),
    "utf-8 CR": (_lines("\r").encode("utf-8"), "utf-8"),
    "utf-8 BOM CRLF": (codecs.BOM_UTF8 + _lines("\r\n").encode("utf-8"), "utf-8-sig"),
    "utf-16 LE BOM": (codecs.BOM_UTF16_LE + EXPECTED.encode("utf-16-le"), "utf-16"),
    "utf-16 BE BOM CRLF": (codecs.BOM_UTF16_BE + _lines("\r\n").encode("utf-16-be"), "utf-16"),
    "utf-32 LE BOM": (codecs.BOM_UTF32_LE + EXPECTED.encode("utf-32-le"), "utf-32"),
    "utf-32 BE BOM": (codecs.BOM_UTF32_BE + EXPECTED.encode("utf-32-be"), "utf-32"),
    "windows-1252 LF": (CP1252_BODY, "windows-1252"),
    "windows-1252 CRLF": (CP1252_BODY.replace(b"\n", b"\r\n"), "windows-1252"),
    "windows-1252 CR": (CP1252_BODY.replace(b"\n", b"\r"), "windows-1252"),
    # Every addition _dirty makes must vanish.
    "windows-1252 dirty": (_dirty(CP1252_BODY), "windows-1252"),
    # Decomposed e + combining acute is composed (NFC); a BOM in the middle is dropped.
    "utf-8 NFD": (EXPECTED.replace("\u00e9", "e\u0301\ufeff").encode("utf-8"), "utf-8"),
    "utf-8 U+2028": (_lines("\u2028").encode("utf-8"), "utf-8"),
}


@pytest.mark.filterwarnings("ignore:.*stray NUL:bookgen.errors.BookgenWarning")
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_encoding_and_line_end_cleans_to_the_same_text(variant, tmp_path):
    data, encoding = VARIANTS[variant]
    (tmp_path / "book.txt").write_bytes(data)
    document = read_document(tmp_path / "book.txt")
    assert document.text == EXPECTED
    assert document.encoding == encoding
    assert document.name == "book"
    assert not document.gutenberg_stripped


def test_latin1_with_nel_line_ends(tmp_path):
    # No LF or CR anywhere, so 0x85 must be NEL (Latin-1), not Windows-1252's ellipsis.
    (tmp_path / "old.txt").write_bytes(b"Caf\xe9 \xabau lait\xbb\x85\x85Co\xfbt: 5 \xa3.\x85")
    document = read_document(tmp_path / "old.txt")
    assert document.encoding == "latin-1"
    assert document.text == "Caf\u00e9 \u00abau lait\u00bb\n\nCo\u00fbt: 5 \u00a3.\n"


def test_0x85_with_ordinary_line_ends_is_an_ellipsis(tmp_path):
    document = read_document(_write(tmp_path, b"Wait\x85 what?\r\n"))
    assert (document.text, document.encoding) == ("Wait\u2026 what?\n", "windows-1252")


def test_bytes_windows_1252_leaves_undefined_decode_as_latin1(tmp_path):
    # Padded with text, or five control characters in seven would read as binary. Decoded as
    # Latin-1's control characters (not refused, not U+FFFD), the five are then cleaned away.
    data = b"\x81\x8d\x8f\x90\x9d \x80" + b" and plenty of ordinary words" * 5
    document = read_document(_write(tmp_path, data))
    expected = " \u20ac" + " and plenty of ordinary words" * 5 + "\n"
    assert (document.text, document.encoding) == (expected, "windows-1252")


def test_utf16_text_starting_with_nul_is_not_taken_for_utf32(tmp_path):
    text = "\x00" + "Hello, world, a fine day. " * 5
    with pytest.warns(BookgenWarning, match="dropped 1 stray NUL "):
        document = read_document(_write(tmp_path, codecs.BOM_UTF16_LE + text.encode("utf-16-le")))
    expected = "Hello, world, a fine day. " * 4 + "Hello, world, a fine day.\n"
    assert (document.text, document.encoding) == (expected, "utf-16")


def test_document_counts_and_short_repr(tmp_path):
    (tmp_path / "tiny.txt").write_text("abba\n", encoding="utf-8")
    document = read_document(str(tmp_path / "tiny.txt"))
    assert (document.chars, document.distinct_chars) == (5, 3)
    assert document.path == str(tmp_path / "tiny.txt")
    assert "abba" not in repr(document)
    assert isinstance(document, Document)


def test_cleaning_keeps_inner_whitespace_and_first_line_indent(tmp_path):
    document = read_document(_write(tmp_path, b"\n \n   Title  \n\n\n  body\t \n\n"))
    assert document.text == "   Title  \n\n\n  body\n"
    with pytest.warns(BookgenWarning, match="dropped 1 stray NUL"):
        with pytest.raises(BookgenError, match="the file is empty"):
            read_document(_write(tmp_path, b" \t\n\r\n\f\x00"))


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_reading_is_idempotent_and_canonical(text):
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", BookgenWarning)
        try:
            read = read_document(_write(Path(folder), text.encode("utf-8"))).text
        except BookgenError:
            return  # binary, or nothing left: refusals are tested above and below
        assert read_document(_write(Path(folder), read.encode("utf-8"))).text == read
    assert "\r" not in read and "\ufeff" not in read
    assert read.endswith("\n") and not read.endswith("\n\n")


@settings(max_examples=100, deadline=None)
@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufeff\ufffd")),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]),
)
def test_unicode_text_reads_the_same_in_every_unicode_encoding(text, encoding):
    expected = _read_by_hand(text)  # the text as the reading rules clean it
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), text.encode(encoding))
        if expected is None:
            with pytest.raises(BookgenError, match="the file is empty"):
                read_document(path)
            return
        document = read_document(path)
    assert (document.text, document.gutenberg_stripped, document.encoding) == (*expected, encoding)


# --- binary and broken input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data, reason",
    [
        (bytes(range(256)) * 50, "control characters"),
        (b"\x00" * 900 + b"some text here", "NUL characters"),
        ("ok \ufffd\ufffd text".encode("utf-8"), "U\\+FFFD"),
    ],
)
def test_binary_files_are_refused(data, reason, tmp_path):
    (tmp_path / "blob.txt").write_bytes(data)
    with pytest.raises(
        BookgenError, match=f"blob.txt: looks like a binary file, not text .*{reason}"
    ):
        read_document(tmp_path / "blob.txt")


def test_a_few_stray_nuls_are_fine(tmp_path):
    with pytest.warns(BookgenWarning, match=r"book.txt: dropped 2 stray NULs \(0\.2% of its"):
        document = read_document(_write(tmp_path, b"a" * 500 + b"\x00\x00" + b"b" * 500))
    assert document.text == "a" * 500 + "b" * 500 + "\n"


# --- stray NULs and other junk: text, not binary -------------------------------------------


def _sprinkle_nuls(data: bytes, share: float) -> bytes:
    """NUL bytes at random places, inside UTF-8 characters too, until `share` of bytes are NUL."""
    rng = random.Random(9)
    count = round(len(data) * share / (1 - share))
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(count))
    return b"\x00".join(
        data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)
    )


def test_utf8_book_with_5_percent_nuls_reads_as_without_them(tmp_path):
    book = EXPECTED * 40
    data = _sprinkle_nuls(book.encode("utf-8"), 0.05)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # some NULs split a curly quote's or an e-acute's bytes
    (tmp_path / "clean.txt").write_text(book, encoding="utf-8")
    (tmp_path / "nuls.txt").write_bytes(data)
    with pytest.warns(BookgenWarning) as caught:
        damaged = read_document(tmp_path / "nuls.txt")
    clean = read_document(tmp_path / "clean.txt")
    assert (damaged.text, damaged.encoding) == (clean.text, "utf-8")
    nuls = data.count(0)
    assert [str(warning.message) for warning in caught] == [
        f"{tmp_path / 'nuls.txt'}: dropped {nuls:,} stray NULs "
        f"({nuls / (len(book) + nuls):.1%} of its characters); the rest reads as text"
    ]


@pytest.mark.parametrize(
    "name, share",
    [("sherlock-holmes", 0.05), ("sherlock-holmes", 0.20), ("pride-and-prejudice", 0.10)],
)
def test_real_books_with_nuls_read_as_without_them(name, share, tmp_path):
    path = _real_book(name)
    (tmp_path / "nuls.txt").write_bytes(_sprinkle_nuls(path.read_bytes(), share))
    shown = re.escape(f"({share:.1%} of its characters)")
    with pytest.warns(BookgenWarning, match=f"nuls.txt: dropped [0-9,]+ stray NULs {shown}"):
        damaged = read_document(tmp_path / "nuls.txt")
    clean = read_document(path)
    assert (damaged.text, damaged.encoding) == (clean.text, clean.encoding)


# Each must clean to EXPECTED, in the given encoding.
JUNK = {
    "utf-8, 10% NULs": (_sprinkle_nuls(EXPECTED.encode("utf-8"), 0.10), "utf-8"),
    "utf-8, 40% NULs": (_sprinkle_nuls(EXPECTED.encode("utf-8"), 0.40), "utf-8"),
    "windows-1252 CRLF, 20% NULs, form feeds": (
        _sprinkle_nuls(_dirty(CP1252_BODY), 0.20),
        "windows-1252",
    ),
    # Without a BOM, UTF-16 is told by its NULs: the high byte of most Latin characters.
    "utf-16-le without BOM": (EXPECTED.encode("utf-16-le"), "utf-16-le"),
    "utf-16-be without BOM, CRLF": (_lines("\r\n").encode("utf-16-be"), "utf-16-be"),
    "utf-16-le without BOM, NUL characters": (
        EXPECTED.replace(" ", " \x00").encode("utf-16-le"),
        "utf-16-le",
    ),
    "utf-8, ANSI escapes and a few odd controls": (
        EXPECTED.replace("Bennet", "Ben\x1b\x08net").replace(".", ".\x7f").encode("utf-8"),
        "utf-8",
    ),
}


@pytest.mark.filterwarnings("ignore:.*stray NUL:bookgen.errors.BookgenWarning")
@pytest.mark.parametrize("variant", JUNK)
def test_texts_with_junk_are_accepted(variant, tmp_path):
    data, encoding = JUNK[variant]
    (tmp_path / "book.txt").write_bytes(data)
    document = read_document(tmp_path / "book.txt")
    assert (document.text, document.encoding) == (EXPECTED, encoding)


def _png() -> bytes:
    """A 48x48 RGB PNG of noise, as a photograph's detail compresses: barely at all."""
    rng = random.Random(1)
    rows = b"".join(b"\x00" + rng.randbytes(48 * 3) for _ in range(48))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 48, 48, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _pdf() -> bytes:
    """A one-page PDF: ASCII dictionaries, a compressed text stream and a compressed image."""
    page = zlib.compress(b"BT /F1 12 Tf 72 712 Td (It is a truth universally) Tj ET\n" * 40)
    image = zlib.compress(random.Random(2).randbytes(48 * 48 * 3))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(page), page),
        b"<< /Type /XObject /Subtype /Image /Width 48 /Height 48 /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream"
        % (len(image), image),
    ]
    pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return (
        pdf
        + b"xref\n0 %d\n0000000000 65535 f \n%strailer\n<< /Size %d /Root 1 0 R >>\n"
        % (len(objects) + 1, xref, len(objects) + 1)
        + b"startxref\n%d\n%%%%EOF\n" % len(pdf)
    )


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("book.txt", EXPECTED * 200)
        archive.writestr("cover.png", _png())
    return buffer.getvalue()


def _safetensors(dtype: str) -> bytes:
    # A JSON header (text, with long ASCII stretches) followed by the raw numbers.
    import torch
    from safetensors.torch import save

    generator = torch.Generator().manual_seed(3)
    tensors = {
        "embedding": torch.randn(96, 32, generator=generator),
        "bias": torch.randn(32, generator=generator),
    }
    return save({key: value.to(getattr(torch, dtype)) for key, value in tensors.items()})


def _sqlite(tmp_path: Path) -> bytes:
    # Pages of mostly zeros around rows of text: NULs outnumber everything else.
    path = tmp_path / "books.db"
    with sqlite3.connect(path) as database:
        database.execute("CREATE TABLE lines (line TEXT)")
        database.executemany(
            "INSERT INTO lines VALUES (?)", [(line,) for line in EXPECTED.split("\n")]
        )
    database.close()
    return path.read_bytes()


BINARIES = {
    "zip": lambda tmp_path: _zip(),
    "png": lambda tmp_path: _png(),
    "pdf": lambda tmp_path: _pdf(),
    "elf /bin/ls": lambda tmp_path: Path("/bin/ls").read_bytes(),
    # Some Pythons are a 20 MB static binary: its first MiB is plenty.
    "elf python": lambda tmp_path: Path(sys.executable).resolve().read_bytes()[: 1 << 20],
    "safetensors float32": lambda tmp_path: _safetensors("float32"),
    "safetensors float16": lambda tmp_path: _safetensors("float16"),
    "safetensors float64": lambda tmp_path: _safetensors("float64"),
    "gzip": lambda tmp_path: gzip.compress((EXPECTED * 200).encode("utf-8"), mtime=0),
    "random bytes": lambda tmp_path: random.Random(4).randbytes(20_000),
    "sqlite": _sqlite,
    # Small 16-bit numbers put NULs where UTF-16 text has them, and decode to controls.
    "16-bit integers": lambda tmp_path: struct.pack(
        "<4000H", *random.Random(5).choices(range(32), k=4000)
    ),
}


@pytest.mark.parametrize("kind", BINARIES)
def test_real_binaries_are_refused(kind, tmp_path):
    (tmp_path / "blob.txt").write_bytes(BINARIES[kind](tmp_path))
    with pytest.raises(BookgenError, match="blob.txt: looks like a binary file, not text"):
        read_document(tmp_path / "blob.txt")


def test_cli_shows_the_nul_warning_on_one_line(tmp_path):
    from typer.testing import CliRunner

    from bookgen.cli import app

    (tmp_path / "a-book-with-a-long-name-rescued-from-an-old-disk.txt").write_bytes(
        _sprinkle_nuls((EXPECTED * 4).encode("utf-8"), 0.05)
    )
    result = CliRunner().invoke(app, ["corpus", str(tmp_path)])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    assert "a-book-with-a-long-name-rescued-from-an-old-disk.txt: dropped " in warning[0]
    assert warning[0].endswith(" of its characters); the rest reads as text")


@pytest.mark.parametrize("chunk_bytes", [1, 3, CHUNK_BYTES])
@pytest.mark.parametrize(
    "data, refusal",
    [
        # Odd length: the last character is cut short at byte 4 of the file.
        (
            codecs.BOM_UTF16_BE + b"\x00a\x00",
            "UTF-16 byte-order mark but is not valid UTF-16 "
            r"\(truncated data at byte 4\)",
        ),  # fmt: skip
        (codecs.BOM_UTF16_LE + b"a\x00\x00\xdcb\x00", r"UTF-16 .* \(illegal encoding at byte 4\)"),
        # Counted from the file's start, the byte-order mark included.
        (codecs.BOM_UTF8 + b"abc\xffdef\n", r"UTF-8-SIG .* \(invalid start byte at byte 6\)"),
    ],
)
def test_broken_bom_file_is_refused(data: bytes, refusal: str, chunk_bytes: int, tmp_path):
    with pytest.raises(BookgenError, match=f"book.txt: starts with a {refusal}$"):
        scan_book(_write(tmp_path, data), chunk_bytes)


@pytest.mark.parametrize("content", [b"", b"  \r\n\t\r\n\x0c\x1a\n  "])
def test_empty_and_whitespace_only_files_are_refused(content, tmp_path):
    (tmp_path / "empty.txt").write_bytes(content)
    with pytest.raises(BookgenError, match=r"empty.txt: the file is empty \(no text left"):
        read_document(tmp_path / "empty.txt")


def test_licence_only_file_is_empty(tmp_path):
    (tmp_path / "licence.txt").write_text(
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n"
    )
    with pytest.raises(BookgenError, match="the file is empty"):
        read_document(tmp_path / "licence.txt")


def test_read_document_missing_and_folder(tmp_path):
    with pytest.raises(BookgenError, match="nope.txt: no such file$"):
        read_document(tmp_path / "nope.txt")
    with pytest.raises(BookgenError, match="is a folder, not a file"):
        read_document(tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    # Simulated, because chmod 000 does not stop root (which CI containers often are).
    path = tmp_path / "locked.txt"
    path.write_text("secret\n")

    def denied(self: Path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(
        BookgenError, match=r"locked.txt: cannot read the file \(permission denied\)"
    ):
        read_document(path)


# --- Project Gutenberg ---------------------------------------------------------------------

BODY = "CHAPTER I.\n\nIt was a dark night; the end of the story was near.\n"

NEW_STYLE = f"""The Project Gutenberg eBook of Tiny Book

This ebook is for the use of anyone anywhere.

Title: Tiny Book

*** START OF THE PROJECT GUTENBERG EBOOK TINY BOOK ***


{BODY}

        \n            *** END OF THE PROJECT GUTENBERG EBOOK TINY BOOK ***

Section 1. General Terms of Use and Redistributing Project Gutenberg works
"""

OLDER_STYLE = f"""The Project Gutenberg EBook of Tiny Book, by Someone

***START OF THE PROJECT GUTENBERG EBOOK TINY BOOK***

{BODY}

End of the Project Gutenberg EBook of Tiny Book, by Someone

*** END OF THIS PROJECT GUTENBERG EBOOK TINY BOOK ***

***** This file should be named 123.txt *****
"""

SMALL_PRINT_STYLE = f"""The Project Gutenberg Etext of Tiny Book
**Welcome To The World of Free Plain Vanilla Electronic Texts**
*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*

{BODY}
End of Project Gutenberg's Tiny Book, by Someone
"""

# A small-print header followed by a start marker: the book begins after the last one.
BOTH_HEADERS = f"""*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*
Produced by a volunteer.
*** start of this project gutenberg etext tiny book ***
{BODY}
End of this Project Gutenberg Etext of Tiny Book
"""

FOOTER_ONLY = f"{BODY}\nEnd of Project Gutenberg's Tiny Book\nLicence text.\n"


@pytest.mark.parametrize("chunk_bytes", [5, CHUNK_BYTES])
@pytest.mark.parametrize(
    "text", [NEW_STYLE, OLDER_STYLE, SMALL_PRINT_STYLE, BOTH_HEADERS, FOOTER_ONLY]
)
def test_gutenberg_licence_is_stripped(text, chunk_bytes, tmp_path):
    scan, read = _read_in_chunks(_write(tmp_path, text.encode("utf-8")), chunk_bytes)
    assert (read, scan.gutenberg_stripped) == (BODY, True)


def test_text_without_markers_is_kept(tmp_path):
    text = "  A book that mentions Project Gutenberg.\nEnd of the story.\n"
    document = read_document(_write(tmp_path, (text + "\n\n").encode("utf-8")))
    assert (document.text, document.gutenberg_stripped) == (text, False)


def test_read_document_strips_gutenberg_with_crlf(tmp_path):
    (tmp_path / "tiny.txt").write_bytes(NEW_STYLE.replace("\n", "\r\n").encode("utf-8"))
    document = read_document(tmp_path / "tiny.txt")
    assert (document.text, document.gutenberg_stripped) == (BODY, True)


# --- paths ---------------------------------------------------------------------------------


def _touch(path: Path, text: str = "words\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folder_gives_sorted_txt_files_only(tmp_path):
    for name in ["b.txt", "a.txt", "sub/c.txt", "notes.md", "sub/d.TXT", ".hidden/e.txt"]:
        _touch(tmp_path / name)
    (tmp_path / "folder.txt").mkdir()
    found = expand_paths([tmp_path])
    assert [path.relative_to(tmp_path).as_posix() for path in found] == [
        "a.txt",
        "b.txt",
        "sub/c.txt",
        "sub/d.TXT",
    ]


def test_argument_order_is_kept_and_duplicates_dropped(tmp_path, monkeypatch):
    z = _touch(tmp_path / "z.txt")
    _touch(tmp_path / "a.txt")
    other = _touch(tmp_path / "other" / "m.md")
    monkeypatch.chdir(tmp_path)
    found = expand_paths([z, other, "a.txt", tmp_path, str(tmp_path / "*.txt")])
    assert found == [z, other, Path("a.txt")]


def test_glob_and_explicit_file_with_glob_characters(tmp_path):
    _touch(tmp_path / "b1.txt")
    _touch(tmp_path / "b2.txt")
    _touch(tmp_path / "x.txt")
    odd = _touch(tmp_path / "[draft].txt")
    assert expand_paths([tmp_path / "b?.txt"]) == [tmp_path / "b1.txt", tmp_path / "b2.txt"]
    assert expand_paths([odd]) == [odd]


@pytest.mark.parametrize(
    "argument, message",
    [
        ("missing.txt", "missing.txt: no such file or folder"),
        ("empty", "empty: no .txt files in this folder"),
        ("mixed", "mixed: no .txt files in this folder"),
        ("*.epub", r"\*.epub: no file matches"),
    ],
)
def test_expand_paths_errors(argument, message, tmp_path):
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "mixed" / "book.md")
    with pytest.raises(BookgenError, match=message):
        expand_paths([tmp_path / argument])


def test_no_paths_at_all():
    with pytest.raises(BookgenError, match="no input files"):
        read_corpus([])


def test_read_corpus_reads_in_order(tmp_path):
    _touch(tmp_path / "b.txt", "second\n")
    _touch(tmp_path / "a.txt", "first\r\n")
    documents = read_corpus([tmp_path])
    assert [(d.name, d.text) for d in documents] == [("a", "first\n"), ("b", "second\n")]


# --- real books ----------------------------------------------------------------------------


def _real_book(name: str) -> Path:
    path = CORPORA / "gutenberg" / f"{name}.txt"
    if not path.is_file():
        pytest.skip(NO_CORPORA)
    return path


def test_pride_and_prejudice():
    document = read_document(_real_book("pride-and-prejudice"))
    assert document.encoding == "windows-1252"
    assert document.gutenberg_stripped
    assert document.text.startswith(
        " " * 28 + "[Illustration:\n\n" + " " * 29 + "GEORGE ALLEN\n" + " " * 31 + "PUBLISHER\n"
    )
    assert document.text.endswith("TOOKS COURT, CHANCERY LANE, LONDON.\n")
    assert "It is a truth universally acknowledged" in document.text
    assert "Project Gutenberg" not in document.text
    assert "\u201c" in document.text and "\u201d" in document.text and "\r" not in document.text


def test_sherlock_holmes():
    document = read_document(_real_book("sherlock-holmes"))
    assert document.encoding == "utf-8"
    assert not document.gutenberg_stripped
    assert document.text.startswith("To Sherlock Holmes she is always THE woman.")
    assert "\r" not in document.text


# --- reading in chunks -----------------------------------------------------------------------


def _write(folder: Path, data: bytes) -> Path:
    path = folder / "book.txt"
    path.write_bytes(data)
    return path


def _read_in_chunks(path: Path, chunk_bytes: int) -> tuple[BookScan, str]:
    scan = scan_book(path, chunk_bytes)
    return scan, "".join(book_text(path, scan, chunk_bytes))


GUTENBERG = (
    "The Project Gutenberg eBook of X\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n"
    "\r\n   \r\n  Chapter 1\r\n\r\nCafe\u0301 \u201cno\u201d\x07 end.  \r\n\r\n"
    "*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nlicence \u00a7\r\n"
)
CHAPTER = "  Chapter 1\n\nCaf\u00e9 \u201cno\u201d end.\n"  # what GUTENBERG reads as

# bytes -> (text, encoding, licence stripped), or the error that refuses them.
CHUNKED = {
    "utf-8": (GUTENBERG.encode("utf-8"), (CHAPTER, "utf-8", True)),
    "utf-8 BOM": (GUTENBERG.encode("utf-8-sig"), (CHAPTER, "utf-8-sig", True)),
    "utf-16 BOM": (GUTENBERG.encode("utf-16"), (CHAPTER, "utf-16", True)),
    "utf-16-le": (GUTENBERG.encode("utf-16-le"), (CHAPTER, "utf-16-le", True)),
    "utf-32 BOM": (GUTENBERG.encode("utf-32"), (CHAPTER, "utf-32", True)),
    "windows-1252": (
        GUTENBERG.encode("windows-1252", "replace"),  # the combining accent cannot: "?"
        (CHAPTER.replace("\u00e9", "e?"), "windows-1252", True),
    ),
    "latin-1 NEL": (
        GUTENBERG.replace("\r\n", "\x85").encode("latin-1", "replace"),
        ("  Chapter 1\n\nCafe? ?no? end.\n", "latin-1", True),
    ),
    "utf-8, 5% NULs": (
        _sprinkle_nuls((EXPECTED * 3).encode("utf-8"), 0.05),
        (EXPECTED * 3, "utf-8", False),
    ),
    "blank": (b"\n\n  \n\r\n", "the file is empty"),
    "licence only": (
        b"*** END OF THE PROJECT GUTENBERG EBOOK Y ***\nonly licence\n",
        "the file is empty",
    ),
    "no line end": (
        b"no line end at all, and trailing space   ",
        ("no line end at all, and trailing space\n", "utf-8", False),
    ),
    "a UTF-16 BOM, then odd bytes": (
        codecs.BOM_UTF16_BE + b"\x00a\x00",
        "starts with a UTF-16 byte-order mark but is not valid UTF-16",
    ),
}


@pytest.mark.filterwarnings("ignore:.*stray NUL:bookgen.errors.BookgenWarning")
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("variant", CHUNKED)
def test_any_chunk_size_reads_the_same(variant: str, chunk_bytes: int, tmp_path):
    data, expected = CHUNKED[variant]
    path = _write(tmp_path, data)
    if isinstance(expected, str):
        with pytest.raises(BookgenError, match=f"book.txt: {expected}"):
            _read_in_chunks(path, chunk_bytes)
        return
    text, encoding, stripped = expected
    scan, read = _read_in_chunks(path, chunk_bytes)
    assert (read, scan.encoding, scan.gutenberg_stripped) == expected
    assert scan.chars == len(text) and set(text) <= set(scan.alphabet)
    document = read_document(path)  # the whole file in one chunk
    assert (document.text, document.encoding, document.gutenberg_stripped) == expected


# The reading rules, applied by hand to a whole UTF-8 text at once, line by line (the reader
# goes piece by piece and keeps offsets).
MARKER_START = re.compile(
    r"[ \t]*(?:\*+[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG E-?(?:BOOK|TEXT)\b"
    r"|\*END\*THE SMALL PRINT! FOR PUBLIC DOMAIN E-?(?:BOOK|TEXT)S\*).*",
    re.IGNORECASE,
)
MARKER_END = re.compile(
    r"[ \t]*(?:\*+[ \t]*)?END OF (?:THE |THIS )?PROJECT GUTENBERG(?:['’]S\b| E-?(?:BOOK|TEXT)\b).*",
    re.IGNORECASE,
)


def _read_by_hand(text: str) -> tuple[str, bool] | None:
    """(text, licence stripped) as the reader must read `text`, or None if it must refuse it."""
    nuls = text.count("\x00")
    not_text = len(re.findall("[\x01-\x08\x0e-\x19\x1b-\x1f\x7f-\x84\x86-\x9f\ufffd]", text))
    if nuls > len(text) - nuls or not_text > 0.04 * (len(text) - nuls):
        return None  # binary: more NUL than text, or over 4% control characters
    text = text.replace("\x00", "")  # stray NULs go as the bytes are decoded: "\r\0\n" is CRLF
    text = re.sub("\r\n|[\r\x85\u2028\u2029]", "\n", text)
    text = re.sub("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]", "", text)
    lines = unicodedata.normalize("NFC", text).split("\n")
    starts = [i for i, line in enumerate(lines) if MARKER_START.fullmatch(line)]
    ends = [i for i, line in enumerate(lines) if MARKER_END.fullmatch(line)]
    if starts:
        ends = [i for i in ends if i > starts[0]]  # a footer comes after the first header
        first_end = ends[0] if ends else len(lines)
        lines = lines[[i for i in starts if i < first_end][-1] + 1 : first_end]
    elif ends:
        lines = lines[: ends[0]]
    while lines and not lines[0].strip():
        lines.pop(0)
    body = "\n".join(lines).rstrip()
    return (body + "\n", bool(starts or ends)) if body else None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                *("a", "é", "e\u0301", "Ω", " ", "\t", "\n", "\r", "\r\n", "\u2028"),
                *("\x00", "\x0c", "\x07", "\ufeff"),
                "*** START OF THE PROJECT GUTENBERG EBOOK Z ***",
                "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*",
                "END OF THE PROJECT GUTENBERG EBOOK Z",
                "END OF THE PROJECT GUTENBERG",
            ]
        ),
        max_size=40,
    ).map("".join),
    st.integers(1, 9),
)
def test_reading_follows_the_rules_in_chunks_of_any_size(text: str, chunk_bytes: int):
    data = text.encode("utf-8")
    # NULs crowding one byte of each pair are read as UTF-16 (tested above): one in ten pairs
    # or more, with at most a quarter as many on the other byte.
    even, odd = data[0::2].count(0), data[1::2].count(0)
    pairs = len(data) // 2
    crowded = [0 < n >= 0.1 * pairs and other <= n / 4 for n, other in ((odd, even), (even, odd))]
    assume(len(data) % 2 or not any(crowded))
    expected = _read_by_hand(text)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", BookgenWarning)
        path = _write(Path(folder), data)
        if expected is None:
            with pytest.raises(BookgenError, match="book.txt: (the file is empty|looks like)"):
                _read_in_chunks(path, chunk_bytes)
            return
        scan, read = _read_in_chunks(path, chunk_bytes)
        assert (read, scan.gutenberg_stripped) == expected
        assert read_document(path).text == read
        # Read again, the text is unchanged: it holds nothing the reader would still clean.
        assert read_document(_write(Path(folder), read.encode("utf-8"))).text == read


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 9))
def test_hostile_bytes_are_read_cleanly_or_refused_in_any_chunks(data: bytes, chunk_bytes: int):
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", BookgenWarning)
        path = _write(Path(folder), data)
        try:
            text = read_document(path).text
        except BookgenError as error:
            with pytest.raises(BookgenError, match=re.escape(str(error))):
                _read_in_chunks(path, chunk_bytes)
            return
        assert _read_in_chunks(path, chunk_bytes)[1] == text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\r]", text)
    assert text.endswith("\n") and not text.startswith("\n") and text.strip()
    assert unicodedata.is_normalized("NFC", text)
