"""bookgen style: copying, style statistics and distances, on texts small enough to check."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bookgen
from bookgen.cli import app
from bookgen.corpus import read_document
from bookgen.errors import BookgenError
from bookgen.style import (
    Alphabet,
    Book,
    NgramModel,
    StyleSettings,
    burrows_delta,
    compare_style,
    compare_texts,
    copy_lengths,
    moving_type_token_ratio,
    quoted_characters,
)
from tests.conftest import TINY_BOOK, TINY_MODEL, shared_corpus

runner = CliRunner()
RUN = TINY_BOOK[81:118]  # ' was the age of foolishness, it was t': 37 characters of the book


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def train_on_tiny_book(folder: Path) -> tuple[Path, Path]:
    """(book, checkpoint) of the tiny book. Style reads only the manifest: one step will do."""
    book = write(folder, "tiny.txt", TINY_BOOK)
    bookgen.train(book, folder / "model", steps=1, eval_every=1, **TINY_MODEL)
    return book, folder / "model"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_on_tiny_book(tmp_path_factory.mktemp("tiny"))


# --- copying ---------------------------------------------------------------------------------


def test_a_copied_run_of_37_characters(tiny: tuple[Path, Path], tmp_path: Path):
    _, trained = tiny
    # Q occurs nowhere in the tiny book, so the copy can reach no further on either side.
    text = write(tmp_path, "sample.txt", "QQ" + RUN + "QQ")
    report = compare_style(text, trained)
    assert len(RUN) == 37
    assert report.longest_copy == 37
    assert report.longest_copy_text == RUN
    # 42 characters (read as a book is: with a final line end) hold 23 runs of 20; those
    # starting at the run's first 18 characters lie inside it.
    assert report.copied_20gram_share == pytest.approx(18 / 23)
    # Wrapped at another place, with blank lines around: the same copy.
    wrapped = RUN.replace(" it ", "\n it\n\n")
    report = compare_style(write(tmp_path, "wrapped.txt", "QQ" + wrapped + "QQ"), trained)
    assert (report.longest_copy, report.longest_copy_text) == (37, RUN)


def test_copy_lengths_match_a_direct_search():
    """Matching statistics from the suffix array equal the longest prefix found by `in`."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        text = rng.integers(2, 5, size=rng.integers(1, 25)).astype(np.int32)
        books = [rng.integers(2, 5, size=rng.integers(1, 30)).astype(np.int32) for _ in "ab"]
        as_str = ["".join(chr(64 + i) for i in ids) for ids in (text, *books)]
        expected = []
        for start in range(len(text)):
            length = 0
            while start + length < len(text) and any(
                as_str[0][start : start + length + 1] in book for book in as_str[1:]
            ):
                length += 1
            expected.append(length)
        assert copy_lengths(text, books).tolist() == expected


# --- style statistics ------------------------------------------------------------------------


def test_statistics_of_a_small_text(tiny: tuple[Path, Path], tmp_path: Path):
    _, trained = tiny
    text = "“It was the best of times,” he said. It was the worst of times -- was it? Yes!\n"
    report = compare_style(write(tmp_path, "sample.txt", text), trained)
    stats = report.text_stats
    # Cleaned as a book is read: the final line end stays, so 79 characters.
    assert stats.characters == 79
    assert stats.words == 17
    assert stats.sentences == 3  # "...he said." / "...was it?" / "Yes!"
    assert stats.mean_sentence_words == pytest.approx(17 / 3)
    # It was the best of times 19, he said 6, It was the worst of times 20, was it 5, Yes 3
    assert stats.mean_word_chars == pytest.approx(53 / 17)
    marks = stats.punctuation_per_1000_chars
    assert marks["."] == pytest.approx(1000 / 79)
    assert marks[","] == pytest.approx(1000 / 79)
    assert marks["—"] == pytest.approx(1000 / 79)  # "--" is a dash
    assert marks["?"] == marks["!"] == pytest.approx(1000 / 79)
    assert marks[";"] == 0
    assert stats.dialogue_share == pytest.approx(len("It was the best of times,") / 79)
    assert stats.type_token_ratio == pytest.approx(10 / 17)  # under one 500-word window
    # The tiny book's function words: "it", "was", "the", "of", 96 times each (ties go in
    # alphabetical order).
    rates = stats.function_words_per_1000_words
    assert list(rates) == ["it", "of", "the", "was"]
    assert rates["was"] == pytest.approx(3 * 1000 / 17)
    assert rates["of"] == pytest.approx(2 * 1000 / 17)
    book = report.book_stats["tiny"]
    assert (book.words, book.sentences) == (12 * 48, 12)  # 8 clauses of 6 words, 12 times
    assert book.function_words_per_1000_words["it"] == pytest.approx(1000 / 6)


def test_moving_type_token_ratio_by_hand():
    # windows of 2: "a b", "b a", "a c" -> 2, 2, 2 distinct of 2
    assert moving_type_token_ratio("a b a c".split(), 2) == pytest.approx(1.0)
    # "a a", "a b", "b b" -> 1, 2, 1
    assert moving_type_token_ratio("a a b b".split(), 2) == pytest.approx(4 / 6)
    words = list(np.random.default_rng(1).choice(list("abcdefgh"), size=57))
    windows = [len(set(words[s : s + 10])) / 10 for s in range(len(words) - 9)]
    assert moving_type_token_ratio(words, 10) == pytest.approx(np.mean(windows))


@pytest.mark.parametrize(
    "text, quoted",
    [
        ("“Hi,” she said. “Go.”", len("Hi,Go.")),
        # A speech over two paragraphs: the first one's quote closes at its end.
        ('"Stay\n\n"Go," he said.', len("StayGo,")),
        # Single quotes; the boys' and don't are not quotes.
        ("'Hello,' said the boys' dog. Don't.", len("Hello,")),
        ("‘Hello,’ said Alice’s cat.", len("Hello,")),
    ],
)
def test_characters_in_quotation_marks(text: str, quoted: int):
    assert quoted_characters(text) == quoted


# --- distances -------------------------------------------------------------------------------


def test_burrows_delta_by_hand():
    """Chunks of 2 words: x = [a b][a a], y = [b b][a b]. Each of a, b has mean 0.5 and
    standard deviation sqrt(1/8) over the four chunks. The text (a a a b) has the profile of
    x, exactly opposite to y's: z = (+1/sqrt2, -1/sqrt2) against (-1/sqrt2, +1/sqrt2)."""
    books = {"x": "a b a a".split(), "y": "b b a b".split()}
    settings = StyleSettings(most_frequent_words=2, chunk_words=2)
    distances = burrows_delta("a a a b".split(), books, settings)
    assert distances["x"] == pytest.approx((0.0, 0.0))
    assert distances["y"] == pytest.approx((math.sqrt(2), 2.0))


def test_ngram_bits_per_char_by_hand():
    """Book "aab", text "ab", order 2, Witten-Bell.

    Order 1: 3 characters, 2 kinds: P(a) = (2 + 2/2) / 5 = 3/5, P(b) = (1 + 2/2) / 5 = 2/5.
    Order 2: after the start (once, then a): P(a) = (1 + 1 * 3/5) / 2 = 4/5;
    after a (twice, then a and b): P(b) = (1 + 2 * 2/5) / 4 = 9/20.
    """
    alphabet = Alphabet.of(["aab", "ab"])
    model = NgramModel.fit(alphabet.ids("aab"), alphabet.size, order=2)
    expected = -(math.log2(4 / 5) + math.log2(9 / 20)) / 2
    assert model.bits_per_char(alphabet.ids("ab")) == pytest.approx(expected)
    unigram = NgramModel.fit(alphabet.ids("aab"), alphabet.size, order=1)
    assert unigram.bits_per_char(alphabet.ids("ab")) == pytest.approx(
        -(math.log2(3 / 5) + math.log2(2 / 5)) / 2
    )


def test_books_too_short_for_delta(tiny: tuple[Path, Path], tmp_path: Path):
    _, trained = tiny
    # The tiny book has 576 words, under one 2000-word chunk: no Delta can be z-scored.
    report = compare_style(write(tmp_path, "sample.txt", "It was the age of wisdom.\n"), trained)
    assert report.distances["tiny"].delta is None
    assert report.distances["tiny"].cosine_delta is None
    assert report.closest == "tiny"


def test_against_books_by_file_and_folder(tiny: tuple[Path, Path], tmp_path: Path):
    tiny_book, trained = tiny
    other = tmp_path / "others"
    other.mkdir()
    write(other, "zoo.txt", "Zebras and quokkas queue quietly by the zoo gate.\n" * 30)
    text = write(tmp_path, "sample.txt", "it was the age of foolishness, it was the epoch\n")
    # The training book itself among them: it is not compared twice.
    report = compare_style(text, trained, against=[str(other), str(tiny_book)])
    assert list(report.distances) == ["tiny", "zoo"]
    assert report.distances["tiny"].trained_on and not report.distances["zoo"].trained_on
    bits = {name: d.ngram_bits_per_char for name, d in report.distances.items()}
    assert bits["tiny"] < bits["zoo"]
    assert report.closest == "tiny"


# --- errors ----------------------------------------------------------------------------------


def test_errors_are_one_line(tmp_path: Path):
    tiny_book, trained = train_on_tiny_book(tmp_path)
    with pytest.raises(BookgenError, match="no such file"):
        compare_style(tmp_path / "nope.txt", trained)
    with pytest.raises(BookgenError, match="the file is empty"):
        compare_style(write(tmp_path, "empty.txt", "\n\n"), trained)
    with pytest.raises(BookgenError, match="no words in the text"):
        compare_style(write(tmp_path, "digits.txt", "1234 5678 -- !\n"), trained)
    with pytest.raises(BookgenError, match="not a bookgen checkpoint"):
        compare_style(tiny_book, tmp_path)
    shutil.move(tiny_book, tmp_path / "moved.txt")
    with pytest.raises(BookgenError, match="'tiny' is not where it was .*put it back"):
        compare_style(tmp_path / "moved.txt", trained)


# --- the command -----------------------------------------------------------------------------


def test_cli_json(tiny: tuple[Path, Path], tmp_path: Path):
    _, trained = tiny
    text = write(tmp_path, "sample.txt", "QQ" + RUN + "QQ")
    result = runner.invoke(app, ["style", str(text), "--checkpoint", str(trained), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"longest_copy", "copied_20gram_share", "closest", "distances"} <= set(report)
    assert report["longest_copy"] == 37 and report["closest"] == "tiny"
    assert set(report["distances"]["tiny"]) == {
        "delta",
        "cosine_delta",
        "ngram_bits_per_char",
        "trained_on",
    }
    assert report["text_stats"]["characters"] == 42  # with the final line end
    assert set(report["book_stats"]) == {"tiny"}


def test_cli_tables_and_errors(tiny: tuple[Path, Path], tmp_path: Path):
    _, trained = tiny
    text = write(tmp_path, "sample.txt", "QQ" + RUN + "QQ")
    result = runner.invoke(app, ["style", str(text), "--checkpoint", str(trained)])
    assert result.exit_code == 0, result.output
    assert "37 characters" in result.stdout
    assert "closest: tiny (fewest bits per character" in result.stdout
    missing = runner.invoke(
        app, ["style", str(tmp_path / "nope.txt"), "--checkpoint", str(trained)]
    )
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.txt'}: no such file"


def test_the_cli_does_not_import_nltk():
    """Only `bookgen style` pays for importing nltk."""
    code = "import bookgen.cli, sys; print('nltk' in sys.modules, 'pydivsufsort' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- real books ------------------------------------------------------------------------------


def test_held_out_text_is_attributed_to_its_author(tmp_path: Path):
    """5,000 characters cut out of Moby-Dick are closest to the rest of Moby-Dick, among four
    novels, by all three measures."""
    folder = shared_corpus("gutenberg")
    moby = read_document(folder / "moby-dick.txt").text
    held_out = moby[600_000:605_000]
    books = [Book("moby-dick", moby[:600_000] + moby[605_000:], True)]
    for name in ("pride-and-prejudice", "sherlock-holmes", "little-women"):
        books.append(Book(name, read_document(folder / f"{name}.txt").text, False))
    report = compare_texts(held_out, books, StyleSettings())
    assert report.closest == "moby-dick"
    for measure in ("delta", "cosine_delta", "ngram_bits_per_char"):
        distance = {name: getattr(d, measure) for name, d in report.distances.items()}
        assert min(distance, key=distance.__getitem__) == "moby-dick", measure
    assert report.longest_copy < 100  # cut out of the book: no long copy


def test_a_models_samples_are_attributed_to_its_book(tmp_path: Path):
    """A small model trained briefly on Alice writes text that `style` puts nearest Alice, not
    the other novels (by the n-gram measure that decides `closest`). 75 steps, not 150: the
    margin is wider (7.23 bits per character against 8.26 for Moby-Dick, seeds 1-3 alike; 4.91
    against 5.34 at 150), and half the training time of the test."""
    folder = shared_corpus("gutenberg")
    out = tmp_path / "alice"
    options = dict(TINY_MODEL, hidden_size=128, batch_size=16, bptt=64, learning_rate=1e-2)
    bookgen.train(folder / "alice-in-wonderland.txt", out, steps=75, eval_every=75, **options)
    sample = tmp_path / "sample.txt"
    sample.write_text("".join(bookgen.load(out).generate("Alice", 3000, random_seed=1)))
    others = [str(folder / f"{name}.txt") for name in ("moby-dick", "pride-and-prejudice")]
    report = compare_style(sample, out, against=others)
    assert report.closest == "alice-in-wonderland"
    bits = {name: d.ngram_bits_per_char for name, d in report.distances.items()}
    assert bits["alice-in-wonderland"] < min(bits["moby-dick"], bits["pride-and-prejudice"])
