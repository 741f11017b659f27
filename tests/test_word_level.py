"""Word models end to end: train, save, sample readable prose, evaluate in bits per character."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tokenizers

import bookgen
from bookgen.checkpoint import load_checkpoint
from bookgen.errors import BookgenError, BookgenWarning
from bookgen.evaluation import evaluate_texts
from bookgen.trainer import Notice
from tests.conftest import TINY_MODEL

PROSE = (
    "“Don't you think so, Mr. Darcy?” said she. “I can't tell.”\n\n"
    "He said nothing; it was the best of times, and the worst of times.\n\n"
) * 40

WORD_MODEL = dict(TINY_MODEL, level="word", min_count=1, learning_rate=1e-2)


@pytest.fixture
def word_model(tmp_path: Path) -> Path:
    book = tmp_path / "prose.txt"
    book.write_text(PROSE)
    out = tmp_path / "words"
    bookgen.train(book, out, steps=300, eval_every=100, **WORD_MODEL)
    return out


def test_word_checkpoint_holds_a_huggingface_tokenizer(word_model: Path):
    hf = tokenizers.Tokenizer.from_file(str(word_model / "tokenizer.json"))
    loaded = load_checkpoint(word_model)
    text = "“Don't you think so, Mr. Darcy?”"
    assert hf.encode(text).ids == loaded.tokenizer.encode(text)
    assert hf.encode(text).tokens == [
        "“",
        "Do",
        "n't",
        "you",
        "think",
        "so",
        ",",
        "Mr.",
        "Darcy",
        "?",
        "”",
    ]


def test_word_samples_read_like_prose(word_model: Path):
    writer = bookgen.load(word_model)
    text = "".join(writer.generate("He said", length=120, temperature=0.5, random_seed=0))
    assert "<unk>" not in text and "<p>" not in text and "<nl>" not in text
    assert not re.search(r" [,.;?!”]", text)  # no space before punctuation or closing quotes
    assert " n't" not in text and "n't" in text  # contractions joined
    assert "\n\n" in text  # paragraphs come back
    greedy = "".join(writer.generate("He said", length=12, temperature=0))
    assert greedy.startswith(" nothing; it was the best of times")


def test_out_of_vocabulary_seed_words_are_named(word_model: Path):
    writer = bookgen.load(word_model)
    with pytest.warns(BookgenWarning, match="'Zanzibar'"):
        text = "".join(writer.generate("He went to Zanzibar", length=10, random_seed=1))
    assert "<unk>" not in text


def test_word_and_char_models_share_bits_per_char(word_model: Path, tmp_path: Path):
    book = tmp_path / "prose.txt"
    char_out = tmp_path / "chars"
    bookgen.train(book, char_out, steps=80, eval_every=40, **TINY_MODEL)
    words = evaluate_texts([book], word_model)
    chars = evaluate_texts([book], char_out)
    assert words["chars"] == chars["chars"]  # the same text, counted the same way
    assert words["tokens"] < chars["tokens"] / 3
    for scores in (words, chars):
        assert 0 < scores["bits_per_char"] < 8


def test_pretrained_vectors_start_the_embeddings(tmp_path: Path):
    book = tmp_path / "prose.txt"
    book.write_text(PROSE)
    vectors = tmp_path / "glove.txt"
    vectors.write_text("said " + " ".join(["0.5"] * 32) + "\nzzz " + " ".join(["1"] * 32) + "\n")
    events = []
    bookgen.train(
        book, tmp_path / "glove", steps=2, embeddings=str(vectors), on_event=events.append,
        **WORD_MODEL,
    )  # fmt: skip
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any(re.search(r"--embeddings: 1 of \d+ vocabulary words", m) for m in notices)
    with pytest.raises(BookgenError, match="--embeddings needs --level word"):
        bookgen.train(book, tmp_path / "x", steps=2, embeddings=str(vectors), **TINY_MODEL)
