"""Pretrained word vectors as the starting point of a word model's embedding.

A GloVe file has one word per line followed by its vector, `word v1 v2 ... vD`; a word2vec
text file is the same after a first line `count D`. Rows of the embedding whose word is in the
file start from its vector; the others keep their random start. Real files hold millions of
words and run to gigabytes, so they are read line by line and only the vocabulary's vectors are
kept (and parsed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bookgen.errors import BookgenError
from bookgen.tokenizer import SPECIAL_TOKENS, WordTokenizer


@dataclass(frozen=True)
class VectorCoverage:
    """How much of the vocabulary a vector file covered."""

    found: int  # vocabulary words that got a pretrained vector
    total: int  # vocabulary words, not counting the special tokens <unk> <p> <nl>
    dim: int  # the file's vector size

    @property
    def fraction(self) -> float:
        return self.found / self.total if self.total else 0.0


def load_vectors(
    path: str | Path, tokenizer: WordTokenizer, embed_size: int, weight: torch.Tensor
) -> VectorCoverage:
    """Copy the file's vectors into the rows of `weight` (vocab_size, embed_size), in place.

    A word takes the vector of the same word in the file or, failing that, of its lowercase
    form (for a cased vocabulary and a lowercased file such as GloVe's).
    """
    if tuple(weight.shape) != (tokenizer.vocab_size, embed_size):
        raise ValueError(
            f"weight is {tuple(weight.shape)}, not ({tokenizer.vocab_size}, {embed_size})"
        )
    path = Path(path)
    if not path.is_file():
        raise BookgenError(f"--embeddings {path}: no such file")
    words = {tokenizer.id_to_token(i): i for i in range(len(SPECIAL_TOKENS), tokenizer.vocab_size)}
    wanted = words.keys() | {word.lower() for word in words}
    dim, vectors = _read_vectors(path, embed_size, wanted)
    rows, found = [], []
    for word, token_id in words.items():
        vector = vectors.get(word)
        if vector is None:
            vector = vectors.get(word.lower())
        if vector is not None:
            rows.append(token_id)
            found.append(vector)
    if rows:
        with torch.no_grad():
            weight[rows] = torch.stack(found).to(weight)
    return VectorCoverage(found=len(rows), total=len(words), dim=dim)


def _read_vectors(
    path: Path, embed_size: int, wanted: set[str]
) -> tuple[int, dict[str, torch.Tensor]]:
    """The file's dimension, and the vectors of those of its words that are `wanted`.

    The first line that parses as a vector fixes the dimension (after a word2vec header, if
    any); later lines of another length are skipped (a few GloVe files have words with spaces
    in them). Only wanted words' numbers are parsed: that is what makes a big file quick.
    """
    dim = 0
    vectors: dict[str, torch.Tensor] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines):
            if not dim:
                parts = line.split()
                if number == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    _check_dim(path, int(parts[1]), embed_size)
                    continue
                if _parse(parts[1:]) is None:
                    continue
                dim = _check_dim(path, len(parts) - 1, embed_size)
            parts = line.split(maxsplit=1)
            if len(parts) < 2 or parts[0] not in wanted or parts[0] in vectors:
                continue  # most lines: not parsed at all
            vector = _parse(parts[1].split())
            if vector is not None and len(vector) == dim:
                vectors[parts[0]] = vector
    if not dim:
        raise BookgenError(f"--embeddings {path} has no word vectors (GloVe or word2vec text)")
    return dim, vectors


def _check_dim(path: Path, dim: int, embed_size: int) -> int:
    if dim != embed_size:
        raise BookgenError(
            f"--embeddings {path} has {dim}-dimensional vectors but --embed is {embed_size}: "
            f"use --embed {dim}"
        )
    return dim


def _parse(fields: list[str]) -> torch.Tensor | None:
    if not fields:
        return None
    try:
        return torch.tensor([float(f) for f in fields], dtype=torch.float32)
    except ValueError:
        return None
