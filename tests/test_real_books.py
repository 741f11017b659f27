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
    text = "".join(writer.generate("ROMEO:", length=300, temperature=0.6, random_seed=0))
    assert re.search(r"\n[A-Z][A-Za-z ]+:\n", text)  # it writes speaker names, like a play


def test_pride_and_prejudice_word_model_writes_clean_prose(tmp_path: Path):
    book = shared_corpus("gutenberg/pride-and-prejudice.txt")
    assert read_document(book).gutenberg_stripped
    out = tmp_path / "pp"
    bookgen.train(book, out, level="word", steps=40, eval_every=40, device="cpu")
    writer = bookgen.load(out)
    text = "".join(writer.generate("It is a truth universally acknowledged", 200, random_seed=3))
    assert "<unk>" not in text and "Gutenberg" not in text
    assert not re.search(r" [,.;:?!”’]", text)
