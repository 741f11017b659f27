"""`bookgen explain`: the rows and windows it shows are the text the batcher hands training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from bookgen import checkpoint
from bookgen.checkpoint import load_checkpoint, read_manifest
from bookgen.cli import app
from bookgen.corpus import BookFile, open_corpus, read_document
from bookgen.data import prepare_data
from bookgen.errors import BookgenError
from bookgen.explain import Crossing, explain_renderables, explain_streams
from bookgen.settings import TrainConfig
from bookgen.streams import StreamBatcher
from bookgen.tokencache import split_point
from tests.by_hand import CLOSE, bits_per_char_by_hand, nats_by_hand, stream_by_hand

runner = CliRunner()


def training_text(path: Path) -> str:
    """The part of a book training reads: its first 90%, as the cleaned text."""
    text = read_document(path).text
    return text[: split_point(len(text), 0.1)]


@pytest.fixture
def two_books(tmp_path: Path) -> list[Path]:
    """Two books of 220 characters; 198 of each are training text: 396 tokens in all."""
    first, second = tmp_path / "first-book.txt", tmp_path / "second-book.txt"
    first.write_text("abcdefghij\n" * 20, encoding="utf-8")
    second.write_text("0123456789\n" * 20, encoding="utf-8")
    return [first, second]


def rendered(renderables, width: int = 100) -> str:
    console = Console(record=True, width=width, file=open("/dev/null", "w"))  # noqa: SIM115
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def test_rows_tile_the_book_and_windows_are_its_text(tiny_book: Path):
    text = training_text(tiny_book)  # 2,493 characters
    explanation = explain_streams([tiny_book], batch_size=4, bptt=16, windows=1000)
    length = explanation.row_length
    assert (explanation.tokens, length, explanation.windows_per_epoch) == (2493, 623, 39)
    assert explanation.left_out == 2492 - 4 * 623
    for row, start in enumerate(explanation.rows):
        assert start.token == row * length  # row i+1 starts where row i's share ends
        assert (start.book, start.book_token) == ("tiny", row * length)
        assert start.snippet == text[start.token : start.token + 40]
        cells = explanation.windows[row]
        assert [cell.begin for cell in cells] == list(range(0, length, 16))
        assert {len(cell.text) for cell in cells[:-1]} == {16} and len(cells[-1].text) == 623 % 16
        assert "".join(cell.text for cell in cells) == text[start.token : start.token + length]
    assert explanation.windows[0][0].resets == (0,)  # the stream starts with a book
    assert all(cell.resets == () for cells in explanation.windows[1:] for cell in cells)


def test_two_books_cross_in_the_right_row_and_window(two_books: list[Path]):
    explanation = explain_streams(two_books, batch_size=3, bptt=16, windows=5)
    # 396 tokens in 3 rows of 131; the second book starts at token 198 = row 1, column 67.
    assert explanation.row_length == 131 and explanation.books == ["first-book", "second-book"]
    cell = explanation.windows[1][4]  # row 1, tokens 64-79 of the row: stream 195-210
    assert (cell.text, cell.resets) == ("ij\n0123456789\n01", (3,))
    first = explanation.windows[0][0]  # row 0 starts the stream, and the first book
    assert explanation.crossings == [
        Crossing(0, window=0, column=0, token=0, book="first-book", window_text=first),
        Crossing(1, window=4, column=67, token=198, book="second-book", window_text=cell),
    ]
    rows = explanation.rows
    assert [(r.book, r.book_token) for r in rows] == [
        ("first-book", 0),
        ("first-book", 131),
        ("second-book", 262 - 198),
    ]
    text = rendered(explain_renderables(explanation, width=100))
    assert "row 1, window 4, token 67 of the row: state reset: second-book begins" in text
    assert "ij⏎|*012345678…" in text  # cut to fit 100 columns, around the reset
    assert "2 of the 3 rows stay in one book: their state resets only at the start" in text
    assert "396 tokens" in text and "L = 131 tokens" in text and "One epoch is 9 windows" in text


def test_reset_marks_are_where_the_batcher_resets(two_books: list[Path]):
    explanation = explain_streams(two_books, batch_size=3, bptt=16, windows=9)
    config = TrainConfig(batch_size=3, bptt=16, epochs=1)
    batcher = StreamBatcher(prepare_data(open_corpus(two_books), config).train, 3, 16)
    for index, window in enumerate(batcher.windows()):
        for row in range(3):
            flagged = tuple(window.resets[:, row].nonzero().flatten().tolist())
            assert explanation.windows[row][index].resets == flagged


def test_defaults_are_trainings(tiny_book: Path):
    explanation = explain_streams([tiny_book])
    assert (explanation.batch_size, explanation.bptt) == (32, 64)
    assert explanation.batch_source == "training's default"
    assert (explanation.row_length, explanation.windows_per_epoch) == (77, 2)
    assert len(explanation.windows[0]) == 2  # fewer than the 3 asked: an epoch has only 2
    batcher = StreamBatcher(stream_by_hand([range(1, 200)], 199), 1, 64)
    assert explanation.epoch_shifts == [batcher.epoch_shift(e, 1337) for e in (1, 2)]
    assert (explanation.val_tokens, explanation.val_rows) == (2771 - 2493, 4)
    text = rendered(explain_renderables(explanation, width=120))
    assert "B = 32 is training's default (16 in a short --minutes run" in text


def test_word_level_rows(tiny_book: Path):
    explanation = explain_streams([tiny_book], batch_size=2, bptt=16, windows=2, level="word")
    assert explanation.level == "word"
    assert explanation.rows[0].snippet == "It was the best of times, it was the"
    assert "".join(c.text for c in explanation.windows[0]).startswith(explanation.rows[0].snippet)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(batch_size=0), "--batch-size must be at least 1"),
        (dict(windows=0), "--windows must be at least 1, not 0"),
        (
            dict(batch_size=32, bptt=100),
            "2,493 training tokens (the first 90% of each book) are too few for 32 rows of 100: "
            "they fill 24, and training would use only 24 rows; try --batch-size 24",
        ),
        (dict(batch_size=1, bptt=5000), "too few for one window of 5000: use --bptt 2492 or less"),
        (dict(level="syllable"), "--level must be char or word, not 'syllable'"),
    ],
)
def test_errors_are_one_line(tiny_book: Path, options: dict, message: str):
    with pytest.raises(BookgenError) as error:
        explain_streams([tiny_book], **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_book(tmp_path: Path):
    with pytest.raises(BookgenError, match="nope.txt: no such file or folder"):
        explain_streams([tmp_path / "nope.txt"])


def test_checkpoint_settings_and_what_the_state_is_worth(
    trained: Path, tiny_book: Path, monkeypatch
):
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tiny_book.parent / "cache"))
    explanation = explain_streams([tiny_book], checkpoint=trained)
    assert (explanation.batch_size, explanation.bptt) == (4, 16)  # TINY_MODEL's
    assert explanation.batch_source == "the checkpoint's"
    assert explain_streams([tiny_book], batch_size=2, checkpoint=trained).batch_size == 2
    with pytest.raises(BookgenError, match="--level word does not match the checkpoint"):
        explain_streams([tiny_book], checkpoint=trained, level="word")
    # Worked out by hand: the whole book in 16 rows of 173 characters, each row read in one
    # forward pass (carried), or in passes of 16 from a zero state (reset every T).
    saved = load_checkpoint(trained)
    text = read_document(tiny_book).text
    ids = saved.tokenizer.encode(text)
    by_hand = {
        every: bits_per_char_by_hand(
            nats_by_hand(saved.model, [ids], 16, reset_every=every).mean().item(),
            len(ids),
            0,
            len(text),
        )
        for every in (None, 16)
    }
    value = explanation.state_value  # measured from the books it has read
    carried, reset = value["carried_bits_per_char"], value["reset_bits_per_char"]
    assert value["reset_every"] == 16
    torch.testing.assert_close((carried, reset), (by_hand[None], by_hand[16]), **CLOSE)
    assert value["difference"] == reset - carried > 0  # the trained model's state is worth bits
    args = ["explain", str(tiny_book), "--checkpoint", str(trained)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(rf"carried across windows \(as trained\)\W+{carried:.4f}", result.stdout)
    assert re.search(rf"reset every 16 tokens\W+{reset:.4f}", result.stdout)


def test_explain_with_a_checkpoint_hashes_each_book_once_and_loads_the_model_once(
    trained: Path, two_books: list[Path], monkeypatch
):
    # The books are read twice through the token cache (split as training reads them, whole to
    # score the state) and the model serves the settings, the tokenizer and the scores.
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(two_books[0].parent / "cache"))
    hashed, loaded = [], []
    real_hash, real_read = BookFile.sha256, checkpoint.read_tensors

    def sha256(book, on_bytes=None):
        hashed.append(Path(book.path).name)
        return real_hash(book, on_bytes)

    def read_tensors(folder, name):
        loaded.append(name)
        return real_read(folder, name)

    monkeypatch.setattr(BookFile, "sha256", sha256)
    monkeypatch.setattr(checkpoint, "read_tensors", read_tensors)
    for _ in range(2):  # tokenized the first time, from the token cache the second
        hashed.clear(), loaded.clear()
        explanation = explain_streams(two_books, checkpoint=trained)
        assert explanation.state_value["tokens"] > 0
        assert sorted(hashed) == sorted(p.name for p in two_books)
        assert loaded == [read_manifest(trained)["files"]["best_model"]]


def test_cli_explain(two_books: list[Path], tiny_book: Path):
    args = ["explain", *map(str, two_books), "--batch-size", "3", "--bptt", "16", "--windows", "5"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "row 1, window 4, token 67 of the row: state reset: second-book begins" in result.stdout
    assert "ij⏎|*0123456789⏎01" in result.stdout  # 200 columns: the whole window
    bad = runner.invoke(app, ["explain", str(tiny_book), "--windows", "0"])
    assert bad.exit_code == 2 and "error: --windows must be at least 1, not 0" in bad.stderr


def test_many_books_list_the_first_twenty(tmp_path: Path):
    for index in range(25):
        (tmp_path / f"book-{index:02}.txt").write_text(f"book {index:02}\n" * 4, encoding="utf-8")
    explanation = explain_streams([tmp_path], batch_size=2, bptt=8)
    assert [c.book for c in explanation.crossings] == [f"book-{i:02}" for i in range(25)]
    text = rendered(explain_renderables(explanation))
    assert "state reset: book-19 begins" in text and "book-20 begins" not in text
    assert "and 5 more book starts" in text
