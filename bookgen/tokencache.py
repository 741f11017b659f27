"""The token cache: tokenize a corpus once, read it back from disk as training needs it.

    books --sha256--> key --found--> <cache>/tokens/<key>/ --np.memmap--> TokenStreams
                          --not found--> scan_book, book_text --tokenize--> (written atomically)

The key is the hash of each book's bytes (and name), the tokenizer (its JSON when one is given,
else the settings it is built with), the validation share and the code that reads and
tokenizes (corpus.py, encodings.py, binary.py, gutenberg.py, aozora.py, tokenizer.py,
segment.py, this file) and how the books are
read (a forced encoding, kept markup): a changed book, setting or cleaning rule never
reads an old entry. An entry is a folder, renamed into place whole once written:

    meta.json    dtype, tokenizer JSON, per part its length, document starts (offsets) and
                 the book each start is of (a book may have no tokens in a part), characters
                 and unknown characters, and the books' record for the checkpoint
    train.bin    the training tokens end to end, raw little-endian unsigned ints
    val.bin      the validation tokens (absent when the corpus is not split)

Ids are stored in the smallest unsigned dtype for the vocabulary (uint8 for characters).

Memory stays small whatever the corpus: books are read in chunks (see corpus.py), a
character vocabulary is first taken from every character of the files (one pass), tokens are
written as they come, and only if the training part lacks some of those characters are the ids
renumbered, chunk by chunk. A word tokenizer still reads one book whole at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bookgen.cache import cache_dir
from bookgen.corpus import BookFile, Document, Reading, book_text, scan_book
from bookgen.errors import BookgenError
from bookgen.files import atomic_folder
from bookgen.streams import TokenStream, token_dtype
from bookgen.tokenizer import CharTokenizer, Tokenizer, WordTokenizer, tokenizer_from_json

# 2: each part records the book of each document start ("books"); entries of format 1 miss.
FORMAT = 2
PIECE_CHARS = 1 << 23  # text tokenized at a time (numpy's arrays for it stay a few times this)
# Every file whose change changes the tokens: how books are read, cleaned and tokenized.
_CODE = (
    "corpus.py",
    "encodings.py",
    "binary.py",
    "gutenberg.py",
    "aozora.py",
    "tokenizer.py",
    "segment.py",
    "tokencache.py",
)

# on_progress(stage, done, total): "hashing" and "reading" count bytes, "tokenizing" characters.
Progress = Callable[[str, int, int], None]


@dataclass
class TokenizedCorpus:
    tokenizer: Tokenizer
    train: TokenStream  # the whole text when the corpus is not split
    val: TokenStream | None
    documents: list[dict]  # name, chars, sha256 of each book's cleaned text
    cached: bool  # read from the cache, not tokenized now


def split_point(chars: int, val_fraction: float) -> int:
    """Characters of a book kept for training: the last `val_fraction` are held out."""
    return int(chars * (1 - val_fraction))


def tokenize_corpus(
    books: Sequence[BookFile | Document],
    settings: dict,
    tokenizer: Tokenizer | None = None,
    val_fraction: float | None = None,
    on_progress: Progress | None = None,
) -> TokenizedCorpus:
    """Token streams of the books, from the cache or tokenized now (and cached).

    `settings` builds the tokenizer from the training parts: {"level": "char"} or {"level":
    "word", "vocab_size", "min_count", "lowercase"}; a given `tokenizer` is used as it is.
    With `val_fraction`, the last share of each book is the validation stream; without, one
    stream holds everything.
    """
    progress = on_progress or (lambda stage, done, total: None)
    sources = [_source(book) for book in books]
    fingerprints = _fingerprints(sources, progress)
    recipe = tokenizer.to_json() if tokenizer is not None else json.dumps(settings, sort_keys=True)
    key = _key(sources, fingerprints, recipe, val_fraction)
    folder = cache_dir() / "tokens" / key
    found = _read_entry(folder)
    if found is not None:
        return found
    _remove_abandoned(folder.parent)
    try:
        with atomic_folder(folder) as tmp:
            _write_entry(tmp, sources, settings, tokenizer, val_fraction, progress)
    except BookgenError as error:
        if not str(error).startswith("cannot write"):
            raise
        # An unwritable cache costs time, never the run: tokenize into a temporary folder.
        folder = Path(tempfile.mkdtemp(prefix="bookgen-tokens-"))
        _write_entry(folder, sources, settings, tokenizer, val_fraction, progress)
    found = _read_entry(folder)
    if found is None:
        raise BookgenError(f"the token cache just written to {folder} could not be read back")
    found.cached = False
    return found


# --- sources: a book on disk or a document in memory ----------------------------------------


@dataclass
class _Source:
    name: str
    size: int  # bytes to hash and read, for progress
    book: BookFile | None = None
    document: Document | None = None

    def fingerprint(self, on_bytes: Callable[[int], None]) -> str:
        if self.book is not None:
            # The same bytes read another way (--encoding) are another text.
            reading = "" if self.book.reading == Reading() else repr(self.book.reading)
            return "bytes:" + self.book.sha256(on_bytes) + reading
        on_bytes(self.size)
        return "text:" + hashlib.sha256(self.document.text.encode("utf-8")).hexdigest()

    def scan(self, on_bytes: Callable[[int], None]) -> tuple[int, str]:
        """(characters of the cleaned book, its alphabet: every distinct character it may hold)."""
        if self.book is not None:
            self._scan = scan_book(self.book.path, on_bytes=on_bytes, reading=self.book.reading)
            return self._scan.chars, self._scan.alphabet
        on_bytes(self.size)
        return self.document.chars, "".join(sorted(set(self.document.text)))

    def pieces(self) -> Iterator[str]:
        if self.book is not None:
            yield from book_text(self.book.path, self._scan)
            return
        text = self.document.text
        for begin in range(0, len(text), PIECE_CHARS):
            yield text[begin : begin + PIECE_CHARS]


def _source(book: BookFile | Document) -> _Source:
    if isinstance(book, Document):
        return _Source(book.name, len(book.text), document=book)
    return _Source(book.name, book.size, book=book)


def _counter(progress: Progress, stage: str, total: int) -> Callable[[int], None]:
    done = 0

    def add(count: int) -> None:
        nonlocal done
        done += count
        progress(stage, done, total)

    progress(stage, 0, total)
    return add


def _fingerprints(sources: list[_Source], progress: Progress) -> list[str]:
    add = _counter(progress, "hashing", sum(s.size for s in sources))
    return [source.fingerprint(add) for source in sources]


def _key(sources: list[_Source], fingerprints: list[str], recipe: str, val_fraction) -> str:
    code = hashlib.sha256()
    for name in _CODE:
        code.update((Path(__file__).parent / name).read_bytes())
    record = {
        "format": FORMAT,
        "code": code.hexdigest(),
        "books": [[s.name, f] for s, f in zip(sources, fingerprints, strict=True)],
        "tokenizer": recipe,
        "val_fraction": val_fraction,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()[:32]


# --- reading an entry -------------------------------------------------------------------------


def _read_entry(folder: Path) -> TokenizedCorpus | None:
    """The entry in `folder`, or None if there is none or it is damaged (then it is rebuilt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            return None
        dtype = np.dtype(meta["dtype"])
        streams = {
            part: _open_stream(folder / f"{part}.bin", dtype, info)
            for part, info in meta["parts"].items()
        }
        tokenizer = tokenizer_from_json(meta["tokenizer"], meta["level"])
    except (OSError, ValueError, KeyError, TypeError, BookgenError):
        _discard(folder)
        return None
    return TokenizedCorpus(tokenizer, streams["train"], streams.get("val"), meta["documents"], True)


def _open_stream(path: Path, dtype: np.dtype, info: dict) -> TokenStream:
    length = int(info["length"])
    if path.stat().st_size != length * dtype.itemsize:
        raise ValueError(f"{path} is not {length} tokens long")
    tokens = np.memmap(path, dtype=dtype, mode="r") if length else np.zeros(0, dtype)
    starts = np.asarray(info["starts"], dtype=np.int64)
    books = np.asarray(info["books"], dtype=np.int64)
    if len(books) != len(starts):
        raise ValueError(f"{path}: {len(starts)} document starts but {len(books)} books")
    chars, unknown = int(info["chars"]), int(info["unknown_chars"])
    return TokenStream(tokens, starts, chars, unknown, books=books)


def _remove_abandoned(root: Path, older_than_s: float = 24 * 3600) -> None:
    """Temporary folders of writers that died (killed mid-write): a day old, they are no one's."""
    for tmp in root.glob(".*.tmp") if root.is_dir() else []:
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)


def _discard(folder: Path) -> None:
    if folder.is_dir() and not folder.name.startswith("."):
        shutil.rmtree(folder, ignore_errors=True)


# --- writing an entry -------------------------------------------------------------------------


@dataclass
class _Part:
    """One stream being written: its file and what meta.json records of it."""

    file: BinaryIO
    length: int = 0
    chars: int = 0
    unknown_chars: int = 0

    def __post_init__(self) -> None:
        self.starts: list[int] = []  # offset of each book's first token in this stream
        self.books: list[int] = []  # which book (its index among all) each start begins
        self._book = -1

    def add(self, book: int, ids: np.ndarray, chars: int) -> None:
        if book != self._book and len(ids):
            self.starts.append(self.length)
            self.books.append(book)
            self._book = book
        self.file.write(ids.tobytes())
        self.length += len(ids)
        self.chars += chars

    def record(self) -> dict:
        return {
            "length": self.length,
            "starts": self.starts,
            "books": self.books,
            "chars": self.chars,
            "unknown_chars": self.unknown_chars,
        }


@dataclass
class _Written:
    tokenizer: Tokenizer
    documents: list[dict]
    dtype: np.dtype  # of the ids written
    renumber: np.ndarray | None = None  # written id -> final id, when they differ


def _write_entry(
    folder: Path,
    sources: list[_Source],
    settings: dict,
    tokenizer: Tokenizer | None,
    val_fraction: float | None,
    progress: Progress,
) -> None:
    add = _counter(progress, "reading", sum(s.size for s in sources))
    scans = [source.scan(add) for source in sources]
    level = tokenizer.level if tokenizer is not None else settings["level"]
    names = ["train", "val"] if val_fraction is not None else ["train"]
    cuts = [split_point(c, val_fraction) if val_fraction is not None else c for c, _ in scans]
    with contextlib.ExitStack() as files:
        parts = {n: _Part(files.enter_context(open(folder / f"{n}.bin", "wb"))) for n in names}
        tick = _counter(progress, "tokenizing", sum(chars for chars, _ in scans))
        if level == "char":
            written = _write_chars(sources, scans, cuts, tokenizer, parts, tick)
        else:
            written = _write_words(sources, cuts, settings, tokenizer, parts, tick)
        for part in parts.values():
            part.file.flush()
            os.fsync(part.file.fileno())
    if parts["train"].length == 0:
        raise BookgenError("no tokens to train on")
    if "val" in parts and parts["val"].chars < 2:
        raise BookgenError("the text is too short to hold out a validation part")
    dtype = written.dtype
    if written.renumber is not None:
        dtype = written.renumber.dtype
        for name in names:
            _renumber(folder / f"{name}.bin", written.dtype, written.renumber)
    meta = {
        "format": FORMAT,
        "dtype": dtype.str,
        "level": written.tokenizer.level,
        "tokenizer": written.tokenizer.to_json(),
        "documents": written.documents,
        "parts": {name: part.record() for name, part in parts.items()},
    }
    with open(folder / "meta.json", "w", encoding="utf-8") as file:  # last: marks it whole
        json.dump(meta, file)
        file.flush()
        os.fsync(file.fileno())


def _split(pieces: Iterator[str], cut: int) -> Iterator[tuple[str, bool]]:
    """(piece, is training text) of a book whose first `cut` characters are for training."""
    offset = 0
    for piece in pieces:
        if offset < cut < offset + len(piece):
            yield piece[: cut - offset], True
            yield piece[cut - offset :], False
        elif piece:
            yield piece, offset < cut
        offset += len(piece)


def _write_chars(sources, scans, cuts, given: CharTokenizer | None, parts, tick) -> _Written:
    """Character ids through a lookup table over code points (hundreds of MB/s)."""
    if given is not None:
        alphabet = given.alphabet  # characters it does not know map to 0
    else:
        # First, ids for every character of the files (licences included); the training
        # parts' own vocabulary is known once they have been read.
        alphabet = sorted(set().union(*(set(book_alphabet) for _, book_alphabet in scans)))
    vocab_size = len(alphabet) + 1
    dtype = token_dtype(vocab_size)
    table = np.zeros(0x110000, dtype=dtype)  # code point -> id
    table[[ord(c) for c in alphabet]] = np.arange(1, vocab_size, dtype=dtype)
    in_train = np.zeros(vocab_size, dtype=bool)
    held_out = np.zeros(vocab_size, dtype=np.int64)  # validation count of each id
    documents = []
    books = zip(sources, [chars for chars, _ in scans], cuts, strict=True)
    for book, (source, chars_in_book, cut) in enumerate(books):
        digest = hashlib.sha256()
        for piece, training in _split(source.pieces(), cut):
            digest.update(piece.encode("utf-8"))
            ids = _lookup(table, piece)
            part = parts["train"] if training else parts["val"]
            part.add(book, ids, len(piece))
            if given is not None:
                part.unknown_chars += int(np.count_nonzero(ids == 0))
            elif training:
                in_train[ids] = True
            else:
                held_out += np.bincount(ids, minlength=vocab_size)
            tick(len(piece))
        documents.append(
            {"name": source.name, "chars": chars_in_book, "sha256": digest.hexdigest()}
        )
    if given is not None:
        return _Written(given, documents, dtype)
    in_train[0] = False
    kept = np.flatnonzero(in_train)  # the ids the training text holds
    tokenizer = CharTokenizer([alphabet[i - 1] for i in kept])
    if "val" in parts:
        parts["val"].unknown_chars = int(held_out.sum() - held_out[kept].sum())
    if len(kept) == len(alphabet):
        return _Written(tokenizer, documents, dtype)
    # Some characters occur only in held-out text or a licence: renumber to the final ids.
    renumber = np.zeros(vocab_size, dtype=token_dtype(tokenizer.vocab_size))
    renumber[kept] = np.arange(1, len(kept) + 1)
    return _Written(tokenizer, documents, dtype, renumber)


def _lookup(table: np.ndarray, text: str) -> np.ndarray:
    if text.isascii():
        return table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    return table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


def _write_words(sources, cuts, settings, given: WordTokenizer | None, parts, tick) -> _Written:
    """Word ids through HF tokenizers, one book in memory at a time."""

    def texts() -> Iterator[str]:
        for source in sources:
            yield "".join(source.pieces())

    tokenizer = given
    if tokenizer is None:
        train_texts = (text[:cut] for text, cut in zip(texts(), cuts, strict=True))
        options = {k: v for k, v in settings.items() if k != "level"}
        tokenizer = WordTokenizer.build(train_texts, **options)
    dtype = token_dtype(tokenizer.vocab_size)
    documents = []
    for book, (source, text, cut) in enumerate(zip(sources, texts(), cuts, strict=True)):
        for training, piece in ((True, text[:cut]), (False, text[cut:])):
            if not piece:
                continue
            part = parts["train"] if training else parts["val"]
            ids, unknown = tokenizer.encode_long(piece)
            part.add(book, np.asarray(ids, dtype=dtype), len(piece))
            if given is not None or not training:  # as before: unknowns of held-out text
                part.unknown_chars += unknown
            tick(len(piece))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        documents.append({"name": source.name, "chars": len(text), "sha256": digest})
    return _Written(tokenizer, documents, dtype)


def _renumber(path: Path, dtype: np.dtype, table: np.ndarray) -> None:
    """Rewrite a token file through `table` (old id -> new id), chunk by chunk."""
    out = path.with_suffix(".renumbered")
    with open(path, "rb") as source, open(out, "wb") as target:
        while len(block := np.fromfile(source, dtype=dtype, count=PIECE_CHARS)):
            target.write(table[block].tobytes())
        target.flush()
        os.fsync(target.fileno())
    os.replace(out, path)
