"""What a training run reports as it goes: the events a `Trainer` sends to its `on_event`
callback (the CLI draws its progress display from them, tests collect them in a list), and what
it returns or raises at the end."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Started:
    out: Path
    device: str
    precision: str  # fp32 or bf16
    precision_note: str  # how it was chosen, with the measured speeds
    parameters: int
    vocab_size: int
    train_tokens: int
    val_tokens: int
    batch_size: int
    windows_per_epoch: int
    documents: list[str]
    resumed_at_step: int = 0
    size_note: str = ""  # how the model's size was chosen for the budget ("" when given)


@dataclass
class Stepped:
    step: int
    epoch: float
    loss: float | None  # None: a non-finite step that was skipped
    lr: float
    tokens_per_s: float
    elapsed_s: float
    budget_used: float  # 0..1


@dataclass
class Evaluated:
    metrics: dict  # the record written to metrics.jsonl
    preview: str
    best: bool


@dataclass
class Saved:
    path: Path
    step: int


@dataclass
class Notice:
    message: str


@dataclass
class Tokenizing:
    """Reading the books into the token cache (not sent when the cache already holds them)."""

    stage: str  # "hashing" and "reading" count bytes, "tokenizing" characters
    done: int
    total: int


Event = Started | Stepped | Evaluated | Saved | Notice | Tokenizing


@dataclass
class TrainResult:
    out: Path
    steps: int
    best_val_loss: float | None
    metrics: list[dict] = field(default_factory=list)


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM stopped training after the latest state was saved."""

    def __init__(self, signum: int, out: Path, step: int) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        super().__init__(f"{name}: stopped at step {step}; the latest state is saved in {out}")
        self.exit_code = 128 + signum
        self.out = out
        self.step = step
