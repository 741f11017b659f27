"""The model and batch a --minutes budget buys (budget.py, sizing.py): the rules on fake speeds,
then the runs that apply them, with the timing replaced by figures."""

from __future__ import annotations

import json
import math

import pytest
import torch

import bookgen
from bookgen import budget, sizing
from bookgen.budget import (
    LADDER,
    Budget,
    Measured,
    choose_batch,
    choose_size,
    describe,
    settings_for,
)
from bookgen.checkpoint import load_checkpoint
from bookgen.corpus import open_corpus
from bookgen.events import Started
from tests.conftest import TINY_MODEL

TEXT = 1_000_000  # tokens: about Tiny Shakespeare's training text


def weights_by_hand(layers: int, hidden: int, vocab: int = 65) -> int:
    """A character model's weights (65 characters: Tiny Shakespeare): the tied embedding and
    output (V x H) and the output's bias; per layer, 4 gates of H x (H + H) and two 4H biases."""
    return vocab * hidden + vocab + layers * (8 * hidden * hidden + 8 * hidden)


def walk(speeds: dict, minutes: float, text: int = TEXT):
    """choose_size on these tokens/s; returns the size chosen and the sizes timed."""
    timed = []

    def measure(layers: int, hidden: int) -> Measured:
        timed.append((layers, hidden))
        return Measured(layers, hidden, weights_by_hand(layers, hidden), speeds[layers, hidden], "")

    chosen, _ = choose_size(measure, weights_by_hand, Budget(minutes * 60, text))
    return (chosen.layers, chosen.hidden_size), timed


# --- what reading the text again is worth ----------------------------------------------------


def test_four_passes_count_in_full_and_later_ones_less():
    b = Budget(60, TEXT)
    for passes in (0.5, 1, 2, 4):
        assert b.worth(passes * TEXT) == passes * TEXT
    # After four: Muennighoff et al.'s decay, 4 + 15.4 (1 - e^(-(E - 4) / 15.4)) passes' worth.
    assert b.worth(5 * TEXT) == pytest.approx(4.9682 * TEXT, rel=1e-4)
    assert b.worth(16 * TEXT) == pytest.approx(12.3350 * TEXT, rel=1e-4)
    assert b.worth(1e4 * TEXT) == pytest.approx(19.4 * TEXT, rel=1e-4)  # never more


# --- the ladder ---------------------------------------------------------------------------------

# Training tokens/s on the 2-core AMD EPYC (fp32, B 32, T 64): 1 x 128 .. 1 x 512 from the
# sweep (README, "Defaults for the budget"), 2 x 512 and 2 x 768 timed with sizing.probe.
EPYC = {(1, 128): 57_300, (1, 256): 22_400, (1, 512): 6_550, (2, 512): 3_300, (2, 768): 1_500}
BEFORE = LADDER[:4]  # the ladder before it grew past 2 x 512


def the_rule_before(speeds: dict, seconds: float) -> tuple[int, int]:
    """Up the four sizes while the next reads at least one token per weight, re-reads in full."""
    chosen = BEFORE[0]
    for size in BEFORE[1:]:
        if speeds[size] * seconds < weights_by_hand(*size):
            break
        chosen = size
    return chosen


@pytest.mark.parametrize("scale", [0.9, 1.0, 1.1])  # tokens/s move by ±10% between sittings
def test_a_cpu_run_of_up_to_ten_minutes_gets_the_size_it_got_before(scale):
    speeds = {size: rate * scale for size, rate in EPYC.items()}
    for seconds in range(30, 601, 5):
        chosen, timed = walk(speeds, seconds / 60)
        assert chosen == the_rule_before(speeds, seconds), seconds
        assert (2, 768) not in timed  # the walk still stops by speed, below the new sizes


def test_what_a_cpu_run_of_an_hour_gets():
    # 1 x 512 reads 24M tokens (11 per weight), 2 x 512 12M (2.8 per weight); at 2 x 512's
    # speed 2 x 768 could read 11.9 passes, worth 10.2M, at most 1.1 per weight, so it is timed:
    # 5.4M tokens, worth 5.3M, 0.6 per weight. 2 x 512, as before the ladder grew.
    assert walk(EPYC, 60) == ((2, 512), [*BEFORE, (2, 768)])
    assert the_rule_before(EPYC, 3600) == (2, 512)


def test_the_swept_sizes_count_every_token_read_however_short_the_text():
    # A 20k-token text read 67 times in a minute by 1 x 256 (1.3M tokens, 0.7 per weight at
    # their worth): 1 x 256, as before, and as measured (it beat 1 x 128 there, README). Alice
    # in Wonderland (130k tokens) read 90 times in an hour by 2 x 512: 2 x 512, as before.
    assert walk(EPYC, 1, text=20_000)[0] == (1, 256) == the_rule_before(EPYC, 60)
    assert walk(EPYC, 60, text=130_000)[0] == (2, 512) == the_rule_before(EPYC, 3600)


def test_the_ladder_goes_on_while_a_size_fills():
    # A GPU-like machine, a text of 10M tokens: 3 x 1024 reads 90M tokens in 3 minutes, 9 passes
    # worth 83M (3.3 per weight); 3 x 1536 could read 1.5 per weight at that speed, so it is
    # timed: 18M tokens, 0.3 per weight.
    speeds = dict(zip(LADDER, [4e6, 3e6, 2e6, 1.5e6, 1e6, 7e5, 5e5, 1e5, 5e4], strict=True))
    chosen, timed = walk(speeds, 3, text=10 * TEXT)
    assert chosen == (3, 1024)
    assert timed == list(LADDER[:8])


def test_no_size_is_bigger_than_the_text_can_fill_however_fast():
    # At any speed, 1M tokens of text are worth at most 19.4M: 2 x 1024 (16.9M weights) fills,
    # 3 x 1024 (25.3M) is ruled out untimed; with 100 times the text, the ladder's top.
    fast = dict.fromkeys(LADDER, 1e12)
    assert walk(fast, 10) == ((2, 1024), list(LADDER[:6]))
    assert walk(fast, 10, text=100 * TEXT) == (LADDER[-1], list(LADDER))
    # Tiny Shakespeare on the H200 (issue 25): 2 x 512 read 11 tokens per weight in 3 minutes
    # (47M, 47 passes). At half that speed 2 x 768 reads 23 passes, worth 15.0M: 1.6 per weight;
    # 2 x 1024 could read at most 0.9 per weight at that speed: untimed.
    h200 = dict(zip(LADDER, [2e6, 1e6, 4e5, 2.6e5, 1.3e5, 8e4, 5e4, 2e4, 1e4], strict=True))
    assert walk(h200, 3)[0] == (2, 768)


# --- the batch on a GPU -------------------------------------------------------------------------


def batch_walk(rates: dict, seconds: float, text: int = 100 * TEXT, processes: int = 1):
    timed = []

    def measure(batch: int) -> float | None:
        timed.append(batch)
        return rates[batch]

    choice = choose_batch(measure, 32, Budget(seconds, text), 64, processes)
    return choice, timed


# tokens/s of one size at each batch on a GPU: nearly free to B 128, then less.
GPU = {32: 2e5, 64: 3.8e5, 128: 7e5, 256: 8.5e5, 512: 1.2e6, 1024: 1.3e6}


def test_the_batch_doubles_while_tokens_per_second_rise_enough():
    choice, timed = batch_walk(GPU, 600)
    assert (choice.batch_size, choice.tokens_per_s) == (128, 7e5)
    assert timed == [32, 64, 128, 256]  # 256: 1.21x, not worth half the updates
    assert choice.stop == "256 reads only 1.21x as fast"
    assert choice.timed == ((32, 2e5), (64, 3.8e5), (128, 7e5), (256, 8.5e5))
    # Where every doubling pays, it stops only at what the text gives: 4M tokens, 1,953 rows.
    steady = {b: 2e5 * b / 32 for b in GPU}
    assert batch_walk(steady, 600, text=4 * TEXT)[0].batch_size == 1024


def test_every_row_keeps_32_windows_of_the_text():
    # 1M tokens in rows of at least 32 windows of 64: 488 rows, so 256 rows, untimed beyond;
    # two processes hold twice the rows each batch asks for: 128 each.
    steady = {b: 2e5 * b / 32 for b in GPU}
    choice, timed = batch_walk(steady, 600, text=TEXT)
    assert (choice.batch_size, timed) == (256, [32, 64, 128, 256])
    assert choice.stop == "512 would leave rows of fewer than 32 windows"
    assert batch_walk(steady, 600, text=TEXT, processes=2)[0].batch_size == 128


def test_a_short_budget_keeps_its_updates():
    steady = {b: 2e5 * b / 32 for b in GPU}
    # 20 s at B 32 make 1,953 updates, fewer than 2,000 already: no bigger batch is timed.
    choice, timed = batch_walk(steady, 20)
    assert (choice.batch_size, timed) == (32, [32])
    assert choice.stop == "64 would make fewer than 2,000 updates"
    # 25 s: B 32 makes 2,441; B 64 is worth it in tokens/s (1.3x) but makes only 1,587.
    choice, timed = batch_walk({32: 2e5, 64: 2.6e5}, 25)
    assert (choice.batch_size, timed) == (32, [32, 64])
    assert choice.stop == "64 would make only 1,587 updates"


def test_a_batch_that_does_not_run_ends_the_walk():
    choice, timed = batch_walk({**GPU, 64: 4e5, 128: None}, 600)
    assert (choice.batch_size, timed, choice.stop) == (64, [32, 64, 128], "128 does not run here")


# --- what the chosen size reads sets dropout, batch and rate ------------------------------------


def test_how_much_the_chosen_size_reads_sets_dropout_batch_and_rate():
    size = Measured(1, 256, weights=500_000, tokens_per_s=20_000.0, precision="fp32")
    # 1 minute: 1.2M tokens, 1.2 passes over a 1M-token book: a short run, little to overfit.
    assert settings_for(size, Budget(60, TEXT)) == {
        "dropout": 0.1, "batch_size": 16, "learning_rate": 0.01,
    }  # fmt: skip
    # 3 minutes: 3.6M tokens is no longer short, but 3.6 passes is still little dropout.
    assert settings_for(size, Budget(180, TEXT)) == {"dropout": 0.1}
    # 10 minutes: 12 passes: the usual settings.
    assert settings_for(size, Budget(600, TEXT)) == {}


def test_a_grown_batch_is_the_run_s_batch_and_not_a_short_run_s():
    grown = choose_batch({32: 2e5, 64: 4e5, 128: 4.1e5}.get, 32, Budget(600, 100 * TEXT), 64)
    size = Measured(2, 512, 4_200_000, grown.tokens_per_s, "bf16", grown)
    assert settings_for(size, Budget(600, 100 * TEXT)) == {"dropout": 0.1, "batch_size": 64}
    # Timed at batch 32 and kept: the usual rules, a short run's batch 16 among them.
    kept = choose_batch({32: 2e5}.get, 32, Budget(5, 100 * TEXT), 64)
    size = Measured(2, 512, 4_200_000, kept.tokens_per_s, "bf16", kept)
    assert settings_for(size, Budget(5, 100 * TEXT))["batch_size"] == 16


def test_the_start_line_says_the_batch_and_why():
    b = Budget(600, 100 * TEXT)
    grown = choose_batch({32: 2e5, 64: 4e5, 128: 4.1e5}.get, 32, b, 64)
    size = Measured(2, 512, 4_200_000, grown.tokens_per_s, "bf16", grown)
    line = describe(size, [size], b, settings_for(size, b))
    assert "2 x 512 at batch 64 400.0k tok/s bf16, 57.1 tokens per weight" in line
    assert (
        "; batch 64 (tok/s at 32: 200k, 64: 400k, 128: 410k; 128 reads only 1.02x as fast)" in line
    )
    assert line.endswith("it reads the text 2.4 times, so dropout 0.1, batch size 64")


# --- the run: sizing.py applies the rules --------------------------------------------------------


def _speeds(monkeypatch, by_size: dict) -> list:
    """Timing a size reports these tokens/s: by (layers, hidden), or by (layers, hidden, batch).
    Returns the list of what was timed, in order."""
    timed = []

    def fake(device, probe, precision, tokens, key):
        parts = key.split(" | ")
        shape, batch = json.loads(parts[3]), int(parts[4].split()[1])
        size = (shape["layers"], shape["hidden_size"])
        timed.append(size if size in by_size else (*size, batch))
        return by_size[timed[-1]]

    monkeypatch.setattr(sizing, "measured_speed", fake)
    return timed


@pytest.fixture
def rereads_in_full(monkeypatch):
    """The tiny book is read thousands of times in any budget, which fills no size at all: for
    the tests of the walk through a run, re-reads count in full."""
    monkeypatch.setattr(budget, "FULL_WORTH_PASSES", math.inf)


# What a size reads in 60 s, per weight, at these speeds: 1 x 256 has 0.4M weights here,
# 1 x 512 2.1M, 2 x 512 4.2M.
FAST = {(1, 128): 1e7, (1, 256): 1e7, (1, 512): 1e6, (2, 512): 5e4}
ALL = [(1, 128), (1, 256), (1, 512), (2, 512)]


@pytest.mark.usefixtures("rereads_in_full")
@pytest.mark.parametrize(
    ("speeds", "chosen", "timed", "untimed"),
    [
        # Up from 1 x 128: 1 x 512 reads 60M tokens (28 per weight), 2 x 512 6M (1.4); 2 x 768
        # could read at most 0.6 per weight at that speed: untimed.
        ({**FAST, (2, 512): 1e5}, (2, 512), ALL, "2 x 768 not timed, at most 0.6 tokens"),
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
    assert "at batch" not in note and "tok/s at" not in note  # a CPU's batch is not timed


def test_the_text_bounds_the_size_in_a_run(tiny_book, tmp_path, monkeypatch):
    # At any speed the tiny book (2,500 tokens) is worth at most 48,000 tokens: the swept sizes
    # count every token and fill, 2 x 768 (9.5M weights) is ruled out untimed.
    from bookgen.settings import TrainConfig
    from bookgen.trainer import Trainer

    timed = _speeds(monkeypatch, dict.fromkeys(LADDER, 1e12))
    options = {k: v for k, v in TINY_MODEL.items() if k not in ("hidden_size", "dropout")}
    config = TrainConfig(minutes=1, auto_size=True, **options)
    note = Trainer(open_corpus([tiny_book]), {}, config, tmp_path / "m").started.size_note
    assert timed == list(LADDER[:4])
    assert note.startswith("model 2 x 512, ")
    assert "2 x 768 not timed, at most 0.0 tokens per weight" in note
    assert note.endswith("; past 2 x 512, passes over the text after the first 4 worth less)")


@pytest.mark.usefixtures("rereads_in_full")
def test_the_chosen_size_starts_from_the_weights_it_would_by_hand(tiny_book, tmp_path, monkeypatch):
    # Timing sizes must not move the random stream: the chosen model starts from the very
    # weights that --layers 2 --hidden 512 starts from.
    from bookgen.settings import TrainConfig
    from bookgen.trainer import Trainer

    _speeds(monkeypatch, {**dict.fromkeys(ALL, 1e9), (2, 768): 1.0})
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


@pytest.mark.usefixtures("rereads_in_full")
def test_where_the_batch_is_chosen_the_run_trains_at_it(tiny_book, tmp_path, monkeypatch):
    # A device whose batch grows (a GPU's; the CPU stands in): each size is timed at B 4 and its
    # doublings, and the run trains at the batch chosen for its size, unless a batch was given.
    from bookgen.settings import TrainConfig
    from bookgen.trainer import Trainer

    monkeypatch.setattr(sizing, "GROWS_BATCH", ("cpu",))
    # 1 x 128: B 8 reads 1.9x as fast as B 4, B 16 only 1.05x. 1 x 256 fills nothing.
    speeds = {(1, 128, 4): 1e8, (1, 128, 8): 1.9e8, (1, 128, 16): 2e8, (1, 256, 4): 1.0}
    timed = _speeds(monkeypatch, speeds)
    options = dict(TINY_MODEL, batch_size=4, bptt=4)
    options = {k: v for k, v in options.items() if k not in ("hidden_size", "dropout")}
    documents = open_corpus([tiny_book])
    config = TrainConfig(minutes=1, auto_size=True, **options)
    trainer = Trainer(documents, {}, config, tmp_path / "a")
    assert timed == [(1, 128, 4), (1, 128, 8), (1, 128, 16), (1, 256, 4)]
    assert trainer.started.batch_size == 8
    note = trainer.started.size_note
    assert "1 x 128 at batch 8 190000.0k tok/s" in note
    assert "; batch 8 (tok/s at 4: 100000k, 8: 190000k, 16: 200000k; 16 reads only" in note
    # A batch given by hand is kept, and no other is timed.
    timed.clear()
    config = TrainConfig(minutes=1, auto_size=True, given=("batch_size",), **options)
    trainer = Trainer(documents, {}, config, tmp_path / "b")
    assert (timed, trainer.started.batch_size) == ([(1, 128, 4), (1, 256, 4)], 4)
    assert "batch 4" not in trainer.started.size_note


@pytest.mark.usefixtures("rereads_in_full")
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


@pytest.mark.usefixtures("rereads_in_full")
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a GPU's batch is timed")
def test_on_a_gpu_each_size_is_timed_at_its_batch(tmp_path):
    # Real probes on the GPU: the size is timed from B 4 up, and the run trains at the batch the
    # start line names (a doubling of 4 that ran). 250k tokens give 488 rows of 32 windows of 16.
    from bookgen.settings import TrainConfig
    from bookgen.trainer import Trainer
    from tests.conftest import TINY_BOOK

    book = tmp_path / "book.txt"
    book.write_text(TINY_BOOK * 100, encoding="utf-8")
    config = TrainConfig(minutes=1, auto_size=True, batch_size=4, bptt=16, device="cuda")
    trainer = Trainer(open_corpus([book]), {}, config, tmp_path / "m")
    batch = trainer.started.batch_size
    assert batch in (4, 8, 16, 32, 64, 128, 256)
    assert f"; batch {batch} (tok/s at 4: " in trainer.started.size_note
