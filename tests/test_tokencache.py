"""The token cache: the tokens of the in-memory path, rebuilt whenever it cannot be trusted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bookgen.cache import cache_dir
from bookgen.corpus import open_corpus, read_corpus
from bookgen.streams import StreamBatcher, TokenStream, token_dtype
from bookgen.tokencache import tokenize_corpus
from bookgen.tokenizer import CharTokenizer, WordTokenizer
from tests.by_hand import split_by_hand
from tests.conftest import TINY_BOOK

CHAR = {"level": "char"}
WORD = {"level": "word", "vocab_size": 30, "min_count": 1, "lowercase": False}


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path: Path) -> None:
    """A token cache of each test's own: every test's books are the same bytes under the same
    names, so in the session's shared cache one test would read what another wrote."""
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def books(tmp_path: Path) -> Path:
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text(TINY_BOOK, encoding="utf-8")
    # Characters only in the held-out end ("Ωé") and in a licence that is cut ("§").
    b = "*** START OF THE PROJECT GUTENBERG EBOOK B §\n\nZebra quartz, “vexing” jumps.\n" * 1
    b += "Foxes ran.\n" * 40 + "Ωé\n*** END OF THE PROJECT GUTENBERG EBOOK B §\n"
    (folder / "b.txt").write_bytes(b.replace("\n", "\r\n").encode("utf-8"))
    return folder


def in_memory(folder: Path, val_fraction: float = 0.1):
    """The tokens as the trainer made them before the cache: whole strings, lists of ids."""
    texts = [d.text for d in read_corpus([folder])]
    splits = [split_by_hand(t, val_fraction) for t in texts]
    tokenizer = CharTokenizer(sorted(set("".join(t for t, _ in splits))))
    train = [tokenizer.encode(t) for t, _ in splits]
    val = [tokenizer.encode(v) for _, v in splits]
    unknown = sum(tokenizer.unknown_chars(v) for _, v in splits)
    return tokenizer, train, val, unknown, texts


def assert_stream(stream: TokenStream, lists: list[list[int]]) -> None:
    """The stream holds the books' ids end to end, each book starting where the last ended."""
    lists = [ids for ids in lists if ids]
    assert stream.tokens.tolist() == [i for ids in lists for i in ids]
    assert stream.starts.tolist() == [sum(map(len, lists[:k])) for k in range(len(lists))]


def test_cached_tokens_are_exactly_the_in_memory_ones(books: Path):
    tokenizer, train, val, unknown, texts = in_memory(books)
    first = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    again = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    assert (first.cached, again.cached) == (False, True)
    assert isinstance(again.train.tokens, np.memmap) and again.train.tokens.dtype == np.uint8
    for data in (first, again):
        assert data.tokenizer.alphabet == tokenizer.alphabet
        assert "Ω" not in data.tokenizer.alphabet and "§" not in data.tokenizer.alphabet
        assert_stream(data.train, train)
        assert_stream(data.val, val)
        assert data.val.unknown_chars == unknown == 2  # Ω and é only occur held out
        assert data.train.chars == sum(
            map(len, (t for t, _ in map(split_by_hand, texts, [0.1] * 2)))
        )
        # The checkpoint's record of the books is what it always was.
        assert data.documents == [
            {"name": n, "chars": len(t), "sha256": hashlib.sha256(t.encode()).hexdigest()}
            for n, t in zip("ab", texts, strict=True)
        ]


def test_documents_in_memory_give_the_same_streams(books: Path):
    from_files = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.2)
    from_text = tokenize_corpus(read_corpus([books]), CHAR, val_fraction=0.2)
    assert from_text.documents == from_files.documents
    assert from_text.train.tokens.tolist() == from_files.train.tokens.tolist()
    assert from_text.val.tokens.tolist() == from_files.val.tokens.tolist()


def test_a_given_tokenizer_and_no_split(books: Path):
    tokenizer = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz "))
    data = tokenize_corpus(open_corpus([books]), {}, tokenizer)
    texts = [d.text for d in read_corpus([books])]
    assert data.val is None and data.tokenizer is not tokenizer
    assert_stream(data.train, [tokenizer.encode(t) for t in texts])
    assert data.train.unknown_chars == sum(tokenizer.unknown_chars(t) for t in texts)
    assert data.train.chars == sum(map(len, texts))


def test_word_level_through_the_cache(books: Path):
    settings = {"level": "word", "vocab_size": 30, "min_count": 1, "lowercase": False}
    data = tokenize_corpus(open_corpus([books]), settings, val_fraction=0.1)
    texts = [d.text for d in read_corpus([books])]
    splits = [split_by_hand(t, 0.1) for t in texts]
    tokenizer = WordTokenizer.build([t for t, _ in splits], 30)
    assert data.tokenizer.to_json() == tokenizer.to_json()
    assert_stream(data.train, [tokenizer.encode(t) for t, _ in splits])
    assert_stream(data.val, [tokenizer.encode(v) for _, v in splits])
    assert data.val.unknown_chars == sum(tokenizer.unknown_chars(v) for _, v in splits)


def test_a_changed_book_is_tokenized_again(books: Path):
    tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    path = books / "a.txt"
    stat = path.stat()
    path.write_text(TINY_BOOK.replace("best", "BEST"), encoding="utf-8")
    # Same size, same modification time: only the content hash can tell.
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    assert not changed.cached and {"B", "T"} <= set(changed.tokenizer.alphabet)
    _, train, _, _, _ = in_memory(books)
    assert_stream(changed.train, train)
    # Other settings are other entries too.
    assert not tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.2).cached


def word_tokenizer(folder: Path, settings: dict) -> WordTokenizer:
    """The word tokenizer built from the training parts of the books, outside the cache."""
    splits = [split_by_hand(d.text, 0.1) for d in read_corpus([folder])]
    options = {k: v for k, v in settings.items() if k != "level"}
    return WordTokenizer.build([t for t, _ in splits], **options)


@pytest.mark.parametrize(
    "change", [{"vocab_size": 20}, {"min_count": 2}, {"lowercase": True}], ids=str
)
def test_a_changed_word_setting_is_tokenized_again(books: Path, change: dict):
    changed = {**WORD, **change}
    expected = word_tokenizer(books, changed)
    assert expected.to_json() != word_tokenizer(books, WORD).to_json()  # the change matters
    first = tokenize_corpus(open_corpus([books]), WORD, val_fraction=0.1)
    other = tokenize_corpus(open_corpus([books]), changed, val_fraction=0.1)
    assert (first.cached, other.cached) == (False, False)
    assert other.tokenizer.to_json() == expected.to_json()
    splits = [split_by_hand(d.text, 0.1) for d in read_corpus([books])]
    assert_stream(other.train, [expected.encode(t) for t, _ in splits])
    # The same settings again, either of them: read from the cache, as written.
    for settings, data in ((WORD, first), (changed, other)):
        again = tokenize_corpus(open_corpus([books]), settings, val_fraction=0.1)
        assert again.cached and again.tokenizer.to_json() == data.tokenizer.to_json()
        assert again.train.tokens.tolist() == data.train.tokens.tolist()


def test_renamed_books_are_tokenized_again(books: Path):
    # The same bytes under another name: the checkpoint's record of the books must name them.
    first = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    (books / "b.txt").rename(books / "c.txt")
    renamed = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    assert not renamed.cached
    assert [d["name"] for d in renamed.documents] == ["a", "c"]
    assert renamed.train.tokens.tolist() == first.train.tokens.tolist()  # the text is the same
    again = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    assert again.cached and [d["name"] for d in again.documents] == ["a", "c"]


def entries() -> list[Path]:
    return sorted(e for e in (cache_dir() / "tokens").iterdir() if not e.name.startswith("."))


def test_a_crash_mid_write_leaves_nothing_a_reader_would_take(books: Path, monkeypatch):
    import bookgen.tokencache as tokencache

    real = tokencache._write_entry

    def crash(folder, *args):
        real(folder, *args)
        (folder / "train.bin").write_bytes(b"\x01\x02")  # half written...
        raise KeyboardInterrupt  # ...and killed before the rename

    before = set(entries()) if (cache_dir() / "tokens").exists() else set()
    monkeypatch.setattr(tokencache, "_write_entry", crash)
    with pytest.raises(KeyboardInterrupt):
        tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.3)
    # No entry appeared, and the temporary folder is gone.
    assert set(entries()) == before and not list((cache_dir() / "tokens").glob(".*.tmp"))
    # A process killed outright leaves its hidden temporary folder: readers ignore it.
    leftover = cache_dir() / "tokens" / ".0123.killed.tmp"
    leftover.mkdir()
    (leftover / "train.bin").write_bytes(b"\x01")
    monkeypatch.setattr(tokencache, "_write_entry", real)
    data = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.3)
    assert not data.cached
    _, train, _, _, _ = in_memory(books, 0.3)
    assert_stream(data.train, train)


def test_a_damaged_entry_is_rebuilt(books: Path):
    first = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.4)
    expected = first.train.tokens.tolist()
    (entry,) = [e for e in entries() if json.loads((e / "meta.json").read_text())["parts"]
                ["train"]["chars"] == first.train.chars]  # fmt: skip
    for damage in ("truncate", "meta"):
        if damage == "truncate":
            data = (entry / "train.bin").read_bytes()
            (entry / "train.bin").write_bytes(data[: len(data) // 2])
        else:
            (entry / "meta.json").write_text("{not json")
        again = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.4)
        assert not again.cached and again.train.tokens.tolist() == expected
        assert tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.4).cached


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_ids_are_stored_in_the_smallest_dtype(vocab_size: int, dtype, books: Path):
    assert token_dtype(vocab_size) == dtype
    code_points = (c for c in range(0x20, 0x20000) if not 0xD800 <= c < 0xE000)  # no surrogates
    alphabet = [chr(c) for c, _ in zip(code_points, range(vocab_size - 1), strict=False)]
    data = tokenize_corpus(open_corpus([books]), {}, CharTokenizer(alphabet))
    assert data.tokenizer.vocab_size == vocab_size and data.train.tokens.dtype == dtype


def reference_windows(tokens: np.ndarray, starts: np.ndarray, batch: int, bptt: int, bounds):
    """The old StreamBatcher: four (L, B) transposed int64 copies, sliced."""
    flags = torch.zeros(len(tokens), dtype=torch.bool)
    flags[torch.from_numpy(starts)] = True
    tokens = torch.from_numpy(tokens.astype(np.int64))
    length = (len(tokens) - 1) // batch
    used = batch * length
    inputs = tokens[:used].view(batch, length).t().contiguous()
    targets = tokens[1 : used + 1].view(batch, length).t().contiguous()
    resets = flags[:used].view(batch, length).t().contiguous()
    loss_mask = ~flags[1 : used + 1].view(batch, length).t().contiguous()
    for begin, end in bounds:
        yield inputs[begin:end], targets[begin:end], resets[begin:end], loss_mask[begin:end]


@pytest.mark.parametrize(("lengths", "batch", "bptt"), [((25, 30, 45), 3, 8), ((1, 7, 300), 5, 6)])
def test_windows_from_the_memmap_equal_the_transposed_copies(books, lengths, batch, bptt):
    data = tokenize_corpus(open_corpus([books]), CHAR, val_fraction=0.1)
    memmapped = data.train.tokens
    rng = np.random.default_rng(0)
    for stream in (
        data.train,
        TokenStream(
            np.concatenate([rng.integers(0, 70_000, n) for n in lengths]).astype(np.uint32),
            np.cumsum([0, *lengths[:-1]], dtype=np.int64),
            sum(lengths),
        ),
    ):
        batcher = StreamBatcher(stream, batch, bptt)
        for epoch in (0, 3):
            starts = batcher.window_starts(epoch, random_seed=5)
            bounds = list(zip(starts, [*starts[1:], batcher.row_length], strict=True))
            expected = reference_windows(
                np.asarray(stream.tokens), stream.starts, batcher.batch_size, bptt, bounds
            )
            windows = list(batcher.windows(epoch, random_seed=5))
            assert len(windows) == len(bounds)
            for window, parts in zip(windows, expected, strict=True):
                got = (window.inputs, window.targets, window.resets, window.loss_mask)
                for a, b in zip(got, parts, strict=True):
                    assert a.dtype == b.dtype and torch.equal(a, b)
    assert isinstance(memmapped, np.memmap)
