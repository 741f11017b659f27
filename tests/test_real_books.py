"""On real books from ../shared/corpora (skipped where that folder is absent)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bookgen
from bookgen.corpus import read_document
from tests.conftest import shared_corpus

# What a one-minute budget buys on a slow 2-core machine (budget.py: 1 x 256, and for a short
# run batch 16, lr 1e-2, dropout 0.1). The 1 x 512 default took 2 minutes of the suite here.
SHORT_RUN = dict(hidden_size=256, batch_size=16, learning_rate=1e-2, dropout=0.1)


@pytest.mark.long
def test_tiny_shakespeare_learns_fast_with_the_short_run_settings(tmp_path: Path):
    book = shared_corpus("tinyshakespeare.txt")
    run = dict(SHORT_RUN, steps=300, eval_every=300, device="cpu")
    result = bookgen.train(book, tmp_path / "sh", **run)
    assert result.metrics[-1]["val_loss"] < 2.1  # nats per character on the standard split
    writer = bookgen.load(tmp_path / "sh")
    text = "".join(writer.generate("ROMEO:", length=600, temperature=0.6, random_seed=0))
    # It writes speaker names on lines of their own, like a play (600 characters hold several
    # speeches: one draw of 300 may hold a single long one).
    assert len(re.findall(r"\n[A-Z][A-Za-z ]+:\n", text)) >= 2, text


def test_pride_and_prejudice_word_model_writes_clean_prose(tmp_path: Path):
    book = shared_corpus("gutenberg/pride-and-prejudice.txt")
    assert read_document(book).gutenberg_stripped
    out = tmp_path / "pp"
    # A small model: what is checked here is the reading and the writing, not the quality. 20
    # short windows at a high rate learn how often words and marks come (the 200 words drawn
    # hold some 28 marks to check the spacing of; 10 steps at the default rate drew none), in a
    # tenth of the time of the 40 full windows this took before (P&P's 7,180 words make each
    # window dear); no loss is checked, so the evaluation reads a few windows, not all 12,000.
    small = dict(hidden_size=128, batch_size=8, bptt=32, learning_rate=1e-2, warmup_steps=2)
    small.update(max_val_tokens=2048)
    bookgen.train(book, out, level="word", steps=20, eval_every=20, device="cpu", **small)
    writer = bookgen.load(out)
    # The licence is gone from what the model learned, not only from one draw of it.
    words = writer.tokenizer
    assert not [i for i in range(words.vocab_size) if "utenberg" in words.id_to_token(i)]
    text = "".join(writer.generate("It is a truth universally acknowledged", 200, random_seed=3))
    assert "<unk>" not in text and "Gutenberg" not in text
    assert len(re.findall(r"[,.;:?!”’]", text)) >= 10, text  # marks to check
    assert not re.search(r" [,.;:?!”’]", text)
