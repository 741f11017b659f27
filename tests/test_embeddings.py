from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bookgen
from bookgen.checkpoint import load_checkpoint
from bookgen.embeddings import VectorCoverage, load_vectors
from bookgen.errors import BookgenError
from bookgen.tokenizer import UNK_ID, WordTokenizer
from tests.conftest import TINY_MODEL

# Vocabulary: <unk> <p> <nl> the(3) Paris(2) cat(2) sat(1) zebu(1): five words.
WORDS = WordTokenizer.build(["the cat sat Paris the cat the Paris zebu"], min_count=1)


def row_of(tokenizer: WordTokenizer):
    """word -> its embedding row, for words the vocabulary holds (through encode)."""

    def row(word: str) -> int:
        (token_id,) = tokenizer.encode(word)
        assert token_id != UNK_ID, word
        return token_id

    return row


EMBED = 3


def random_weight() -> torch.Tensor:
    return torch.randn(WORDS.vocab_size, EMBED, generator=torch.Generator().manual_seed(0))


def write(tmp_path: Path, lines: list[str], name: str = "vectors.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GLOVE = [
    "the 0.1 0.2 0.3",
    "unrelated 9 9 9",
    "cat -1 -2 -3.5e-1",
    "paris 4 5 6",  # a lowercased file: Paris finds it through its lowercase form
    "sat 7 8",  # a broken line: skipped
    ". . . 1 2 3",  # a word with spaces: skipped
]


def test_glove_vectors_fill_their_rows_and_leave_the_rest(tmp_path: Path):
    weight = random_weight()
    before = weight.clone()
    coverage = load_vectors(write(tmp_path, GLOVE), WORDS, EMBED, weight)
    assert coverage == VectorCoverage(found=3, total=5, dim=3)
    assert coverage.fraction == pytest.approx(0.6)
    row = row_of(WORDS)
    # Exactly the file's numbers, read as float32 (the embedding's type).
    assert torch.equal(weight[row("the")], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(weight[row("cat")], torch.tensor([-1, -2, -0.35]))
    assert torch.equal(weight[row("Paris")], torch.tensor([4.0, 5, 6]))
    untouched = [
        i for i in range(WORDS.vocab_size) if WORDS.id_to_token(i) not in {"the", "cat", "Paris"}
    ]
    assert torch.equal(weight[untouched], before[untouched])


def test_word2vec_text_with_header_and_exact_case_first(tmp_path: Path):
    lines = ["3 3", "paris 4 5 6", "Paris 1 1 1", "zebu\t0 0 1"]
    weight = random_weight()
    coverage = load_vectors(write(tmp_path, lines), WORDS, EMBED, weight)
    assert (coverage.found, coverage.total, coverage.dim) == (2, 5, 3)
    row = row_of(WORDS)
    assert weight[row("Paris")].tolist() == [1, 1, 1]
    assert weight[row("zebu")].tolist() == [0, 0, 1]


def test_a_file_without_vocabulary_words_covers_nothing(tmp_path: Path):
    weight = random_weight()
    before = weight.clone()
    coverage = load_vectors(write(tmp_path, ["dog 1 2 3"]), WORDS, EMBED, weight)
    assert coverage == VectorCoverage(found=0, total=5, dim=3) and coverage.fraction == 0
    assert torch.equal(weight, before)


def test_wrong_dimension_missing_file_and_no_vectors_are_clear_errors(tmp_path: Path):
    weight = random_weight()
    path = write(tmp_path, ["the " + " ".join(["0.5"] * 50)], name="glove.50d.txt")
    with pytest.raises(BookgenError) as error:
        load_vectors(path, WORDS, EMBED, weight)
    assert str(error.value) == (
        f"--embeddings {path} has 50-dimensional vectors but --embed is 3: use --embed 50"
    )
    with pytest.raises(BookgenError, match="has 64-dimensional vectors"):
        load_vectors(write(tmp_path, ["10 64", "the 1 2 3"]), WORDS, EMBED, weight)
    with pytest.raises(BookgenError, match="no such file"):
        load_vectors(tmp_path / "missing.txt", WORDS, EMBED, weight)
    with pytest.raises(BookgenError, match="has no word vectors"):
        load_vectors(write(tmp_path, ["just some text", "", "no numbers"]), WORDS, EMBED, weight)


def test_training_starts_from_the_vectors(tmp_path: Path, monkeypatch):
    """`bookgen.train(embeddings=...)`: the saved embedding holds the file's vectors in the rows
    of its words (exact case first, else lowercase) and the run's random start in the others.

    The weights are read after one step at a learning rate of 1e-30: an AdamW step moves a
    weight by about the learning rate (the decay factor 1 - 1e-30 * 0.01 is 1.0 exactly), far
    below half a float32 unit in the last place of any weight here, so the saved weights are
    the starting ones exactly. The random start is read from the same run without vectors.
    """
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))
    book = tmp_path / "book.txt"
    book.write_text("Paris, said the cat. Said the dog to Paris: the cat sat.\n\n" * 60)
    size = 8
    vectors = {  # exact in float32, and no 0 (the tiny step would move a 0 to 1e-32)
        "paris": [(2 * i - 7) / 16 for i in range(size)],  # the book's "Paris" takes it
        "said": [i / 4 + 1 for i in range(size)],
        "Said": [-(i + 1) / 8 for i in range(size)],  # exact case wins over "said" for "Said"
        "the": [2.5] * size,
        "unrelated": [9.0] * size,
    }
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))
    options = dict(TINY_MODEL, hidden_size=size, level="word", steps=1, learning_rate=1e-30)
    options["preview_length"] = 0  # no sample at the end: only the weights matter here
    bookgen.train(book, tmp_path / "plain", **options)
    bookgen.train(book, tmp_path / "glove", embeddings=str(path), **options)
    plain = load_checkpoint(tmp_path / "plain", which="model")
    glove = load_checkpoint(tmp_path / "glove", which="model")
    row = row_of(glove.tokenizer)
    start = plain.model.embedding.weight.detach()
    weight = glove.model.embedding.weight.detach()
    expected = {"Paris": "paris", "said": "said", "Said": "Said", "the": "the"}
    for word, line in expected.items():
        assert torch.equal(weight[row(word)], torch.tensor(vectors[line])), word
    others = [i for i in range(glove.tokenizer.vocab_size) if i not in map(row, expected)]
    assert len(others) > 5  # the special tokens, cat, dog, to, sat, punctuation
    assert torch.equal(weight[others], start[others])
