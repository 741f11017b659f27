"""Word models end to end: train, save, sample readable prose, evaluate in bits per character."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tokenizers
import torch

import bookgen
from bookgen.checkpoint import load_checkpoint
from bookgen.errors import BookgenError, BookgenWarning
from bookgen.evaluation import evaluate_texts
from bookgen.events import Notice
from bookgen.tokenizer import UNK_ID
from tests.by_hand import bits_per_char_by_hand, nats_by_hand
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


def test_out_of_vocabulary_seed_words_are_named_and_read_as_unknown(word_model: Path):
    writer = bookgen.load(word_model)
    with pytest.warns(BookgenWarning, match="'Zanzibar'"):
        text = "".join(writer.generate("He went to Zanzibar", length=10, random_seed=1))
        primed = writer.prime("He said Zanzibar was the")
    assert "<unk>" not in text
    # The unknown word is read as the unknown token, in its place: the primed prediction is
    # that of a forward pass over these ids (exact: the same call), not of one without it.
    known = [i for word in ("He", "said", "was", "the") for i in writer.tokenizer.encode(word)]
    assert len(known) == 4 and UNK_ID not in known  # one known id each
    with torch.no_grad():
        read = torch.tensor(known[:2] + [UNK_ID] + known[2:]).view(-1, 1)
        logits, _ = writer.model(read, writer.model.init_state(1))
        dropped, _ = writer.model(torch.tensor(known).view(-1, 1), writer.model.init_state(1))
    assert torch.equal(primed.logits, logits[-1, 0])
    assert not torch.equal(primed.logits, dropped[-1, 0])


def expected_bits_per_char(checkpoint: Path, text: str, unknown_chars: int) -> float:
    """Bits per character worked out apart from `bookgen eval`: the text's tokens in the rows
    eval cuts (16, fewer for a short text), each read whole from a zero state (by_hand)."""
    loaded = load_checkpoint(checkpoint)
    ids = loaded.tokenizer.encode(text)
    rows = min(16, (len(ids) - 1) // loaded.train_config["bptt"])
    mean = nats_by_hand(loaded.model, [ids], rows).mean().item()
    return bits_per_char_by_hand(mean, len(ids), unknown_chars, len(text))


def test_word_and_char_models_share_bits_per_char(
    word_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))
    book = tmp_path / "prose.txt"
    char_out = tmp_path / "chars"
    bookgen.train(book, char_out, steps=80, eval_every=40, **TINY_MODEL)
    # Scored on text the books never had: the word "Zanzibar" (8 characters) is unknown to the
    # word model, its "Z" and "z" to the character model; both are charged 8 bits a character.
    text = PROSE[: len(PROSE) // 4] + "He said Zanzibar.\n"  # whole paragraphs, and one more
    scored = tmp_path / "scored.txt"
    scored.write_text(text)
    words = evaluate_texts([scored], word_model, device="cpu")
    chars = evaluate_texts([scored], char_out, device="cpu")
    assert words["chars"] == chars["chars"] == len(text)  # the same text, counted the same way
    assert (words["unknown_chars"], chars["unknown_chars"]) == (8, 2)
    assert words["tokens"] < chars["tokens"] / 3
    for scores, model, unknown in ((words, word_model, 8), (chars, char_out, 2)):
        # One forward per row against bptt windows with the state carried: the same sums in
        # another order, so equal to float rounding, far inside what the unknown charge moves.
        expected = expected_bits_per_char(model, text, unknown)
        assert scores["bits_per_char"] == pytest.approx(expected, rel=1e-5)


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
