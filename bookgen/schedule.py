"""The schedule of a run, as pure functions of its progress: how much of the budget is used, the
learning rate there, and the time kept back for evaluations under --minutes; and the run's
clock, the one thing here that reads the time.

The budget is steps, epochs or minutes (or several: the first one spent ends the run). "Used"
is a share, 0 at the start and 1 at the end, so the learning rate follows the budget whatever
it is counted in:

    rate
     |   /‾‾‾‾‾--__
     |  /          ‾‾--__                 cosine decay over the budget used, down to
     |_/                 ‾‾--______       learning_rate * min_lr_ratio
     +--------------------------------->  budget used, 0..1
      warm-up: linear over the first warmup_steps steps (a factor on the decay, so the product
      is continuous even when the warm-up takes much of a short budget)
"""

from __future__ import annotations

import math
import time

from bookgen.checkpoint import TrainingProgress
from bookgen.settings import TrainConfig

# Validation times one window and counts the rest (see validation.py); this makes room for its
# error, and for the save that follows each evaluation.
RESERVE_FACTOR = 1.3
RESERVE_SECONDS = 1.0


def learning_rate(config: TrainConfig, step: int, budget_used: float) -> float:
    """The rate of the step after `step` steps, with `budget_used` (0..1) of the budget used.

    The decay follows the share of the budget used, so a resumed run with a larger budget
    stretches the rest of the schedule (the rate steps back up), and a smaller one shortens it.
    """
    c = config
    warmup = min(1.0, (step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
    decay = 0.5 * (1 + math.cos(math.pi * min(budget_used, 1.0)))
    return c.learning_rate * warmup * (c.min_lr_ratio + (1 - c.min_lr_ratio) * decay)


def budget_used(
    config: TrainConfig, step: int, epochs: float, elapsed_s: float, reserve_s: float
) -> float:
    """How much of the budget is used, 0..1: the largest of steps, epochs and time.

    `epochs` counts the share of the current epoch too; the time budget leaves out the
    `reserve_s` seconds kept for the evaluations (`evaluation_reserve`).
    """
    c = config
    parts = [0.0]
    if c.steps is not None:
        parts.append(step / c.steps)
    if c.epochs is not None:
        parts.append(epochs / c.epochs)
    if c.minutes is not None:
        parts.append(elapsed_s / max(c.minutes * 60 - reserve_s, 1e-9))
    return max(parts)


def evaluation_reserve(evaluation_s: float, minutes: float | None) -> float:
    """Seconds of a --minutes budget kept for evaluations, given one evaluation's estimate.

    On a busy machine the estimate can be wild: at most half the time is ever kept.
    """
    reserve = evaluation_s * RESERVE_FACTOR + RESERVE_SECONDS
    return reserve if minutes is None else min(reserve, minutes * 30)


class RunClock:
    """The run's time, from its start (`created`, a perf_counter: reading and tokenizing count
    against --minutes) plus a resumed run's past; and this session's speed, which leaves that
    past out."""

    def __init__(self, created: float, progress: TrainingProgress) -> None:
        self.start = created - progress.elapsed_s
        self.tokens_at_start, self.elapsed_at_start = progress.tokens_seen, progress.elapsed_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def tokens_per_s(self, progress: TrainingProgress) -> float:
        seconds = progress.elapsed_s - self.elapsed_at_start
        return (progress.tokens_seen - self.tokens_at_start) / max(seconds, 1e-9)
