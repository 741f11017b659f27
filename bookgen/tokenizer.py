"""Tokenizers: text <-> token ids, one protocol for every level.

A tokenizer is built from the *training* text only and saved inside the checkpoint as
`tokenizer.json`, so sampling never needs the corpus again. Id 0 is always the unknown token:
text the vocabulary does not cover (a character never seen in training, say in a seed) maps to
it instead of crashing, and samplers mask it so it is never written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Protocol

from bookgen.errors import BookgenError

UNK_ID = 0


class Tokenizer(Protocol):
    """What every level provides. `decode(encode(t)) == t` for any text the vocabulary covers."""

    level: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def unknown(self, text: str) -> list[str]:
        """The pieces of `text` the vocabulary does not cover (in order, without repeats)."""
        ...

    def to_json(self) -> str: ...


class CharTokenizer:
    """One token per Unicode character of the cleaned text."""

    level = "char"
    unk_text = "\ufffd"

    def __init__(self, chars: Sequence[str]) -> None:
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise BookgenError("character vocabulary must be distinct single characters")
        self.chars = list(chars)
        # Id 0 is the unknown token; real characters start at 1.
        self._ids = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        get = self._ids.get
        return [get(c, UNK_ID) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        chars = self.chars
        return "".join(chars[i - 1] if 0 < i <= len(chars) else self.unk_text for i in ids)

    def unknown(self, text: str) -> list[str]:
        return list(dict.fromkeys(c for c in text if c not in self._ids))

    def to_json(self) -> str:
        return json.dumps({"level": "char", "chars": self.chars}, ensure_ascii=False)


def tokenizer_from_json(text: str, level: str) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint saved (`level` comes from the checkpoint's manifest)."""
    if level == "char":
        data = json.loads(text)
        return CharTokenizer(data["chars"])
    raise BookgenError(f"unknown tokenizer level {level!r} in checkpoint")
