"""The model a time budget buys on this machine: measured, not guessed.

In a fixed number of minutes a small model reads many more tokens than a big one, and how many
more depends on the machine: on a 2-core AMD EPYC a 1 x 256 LSTM trains 4x faster than 1 x 512,
where bf16 is fast the gap is smaller. A model is only worth its size when it reads enough text to
fill it. Measured on Tiny Shakespeare (README, "Defaults for the budget"), a model pays for its
weights once the budget lets it read about `TOKENS_PER_WEIGHT` tokens per weight; below that a
smaller model that reads more text is better.

The size is chosen by walking a ladder upwards, from the smallest size:

    1 x 128  ->  1 x 256  ->  1 x 512  ->  2 x 512
    up while the next size would still read enough

A bigger model never trains faster than a smaller one, so the smaller size's speed bounds what
the next could read: a size that could not fill even at that speed is not timed at all. Timing a
big model costs seconds (a 1 x 512 step with a 4,400-character alphabet takes about 1 s on a
2-core AMD EPYC, and a probe runs several); walking up from the cheap end spends them only on
sizes in reach. Each size it
times is timed with a real training step (through the precision probe, so its
figures are cached per machine and the next run pays nothing). Then the chosen size's reading
sets three more defaults (`settings_for`), each measured the same way:

- dropout 0.1 instead of 0.25 while it reads the text fewer than `LOW_DROPOUT_EPOCHS` times:
  there is little to overfit yet, and dropout only slows learning;
- batch 16 and learning rate 1e-2 instead of 32 and 5e-3 in a short run (fewer than
  `SHORT_RUN_TOKENS` tokens): twice the updates, each bolder, where updates are what is scarce.

Only character models of a fresh run with a --minutes budget, and no size given, are sized this
way (a setting given by hand is kept): word models have most of their weights in the vocabulary,
which reading more does not fill in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# (layers, hidden size), smallest first.
LADDER: tuple[tuple[int, int], ...] = ((1, 128), (1, 256), (1, 512), (2, 512))
TOKENS_PER_WEIGHT = 1.0
LOW_DROPOUT_EPOCHS = 8.0
SHORT_RUN_TOKENS = 2_000_000
SHORT_RUN = {"batch_size": 16, "learning_rate": 1e-2}
LOW_DROPOUT = 0.1


@dataclass(frozen=True)
class Measured:
    """One size, timed on this machine."""

    layers: int
    hidden_size: int
    weights: int  # trainable parameters
    tokens_per_s: float
    precision: str  # the precision it would train in

    def tokens(self, seconds: float) -> float:
        return self.tokens_per_s * seconds

    def tokens_per_weight(self, seconds: float) -> float:
        return self.tokens(seconds) / self.weights

    def fills(self, seconds: float) -> bool:
        return self.tokens_per_weight(seconds) >= TOKENS_PER_WEIGHT

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
    measure: Callable[[int, int], Measured], weights: Callable[[int, int], int], seconds: float
) -> tuple[Measured, list[Measured | Skipped]]:
    """The size to train for `seconds`, and every size considered on the way, in order: timed
    (`Measured`) or ruled out untimed (`Skipped`, which ends the walk).

    `measure` times a size; `weights` counts its trainable parameters without timing it.
    """
    chosen = measure(*LADDER[0])
    considered: list[Measured | Skipped] = [chosen]
    for layers, hidden_size in LADDER[1:]:
        previous = considered[-1]
        assert isinstance(previous, Measured)
        count = weights(layers, hidden_size)
        at_most = previous.tokens(seconds) / count
        if at_most < TOKENS_PER_WEIGHT:
            considered.append(Skipped(layers, hidden_size, count, at_most))
            break
        bigger = measure(layers, hidden_size)
        considered.append(bigger)
        if not bigger.fills(seconds):
            break
        chosen = bigger
    return chosen, considered


def settings_for(chosen: Measured, seconds: float, text_tokens: int) -> dict:
    """The dropout, batch size and learning rate that suit how much `chosen` will read.

    Returns only what differs from the usual defaults (an empty dict for a long run).
    """
    tokens = chosen.tokens(seconds)
    settings: dict = {}
    if tokens / max(text_tokens, 1) < LOW_DROPOUT_EPOCHS:
        settings["dropout"] = LOW_DROPOUT
    if tokens < SHORT_RUN_TOKENS:
        settings.update(SHORT_RUN)
    return settings


def describe(
    chosen: Measured,
    considered: list[Measured | Skipped],
    seconds: float,
    text_tokens: int,
    settings: dict,
) -> str:
    """The start line's account of the choice, with the figures it rests on."""
    figures = "; ".join(
        f"{m.name} {m.tokens_per_s / 1000:.1f}k tok/s {m.precision}, "
        f"{m.tokens_per_weight(seconds):.1f} tokens per weight"
        if isinstance(m, Measured)
        else f"{m.name} not timed, at most {m.at_most:.1f} tokens per weight"
        for m in considered
    )
    line = (
        f"model {chosen.name}, sized for {seconds / 60:.3g} min on this machine ({figures}; "
        f"a size pays from {TOKENS_PER_WEIGHT:g} token per weight)"
    )
    if settings:
        chosen_settings = ", ".join(
            f"{name.replace('_', ' ')} {v:g}" for name, v in settings.items()
        )
        epochs = chosen.tokens(seconds) / max(text_tokens, 1)
        line += f"; it reads the text {epochs:.1f} times, so {chosen_settings}"
    return line
