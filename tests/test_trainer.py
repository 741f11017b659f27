from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bookgen
from bookgen.checkpoint import load_checkpoint, read_metrics
from bookgen.corpus import open_corpus, read_document
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
    options = dict(TINY_MODEL, bptt=10_000, random_seed=3, learning_rate=1e-2)
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


# --- the model's size chosen for a --minutes budget ---------------------------------------


def _speeds(monkeypatch, by_hidden: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """Timing a size reports these tokens/s; returns the list of the (layers, hidden) timed."""
    import json

    from bookgen import sizing

    timed = []

    def fake(device, probe, precision, tokens, key):
        shape = json.loads(key.split(" | ")[3])
        timed.append((shape["layers"], shape["hidden_size"]))
        return by_hidden[timed[-1]]

    monkeypatch.setattr(sizing, "measured_speed", fake)
    return timed


# What a size reads in 60 s, per weight, at these speeds: 1 x 256 has 0.4M weights here,
# 1 x 512 2.1M, 2 x 512 4.2M.
FAST = {(1, 128): 1e7, (1, 256): 1e7, (1, 512): 1e6, (2, 512): 5e4}
ALL = [(1, 128), (1, 256), (1, 512), (2, 512)]


@pytest.mark.parametrize(
    ("speeds", "chosen", "timed", "untimed"),
    [
        # Up from 1 x 128: 1 x 512 reads 60M tokens (28 per weight), 2 x 512 6M (1.4).
        ({**FAST, (2, 512): 1e5}, (2, 512), ALL, None),
        # 2 x 512 could read 14 per weight at 1 x 512's speed, so it is timed: 0.7, too few.
        (FAST, (1, 512), ALL, None),
        # 1 x 256 reads 1.1 per weight; even at that speed 1 x 512 could read only 0.3: untimed.
        ({**FAST, (1, 256): 1e4}, (1, 256), ALL[:2], "1 x 512 not timed, at most 0.3 tokens"),
        # Nothing is filled: the smallest, and nothing bigger is timed.
        ({(1, 128): 1.0}, (1, 128), ALL[:1], "1 x 256 not timed, at most 0.0 tokens"),
    ],
)
def test_a_minutes_budget_gets_the_largest_size_it_fills(
    tiny_book, tmp_path, monkeypatch, speeds, chosen, timed, untimed
):
    from bookgen.settings import TrainConfig
    from bookgen.trainer import Trainer

    measured = _speeds(monkeypatch, speeds)
    options = {k: v for k, v in TINY_MODEL.items() if k not in ("hidden_size", "dropout")}
    config = TrainConfig(minutes=1, auto_size=True, **options)
    trainer = Trainer(open_corpus([tiny_book]), {}, config, tmp_path / "m")
    assert (trainer.model.config.layers, trainer.model.config.hidden_size) == chosen
    assert measured == timed
    note = trainer.started.size_note
    assert note.startswith(f"model {chosen[0]} x {chosen[1]}, sized for ")
    for layers, hidden in timed:
        assert f"{layers} x {hidden} {speeds[layers, hidden] / 1000:.1f}k tok/s" in note
    assert (untimed is not None) == ("not timed" in note)
    if untimed is not None:
        assert untimed in note


def test_the_chosen_size_starts_from_the_weights_it_would_by_hand(tiny_book, tmp_path, monkeypatch):
    # Timing sizes must not move the random stream: the chosen model starts from the very
    # weights that --layers 2 --hidden 512 starts from.
    from bookgen.settings import TrainConfig
    from bookgen.trainer import Trainer

    _speeds(monkeypatch, dict.fromkeys(ALL, 1e9))
    train = {k: v for k, v in TINY_MODEL.items() if k not in ("hidden_size", "dropout")}
    documents = open_corpus([tiny_book])
    chosen = Trainer(documents, {}, TrainConfig(minutes=1, auto_size=True, **train), tmp_path / "a")
    by_hand = {"layers": 2, "hidden_size": 512}
    asked = Trainer(documents, by_hand, TrainConfig(minutes=1, **train), tmp_path / "b")
    assert chosen.model.config == asked.model.config
    for (name, a), (_, b) in zip(
        chosen.model.state_dict().items(), asked.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_the_size_is_not_chosen_when_given_or_without_a_time_budget(
    tiny_book, tmp_path, monkeypatch
):
    timed = _speeds(monkeypatch, {})  # timing anything would fail: nothing may be timed
    unsized = {k: v for k, v in TINY_MODEL.items() if k != "hidden_size"}
    runs = {
        "hidden given": dict(TINY_MODEL, minutes=0.02),
        "layers given": dict(unsized, minutes=0.02, layers=1),
        "embed given": dict(unsized, minutes=0.02, embed_size=16),
        "steps": dict(unsized, steps=3),
        "words": dict(unsized, minutes=0.02, level="word"),
    }
    for name, options in runs.items():
        events = []
        bookgen.train(tiny_book, tmp_path / name, on_event=events.append, **options)
        assert next(e for e in events if isinstance(e, Started)).size_note == "", name
    assert timed == []


def test_the_speed_of_a_size_is_measured_once_per_machine(tiny_book, tmp_path, monkeypatch):
    # fp32 where bf16 does not run is timed by bookgen itself and cached beside the precision
    # choices: a second run times nothing.
    from bookgen import context

    calls = []
    real = context.time_training

    def counted(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(context, "time_training", counted)
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))
    train = dict(batch_size=4, bptt=16, precision="fp32", device="cpu", eval_every=1)
    bookgen.train(tiny_book, tmp_path / "a", minutes=0.01, **train)
    assert calls and set(calls) == {"fp32"}
    first = len(calls)
    bookgen.train(tiny_book, tmp_path / "b", minutes=0.01, **train)
    assert len(calls) == first


def test_how_much_the_chosen_size_reads_sets_dropout_batch_and_rate():
    from bookgen.budget import Measured, settings_for

    size = Measured(1, 256, weights=500_000, tokens_per_s=20_000.0, precision="fp32")
    # 1 minute: 1.2M tokens, 1.2 passes over a 1M-token book: a short run, little to overfit.
    assert settings_for(size, 60, 1_000_000) == {
        "dropout": 0.1, "batch_size": 16, "learning_rate": 0.01,
    }  # fmt: skip
    # 3 minutes: 3.6M tokens is no longer short, but 3.6 passes is still little dropout.
    assert settings_for(size, 180, 1_000_000) == {"dropout": 0.1}
    # 10 minutes: 12 passes: the usual settings.
    assert settings_for(size, 600, 1_000_000) == {}


def test_a_short_run_gets_its_settings_except_those_given(tiny_book, tmp_path, monkeypatch):
    _speeds(monkeypatch, {(1, 512): 1.0, (1, 256): 1.0, (1, 128): 1.0})
    run = dict(minutes=0.02, bptt=16, precision="fp32", device="cpu", preview_length=0)
    events = []
    bookgen.train(tiny_book, tmp_path / "a", on_event=events.append, **run)
    saved = load_checkpoint(tmp_path / "a")
    assert (saved.model_config.hidden_size, saved.model_config.dropout) == (128, 0.1)
    assert saved.train_config["batch_size"] == 16
    assert saved.train_config["learning_rate"] == 0.01
    note = next(e for e in events if isinstance(e, Started)).size_note
    assert note.endswith("so dropout 0.1, batch size 16, learning rate 0.01"), note
    bookgen.train(tiny_book, tmp_path / "b", batch_size=4, dropout=0.2, **run)
    saved = load_checkpoint(tmp_path / "b")
    assert (saved.model_config.hidden_size, saved.model_config.dropout) == (128, 0.2)
    assert saved.train_config["batch_size"] == 4
    assert saved.train_config["learning_rate"] == 0.01
