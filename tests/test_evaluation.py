"""`bookgen eval` and `scoring.evaluate`, checked against the loss worked out by hand.

The expectations here never come from the code under test: each row of the stream is run
through the model in whole forward passes from a zero state (`tests/by_hand.py`), and bits per
character are total bits over characters counted from the text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bookgen
from bookgen.checkpoint import load_checkpoint
from bookgen.cli import app
from bookgen.context import RunContext
from bookgen.corpus import read_document
from bookgen.errors import BookgenError
from bookgen.evaluation import evaluate_texts
from bookgen.scoring import evaluate
from bookgen.streams import StreamBatcher
from tests.by_hand import CLOSE, bits_per_char_by_hand, nats_by_hand, stream_by_hand
from tests.conftest import TINY_BOOK, TINY_MODEL

runner = CliRunner()


@pytest.fixture
def two_books(tmp_path: Path, monkeypatch) -> list[Path]:
    """Two books in the tiny book's alphabet; the second begins inside a row."""
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(TINY_BOOK[:700], encoding="utf-8")
    second.write_text("it was the season of Light, it was the age of wisdom. " * 10)
    return [first, second]


def test_eval_is_the_loss_worked_out_by_hand_over_two_books(trained: Path, two_books: list[Path]):
    # 16 rows of 77 tokens, 5 windows of 16 each: the state must be carried from window to
    # window, zeroed where the second book begins (token 700: row 9, column 7), and the
    # prediction of that book's first character from the first book's last left out.
    saved = load_checkpoint(trained)
    texts = [read_document(path).text for path in two_books]
    books = [saved.tokenizer.encode(text) for text in texts]
    tokens, chars = sum(map(len, books)), sum(map(len, texts))
    assert (len(books[0]), tokens) == (700, 1240)  # rows of 1239 // 16 = 77; 700 = 9 * 77 + 7
    means = {}
    for every in (None, 5, 16):  # --reset-every N: forwards over N-token chunks of each row
        scores = evaluate_texts(two_books, trained, reset_every=every)
        expected = nats_by_hand(saved.model, books, 16, reset_every=every).mean().item()
        torch.testing.assert_close(scores["nats_per_token"], expected, **CLOSE)
        assert (scores["tokens"], scores["chars"], scores["unknown_chars"]) == (tokens, chars, 0)
        assert scores["perplexity"] == pytest.approx(math.exp(expected))
        by_hand = bits_per_char_by_hand(expected, tokens, 0, chars)
        torch.testing.assert_close(scores["bits_per_char"], by_hand, **CLOSE)
        means[every] = scores["nats_per_token"]
    # Trained, the model uses what it read before the window: carrying the state beats
    # zeroing it every window (T = 16), which beats reading one token at a time.
    one_token = evaluate_texts(two_books, trained, reset_every=1)["nats_per_token"]
    assert means[None] < means[16] < one_token


def test_evaluate_resets_every_n_tokens_and_reads_the_first_windows(trained: Path):
    # scoring.evaluate on a stream cut by hand: 3 rows of 36 tokens read in windows of 7, the
    # second book beginning at token 60 (row 1, column 24). --reset-every N zeroes the state at
    # columns 0, N, 2N... of every row, across window cuts; max_windows reads the rows' starts.
    saved = load_checkpoint(trained)
    encode = saved.tokenizer.encode
    books = [encode(TINY_BOOK[:60]), encode("it was the season of Darkness, it was the epochs.")]
    stream = stream_by_hand(books, chars=109)
    batcher = StreamBatcher(stream, 3, 7)
    assert (batcher.batch_size, batcher.row_length) == (3, 36)
    context = RunContext(torch.device("cpu"))
    for every in (None, 1, 5, 7, 10):
        expected = nats_by_hand(saved.model, books, 3, reset_every=every).mean().item()
        got = evaluate(saved.model, batcher, context, reset_every=every)
        torch.testing.assert_close(got, expected, **CLOSE)
    first_two = nats_by_hand(saved.model, books, 3, columns=14).mean().item()
    got = evaluate(saved.model, batcher, context, max_windows=2)
    torch.testing.assert_close(got, first_two, **CLOSE)


def test_unknown_characters_are_charged_8_bits_each(trained: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))
    text = tmp_path / "odd.txt"
    text.write_text("It was the best of times. ZZZZ QQQQ\n" * 10)
    scores = evaluate_texts([text], trained)
    saved = load_checkpoint(trained)
    ids = saved.tokenizer.encode(read_document(text).text)  # Z and Q read as the unknown id
    assert (len(ids), scores["unknown_chars"]) == (360, 80)  # never seen in the tiny book
    expected = nats_by_hand(saved.model, [ids], 16).mean().item()
    torch.testing.assert_close(scores["nats_per_token"], expected, **CLOSE)
    by_hand = bits_per_char_by_hand(expected, 360, 80, 360)
    torch.testing.assert_close(scores["bits_per_char"], by_hand, **CLOSE)


def test_word_bits_per_char_count_characters_and_unknown_words(tiny_book: Path, tmp_path: Path):
    # A word model scores ~15 tokens per 55 characters: bits per character divide the total bits
    # by characters, not tokens, and charge 8 bits for each character of an unknown word.
    bookgen.train(tiny_book, tmp_path / "words", steps=2, level="word", **TINY_MODEL)
    text = tmp_path / "odd.txt"
    text.write_text("It was the age of zebras, it was the epoch of quuxes.\n\n" * 20)
    scores = evaluate_texts([text], tmp_path / "words")
    saved = load_checkpoint(tmp_path / "words")
    cleaned = read_document(text).text
    ids = saved.tokenizer.encode(cleaned)
    unknown = 20 * len("zebras" + "quuxes")
    assert (scores["tokens"], scores["chars"]) == (len(ids), len(cleaned))
    assert scores["unknown_chars"] == unknown and len(ids) < len(cleaned) / 3
    expected = nats_by_hand(saved.model, [ids], 16).mean().item()
    torch.testing.assert_close(scores["nats_per_token"], expected, **CLOSE)
    by_hand = bits_per_char_by_hand(expected, len(ids), unknown, len(cleaned))
    torch.testing.assert_close(scores["bits_per_char"], by_hand, **CLOSE)


def test_eval_cli_json_and_errors(trained: Path, tiny_book: Path):
    result = runner.invoke(app, ["eval", str(tiny_book), "--checkpoint", str(trained), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert set(scores) == {
        "tokens",
        "chars",
        "nats_per_token",
        "perplexity",
        "bits_per_char",
        "unknown_chars",
    }
    bad = runner.invoke(
        app, ["eval", str(tiny_book), "--checkpoint", str(trained), "--reset-every", "0"]
    )
    assert bad.exit_code == 2 and "--reset-every must be at least 1" in bad.stderr
    with pytest.raises(BookgenError, match="no such file"):
        evaluate_texts([tiny_book.parent / "nope.txt"], trained)
