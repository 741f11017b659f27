from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bookgen.embeddings import VectorCoverage, load_vectors
from bookgen.errors import BookgenError
from bookgen.tokenizer import WordTokenizer

# Vocabulary: <unk> <p> <nl> the(3) Paris(2) cat(2) sat(1) zebu(1): five words.
WORDS = WordTokenizer.build(["the cat sat Paris the cat the Paris zebu"], min_count=1)
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
    row = WORDS.token_to_id
    assert weight[row("the")].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert weight[row("cat")].tolist() == pytest.approx([-1, -2, -0.35])
    assert weight[row("Paris")].tolist() == [4, 5, 6]
    untouched = [
        i for i in range(WORDS.vocab_size) if WORDS.id_to_token(i) not in {"the", "cat", "Paris"}
    ]
    assert torch.equal(weight[untouched], before[untouched])


def test_word2vec_text_with_header_and_exact_case_first(tmp_path: Path):
    lines = ["3 3", "paris 4 5 6", "Paris 1 1 1", "zebu\t0 0 1"]
    weight = random_weight()
    coverage = load_vectors(write(tmp_path, lines), WORDS, EMBED, weight)
    assert (coverage.found, coverage.total, coverage.dim) == (2, 5, 3)
    assert weight[WORDS.token_to_id("Paris")].tolist() == [1, 1, 1]
    assert weight[WORDS.token_to_id("zebu")].tolist() == [0, 0, 1]


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
