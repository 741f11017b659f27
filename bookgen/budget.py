"""The model a time budget buys on this machine, and on a GPU its batch: measured, not guessed.

In a fixed number of minutes a small model reads many more tokens than a big one, and how many
more depends on the machine: on a 2-core AMD EPYC a 1 x 256 LSTM trains 4x faster than 1 x 512,
where bf16 is fast the gap is smaller. A model is only worth its size when it reads enough text to
fill it. Measured on Tiny Shakespeare (README, "Defaults for the budget"), a model pays for its
weights once the budget lets it read about `TOKENS_PER_WEIGHT` tokens per weight; below that a
smaller model that reads more text is better.

Past the sizes the sweep measured (`SWEPT`, up to 2 x 512), a size must also be one the text can
fill: reading the same text again is worth less than reading new text. Muennighoff et al.
("Scaling Data-Constrained Language Models", 2023) found up to four passes almost as good as new
text, and fit how each later pass loses worth, with a scale R = 15.4 passes. Here the first
`FULL_WORTH_PASSES` (4) passes count in full and their decay starts after them: E passes over U
tokens are worth, in tokens of new text,

    E * U                                     up to 4 passes,
    U * (4 + R * (1 - exp(-(E - 4) / R)))     after,   R = REREAD_SCALE = 15.4

so sixteen passes are worth 12.3 U, and no number of passes more than (4 + R) U = 19.4 U. A size
past 2 x 512 counts what it reads at that worth (`Budget.counted`), so it is never bigger than
19.4 weights per token of text (2 x 1024 at most for Tiny Shakespeare's 1M tokens), and near that
bound only where the budget reads the text many times. The swept sizes keep counting every token
read, as the sweep measured them: on a 20k-token text, 1 x 256 read 67 times (27 weights per
token of text, 0.7 per weight at their worth) beat 1 x 128 by 0.02 and 0.05 nats (README), so
the worth undervalues re-reads there (R was fitted on transformers without dropout; bookgen's
dropout makes a re-read worth more). Starting the decay after four passes rather than after the
first, as they did, leans the same way.

The size is chosen by walking a ladder upwards, from the smallest size:

    1 x 128 -> 1 x 256 -> 1 x 512 -> 2 x 512 -> 2 x 768 -> 2 x 1024 -> 3 x 1024 -> ...
    up while the next size would still read enough

A bigger model never trains faster than a smaller one, so the smaller size's speed bounds what
the next could read: a size that could not fill even at that speed is not timed at all. Timing a
big model costs seconds (a 1 x 512 step with a 4,400-character alphabet takes about 1 s on a
2-core AMD EPYC, and a probe runs several); walking up from the cheap end spends them only on
sizes in reach: on a CPU, up to an hour, it stops at 2 x 512 or below by speed alone. Each size
it times is timed with a real training step (through the precision probe, so its figures are
cached per machine and the next run pays nothing).

On a GPU a step costs about the same at batch 256 as at 32, so each size is timed at the batch it
reads fastest at (`choose_batch`): the batch asked for, doubled while tokens/s rises by
`BATCH_GAIN`, while each row of the text still holds `MIN_WINDOWS_PER_ROW` windows, and while the
budget still makes `MIN_UPDATES` updates. On a CPU the batch stays as asked: there a doubling
buys little (README, "Defaults for the budget"), and smaller batches won on quality.

Then the chosen size's reading sets more defaults (`settings_for`), each measured the same way:

- dropout 0.1 instead of 0.25 while it reads the text fewer than `LOW_DROPOUT_EPOCHS` times:
  there is little to overfit yet, and dropout only slows learning;
- the batch `choose_batch` chose, where it grew; else batch 16 and learning rate 1e-2 instead of
  32 and 5e-3 in a short run (fewer than `SHORT_RUN_TOKENS` tokens): twice the updates, each
  bolder, where updates are what is scarce.

Only character models of a fresh run with a --minutes budget, and no size given, are sized this
way (a setting given by hand is kept): word models have most of their weights in the vocabulary,
which reading more does not fill in the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# (layers, hidden size), smallest first. A CPU stops at 1 x 512 or 2 x 512; the rest are for
# faster machines. The top, 3 x 2048 (101M weights), is reached only by a text of 5.2M tokens or
# more (the worth of re-reads); AWD-LSTM's largest character model (enwik8) is 3 x 1840.
LADDER: tuple[tuple[int, int], ...] = (
    (1, 128), (1, 256), (1, 512), (2, 512),
    (2, 768), (2, 1024), (3, 1024), (3, 1536), (3, 2048),
)  # fmt: skip
# The sizes the sweep measured the rule on (README, "Defaults for the budget"): what they read
# counts in full, re-reads included, as it did there. Past them, re-reads count at their worth.
SWEPT = LADDER[:4]
TOKENS_PER_WEIGHT = 1.0
FULL_WORTH_PASSES = 4.0  # passes over the text that count in full (`Budget.worth`)
REREAD_SCALE = 15.4  # Muennighoff et al.'s R*_D: how fast later passes lose their worth
LOW_DROPOUT_EPOCHS = 8.0
SHORT_RUN_TOKENS = 2_000_000
SHORT_RUN = {"batch_size": 16, "learning_rate": 1e-2}
LOW_DROPOUT = 0.1
# The batch on a GPU (`choose_batch`). A doubling halves the updates a token buys: it is taken
# when it buys a quarter more tokens/s or better (less is within the ±10% the probes move
# between sittings); it leaves every row at least 32 windows (a row starts each epoch from a zero
# state: at most 1 window in 32 is read cold); and the budget at least 2,000 updates (the CPU
# sweep: below it, halving the batch to double the updates won 0.05 nats at one minute, 617 ->
# 1,021 steps; at 1,898 -> 3,766 steps it was within the noise).
BATCH_GAIN = 1.25
MIN_WINDOWS_PER_ROW = 32
MIN_UPDATES = 2_000


@dataclass(frozen=True)
class Budget:
    """What a run has to spend: `seconds` of training on `text_tokens` tokens of training text."""

    seconds: float
    text_tokens: int

    def passes(self, tokens: float) -> float:
        return tokens / max(self.text_tokens, 1)

    def counted(self, tokens: float, size: tuple[int, int]) -> float:
        """The tokens whether `size` fills is judged on: as read for the sizes the sweep
        measured, at their worth past them."""
        return tokens if size in SWEPT else self.worth(tokens)

    def worth(self, tokens: float) -> float:
        """Reading `tokens` is worth this many tokens of new text: the first `FULL_WORTH_PASSES`
        passes in full, each pass after them less (the module's docstring)."""
        text = max(self.text_tokens, 1)
        later = tokens / text - FULL_WORTH_PASSES
        if later <= 0:
            return tokens
        return text * (FULL_WORTH_PASSES + REREAD_SCALE * -math.expm1(-later / REREAD_SCALE))


@dataclass(frozen=True)
class BatchChoice:
    """The batch a size trains at: the batch asked for, doubled while it paid (`choose_batch`)."""

    batch_size: int
    tokens_per_s: float
    timed: tuple[tuple[int, float | None], ...]  # (batch, tokens/s) in order; None: did not run
    stop: str  # why no bigger batch

    @property
    def grown(self) -> bool:
        return self.batch_size != self.timed[0][0]


@dataclass(frozen=True)
class Measured:
    """One size, timed on this machine."""

    layers: int
    hidden_size: int
    weights: int  # trainable parameters
    tokens_per_s: float
    precision: str  # the precision it would train in
    batch: BatchChoice | None = None  # None: timed at the batch asked for, which it keeps

    def tokens(self, seconds: float) -> float:
        return self.tokens_per_s * seconds

    def tokens_per_weight(self, budget: Budget) -> float:
        """What it reads in the budget, per weight, as `Budget.counted` counts it."""
        tokens = budget.counted(self.tokens(budget.seconds), (self.layers, self.hidden_size))
        return tokens / self.weights

    def fills(self, budget: Budget) -> bool:
        return self.tokens_per_weight(budget) >= TOKENS_PER_WEIGHT

    @property
    def name(self) -> str:
        return f"{self.layers} x {self.hidden_size}"


@dataclass(frozen=True)
class Skipped:
    """A size not timed: even at the speed of the smaller size below it, it could not fill."""

    layers: int
    hidden_size: int
    weights: int
    at_most: float  # tokens per weight it could read at best

    @property
    def name(self) -> str:
        return f"{self.layers} x {self.hidden_size}"


def choose_size(
    measure: Callable[[int, int], Measured], weights: Callable[[int, int], int], budget: Budget
) -> tuple[Measured, list[Measured | Skipped]]:
    """The size to train for the budget, and every size considered on the way, in order: timed
    (`Measured`) or ruled out untimed (`Skipped`, which ends the walk).

    `measure` times a size; `weights` counts its trainable parameters without timing it.
    """
    chosen = measure(*LADDER[0])
    considered: list[Measured | Skipped] = [chosen]
    for layers, hidden_size in LADDER[1:]:
        previous = considered[-1]
        assert isinstance(previous, Measured)
        count = weights(layers, hidden_size)
        # What is counted grows with the tokens read: the smaller size's speed bounds it.
        at_most = budget.counted(previous.tokens(budget.seconds), (layers, hidden_size)) / count
        if at_most < TOKENS_PER_WEIGHT:
            considered.append(Skipped(layers, hidden_size, count, at_most))
            break
        bigger = measure(layers, hidden_size)
        considered.append(bigger)
        if not bigger.fills(budget):
            break
        chosen = bigger
    return chosen, considered


def choose_batch(
    measure: Callable[[int], float | None],
    base: int,
    budget: Budget,
    bptt: int,
    processes: int = 1,
) -> BatchChoice:
    """The batch (rows per process) one size reads fastest at, within what the text and the
    budget allow: `base` doubled while each doubling raises tokens/s by `BATCH_GAIN`.

    `measure(batch)` is one process's training tokens/s at that batch (None: it does not run,
    e.g. out of memory); `base` must run. All `processes` together hold batch x processes rows,
    and each needs `MIN_WINDOWS_PER_ROW` windows of `bptt` tokens; a doubling is not timed where
    the rows or the updates already rule it out (a step of 2B never costs less than one of B, so
    the updates only fall as the batch grows).
    """
    rows = budget.text_tokens // (MIN_WINDOWS_PER_ROW * bptt)
    batch, rate = base, measure(base)
    assert rate is not None, "the batch asked for must run"
    timed: list[tuple[int, float | None]] = [(base, rate)]

    def updates(batch: int, rate: float) -> float:
        return rate * budget.seconds / (batch * bptt)

    while True:
        bigger = 2 * batch
        if bigger * processes > rows:
            stop = f"{bigger} would leave rows of fewer than {MIN_WINDOWS_PER_ROW} windows"
            break
        if updates(batch, rate) < MIN_UPDATES:
            stop = f"{bigger} would make fewer than {MIN_UPDATES:,} updates"
            break
        faster = measure(bigger)
        timed.append((bigger, faster))
        if faster is None:
            stop = f"{bigger} does not run here"
            break
        if faster < BATCH_GAIN * rate:
            stop = f"{bigger} reads only {faster / rate:.2f}x as fast"
            break
        if updates(bigger, faster) < MIN_UPDATES:
            stop = f"{bigger} would make only {updates(bigger, faster):,.0f} updates"
            break
        batch, rate = bigger, faster
    return BatchChoice(batch, rate, tuple(timed), stop)


def settings_for(chosen: Measured, budget: Budget) -> dict:
    """The dropout, batch size and learning rate that suit how much `chosen` will read.

    Returns only what differs from the usual defaults (an empty dict for a long run).
    """
    tokens = chosen.tokens(budget.seconds)
    settings: dict = {}
    if budget.passes(tokens) < LOW_DROPOUT_EPOCHS:
        settings["dropout"] = LOW_DROPOUT
    if chosen.batch is not None and chosen.batch.grown:
        settings["batch_size"] = chosen.batch.batch_size
    elif tokens < SHORT_RUN_TOKENS:
        settings.update(SHORT_RUN)
    return settings


def describe(
    chosen: Measured, considered: list[Measured | Skipped], budget: Budget, settings: dict
) -> str:
    """The start line's account of the choice, with the figures it rests on."""
    figures = "; ".join(_figures(m, budget) for m in considered)
    line = (
        f"model {chosen.name}, sized for {budget.seconds / 60:.3g} min on this machine "
        f"({figures}; a size pays from {TOKENS_PER_WEIGHT:g} token per weight{_past(considered)})"
    )
    if chosen.batch is not None:
        line += f"; {_batch_account(chosen.batch)}"
    if settings:
        chosen_settings = ", ".join(
            f"{name.replace('_', ' ')} {v:g}" for name, v in settings.items()
        )
        epochs = budget.passes(chosen.tokens(budget.seconds))
        line += f"; it reads the text {epochs:.1f} times, so {chosen_settings}"
    return line


def _past(considered: list[Measured | Skipped]) -> str:
    """What the account adds where a size past the swept ones was considered."""
    if all((size.layers, size.hidden_size) in SWEPT for size in considered):
        return ""
    return (
        f"; past {SWEPT[-1][0]} x {SWEPT[-1][1]}, passes over the text after the first "
        f"{FULL_WORTH_PASSES:g} worth less"
    )


def _figures(size: Measured | Skipped, budget: Budget) -> str:
    if isinstance(size, Skipped):
        return f"{size.name} not timed, at most {size.at_most:.1f} tokens per weight"
    at = f" at batch {size.batch.batch_size}" if size.batch is not None else ""
    return (
        f"{size.name}{at} {size.tokens_per_s / 1000:.1f}k tok/s {size.precision}, "
        f"{size.tokens_per_weight(budget):.1f} tokens per weight"
    )


def _batch_account(batch: BatchChoice) -> str:
    """e.g. "batch 128 (tok/s at 32: 200k, 64: 380k, 128: 650k, 256: 700k; 256 reads only 1.08x
    as fast)"."""
    timed = ", ".join(
        f"{b}: {'fails' if rate is None else f'{rate / 1000:.0f}k'}" for b, rate in batch.timed
    )
    return f"batch {batch.batch_size} (tok/s at {timed}; {batch.stop})"
