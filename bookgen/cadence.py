"""When a run evaluates and saves, decided after each step:

    evaluate after step s  when  s % eval_every == 0          (250 unless given)
                           and   the budget used has grown by EVAL_SHARE (5%) since the last one
    save after step s      when  s % checkpoint_every == 0    (200 unless given)
                           and   SAVE_SECONDS (30) have passed since the last save, or the start
    and always at the end, evaluation and save. A --eval-every or --checkpoint-every given by
    hand keeps its steps alone: exactly the steps it names.

On a slow device 250 steps take more than 5% of the budget (30 s of 10 minutes) and 200 steps
more than 30 seconds, so the steps alone decide, as they always did. On a fast one the budget
and the clock do, so the count stops growing with the device's speed: a 3-minute run at 100
steps a second evaluates about 20 times and saves about 6 more, where it did 72 and 144.
Evaluations are bounded by a share of the budget (what they cost, and how finely they pick the
best weights, is relative to the run); saves by seconds (what a crash loses is time, whatever
the run's length).

An evaluation and a save are collectives when several processes train, so every process must
decide alike: only from what the step's agreement makes the same everywhere (the step, the
budget used by the slowest clock) and the settings. Seconds are the process's own clock when it
is alone; among several, a --minutes budget gives them (the budget used times the budget's
seconds: never less than the slowest clock's time, so saves come no rarer than 30 s apart); with
a budget in steps or epochs alone, several processes save on the steps alone.
"""

from __future__ import annotations

from bookgen.checkpoint import TrainingProgress
from bookgen.settings import EVAL_SHARE, EVAL_STEPS, SAVE_SECONDS, SAVE_STEPS, TrainConfig

# A share of the budget reached by adding steps' shares can fall short of 0.05 by a rounding.
SLACK = 1e-9


class Cadence:
    """The decisions, and the one thing they remember outside the run's progress: when the
    last save was (a resumed run's last save is the checkpoint it resumed from)."""

    def __init__(self, config: TrainConfig, processes: int) -> None:
        self.config = config
        self.processes = processes
        self.last_save_s: float | None = None

    def start(self, progress: TrainingProgress, used: float, own_seconds: float) -> None:
        """At the start of a session, fresh or resumed, with `used` of the budget used."""
        # A larger budget given on resume makes the share used smaller than at the last
        # evaluation: count from here.
        progress.last_eval_used = min(progress.last_eval_used, used)
        self.last_save_s = self.seconds(used, own_seconds)

    def seconds(self, used: float, own_seconds: float) -> float | None:
        """The run's seconds as every process sees them (None: not known alike)."""
        if self.processes == 1:
            return own_seconds
        if self.config.minutes is not None:
            return used * self.config.minutes * 60
        return None

    def evaluation_due(self, step: int, used: float, last_used: float) -> bool:
        """Whether to evaluate after `step` steps, `used` of the budget used, `last_used` at the
        last evaluation."""
        if self.config.eval_every is not None:
            return step % self.config.eval_every == 0
        return step % EVAL_STEPS == 0 and used - last_used >= EVAL_SHARE - SLACK

    def save_due(self, step: int, seconds: float | None) -> bool:
        """Whether to save after `step` steps, at `seconds` (`seconds`' answer)."""
        if self.config.checkpoint_every is not None:
            return step % self.config.checkpoint_every == 0
        if step % SAVE_STEPS:
            return False
        if seconds is None or self.last_save_s is None:
            return True  # the seconds are not known alike: the steps alone decide
        return seconds - self.last_save_s >= SAVE_SECONDS

    def saved(self, seconds: float | None) -> None:
        self.last_save_s = seconds
