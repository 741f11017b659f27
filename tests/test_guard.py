"""The copy guard: a model that knows its book by heart writes it out; with the guard it cannot
write more than N characters of it running."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bookgen
from bookgen.cli import app
from bookgen.errors import BookgenError, BookgenWarning
from bookgen.guard import CopyIndex, CopyRun, file_name, run_hashes
from bookgen.interactive import command
from bookgen.sampler import SamplingSettings
from bookgen.story import Story
from tests.conftest import TINY_MODEL

runner = CliRunner()

# A short text with no repeats: a model learns it by heart in a few seconds.
TEXT = (
    "The lamplighter came up the hill at dusk, counting the posts under his breath. "
    "Mrs. Abernethy watched him from her window, as she had for nineteen years, and "
    "wondered whether he knew that the seventh lamp never lit before the sixth. "
    "Her cat, a grey and quarrelsome animal called Bishop, slept on the warm stove. "
    "Down in the harbour the fishing boats knocked together like idle teeth, and a "
    "boy with a red scarf sold the last of the mackerel for a penny a string.\n"
)
BY_HEART = dict(
    TINY_MODEL, hidden_size=128, batch_size=2, bptt=64, learning_rate=2e-2, val_fraction=0.05
)


def longest_copy(text: str, book: str) -> int:
    """The longest run of `text` found in `book` (brute force: tests only)."""
    best = 0
    for start in range(len(text)):
        while start + best < len(text) and text[start : start + best + 1] in book:
            best += 1
    return best


@pytest.fixture(scope="module")
def by_heart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model over-trained on a short text: left alone, it recites it."""
    folder = tmp_path_factory.mktemp("by_heart")
    book = folder / "book.txt"
    book.write_text(TEXT, encoding="utf-8")
    bookgen.train(book, folder / "model", steps=200, eval_every=200, **BY_HEART)
    return folder / "model", TEXT


def test_the_guard_keeps_copies_to_max_copy(by_heart):
    model, book = by_heart
    writer = bookgen.load(model)
    seed = "Her cat"
    free = "".join(writer.generate(seed, 300, temperature=0, max_copy=0))
    assert longest_copy(free, book) > 100  # it knows the book by heart
    for temperature in (0, 0.5):
        guarded = "".join(writer.generate(seed, 300, temperature, random_seed=1, max_copy=20))
        assert len(guarded) == 300
        assert longest_copy(guarded, book) <= 20
    assert writer.copy_guard(20).excluded > 0


def test_tokens_drawn_again_come_from_the_runs_own_random_seed(by_heart):
    # A redraw must use the run's generator, not torch's global one: the same random_seed gives
    # the same guarded text whatever else drew random numbers in between.
    model, _ = by_heart
    writer = bookgen.load(model)
    texts = []
    for global_seed in (0, 12345):
        torch.manual_seed(global_seed)
        texts.append("".join(writer.generate("Her cat", 200, 0.8, random_seed=4, max_copy=20)))
    assert writer.copy_guard(20).excluded > 0  # the guard did draw again
    assert texts[0] == texts[1]


def test_the_seed_does_not_count(by_heart):
    model, book = by_heart
    writer = bookgen.load(model)
    seed = book[:150]  # a long passage of the book itself
    written = "".join(writer.generate(seed, 80, temperature=0, max_copy=20))
    # The model goes on copying for 20 characters of its own, and not one more.
    assert written[:20] == book[150:170]
    assert written[:21] not in book
    assert longest_copy(written, book) <= 20


def test_the_index_is_saved_beside_the_checkpoint_and_rebuilt(by_heart, tmp_path: Path):
    model, book = by_heart
    saved = model / file_name(40)  # built when training ended, for the default --max-copy
    assert saved.exists()
    assert saved.stat().st_size < 2 * len(book.encode("utf-8")) + 1024  # + the file's header
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    (copy / file_name(40)).unlink()
    writer = bookgen.load(copy)
    a = "".join(writer.generate("The", 100, random_seed=3))
    rebuilt = CopyIndex.load(copy / file_name(40))
    assert rebuilt == CopyIndex.load(saved)  # rebuilt from the book, the same
    assert a == "".join(bookgen.load(model).generate("The", 100, random_seed=3))
    "".join(writer.generate("The", 10, max_copy=25))
    assert (copy / file_name(25)).exists()  # another N, its own index


def test_a_missing_book_and_a_missing_index_is_one_clear_error(by_heart, tmp_path: Path):
    model, _ = by_heart
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    (copy / file_name(40)).unlink()
    moved = model.parent / "book.txt"
    shutil.move(moved, tmp_path / "elsewhere.txt")
    try:
        with pytest.raises(BookgenError, match="not where it was.*--max-copy 0"):
            "".join(bookgen.load(copy).generate("it was", 10))
        result = runner.invoke(app, ["sample", "--checkpoint", str(copy), "--seed", "it"])
        assert result.exit_code == 2
        assert "error: the training book 'book' is not where it was" in result.output
        # Off, it needs no book; with the saved index (the model's own folder) neither.
        assert len("".join(bookgen.load(copy).generate("it", 30, max_copy=0))) == 30
        assert len("".join(bookgen.load(model).generate("it", 30))) == 30
        # In chat, /copy says so when it is typed, not mid-story, and the setting stays off.
        story = Story(bookgen.load(copy), SamplingSettings(max_copy=0))
        with pytest.raises(BookgenError, match="not where it was"):
            command(story, "/copy 40")
        assert story.settings.max_copy == 0
        with pytest.raises(BookgenError, match="not where it was"):
            Story(bookgen.load(copy))  # nor does a story start with a guard it cannot have
    finally:
        shutil.move(tmp_path / "elsewhere.txt", moved)


def test_every_run_of_the_book_is_in_the_index_and_few_others():
    rng = np.random.default_rng(0)
    book = rng.integers(0, 60, size=50_000)
    index = CopyIndex.build([book], 12, ["x"])
    runs = 50_000 - 13 + 1
    assert len(index.data) == math.ceil(15 * runs / 8)  # 15 bits a run, in whole bytes
    runs = run_hashes(book, 13)
    assert index.holds_each(runs).all()
    assert all(index.holds(int(h)) for h in runs[:500])
    others = run_hashes(rng.integers(0, 60, size=50_000), 13)
    assert index.holds_each(others).mean() < 0.003  # false "yes": about 0.08%


def test_the_rolling_hash_is_the_hash_of_the_last_n_tokens():
    tokens = np.arange(100) % 7
    hashes = run_hashes(tokens, 6)
    run = CopyRun(5)
    for position, token in enumerate(tokens[:-1]):
        run.push(int(token))
        if position >= 4:
            assert run.extended(int(tokens[position + 1])) == int(hashes[position - 4])


def test_the_cli_and_chat_set_the_guard(by_heart):
    model, _ = by_heart
    bad = runner.invoke(app, ["sample", "--checkpoint", str(model), "--max-copy", "-1"])
    assert bad.exit_code == 2
    assert "error: max-copy must be 0 (off) or more, not -1" in bad.output
    result = runner.invoke(
        app, ["sample", "--checkpoint", str(model), "--seed", "Her cat",
              "--temperature", "0", "--max-copy", "15", "--length", "200"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "copy guard:" in result.output  # a by-heart model needs it, and is told so
    story = Story(bookgen.load(model))
    assert command(story, "/copy 12") == (
        "copy 12: never more than 12 characters of the book word for word"
    )
    assert command(story, "/copy 0") == "copy 0: off"
    assert "--max-copy" in runner.invoke(app, ["sample", "--help"]).output


class Recording:
    """A stream decoder that also keeps every token id pushed through it: what was written."""

    def __init__(self, decoder) -> None:
        self.decoder, self.ids = decoder, []

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self.decoder.push(token_id)

    def flush(self) -> str:
        return self.decoder.flush()


def longest_token_copy(ids: list[int], book: list[int]) -> int:
    """The longest run of `ids` that `book` holds, in tokens (brute force: tests only)."""
    best = 0
    while best < len(ids):
        runs = {tuple(book[i : i + best + 1]) for i in range(len(book) - best)}
        if not any(tuple(ids[i : i + best + 1]) in runs for i in range(len(ids) - best)):
            break
        best += 1
    return best


def test_a_word_model_counts_words_worth_of_characters(tmp_path: Path):
    book = tmp_path / "book.txt"
    book.write_text(TEXT, encoding="utf-8")
    options = dict(BY_HEART, level="word")
    bookgen.train(book, tmp_path / "words", steps=150, eval_every=150, **options)
    writer = bookgen.load(tmp_path / "words")
    per_token = writer.checkpoint.manifest["corpus"]["chars_per_token"]
    book_ids = writer.tokenizer.encode(TEXT)
    # n = 40 characters' worth of words: 8 here, by the recorded average and by our own count.
    run_tokens = round(40 / per_token)
    assert run_tokens == round(40 * len(book_ids) / len(TEXT)) == 8
    assert writer.copy_guard(40).run_tokens == run_tokens
    free = "".join(writer.generate("Her cat", 60, temperature=0, max_copy=0))
    assert longest_copy(free, TEXT) > 100
    # The guarantee is in tokens: no run of more than n written tokens is in the book, and a
    # model that knows the book by heart copies exactly n of them (the seed does not count).
    primed = writer.prime("Her cat")
    primed.decoder = written = Recording(primed.decoder)
    settings = SamplingSettings(length=60, temperature=0, max_copy=40)
    guarded = "".join(writer.stream(primed, settings, torch.Generator()))
    assert len(written.ids) == 60
    assert longest_token_copy(written.ids, book_ids) == run_tokens
    assert longest_copy(guarded, TEXT) < 80


def test_the_redraws_reported_are_the_tokens_drawn_again(by_heart):
    model, _ = by_heart
    args = ["sample", "--checkpoint", str(model), "--seed", "Her cat", "--temperature", "0",
            "--max-copy", "15", "--length", "200"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = result.stdout[len("Her cat") : -1]
    # Counted apart from the guard: at temperature 0 a token drawn again is one that is not the
    # model's likeliest (unknown left out), read from one full forward pass over what was written.
    writer = bookgen.load(model)
    seed = writer.tokenizer.encode("Her cat")
    ids = writer.tokenizer.encode(written)
    with torch.no_grad():
        logits, _ = writer.model(torch.tensor(seed + ids).view(-1, 1), writer.model.init_state(1))
    likeliest = logits[len(seed) - 1 : -1, 0, 1:].argmax(-1) + 1  # (200,): predicts each of ids
    drawn_again = int((likeliest != torch.tensor(ids)).sum())
    assert len(ids) == 200 and 0 < drawn_again < 200
    message = " ".join(result.stderr.split())  # rich wraps the line
    assert f"copy guard: {drawn_again} token(s) drawn again, " in message
    assert "could not be" not in message  # a choice was always left


def test_where_every_token_would_copy_it_writes_on_and_says_so(tmp_path: Path):
    # Every pair of the book's two letters is in the book: at --max-copy 1, every token after
    # the first would copy two characters, whichever it is.
    book = tmp_path / "book.txt"
    book.write_text("aabb" * 60, encoding="utf-8")
    bookgen.train(book, tmp_path / "model", steps=2, eval_every=2, **TINY_MODEL)
    writer = bookgen.load(tmp_path / "model")
    text = "".join(writer.generate("a", 30, random_seed=0, max_copy=1))
    assert len(text) == 30 and set(text) <= {"a", "b"}
    guard = writer.copy_guard(1)
    assert (guard.excluded, guard.fallbacks) == (29, 29)
    args = ["sample", "--checkpoint", str(tmp_path / "model"), "--seed", "a", "--max-copy", "1",
            "--length", "30", "--random-seed", "0"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == "a" + text + "\n"
    assert " ".join(result.stderr.split()) == (
        "copy guard: 29 token(s) drawn again, where a run of the book would have grown past 1 "
        "characters (or, about 1 draw in 1,300, a false alarm); 29 could not be, nothing else "
        "being left"
    )


def test_books_too_large_to_index_are_sampled_unguarded_with_a_warning(by_heart, monkeypatch):
    model, _ = by_heart
    monkeypatch.setattr("bookgen.guard.MAX_TOKENS", 100)  # the book has 463 characters
    writer = bookgen.load(model)
    with pytest.warns(
        BookgenWarning, match="copy guard off: the books hold 463 tokens, more than the 100"
    ):
        text = "".join(writer.generate("Her cat", 300, temperature=0))
    assert longest_copy(text, TEXT) > 100  # unguarded: it recites


def test_a_continuation_stopped_in_chat_still_counts_as_the_models_own(by_heart):
    model, _ = by_heart
    story = Story(bookgen.load(model), SamplingSettings(temperature=0, max_copy=20))
    pieces = story.turn("Her cat")
    written = "".join(next(pieces) for _ in range(15))
    pieces.close()  # as a Ctrl-C does
    assert list(story.primed.copy_run.recent) == story.writer.tokenizer.encode(written)
    # Going on from there, the copy never runs past 20 characters across the two pieces.
    more = "".join(story.turn(""))
    assert longest_copy(written + more, TEXT) <= 20


def test_a_read_only_checkpoint_builds_the_index_for_the_session(by_heart, tmp_path: Path):
    model, book = by_heart
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    (copy / file_name(30)).mkdir()  # where the index for --max-copy 30 would be written
    writer = bookgen.load(copy)
    with pytest.warns(BookgenWarning, match="copy guard: index not saved"):
        text = "".join(writer.generate("Her cat", 200, temperature=0, max_copy=30))
    assert longest_copy(text, book) <= 30


def test_books_given_as_text_are_indexed_from_that_text(tmp_path: Path):
    from bookgen.corpus import Document

    document = Document("mem", "nowhere/mem.txt", TEXT, "utf-8", False)
    model = tmp_path / "model"
    trainer_options = dict(BY_HEART, steps=20, eval_every=20)
    from bookgen.api import MODEL_FIELDS
    from bookgen.settings import TrainConfig
    from bookgen.trainer import Trainer

    model_options = {k: v for k, v in trainer_options.items() if k in MODEL_FIELDS}
    train_options = {k: v for k, v in trainer_options.items() if k not in MODEL_FIELDS}
    Trainer([document], model_options, TrainConfig(**train_options), model).run()
    assert (model / file_name(40)).exists()  # no file to read: built from the text given
    text = "".join(bookgen.load(model).generate("Her cat", 200, temperature=0, max_copy=40))
    assert len(text) == 200 and longest_copy(text, TEXT) <= 40
