"""The books, ready to train on: split into training and validation parts, the vocabulary
built from the training parts (unless given), encoded through the token cache. The one entry
that training, `bookgen explain` and the copy guard's records share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bookgen.corpus import BookFile, Document, Reading
from bookgen.settings import TrainConfig
from bookgen.streams import TokenStream
from bookgen.tokencache import tokenize_corpus
from bookgen.tokenizer import Tokenizer


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train: TokenStream
    val: TokenStream
    corpus: dict  # recorded in the checkpoint: which books, their fingerprints


def tokenizer_settings(config: TrainConfig) -> dict:
    """What the tokenizer is built with (from the training parts); part of the cache key."""
    if config.level == "word":
        return dict(
            level="word",
            vocab_size=config.vocab_size,
            min_count=config.min_count,
            lowercase=config.lowercase,
        )
    return {"level": "char"}


def prepare_data(
    documents: Sequence[Document | BookFile],
    config: TrainConfig,
    tokenizer: Tokenizer | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> PreparedData:
    """Split each book, build the vocabulary from the training parts (unless given), encode.

    Through the token cache: a second run on the same books reads the tokens from disk.
    """
    settings = tokenizer_settings(config)
    data = tokenize_corpus(documents, settings, tokenizer, config.val_fraction, on_progress)
    corpus = {"documents": data.documents, "val_fraction": config.val_fraction}
    # Where the books were read from, so that later commands (the copy guard, `bookgen style`)
    # can read them again; their sha256 tells whether they are still the same text.
    paths = [getattr(d, "path", None) for d in documents]
    corpus["paths"] = [str(Path(p).resolve()) if p else None for p in paths]
    readings = {getattr(d, "reading", Reading()) for d in documents}  # one per run: the CLI's
    corpus["reading"] = readings.pop().record() if len(readings) == 1 else Reading().record()
    corpus["chars_per_token"] = data.train.chars / max(len(data.train), 1)  # the copy guard's unit
    return PreparedData(data.tokenizer, data.train, data.val, corpus)
