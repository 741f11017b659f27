"""The training settings, each declared once: its default, its allowed values, its check.

`bookgen.train(...)`, `bookgen train --help` and every checkpoint's `train_config` read them
from here. (The model's shape is `model.ModelConfig`; how text is drawn is
`sampler.SamplingSettings`.)
"""

from __future__ import annotations

from dataclasses import dataclass

from bookgen.errors import BookgenError


@dataclass(frozen=True)
class TrainConfig:
    level: str = "char"  # "char" or "word"
    vocab_size: int = 20000  # word level: the most frequent words kept (the rest are unknown)
    min_count: int = 1  # word level: words seen fewer times are unknown
    lowercase: bool = False  # word level
    embeddings: str | None = None  # word level: GloVe / word2vec text file to start from
    batch_size: int = 32  # B: number of parallel streams (batch rows)
    bptt: int = 64  # T: tokens per window; gradients flow back at most this far
    learning_rate: float = 5e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # the cosine decay ends at learning_rate * min_lr_ratio
    grad_clip: float = 1.0
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    eval_every: int = 250
    checkpoint_every: int = 200
    val_fraction: float = 0.1
    val_batch_size: int = 16
    # Validation during training reads at most this many tokens (the start of each of its rows),
    # so a huge corpus does not spend its budget evaluating; `bookgen eval` reads everything.
    max_val_tokens: int = 2_000_000
    random_seed: int = 1337  # fixes the weights, dropout and the epochs' window shifts
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32
    preview_length: int = 200
    max_bad_steps: int = 10  # consecutive non-finite steps before training stops
    # A fresh character-level run with a --minutes budget and no size given gets the model the
    # budget buys on this machine, and the dropout, batch size and learning rate that suit how
    # much it reads (see `budget.py`), except the settings named in `given`. `bookgen.train`
    # sets both from what it was given. Off: the usual defaults.
    auto_size: bool = False
    given: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in ("char", "word"):
            raise BookgenError(f"--level must be char or word, not {self.level!r}")
        if self.steps is None and self.epochs is None and self.minutes is None:
            raise BookgenError("give a training budget: --steps, --epochs or --minutes")
        for name in ("steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BookgenError(f"--{name} must be more than 0, not {value}")
        positive = (
            "batch_size",
            "bptt",
            "eval_every",
            "checkpoint_every",
            "val_batch_size",
            "max_val_tokens",
        )
        for name in (*positive, "vocab_size", "min_count", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise BookgenError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup_steps < 0:
            raise BookgenError(f"warmup_steps must be 0 or more, not {self.warmup_steps}")
        if not 0 < self.val_fraction < 1:
            raise BookgenError(f"--val-fraction must be in (0, 1), not {self.val_fraction}")
        if not self.learning_rate > 0:
            raise BookgenError(f"--lr must be more than 0, not {self.learning_rate}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BookgenError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise BookgenError(f"--precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.embeddings is not None and self.level != "word":
            raise BookgenError("--embeddings needs --level word")
