"""Every setting a user can give, each declared once: its default, its help, its allowed values
and its check.

`ModelConfig` is the model's shape, `TrainConfig` how it is trained, `SamplingSettings` how text
is drawn, `BenchSettings` what `bookgen bench` measures. `bookgen.train(...)`, every command's
`--help`, chat's /help and every checkpoint's configs read them from here: a field's help lives
in its metadata (`TrainConfig.help("bptt")`), its allowed values in an Enum, its check in
`__post_init__`. Nothing here imports torch, so that `bookgen --help` answers without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from bookgen.errors import BookgenError

# With no budget at all (no --minutes, --steps or --epochs), training runs this many minutes.
DEFAULT_MINUTES = 10.0

# When a run evaluates and saves unless --eval-every / --checkpoint-every are given: every so
# many steps, as long as that is not sooner than a share of the budget (evaluations) or a
# number of seconds (saves) after the last one, so a fast device does not evaluate and save
# many times a minute (cadence.py). On a slow device the steps alone decide.
EVAL_STEPS = 250
EVAL_SHARE = 0.05
SAVE_STEPS = 200
SAVE_SECONDS = 30.0


class Choice(str, Enum):
    """A setting's allowed values, each member its own string.

    A member compares, hashes, formats, prints and writes to JSON exactly as its value does
    (`Cell.LSTM == "lstm"`, `json.dumps(Cell.LSTM) == '"lstm"'`, `f"{Cell.LSTM}" == "lstm"`), so
    checkpoints, caches and messages read the same whether a value came from the command line
    (an Enum, which typer validates and `--help` lists) or from an old checkpoint (a string).
    """

    __str__ = str.__str__
    __format__ = str.__format__

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def parse(cls, value: Any, option: str) -> Choice:
        """`value` as a member; the one check of the allowed values, for every setting."""
        try:
            return cls(value)
        except ValueError:
            names = [member.value for member in cls]
            allowed = f"{', '.join(names[:-1])} or {names[-1]}"
            raise BookgenError(f"{option} must be {allowed}, not {value!r}") from None


class Level(Choice):
    CHAR = "char"
    WORD = "word"


class Cell(Choice):
    LSTM = "lstm"
    GRU = "gru"


class Device(Choice):
    AUTO = "auto"  # CUDA when a GPU is present, else the CPU
    CPU = "cpu"
    CUDA = "cuda"


class StyleDesign(Choice):
    """How a model trained on several styles (authors, books) learns each one."""

    START = "start"  # a learned initial state per style, where a row starts a book of it
    EMBED = "embed"  # a learned vector per style, added to every input embedding
    BOTH = "both"


class StyleBy(Choice):
    """Where each book's style label comes from (a model learns one style per label)."""

    FILE = "file"  # the book's file name, without its suffix
    FOLDER = "folder"  # the name of the folder the book is in
    NONE = "none"  # every book one style: a model as before styles


class Precision(Choice):
    AUTO = "auto"  # measured on this machine: see context.choose_precision
    BF16 = "bf16"
    FP32 = "fp32"


def setting(default: Any, help: str) -> Any:
    """A dataclass field with its help text, which `--help` and the Python API show."""
    return field(default=default, metadata={"help": help})


class Described:
    """Reads the help of a setting from its field, so that no one writes it again."""

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def _parse_choices(config: Any, choices: dict[str, type[Choice]]) -> None:
    """Turn each named field of a frozen dataclass into its Enum, or raise the one-line error."""
    for name, choice in choices.items():
        option = f"--{name.replace('_', '-')}"
        object.__setattr__(config, name, choice.parse(getattr(config, name), option))


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig(Described):
    vocab_size: int = field(metadata={"help": "Tokens in the vocabulary: the tokenizer's."})
    cell: Cell = setting(Cell.LSTM, "Recurrent cell: lstm or gru.")
    layers: int = setting(1, "Stacked layers.")
    hidden_size: int = setting(512, "Hidden state size per layer.")
    # None: the same as hidden_size, so the weights can be tied
    embed_size: int | None = setting(
        None,
        "Embedding size (the hidden size unless given); equal to it, input and output "
        "weights are tied.",
    )
    # Locked dropout; measured: better at 10 minutes, a little worse at 1.
    dropout: float = setting(0.25, "Dropout, one mask per sequence.")
    tie_weights: bool = setting(
        True, "Share the embedding and output weights when the embedding size is the hidden size."
    )
    # AWD-LSTM's weight drop: dropout on the recurrent matrix weight_hh, one mask per window
    # (training only). Applied to the weight before the fused nn.LSTM/GRU call, so the fast
    # oneDNN/cuDNN kernel is kept.
    weight_drop: float = setting(
        0.0,
        "AWD-LSTM's weight drop: dropout on each layer's recurrent matrix, one mask per window, "
        "while training.",
    )
    # Set from the books' style labels (one per book by default), not given by hand, as
    # vocab_size is from the tokenizer. 0 (or 1): one style, a model as before styles.
    styles: int = field(default=0, metadata={"help": "Styles the model learns (0: one style)."})
    style_design: StyleDesign = setting(
        StyleDesign.BOTH,
        "How each style is learned: start (a learned initial state per style, set where a row "
        "starts a book), embed (a learned vector per style added to every input), or both.",
    )

    def __post_init__(self) -> None:
        if self.embed_size is None:
            object.__setattr__(self, "embed_size", self.hidden_size)
        _parse_choices(self, {"cell": Cell, "style_design": StyleDesign})
        if self.styles < 0:
            raise BookgenError(f"styles must be at least 0, not {self.styles}")
        if self.vocab_size < 2:
            raise BookgenError("the vocabulary needs at least two tokens")
        for name in ("layers", "hidden_size", "embed_size"):
            if getattr(self, name) < 1:
                raise BookgenError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise BookgenError(f"dropout must be in [0, 1), not {self.dropout}")
        if not 0.0 <= self.weight_drop < 1.0:
            raise BookgenError(f"weight drop must be in [0, 1), not {self.weight_drop}")

    @property
    def tied(self) -> bool:
        return self.tie_weights and self.embed_size == self.hidden_size

    @property
    def learned_starts(self) -> bool:
        """A trained initial state per style (only with two styles or more)."""
        return self.styles > 1 and self.style_design in (StyleDesign.START, StyleDesign.BOTH)

    @property
    def style_vectors(self) -> bool:
        """A trained vector per style added to every input (only with two styles or more)."""
        return self.styles > 1 and self.style_design in (StyleDesign.EMBED, StyleDesign.BOTH)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**data)


# --- training --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig(Described):
    level: Level = setting(Level.CHAR, "Tokens: char (letters) or word.")
    vocab_size: int = setting(20000, "Word level: words kept; rarer ones are unknown.")
    min_count: int = setting(1, "Word level: words seen fewer times are unknown.")
    lowercase: bool = setting(False, "Word level: lowercase all words.")
    embeddings: str | None = setting(
        None, "Word level: a GloVe or word2vec text file to start the word embeddings from."
    )
    batch_size: int = setting(
        32,
        "B: parallel streams. The text is cut into B contiguous pieces, one per batch row; each "
        "row's state carries on to its next window. Per process: under torchrun N processes "
        "train B x N streams.",
    )
    bptt: int = setting(
        64,
        "T: tokens per window. Gradients flow back at most T tokens; the state itself carries "
        "on across windows.",
    )
    learning_rate: float = setting(5e-3, "Peak learning rate (AdamW, warm-up then cosine decay).")
    weight_decay: float = setting(0.01, "AdamW's weight decay.")
    warmup_steps: int = setting(50, "Steps of linear warm-up to the peak learning rate.")
    min_lr_ratio: float = setting(
        0.1, "The cosine decay ends at the learning rate times this ratio."
    )
    grad_clip: float = setting(1.0, "Gradients are clipped to this norm.")
    steps: int | None = setting(None, "Stop after this many windows.")
    epochs: float | None = setting(None, "Stop after this many passes over the text.")
    minutes: float | None = setting(
        None, "Wall-clock budget; the last evaluation and save fit inside it."
    )
    # None: every EVAL_STEPS steps once EVAL_SHARE of the budget has passed (cadence.py).
    eval_every: int | None = setting(
        None,
        "Evaluate on the held-out text (and save) every N steps, and at the end. Not given: "
        f"every {EVAL_STEPS} steps, but no sooner than {EVAL_SHARE:.0%} of the budget after the "
        f"last evaluation, so a fast device evaluates about {round(1 / EVAL_SHARE)} times, not "
        "every second.",
    )
    # None: every SAVE_STEPS steps once SAVE_SECONDS have passed (cadence.py).
    checkpoint_every: int | None = setting(
        None,
        "Save the latest state every N steps, so a crash loses little. Not given: every "
        f"{SAVE_STEPS} steps, but no sooner than {SAVE_SECONDS:g} seconds after the last save, "
        f"so a crash loses {SAVE_SECONDS:g} seconds or {SAVE_STEPS} steps, whichever is longer.",
    )
    style_by: StyleBy = setting(
        StyleBy.FILE,
        "What a style is: file (each book's file name: pride-and-prejudice.txt is the style "
        "pride-and-prejudice), folder (the folder a book is in: books/austen/*.txt are austen, "
        "books/shelley/*.txt shelley), or none (one style, as one book). A catalogue name is its "
        "own style. One model learns every style, and text can later be asked for in one of "
        "them; with fewer than two styles the model is as without.",
    )
    val_fraction: float = setting(0.1, "Share of each book held out for validation (its end).")
    val_batch_size: int = setting(16, "Validation's parallel streams (rows).")
    # So a huge corpus does not spend its budget evaluating; `bookgen eval` reads everything.
    max_val_tokens: int = setting(
        2_000_000,
        "Validation during training reads at most this many tokens (the start of each of its "
        "rows).",
    )
    random_seed: int = setting(
        1337,
        "Fixes the randomness (weights, dropout, where windows are cut): the same random seed "
        "and settings give the same run.",
    )
    device: Device = setting(Device.AUTO, "auto (CUDA when present), cpu or cuda.")
    precision: Precision = setting(
        Precision.AUTO,
        "auto: time a few training steps in fp32 and in bf16 autocast on this machine and keep "
        "the faster (cached per machine and model shape; a resumed run keeps its precision); or "
        "bf16, or fp32.",
    )
    preview_length: int = setting(200, "Tokens of the sample written at each evaluation.")
    max_bad_steps: int = setting(10, "Consecutive non-finite steps before training stops.")
    # A fresh character-level run with a --minutes budget and no size given gets the model the
    # budget buys on this machine, and the dropout, batch size and learning rate that suit how
    # much it reads (see `budget.py`), except the settings named in `given`. `bookgen.train`
    # sets both from what it was given. Off: the usual defaults.
    auto_size: bool = setting(False, "Size the model for the --minutes budget on this machine.")
    given: tuple[str, ...] = setting((), "The settings given by hand, which sizing keeps.")

    def __post_init__(self) -> None:
        choices = {"level": Level, "device": Device, "precision": Precision, "style_by": StyleBy}
        _parse_choices(self, choices)
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
            value = getattr(self, name)
            if value is not None and value < 1:  # None: eval_every, checkpoint_every's default
                raise BookgenError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup_steps < 0:
            raise BookgenError(f"warmup_steps must be 0 or more, not {self.warmup_steps}")
        if not 0 < self.val_fraction < 1:
            raise BookgenError(f"--val-fraction must be in (0, 1), not {self.val_fraction}")
        if not self.learning_rate > 0:
            raise BookgenError(f"--learning-rate must be more than 0, not {self.learning_rate}")
        if self.embeddings is not None and self.level != Level.WORD:
            raise BookgenError("--embeddings needs --level word")


# --- sampling --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingSettings(Described):
    """How text is drawn: the one definition that `generate`, `bookgen sample`, `bookgen chat`
    and chat's /commands all read their defaults and help from."""

    length: int = setting(500, "Tokens to write (characters for a character model).")
    temperature: float = setting(
        0.8,
        "Randomness: 0 always takes the likeliest token, 1 samples the model as it is, "
        "above 1 is wilder.",
    )
    top_k: int = setting(0, "Draw only from the K likeliest tokens (0: no limit).")
    top_p: float = setting(
        1.0,
        "Draw only from the likeliest tokens that together make up P of the probability "
        "(1: no limit).",
    )
    max_copy: int = setting(
        40,
        "Copy guard: never write more than N characters running that the book holds "
        "word for word (for a word model, about N characters' worth of words); a token that "
        "would copy more is drawn again from the rest. Common phrases stay possible; "
        "0 turns the guard off.",
    )

    def __post_init__(self) -> None:
        if self.length < 0:
            raise BookgenError(f"length must be 0 or more, not {self.length}")
        if not 0 <= self.temperature < float("inf"):
            raise BookgenError(f"temperature must be 0 or more and finite, not {self.temperature}")
        if self.top_k < 0:
            raise BookgenError(f"top-k must be 0 (off) or more, not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise BookgenError(f"top-p must be in (0, 1], not {self.top_p}")
        if self.max_copy < 0:
            raise BookgenError(f"max-copy must be 0 (off) or more, not {self.max_copy}")


# --- bookgen bench ---------------------------------------------------------------------------

# The vocabulary each level is measured with: a book's characters, and training's default number
# of words kept.
BENCH_VOCAB = {Level.CHAR: 65, Level.WORD: TrainConfig.vocab_size}


@dataclass(frozen=True)
class BenchSettings(Described):
    """The shape `bookgen bench` measures. Model and training settings share their defaults and
    help with training's, except the reference shape (2 layers, B 64, T 128), which is larger
    than training's defaults on purpose: the README's speed figures are measured on it."""

    hidden_size: int = setting(ModelConfig.hidden_size, ModelConfig.help("hidden_size"))
    layers: int = setting(2, ModelConfig.help("layers"))
    batch_size: int = setting(64, TrainConfig.help("batch_size"))
    bptt: int = setting(128, TrainConfig.help("bptt"))
    level: Level = setting(TrainConfig.level, TrainConfig.help("level"))
    cell: Cell = setting(ModelConfig.cell, ModelConfig.help("cell"))
    device: Device = setting(TrainConfig.device, TrainConfig.help("device"))
    seconds: float = setting(3.0, "Seconds timed per figure and round (two rounds).")
    rounds: int = setting(2, "Rounds; each figure is the best of its rounds.")

    def __post_init__(self) -> None:
        _parse_choices(self, {"level": Level, "cell": Cell, "device": Device})
        for name in ("hidden_size", "layers", "batch_size", "bptt", "rounds"):
            if getattr(self, name) < 1:
                raise BookgenError(f"--{name.replace('_', '-')} must be at least 1")
        if self.seconds <= 0:
            raise BookgenError(f"--seconds must be more than 0, not {self.seconds}")

    @property
    def vocab_size(self) -> int:
        return BENCH_VOCAB[self.level]


# --- adapting to the text read (dynamic evaluation) ------------------------------------------


class AdaptRule(Choice):
    """How each segment's gradient moves the weights (adapt.py)."""

    SGD = "sgd"  # lr times the gradient, the same scale for every weight
    RMS = "rms"  # each weight's gradient over the root of its mean square so far (RMSprop)


@dataclass(frozen=True)
class AdaptSettings(Described):
    """How a model adapts to the text it reads (dynamic evaluation, `adapt.py`): the one
    definition `bookgen eval --adapt` and the Python API read their defaults and help from.
    The defaults were chosen by measurement (benchmarks/adapt.py)."""

    # Chosen by benchmarks/adapt.py on Pride and Prejudice and Moby-Dick (a 1 x 256 and a 1 x 512
    # model each, held-out text): rms beat sgd at every model; lr 5e-4 is the largest rms lr
    # that helped every model (1e-3 and up did almost nothing for the 1 x 512s, though the
    # 1 x 256s gain most there), and any decay tried made it worse (results/adapt-amd-epyc.json).
    adapt_lr: float = setting(
        5e-4,
        "The learning rate of the gradient step taken on each segment once it is scored "
        "(0: the weights never move: static).",
    )
    adapt_decay: float = setting(
        0.0,
        "After each step, the weights move this share of the way back to the trained ones "
        "(0: never pulled back; 1: back after every segment: static).",
    )
    adapt_segment: int = setting(50, "Tokens per segment; one gradient step after each segment.")
    adapt_rule: AdaptRule = setting(
        AdaptRule.RMS,
        "sgd (lr times the gradient) or rms (each weight's gradient over the root of its "
        "mean square over the segments read so far).",
    )

    def __post_init__(self) -> None:
        _parse_choices(self, {"adapt_rule": AdaptRule})
        if not 0 <= self.adapt_lr < float("inf"):
            raise BookgenError(f"--adapt-lr must be 0 or more and finite, not {self.adapt_lr}")
        if not 0 <= self.adapt_decay <= 1:
            raise BookgenError(f"--adapt-decay must be in [0, 1], not {self.adapt_decay}")
        if self.adapt_segment < 1:
            raise BookgenError(f"--adapt-segment must be at least 1, not {self.adapt_segment}")


# Writing after reading a short passage (sample --adapt-on, chat --adapt, generate(adapt_on=))
# asks more of adapting than scoring a long text does: the passage is read once, and what it
# taught must show in the text written. Measured (benchmarks/adapt_names.py, Tiny Shakespeare's
# 10-minute model, a 1,086-character passage with four invented names, 20 samples each): lr 5e-4
# put a name in 2 samples of 20, 1e-3 in 8, 2e-3 in 20 (held-out loss 1.709 -> 1.822 nats/char:
# the model leans towards the passage), 5e-3 in 20 (2.067), 1e-2 garbled the text (2.569).
WRITING_ADAPT_LR = 2e-3
