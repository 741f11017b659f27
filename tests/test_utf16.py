"""UTF-16 without a byte-order mark, in any script: a Chinese or Japanese book saved so used to
be refused as "a binary file" (its NULs); it reads now, and a binary file is still refused."""

from __future__ import annotations

import io
import random
import warnings
import zipfile

import pytest

from bookgen import encodings
from bookgen.corpus import read_document
from bookgen.errors import BookgenError, BookgenWarning
from tests.conftest import shared_corpus
from tests.test_corpus import EXPECTED, _png
from tests.test_encodings import CHINESE, JAPANESE

TEXTS = {"chinese": CHINESE, "japanese": JAPANESE, "english": EXPECTED}


@pytest.mark.parametrize("byte_order", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("language", TEXTS)
def test_utf16_without_a_byte_order_mark_reads_back_identical(language, byte_order, tmp_path):
    text = TEXTS[language]
    path = tmp_path / "book.txt"
    path.write_bytes(text.encode(byte_order))
    assert not path.read_bytes().startswith((b"\xff\xfe", b"\xfe\xff"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BookgenWarning)  # no NUL or mojibake warning either
        document = read_document(path)
    assert (document.text, document.encoding) == (text, byte_order)


@pytest.mark.parametrize("byte_order", ["utf-16-le", "utf-16-be"])
def test_the_shared_cjk_books_saved_as_utf16_without_a_mark_read_as_they_do_now(
    byte_order, tmp_path
):
    for name in ("cjk/hongloumeng-gb18030.txt", "cjk/kokoro-sjis.txt"):
        book = shared_corpus(name)
        as_shared = read_document(book)
        # The file itself, markup and all, in UTF-16: こころ's Aozora markup must still go.
        raw = book.read_bytes().decode(as_shared.encoding).lstrip("\ufeff")
        path = tmp_path / "book.txt"
        path.write_bytes(raw.encode(byte_order))
        document = read_document(path)
        assert document.text == as_shared.text, name
        assert document.encoding == byte_order
        assert document.markup_stripped == as_shared.markup_stripped


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("book.txt", CHINESE * 20)
        archive.writestr("notes.txt", EXPECTED)
    return buffer.getvalue()


BINARIES = {
    "random bytes": lambda: random.Random(4).randbytes(20_000),
    "png": _png,
    "zip": _zip,
    # A line end in each byte order, then junk: the NULs and line ends UTF-16 needs, no text.
    "line ends and random bytes": lambda: b"\n\x00\x00\n" + random.Random(6).randbytes(4_000),
}


@pytest.mark.parametrize("kind", BINARIES)
def test_a_binary_file_is_refused_with_the_message_it_had_before(kind, tmp_path, monkeypatch):
    data = BINARIES[kind]()
    data += b"\x00" * (len(data) % 2)  # even, with NULs: the UTF-16 test is asked
    assert data.count(0)
    path = tmp_path / "blob.txt"
    path.write_bytes(data)
    with pytest.raises(BookgenError, match="blob.txt: looks like a binary file, not text") as now:
        read_document(path)
    monkeypatch.setattr(encodings, "utf16_without_bom", lambda head: None)  # as before
    with pytest.raises(BookgenError) as before:
        read_document(path)
    assert str(now.value) == str(before.value)


def test_a_western_text_with_nuls_where_utf16_line_ends_would_be_is_not_taken_for_utf16(
    tmp_path,
):
    # Every line padded to an even length and ended "\n\0": in UTF-16 these are line ends, but
    # the letters paired up give unassigned code points (U+2065 is "e ").
    lines = [line + b" " * (len(line) % 2) for line in EXPECTED.encode("cp1252").split(b"\n")]
    data = b"".join(line + b"\n\x00" for line in lines[:-1])
    assert "\n" in data.decode("utf-16-le")
    assert encodings.utf16_without_bom(data) is None
    path = tmp_path / "book.txt"
    path.write_bytes(data)
    with pytest.warns(BookgenWarning, match="stray NULs"):
        document = read_document(path)
    padded = b"".join(line + b"\n" for line in lines[:-1]).decode("cp1252")
    assert (document.text, document.encoding) == (padded.rstrip() + "\n", "windows-1252")


def test_a_text_that_reads_in_both_byte_orders_is_no_guess_to_make():
    # 乎 is 4E 4E either way; "\r" in one order is U+0D00, a Malayalam sign, in the other.
    assert encodings.utf16_without_bom("乎乎\r\n".encode("utf-16-le")) == "utf-16-le"
    assert encodings.utf16_without_bom("乎乎\r\u0d00".encode("utf-16-le")) is None


def test_without_a_line_end_utf16_is_not_guessed():
    assert encodings.utf16_without_bom("宝玉听了，忙笑道".encode("utf-16-le")) is None
    assert encodings.utf16_without_bom("宝玉听了，忙笑道\n".encode("utf-16-le")) == "utf-16-le"
