"""The copy guard: sampled text never repeats more than N characters of the book verbatim.

People train on a book to get *new* text in its style; a model that has learned passages by
heart writes them out again. The guard watches the last n tokens the sampler wrote (n = N for a
character model, about N characters' worth of words for a word model) and, before a token is
written, asks: is (those n tokens + this token) a run of the training text? If so the token is
excluded and the draw is made again from the rest, so no run longer than n tokens of the output
ever appears in the book. The seed, and whatever the user types in chat, are not the model's
writing and do not count.

The index is a Bloom filter of every (n+1)-token run of the book: a bit array and K hash
functions. A run of the book always answers "yes" (so the guarantee is exact); a run that is not
in the book answers "yes" by mistake with probability about 0.08% (a token excluded that need not
have been, and drawn again from the rest). At 15 bits per run it takes 1.9 bytes per token of the
book, under 2x the book's size, and a question costs at most K bit lookups, for any book:

    book tokens   t0 t1 t2 ... tL             hash of each (n+1)-run, rolled: H = H*B + t + 1
    index         bits[(h1 + i*h2) % m] = 1   for i < K, (h1, h2) mixed from H
    sampling      context hash of the last n written tokens, updated in O(1) per token

It is built once, when training ends, from the books (the text given, or the files read again),
and saved beside the checkpoint as copy-guard-<n>.safetensors; one for another N, or one that is
missing, is built from the books again (read from where they were, checked against their sha256).
"""

from __future__ import annotations

import json
import math
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from bookgen.errors import BookgenError, BookgenWarning
from bookgen.files import atomic_write

FORMAT = 1
BITS_PER_RUN = 15  # with K = 10: a false "yes" about 0.08% of the time, at 1.9 bytes a token
HASHES = 10
BASE = 0x100000001B3  # odd: the rolling hash's multiplier
MASK = (1 << 64) - 1
SALT = 0x9E3779B97F4A7C15
CHUNK = 1 << 22  # tokens hashed at a time (with n of overlap): memory stays small


def file_name(run_tokens: int) -> str:
    return f"copy-guard-{run_tokens}.safetensors"


def run_tokens_for(max_copy: int, chars_per_token: float) -> int:
    """The guard's n in tokens: N characters, or about N characters' worth of words."""
    return max(1, round(max_copy / max(chars_per_token, 1.0)))


# --- hashing: the same arithmetic in numpy (building) and in Python ints (sampling) ------------


def _mix(z):
    """splitmix64's finalizer: spreads every bit of z over all 64 (numpy uint64 or int)."""
    if isinstance(z, np.ndarray):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def run_hashes(tokens: np.ndarray, length: int) -> np.ndarray:
    """(L - length + 1,) uint64: the rolling hash of every `length`-token run of `tokens`."""
    count = len(tokens) - length + 1
    hashes = np.zeros(max(count, 0), dtype=np.uint64)
    if count <= 0:
        return hashes
    with np.errstate(over="ignore"):  # arithmetic mod 2^64 is the point
        for k in range(length):
            hashes *= np.uint64(BASE)
            hashes += tokens[k : k + count].astype(np.uint64) + np.uint64(1)
    return hashes


def bit_positions(hashes: np.ndarray, bits: int) -> Iterator[np.ndarray]:
    """The K bit positions of each run hash, one hash function at a time, (R,) each: h1,
    h1 + h2, h1 + 2 h2, ... (mod m; double hashing). `CopyIndex.holds` does the same in ints."""
    modulus = np.uint64(bits)
    with np.errstate(over="ignore"):
        position = _mix(hashes) % modulus
        step = _mix(hashes ^ np.uint64(SALT)) % (modulus - np.uint64(1)) + np.uint64(1)
    for _ in range(HASHES):
        yield position
        position = (position + step) % modulus


# --- the index ---------------------------------------------------------------------------------


@dataclass
class CopyIndex:
    """The Bloom filter of a book's (n+1)-token runs, n = `run_tokens`."""

    run_tokens: int
    bits: int  # m
    data: bytes  # m bits, little-endian within each byte
    books: list[str]  # sha256 of each book's text: an index of other text is not used

    @classmethod
    def build(
        cls, token_arrays: Iterable[np.ndarray], run_tokens: int, books: Sequence[str]
    ) -> CopyIndex:
        """Index every (run_tokens + 1)-run of each array (runs never span two arrays)."""
        arrays = [np.asarray(a) for a in token_arrays]
        length = run_tokens + 1
        runs = sum(max(len(a) - length + 1, 0) for a in arrays)
        bits = max(64, math.ceil(BITS_PER_RUN * runs / 8) * 8)
        flags = np.zeros(bits // 8, dtype=np.uint8)
        for array in arrays:
            for begin in range(0, max(len(array) - length + 1, 0), CHUNK):
                hashes = run_hashes(array[begin : begin + CHUNK + length - 1], length)
                # One hash function at a time: (R,) arrays, not (R, K), keep the memory small.
                for position in bit_positions(hashes, bits):
                    np.bitwise_or.at(
                        flags,
                        (position >> np.uint64(3)).astype(np.intp),
                        np.uint8(1) << (position & np.uint64(7)).astype(np.uint8),
                    )
        return cls(run_tokens, bits, flags.tobytes(), list(books))

    def holds(self, run_hash: int) -> bool:
        """Whether the run with this hash may be in the book (never False for one that is)."""
        # bit_positions in Python ints, written out for the sampler's hot path (a generator
        # doubles its cost), stopping at the first bit not set: about half the bits are set, so
        # a run that is not in the book is usually turned away after one or two.
        data, bits = self.data, self.bits
        position = _mix(run_hash) % bits
        if not (data[position >> 3] >> (position & 7)) & 1:
            return False
        step = _mix(run_hash ^ SALT) % (bits - 1) + 1
        for _ in range(HASHES - 1):
            position = (position + step) % bits
            if not (data[position >> 3] >> (position & 7)) & 1:
                return False
        return True

    def holds_each(self, run_hashes: np.ndarray) -> np.ndarray:
        """`holds` for many hashes at once: (R,) bool."""
        flags = np.frombuffer(self.data, dtype=np.uint8)
        held = np.ones(len(run_hashes), dtype=bool)
        for position in bit_positions(run_hashes, self.bits):
            found = flags[(position >> np.uint64(3)).astype(np.intp)] >> (position & np.uint64(7))
            held &= (found & 1) == 1
        return held

    # Saved with safetensors, like the weights: loading never unpickles.
    def save(self, path: Path) -> Path:
        tensor = torch.frombuffer(bytearray(self.data), dtype=torch.uint8)
        metadata = {
            "format": str(FORMAT),
            "run_tokens": str(self.run_tokens),
            "bits": str(self.bits),
            "hashes": str(HASHES),
            "books": json.dumps(self.books),
        }
        atomic_write(path, st_save({"bits": tensor}, metadata=metadata))
        return path

    @classmethod
    def load(cls, path: Path) -> CopyIndex | None:
        """The saved index, or None where there is none usable (missing, damaged, old)."""
        try:
            data = Path(path).read_bytes()
            tensor = st_load(data)["bits"]
            metadata = _metadata(data)
            if int(metadata["format"]) != FORMAT or int(metadata["hashes"]) != HASHES:
                return None
            index = cls(
                int(metadata["run_tokens"]),
                int(metadata["bits"]),
                tensor.numpy().tobytes(),
                json.loads(metadata["books"]),
            )
        except (OSError, SafetensorError, KeyError, ValueError, RuntimeError):
            return None
        return index if len(index.data) * 8 == index.bits else None


def _metadata(data: bytes) -> dict[str, str]:
    # A safetensors file opens with an 8-byte header length and the JSON header itself.
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size])["__metadata__"]


# --- sampling with the guard -------------------------------------------------------------------


class CopyRun:
    """The last n tokens the model wrote, and their rolling hash (O(1) per token)."""

    def __init__(self, run_tokens: int) -> None:
        self.run_tokens = run_tokens
        self.recent: deque[int] = deque()
        self.hash = 0
        self.drop = pow(BASE, run_tokens, 1 << 64)  # B^n: what the oldest token weighs

    def push(self, token: int) -> None:
        self.recent.append(token)
        self.hash = (self.hash * BASE + token + 1) & MASK
        if len(self.recent) > self.run_tokens:
            oldest = self.recent.popleft()
            self.hash = (self.hash - (oldest + 1) * self.drop) & MASK

    @property
    def full(self) -> bool:
        return len(self.recent) == self.run_tokens

    def extended(self, token: int) -> int:
        """The hash of the n recent tokens followed by `token`: an (n+1)-run."""
        return (self.hash * BASE + token + 1) & MASK

    def copy(self) -> CopyRun:
        other = CopyRun.__new__(CopyRun)
        other.run_tokens, other.hash, other.drop = self.run_tokens, self.hash, self.drop
        other.recent = deque(self.recent)
        return other


class CopyGuard:
    """Asks the index about the token the sampler is about to write."""

    def __init__(self, index: CopyIndex, max_copy: int) -> None:
        self.index = index
        self.max_copy = max_copy  # in characters, as the user set it
        self.excluded = 0  # tokens excluded so far (drawn again from the rest)
        self.fallbacks = 0  # draws where every allowed token would have extended a copy

    @property
    def run_tokens(self) -> int:
        return self.index.run_tokens

    def resume(self, run: CopyRun | None) -> CopyRun:
        """`run`, to go on counting the model's writing, when it counts this guard's n tokens;
        else a new, empty run (nothing counted yet, or counted for another --max-copy)."""
        if run is None or run.run_tokens != self.run_tokens:
            return CopyRun(self.run_tokens)
        return run

    def blocks(self, run: CopyRun, token: int) -> bool:
        """Would writing `token` after `run` repeat more than n tokens of the book?"""
        return run.full and self.index.holds(run.extended(token))

    def blocked_tokens(self, run: CopyRun, vocab_size: int) -> torch.Tensor:
        """Every token that would extend a copy here: (V,) bool."""
        candidates = np.arange(vocab_size, dtype=np.uint64)
        with np.errstate(over="ignore"):
            hashes = np.uint64(run.hash) * np.uint64(BASE) + candidates + np.uint64(1)
        return torch.from_numpy(self.index.holds_each(hashes))


# --- the index of a checkpoint -----------------------------------------------------------------

OFF_HINT = "or turn the copy guard off with --max-copy 0"
# The index is built from the books read whole, one at a time, in about 1 s per million tokens:
# beyond this many tokens (some 20 novels) the guard stays off rather than hold up every run.
MAX_TOKENS = 25_000_000


def corpus_tokens(corpus: dict) -> int:
    chars = sum(d.get("chars", 0) for d in corpus.get("documents", []))
    return round(chars / chars_per_token(corpus))


def too_large(corpus: dict) -> str | None:
    """Why the guard is off for this corpus, or None when it can be indexed."""
    tokens = corpus_tokens(corpus)
    if tokens <= MAX_TOKENS:
        return None
    return (
        f"copy guard off: the books hold {tokens:,} tokens, more than the {MAX_TOKENS:,} it "
        "indexes; the text is written unguarded"
    )


def chars_per_token(corpus: dict) -> float:
    """Characters per token of the training text, as recorded (1 for characters)."""
    return float(corpus.get("chars_per_token") or 1.0)


def load_guard(folder: Path, manifest: dict, tokenizer, max_copy: int) -> CopyGuard | None:
    """The guard for `max_copy` characters over the books a checkpoint was trained on (None,
    with a warning, for books too large to index)."""
    reason = too_large(manifest["corpus"])
    if reason is not None:
        warnings.warn(reason, BookgenWarning, stacklevel=3)
        return None
    return CopyGuard(ensure_index(folder, manifest["corpus"], tokenizer, max_copy), max_copy)


def ensure_index(
    folder: Path, corpus: dict, tokenizer, max_copy: int, texts: Sequence[str] | None = None
) -> CopyIndex:
    """The index for `max_copy` saved in `folder`, built and saved now if it is missing or not
    of these books and this n: training calls it as it ends (with `texts`, books given as text),
    sampling for any other --max-copy. The caller has checked that the books are not `too_large`.

    Raises BookgenError when the books must be read and cannot be. An index that cannot be saved
    (a read-only checkpoint) warns and still serves the caller.
    """
    run_tokens = run_tokens_for(max_copy, chars_per_token(corpus))
    path = Path(folder) / file_name(run_tokens)
    saved = CopyIndex.load(path)
    if saved is not None and saved.books == book_hashes(corpus) and saved.run_tokens == run_tokens:
        return saved  # a resumed run, a second sample: the books are the same, so is the index
    index = build_index(corpus, tokenizer, run_tokens, texts)
    try:
        index.save(path)
    except BookgenError as error:
        warnings.warn(f"copy guard: index not saved ({error})", BookgenWarning, stacklevel=3)
    return index


def book_hashes(corpus: dict) -> list[str]:
    """The sha256 of each training book, as recorded: what an index is checked against."""
    return [d.get("sha256") for d in corpus.get("documents", [])]


def build_index(
    corpus: dict, tokenizer, run_tokens: int, texts: Sequence[str] | None = None
) -> CopyIndex:
    """Index the training books: `texts` (training's own, when it was given them as text), or
    the books read again from where they were (checked by sha256)."""
    from bookgen.corpus import read_recorded_books

    if texts is None:
        purpose = f"the copy guard builds its index from it; put it back, {OFF_HINT}"
        texts = [d.text for d in read_recorded_books(corpus, purpose)]
    arrays = [np.asarray(_encode(tokenizer, text), dtype=np.int64) for text in texts]
    return CopyIndex.build(arrays, run_tokens, book_hashes(corpus))


def _encode(tokenizer, text: str) -> list[int]:
    encode_long = getattr(tokenizer, "encode_long", None)  # word models: in parallel pieces
    return encode_long(text)[0] if encode_long is not None else tokenizer.encode(text)
