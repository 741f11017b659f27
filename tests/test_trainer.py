from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bookgen
from bookgen.checkpoint import load_checkpoint, read_metrics
from bookgen.corpus import read_document
from bookgen.errors import BookgenError
from bookgen.events import Evaluated, Saved, Started, Stepped, Tokenizing
from bookgen.settings import TrainConfig
from bookgen.streams import StreamBatcher
from tests.by_hand import CLOSE, nats_by_hand, split_by_hand, stream_by_hand
from tests.conftest import TINY_MODEL


def test_training_reports_events_and_learns(tiny_book: Path, tmp_path: Path):
    events = []
    result = bookgen.train(
        tiny_book, tmp_path / "run", steps=60, eval_every=20, on_event=events.append, **TINY_MODEL
    )
    # Tokenizing progress first (the books go into the token cache), then training.
    reading = [e for e in events if isinstance(e, Tokenizing)]
    assert events[: len(reading)] == reading and reading[-1].done == reading[-1].total
    assert isinstance(events[len(reading)], Started)
    steps = [e for e in events if isinstance(e, Stepped)]
    assert [e.step for e in steps] == list(range(1, 61))
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert [e.metrics["step"] for e in evals] == [20, 40, 60]
    assert any(isinstance(e, Saved) for e in events)
    losses = [e.metrics["val_loss"] for e in evals]
    assert losses[-1] < losses[0] < 3.5  # it learns (uniform over the vocabulary is ~3.3 nats)
    assert result.best_val_loss == min(losses)
    assert len(evals[-1].preview) == 200


def test_same_seed_same_run(tiny_book: Path, tmp_path: Path):
    bookgen.train(tiny_book, tmp_path / "a", steps=30, eval_every=10, random_seed=7, **TINY_MODEL)
    bookgen.train(tiny_book, tmp_path / "b", steps=30, eval_every=10, random_seed=7, **TINY_MODEL)
    bookgen.train(tiny_book, tmp_path / "c", steps=30, eval_every=10, random_seed=8, **TINY_MODEL)

    def losses(name):
        return [r["val_loss"] for r in read_metrics(tmp_path / name)]

    assert losses("a") == losses("b")
    assert losses("a") != losses("c")


def test_epoch_budget_and_bits_per_char(tiny_book: Path, tmp_path: Path):
    result = bookgen.train(tiny_book, tmp_path / "e", epochs=2, eval_every=1000, **TINY_MODEL)
    assert result.out == tmp_path / "e" and result.steps == result.metrics[-1]["step"]
    (record,) = result.metrics
    assert record["epoch"] == pytest.approx(2.0)
    # The last evaluation (off the eval_every cadence) records the rate the schedule ends on:
    # the floor of the cosine decay, still inside the warm-up if the run is that short.
    defaults = TrainConfig(epochs=2)
    warmup = min(1.0, (record["step"] + 1) / defaults.warmup_steps)
    end_rate = defaults.learning_rate * warmup * defaults.min_lr_ratio
    assert record["lr"] == pytest.approx(end_rate, rel=1e-9)
    # For characters, bits per character is nats per token / ln 2.
    assert record["val_bits_per_char"] == pytest.approx(record["val_loss"] / 0.6931471805599453)


def test_several_books_reset_the_state_and_skip_the_crossing(tmp_path: Path):
    # One row holds both books (bptt longer than the text): after 40 steps the model knows them,
    # and the loss of step 41 can be computed by hand: each book read from a zero state, and the
    # prediction of book b's first token from book a's last left out. A trainer that ignored the
    # reset or the loss mask reports another loss (both are checked to make a difference).
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("aaaa bbbb cccc. " * 60)
    (books / "b.txt").write_text("xyz xyz xyz. " * 60)
    out = tmp_path / "ab"
    options = dict(TINY_MODEL, bptt=10_000, random_seed=3, learning_rate=1e-2, style_by="none")
    first = []
    bookgen.train(books, out, steps=40, on_event=first.append, **options)
    (started,) = [e for e in first if isinstance(e, Started)]
    assert started.documents == ["a", "b"] and started.batch_size == 1
    saved = load_checkpoint(out, which="model")
    progress = saved.manifest["progress"]
    events = []
    bookgen.train(books, out, steps=41, resume=True, on_event=events.append)
    (reported,) = [e.loss for e in events if isinstance(e, Stepped)]

    encode = saved.tokenizer.encode
    a, b = (
        torch.tensor(encode(split_by_hand(read_document(books / n).text, 0.1)[0]))
        for n in ("a.txt", "b.txt")
    )
    stream = torch.cat([a, b])
    batcher = StreamBatcher(stream_by_hand([a.tolist(), b.tolist()], 0), 1, 10_000)
    window = next(batcher.windows(progress["epoch"], 3, progress["position"]))
    begin, end = window.start, window.start + len(window.inputs)
    assert begin == 0 and begin < len(a) < end  # a fresh state, and the crossing in the window
    model = saved.model

    def nats(first: int, last: int, state):  # predicting stream[first + 1 : last + 1]
        logits, state = model(stream[first:last].view(-1, 1), state)
        return F.cross_entropy(logits[:, 0], stream[first + 1 : last + 1], reduction="none"), state

    zero = model.init_state(1)
    book_a, state_a = nats(begin, len(a) - 1, zero)
    book_b, _ = nats(len(a), end, zero)
    expected = torch.cat([book_a, book_b]).mean().item()
    assert reported == pytest.approx(expected, rel=1e-5)

    # What a trainer that ignored the reset, or the mask, would have reported instead:
    carried, _ = nats(begin, end, zero)
    no_reset = torch.cat([carried[: len(a) - 1], carried[len(a) :]]).mean().item()
    crossing, _ = nats(len(a) - 1, len(a), state_a)
    unmasked = torch.cat([book_a, crossing, book_b]).mean().item()
    for wrong in (no_reset, unmasked):
        assert abs(wrong - expected) > 1e-4 * expected  # 10x the tolerance above


def test_an_existing_model_is_not_overwritten(trained: Path, tiny_book: Path):
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    with pytest.raises(BookgenError, match="already holds a trained model"):
        bookgen.train(tiny_book, trained, steps=5, **TINY_MODEL)
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before
    bookgen.train(tiny_book, trained, steps=5, force=True, **TINY_MODEL)
    assert [r["step"] for r in read_metrics(trained)] == [5]


def test_minutes_budget_stops_in_time(tiny_book: Path, tmp_path: Path, monkeypatch):
    # --minutes is the whole call's time, reading the books included. Reading is made slow here
    # (2 s, as a large corpus on a slow disk would be) in a 4.5 s budget: a run whose clock
    # started after reading would end about a second late. The time left after reading and the
    # evaluation reserve (about 1 s without a preview) still trains for many steps: over 100 on
    # an idle 2-core machine; 20 is a floor a loaded one clears.
    from bookgen import run as opening

    run = dict(TINY_MODEL, preview_length=0)
    # The process's one-time start-up (the first optimizer imports torch's compiler: seconds)
    # is paid by a first run, so that the budget below is spent reading and training.
    bookgen.train(tiny_book, tmp_path / "warm-up", steps=1, **run)
    read, slow = opening.prepare_data, []

    def prepare_slowly(*args, **kwargs):
        time.sleep(2.0)
        slow.append(2.0)
        return read(*args, **kwargs)

    monkeypatch.setattr(opening, "prepare_data", prepare_slowly)
    events = []
    begin = time.perf_counter()
    bookgen.train(tiny_book, tmp_path / "m", minutes=0.075, on_event=events.append, **run)
    seconds = time.perf_counter() - begin
    assert slow == [2.0] and seconds <= 0.075 * 60
    assert len([e for e in events if isinstance(e, Stepped)]) >= 20


def test_the_learning_rate_never_jumps(tiny_book: Path, tmp_path: Path):
    # The warm-up (50 steps) takes most of this short budget; the rate must still move smoothly.
    events = []
    bookgen.train(
        tiny_book,
        tmp_path / "lr",
        steps=60,
        learning_rate=1e-2,
        on_event=events.append,
        **TINY_MODEL,
    )
    rates = [e.lr for e in events if isinstance(e, Stepped)]
    assert rates[0] == pytest.approx(1e-2 / 50)
    assert max(rates) < 1e-2
    assert all(abs(b - a) < 0.04 * 1e-2 for a, b in zip(rates[:-1], rates[1:], strict=True))


def test_force_replaces_a_model_only_once_the_new_settings_are_good(trained: Path, tiny_book):
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    with pytest.raises(BookgenError, match="--cell must be"):
        bookgen.train(tiny_book, trained, steps=5, force=True, cell="transformer", **TINY_MODEL)
    with pytest.raises(BookgenError):
        bookgen.train(
            tiny_book,
            trained,
            steps=5,
            force=True,
            level="word",
            embeddings=str(trained / "no-such-vectors.txt"),
            **TINY_MODEL,
        )
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before


def test_files_left_without_a_manifest_are_not_adopted(trained: Path, tiny_book: Path, tmp_path):
    # A run killed before its first save leaves no manifest; a word-level tokenizer and metrics
    # from some other run in the folder must not become part of the next run.
    out = tmp_path / "leftovers"
    out.mkdir()
    (out / "tokenizer.json").write_text('{"not": "this run\'s tokenizer"}')
    (out / "metrics.jsonl").write_text('{"step": 999, "val_loss": 0.1}\n')
    (out / "model-0000999.safetensors").write_bytes(b"old")
    result = bookgen.train(tiny_book, out, steps=10, **TINY_MODEL)
    assert [r["step"] for r in result.metrics] == [10]
    assert not (out / "model-0000999.safetensors").exists()
    assert (out / "tokenizer.json").read_text() == (trained / "tokenizer.json").read_text()
    assert "".join(bookgen.load(out).generate("It was", length=10, random_seed=1))


def test_validation_during_training_reads_at_most_max_val_tokens(tiny_book: Path, tmp_path: Path):
    # The held-out 10% (278 tokens) is read in 2 rows of 138; max_val_tokens=70 with T=16 allows
    # two windows (64 tokens), not three. The validation loss, worked out by hand: the first 32
    # tokens of each row in one forward pass from a zero state (carried across the two windows).
    out = tmp_path / "run"
    options = dict(TINY_MODEL, steps=10, eval_every=10, val_batch_size=2, max_val_tokens=70)
    result = bookgen.train(tiny_book, out, **options)
    saved = load_checkpoint(out, which="model")  # the weights of step 10, validated there
    ids = saved.tokenizer.encode(split_by_hand(read_document(tiny_book).text, 0.1)[1])
    assert len(ids) == 278
    expected = nats_by_hand(saved.model, [ids], 2, columns=32).mean().item()
    (record,) = result.metrics
    torch.testing.assert_close(record["val_loss"], expected, **CLOSE)
    # What reading a third window, or zeroing the state between the two, would report instead:
    for wrong in (dict(columns=48), dict(columns=32, reset_every=16)):
        other = nats_by_hand(saved.model, [ids], 2, **wrong).mean().item()
        assert abs(other - expected) > 1e-5 * expected  # 10x the tolerance above
