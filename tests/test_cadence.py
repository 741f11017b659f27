"""When a run evaluates and saves (cadence.py): by the steps on a slow device, as always; by the
budget and the clock on a fast one, so the count does not grow with speed. Fake clocks only."""

from __future__ import annotations

import types
from itertools import pairwise
from pathlib import Path

import pytest

import bookgen
from bookgen import cadence as cadence_module
from bookgen import schedule, trainer
from bookgen.cadence import Cadence
from bookgen.checkpoint import TrainingProgress
from bookgen.events import Evaluated, Saved, Stepped
from bookgen.settings import EVAL_STEPS, SAVE_SECONDS, SAVE_STEPS, TrainConfig
from tests.conftest import TINY_MODEL


def simulate(config: TrainConfig, seconds_per_step: float, processes: int = 1):
    """The steps a run of `config` evaluates and saves at, its steps taking `seconds_per_step`
    (the budget used as schedule.budget_used counts it, without a reserve): the trainer's
    decisions, step by step."""
    cadence, progress = Cadence(config, processes), TrainingProgress()
    cadence.start(progress, 0.0, 0.0)
    evaluations, saves = [], []
    step, used = 0, 0.0
    while used < 1.0:
        step += 1
        elapsed = step * seconds_per_step
        used = schedule.budget_used(config, step, 0.0, elapsed, 0.0)
        seconds = cadence.seconds(used, elapsed)
        if cadence.evaluation_due(step, used, progress.last_eval_used):
            evaluations.append(step)
            progress.last_eval_used = used
            cadence.saved(seconds)
        elif cadence.save_due(step, seconds):
            saves.append(step)
            cadence.saved(seconds)
    return evaluations, saves


def test_a_slow_device_evaluates_and_saves_at_the_steps_it_always_did():
    """10 minutes at 1 s a step (a CPU): 250 steps are more than 5% of the budget and 200 more
    than 30 s, so the default cadence is the explicit --eval-every 250 --checkpoint-every 200."""
    auto = simulate(TrainConfig(minutes=10), 1.0)
    by_hand = simulate(TrainConfig(minutes=10, eval_every=250, checkpoint_every=200), 1.0)
    assert auto == by_hand
    assert auto == ([250, 500], [200, 400, 600])


def test_a_fast_device_evaluates_a_bounded_number_of_times():
    """3 minutes at 100 steps a second (the H200): the step cadence evaluated 72 times and saved
    144; the default one evaluates at most once per 5% of the budget and saves no sooner than
    30 s after the last save, on the same step multiples."""
    fast = TrainConfig(minutes=3)
    evaluations, saves = simulate(fast, 0.01)
    by_hand = simulate(TrainConfig(minutes=3, eval_every=250, checkpoint_every=200), 0.01)
    assert len(by_hand[0]) == 72 and len(by_hand[1]) == 72  # what the H200 run did, about
    assert evaluations == list(range(1000, 18_001, 1000)) and saves == []  # each one saves
    assert all(step % EVAL_STEPS == 0 for step in evaluations)
    gaps = [b - a for a, b in pairwise([0, *evaluations])]
    assert min(gaps) * 0.01 >= 0.05 * 180  # seconds apart: 5% of the budget
    # Twice as fast: the same number of evaluations, not twice as many.
    assert len(simulate(fast, 0.005)[0]) == len(evaluations)


def test_saves_between_rare_evaluations_are_bounded_in_seconds():
    """With --eval-every given rarely, the saves alone: on a fast device at least 30 s apart (a
    crash loses about that), on a slow one every 200 steps."""
    config = TrainConfig(minutes=10, eval_every=10**6)
    _, fast = simulate(config, 0.01)
    assert all(step % SAVE_STEPS == 0 for step in fast)
    times = [step * 0.01 for step in [0, *fast]]
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) == 20 and SAVE_SECONDS - 1e-6 <= min(gaps)
    assert max(gaps) < SAVE_SECONDS + SAVE_STEPS * 0.01
    _, slow = simulate(config, 1.0)
    assert slow == list(range(200, 601, 200))


def test_given_steps_are_kept_exactly_however_fast():
    config = TrainConfig(minutes=3, eval_every=250, checkpoint_every=200)
    evaluations, saves = simulate(config, 0.001)
    assert evaluations == list(range(250, 180_001, 250))
    assert saves == [s for s in range(200, 180_001, 200) if s % 250]


def test_a_steps_budget_evaluates_by_its_share_whatever_the_speed():
    """--steps 100000: 5% of the budget is 5,000 steps; the same on any device."""
    config = TrainConfig(steps=100_000)
    assert simulate(config, 0.01)[0] == simulate(config, 1.0)[0] == list(range(5000, 100_001, 5000))
    assert simulate(TrainConfig(steps=5000), 1.0)[0] == list(range(250, 5001, 250))


def test_several_processes_decide_from_what_they_agreed():
    """Among several processes the seconds are the agreed budget used times the budget's
    seconds (--minutes), never a process's own clock; without --minutes, the steps decide."""
    minutes = Cadence(TrainConfig(minutes=2), processes=2)
    assert minutes.seconds(0.5, own_seconds=1.0) == 60.0
    steps = Cadence(TrainConfig(steps=1000), processes=2)
    steps.start(TrainingProgress(), 0.0, 0.0)
    assert steps.seconds(0.5, own_seconds=1.0) is None
    assert [s for s in range(1, 1001) if steps.save_due(s, None)] == list(range(200, 1001, 200))
    alone = Cadence(TrainConfig(steps=1000), processes=1)
    assert alone.seconds(0.5, own_seconds=1.0) == 1.0


def test_a_larger_budget_on_resume_counts_from_where_it_resumes():
    progress = TrainingProgress(last_eval_used=1.0)  # evaluated at the end of a 40-step run
    Cadence(TrainConfig(steps=60), 1).start(progress, 40 / 60, 0.0)
    assert progress.last_eval_used == 40 / 60


# --- the trainer, on a fake clock ------------------------------------------------------------


class FakeClock:
    """perf_counter for the trainer and the run's clock: `seconds_per_step` per step done."""

    def __init__(self, seconds_per_step: float) -> None:
        self.now, self.seconds_per_step = 1000.0, seconds_per_step

    def perf_counter(self) -> float:
        return self.now

    def hook(self, events: list):
        def on_event(event):
            events.append(event)
            if isinstance(event, Stepped):
                self.now += self.seconds_per_step

        return on_event


def cadence_of(tiny_book: Path, out: Path, monkeypatch, seconds_per_step: float, **options):
    clock = FakeClock(seconds_per_step)
    fake_time = types.SimpleNamespace(perf_counter=clock.perf_counter)
    monkeypatch.setattr(trainer, "time", fake_time)
    monkeypatch.setattr(schedule, "time", fake_time)
    events: list = []
    run = dict(TINY_MODEL, preview_length=0, **options)
    bookgen.train(tiny_book, out, on_event=clock.hook(events), **run)
    evaluations = [e.metrics["step"] for e in events if isinstance(e, Evaluated)]
    return evaluations, [e.step for e in events if isinstance(e, Saved)]


@pytest.fixture
def short_steps(monkeypatch):
    """The default cadence's step multiples, small enough for a tiny run."""
    monkeypatch.setattr(cadence_module, "EVAL_STEPS", 5)
    monkeypatch.setattr(cadence_module, "SAVE_STEPS", 2)


def test_the_trainer_keeps_the_default_cadence(
    tiny_book: Path, tmp_path: Path, monkeypatch, short_steps
):
    """A 60-step run evaluates every 5 steps (more than 5% of the budget apart) and, on a slow
    clock (40 s a step), saves every 2 steps: as --eval-every 5 --checkpoint-every 2 does. On a
    fast one (1 s a step) it saves no sooner than 30 s after the start or the last save."""
    slow = cadence_of(tiny_book, tmp_path / "slow", monkeypatch, 40.0, steps=60)
    by_hand = cadence_of(
        tiny_book, tmp_path / "hand", monkeypatch, 40.0, steps=60, eval_every=5, checkpoint_every=2
    )
    assert slow == by_hand
    assert slow[0] == list(range(5, 61, 5))
    assert slow[1] == sorted({*range(2, 61, 2), *range(5, 61, 5)})  # evaluations save too
    fast = cadence_of(tiny_book, tmp_path / "fast", monkeypatch, 1.0, steps=60, eval_every=1000)
    # Step s decides at (s - 1) s: the first even step 30 s on is 32; then only the end's.
    assert fast == ([60], [32, 60])


def test_the_trainer_evaluates_by_budget_share(
    tiny_book: Path, tmp_path: Path, monkeypatch, short_steps
):
    """--steps 100 with evaluations due every 2 steps: no sooner than 5 steps (5%) apart, so
    every 6th step, and the end."""
    monkeypatch.setattr(cadence_module, "EVAL_STEPS", 2)
    evaluations, _ = cadence_of(tiny_book, tmp_path / "share", monkeypatch, 0.0, steps=100)
    assert evaluations == [*range(6, 97, 6), 100]
