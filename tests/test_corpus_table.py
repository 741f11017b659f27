"""`bookgen corpus` on an 80-column terminal: every book on one line, no word cut, and what was
stripped (the Gutenberg licence, Aozora Bunko's markup) shown per book."""

from __future__ import annotations

import re

from rich.cells import cell_len
from typer.testing import CliRunner

from bookgen.cli import app
from tests.conftest import shared_corpus
from tests.test_aozora import MARKED
from tests.test_corpus import CP1252_BODY
from tests.test_encodings import CHINESE, POLISH

runner = CliRunner()


def _corpus(*arguments, columns: int = 80) -> list[str]:
    """The table's lines, as an `columns`-wide terminal shows them."""
    shown = runner.invoke(app, ["corpus", *map(str, arguments)], env={"COLUMNS": str(columns)})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert all(cell_len(line) <= columns for line in lines), shown.stdout
    assert "…" not in shown.stdout  # nothing cut short with an ellipsis
    return lines


def _row(lines: list[str], book: str) -> list[str]:
    """The cells of `book`'s row: the line on which it begins and the lines that continue it
    (a cell wrapped between words), each cell's pieces joined by a space."""
    cells = [[cell.strip() for cell in line.split("│")] for line in lines if "│" in line]
    begins = [index for index, row in enumerate(cells) if row[0] == book]
    assert len(begins) == 1, (book, lines)
    row = cells[begins[0]]
    for more in cells[begins[0] + 1 :]:
        if more[0]:
            break
        row = [f"{have} {piece}" if piece else have for have, piece in zip(row, more, strict=True)]
    return row


def test_the_shared_cjk_books_and_a_gutenberg_book_fit_80_columns_whole():
    books = [
        shared_corpus("cjk/hongloumeng-gb18030.txt"),
        shared_corpus("cjk/kokoro-sjis.txt"),
        shared_corpus("gutenberg/moby-dick.txt"),
    ]
    lines = _corpus(*books)
    header = ["book", "encoding", "stripped", "characters", "distinct"]
    assert [cell.strip() for cell in lines[1].split("┃")] == header
    hongloumeng = ["hongloumeng-gb18030", "gb18030", "-", "887,597", "4,436"]  # by its BOM
    assert _row(lines, "hongloumeng-gb18030") == hongloumeng
    assert _row(lines, "kokoro-sjis") == [
        "kokoro-sjis",
        "cp932 (1.00)",
        "Aozora markup",
        "162,491",
        "2,063",
    ]
    assert _row(lines, "moby-dick")[1:3] == ["windows-1252", "Gutenberg licence"]


def _small_books(tmp_path):
    gutenberg = tmp_path / "pride-and-prejudice.txt"
    gutenberg.write_bytes(
        b"The Project Gutenberg eBook of X\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
        + CP1252_BODY
        + b"*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence\n"
    )
    aozora = tmp_path / "kokoro-aozora.txt"
    aozora.write_bytes(MARKED.encode("cp932"))
    chinese = tmp_path / "红楼梦前八十回脂评本.txt"  # 10 characters, 20 columns wide
    chinese.write_bytes((CHINESE * 20).encode("gb18030"))
    polish = tmp_path / "pan-tadeusz.txt"
    polish.write_bytes((POLISH * 4).encode("iso8859_2"))
    plain = tmp_path / "plain.txt"
    plain.write_text("Nothing to strip here.\n", encoding="utf-8")
    return [gutenberg, aozora, chinese, polish, plain]


def test_small_books_show_their_encoding_how_sure_and_what_was_stripped(tmp_path):
    lines = _corpus(*_small_books(tmp_path))
    assert _row(lines, "pride-and-prejudice")[1:3] == ["windows-1252", "Gutenberg licence"]
    # chardet's figure for a short text is below its 1.00 for the whole books.
    assert re.fullmatch(r"cp932 \(0\.\d\d\)", _row(lines, "kokoro-aozora")[1])
    assert _row(lines, "kokoro-aozora")[2] == "Aozora markup"
    assert re.fullmatch(r"gb18030 \([01]\.\d\d\)", _row(lines, "红楼梦前八十回脂评本")[1])
    assert _row(lines, "红楼梦前八十回脂评本")[2] == "-"
    assert _row(lines, "plain") == ["plain", "utf-8", "-", "23", "14"]
    encoding = _row(lines, "pan-tadeusz")[1]
    assert re.fullmatch(r"(iso8859-2|cp1250) \(0\.\d\d\)", encoding), encoding
    assert lines[-1].strip() == "encoding (0-1): how sure the detector was"


def test_kept_markup_is_not_said_to_be_stripped(tmp_path):
    aozora = tmp_path / "kokoro-aozora.txt"
    aozora.write_text(MARKED, encoding="utf-8")
    shown = runner.invoke(app, ["corpus", str(aozora), "--keep-markup"], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    assert _row(shown.stdout.splitlines(), "kokoro-aozora") == [
        "kokoro-aozora", "utf-8", "-", f"{len(MARKED):,}", f"{len(set(MARKED)):,}",
    ]  # fmt: skip
    assert "how sure" not in shown.stdout  # no detector was asked


def test_a_narrow_terminal_wraps_between_words_and_folds_only_a_long_name(tmp_path):
    books = _small_books(tmp_path)
    long_name = "a-book-with-a-long-name-rescued-from-an-old-disk"
    books[-1] = books[-1].rename(tmp_path / f"{long_name}.txt")
    for columns in (80, 60):
        lines = _corpus(*books, columns=columns)
        text = " ".join(cell.strip() for line in lines for cell in line.split("│"))
        for word in ("Gutenberg", "licence", "Aozora", "markup", "windows-1252", "gb18030"):
            assert f" {word} " in f" {text} ", (word, columns)
        # The name folds across lines (a file name has no spaces to wrap at), in order, whole.
        folded = "".join(line.split("│")[0].strip() for line in lines[3:] if "│" in line)
        assert long_name in folded
