"""Corpus loading: every way a book can be saved must give the same training text."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bookgen.corpus import (
    Document,
    clean_text,
    decode_bytes,
    expand_paths,
    read_corpus,
    read_document,
    strip_gutenberg,
)
from bookgen.errors import BookgenError

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


def test_0x85_with_ordinary_line_ends_is_an_ellipsis():
    assert decode_bytes(b"Wait\x85 what?\r\n") == ("Wait\u2026 what?\r\n", "windows-1252")


def test_bytes_windows_1252_leaves_undefined_decode_as_latin1():
    # Padded with text, or five control characters in seven would read as binary.
    data = b"\x81\x8d\x8f\x90\x9d \x80" + b" and plenty of ordinary words" * 5
    text, encoding = decode_bytes(data)
    assert (text[:7], encoding) == ("\x81\x8d\x8f\x90\x9d \u20ac", "windows-1252")


def test_utf16_text_starting_with_nul_is_not_taken_for_utf32():
    text = "\x00" + "Hello, world, a fine day. " * 5
    assert decode_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == (text, "utf-16")


def test_document_counts_and_short_repr(tmp_path):
    (tmp_path / "tiny.txt").write_text("abba\n", encoding="utf-8")
    document = read_document(str(tmp_path / "tiny.txt"))
    assert (document.chars, document.distinct_chars) == (5, 3)
    assert document.path == str(tmp_path / "tiny.txt")
    assert "abba" not in repr(document)
    assert isinstance(document, Document)


def test_clean_text_keeps_inner_whitespace_and_first_line_indent():
    assert clean_text("\n \n   Title  \n\n\n  body\t \n\n") == "   Title  \n\n\n  body\n"
    assert clean_text(" \t\n\r\n\f\x00") == ""


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_clean_text_is_idempotent_and_canonical(text):
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert "\r" not in cleaned and "\ufeff" not in cleaned
    assert cleaned == "" or (cleaned.endswith("\n") and not cleaned.endswith("\n\n"))


@settings(max_examples=100, deadline=None)
@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufeff\ufffd")),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]),
)
def test_unicode_text_round_trips_through_decode(text, encoding):
    assert decode_bytes(text.encode(encoding)) == (text, encoding)


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


def test_a_few_stray_nuls_are_fine():
    text, _ = decode_bytes(b"a" * 500 + b"\x00\x00" + b"b" * 500)
    assert clean_text(text) == "a" * 500 + "b" * 500 + "\n"


def test_broken_bom_file_is_refused():
    with pytest.raises(BookgenError, match="<bytes>: starts with a UTF-16 byte-order mark"):
        decode_bytes(codecs.BOM_UTF16_BE + b"\x00a\x00")  # odd length: truncated


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

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
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


@pytest.mark.parametrize(
    "text", [NEW_STYLE, OLDER_STYLE, SMALL_PRINT_STYLE, BOTH_HEADERS, FOOTER_ONLY]
)
def test_gutenberg_licence_is_stripped(text):
    assert strip_gutenberg(text) == (BODY, True)


def test_text_without_markers_is_unchanged():
    text = "  A book that mentions Project Gutenberg.\nEnd of the story.\n\n"
    assert strip_gutenberg(text) == (text, False)


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
