"""On real books from ../shared/corpora (skipped where that folder is absent)."""

from __future__ import annotations

import re
from pathlib import Path

import bookgen
from bookgen.corpus import read_document
from tests.conftest import shared_corpus


def test_tiny_shakespeare_learns_fast_with_the_defaults(tmp_path: Path):
    book = shared_corpus("tinyshakespeare.txt")
    result = bookgen.train(book, tmp_path / "sh", steps=200, eval_every=200, device="cpu")
    assert result.metrics[-1]["val_loss"] < 2.4  # nats per character on the standard split
    writer = bookgen.load(tmp_path / "sh")
    text = "".join(writer.generate("ROMEO:", length=600, temperature=0.6, random_seed=0))
    # It writes speaker names on lines of their own, like a play (600 characters hold several
    # speeches: one draw of 300 may hold a single long one).
    assert len(re.findall(r"\n[A-Z][A-Za-z ]+:\n", text)) >= 2, text


def test_pride_and_prejudice_word_model_writes_clean_prose(tmp_path: Path):
    book = shared_corpus("gutenberg/pride-and-prejudice.txt")
    assert read_document(book).gutenberg_stripped
    out = tmp_path / "pp"
    # A small model: what is checked here is the reading and the writing, not the quality.
    bookgen.train(book, out, level="word", steps=40, eval_every=40, hidden_size=128, device="cpu")
    writer = bookgen.load(out)
    text = "".join(writer.generate("It is a truth universally acknowledged", 200, random_seed=3))
    assert "<unk>" not in text and "Gutenberg" not in text
    assert not re.search(r" [,.;:?!”’]", text)
