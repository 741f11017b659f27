"""`bookgen train`, and its progress display (rich, on stderr)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.text import Text

from bookgen.budget import LADDER, TOKENS_PER_WEIGHT
from bookgen.cli.console import err, fail, rank
from bookgen.cli.options import (
    MODEL,
    TRAINING,
    BatchSizeOption,
    BooksArgument,
    BpttOption,
    CellOption,
    DeviceOption,
    EncodingOption,
    HiddenSizeOption,
    KeepMarkupOption,
    LayersOption,
    LevelOption,
    field_option,
    given,
)
from bookgen.settings import (
    DEFAULT_MINUTES,
    ModelConfig,
    Precision,
    StyleBy,
    StyleDesign,
    TrainConfig,
)

if TYPE_CHECKING:
    from rich.progress import Progress  # imported when a run starts, not for --help

BUDGET = "Budget (stops at whichever comes first)"
WORDS = "Word level"
STYLES = "Styles"

SIZES = ", ".join(f"{layers} x {hidden}" for layers, hidden in LADDER)
SIZING = (
    " With no --layers, --hidden-size or --embed-size, a character model is sized for it on this "
    f"machine: walking up the sizes {SIZES}, training steps are timed while a size could "
    f"still read at least {TOKENS_PER_WEIGHT:g} token per weight in the budget, and the largest "
    "that does is taken (a smaller model that reads more text beats a bigger one that reads too "
    "little; past 2 x 512, re-reading the text counts for less than new text). On a GPU the "
    "batch is timed too. The start line shows the figures. "
    f"\\[default: {DEFAULT_MINUTES:g} when no budget is given]"
)


def _model(name: str, *spellings: str):
    return field_option(ModelConfig, name, *spellings, rich_help_panel=MODEL)


def _train(name: str, panel: str = TRAINING, *spellings: str):
    return field_option(TrainConfig, name, *spellings, rich_help_panel=panel)


def _old_seed(value: Optional[str]) -> None:
    """`--seed` was train's integer; it is now only ever the text a sample continues. Eager, so
    the hint comes before any other complaint (a missing book, say)."""
    if value is not None:
        fail(
            "train's --seed is now --random-seed (the integer that fixes the randomness); "
            "--seed is only ever the text a sample continues"
        )


# The options only `train` has (those it shares with other commands are in options.py).
OutOption = Annotated[
    Optional[Path],
    typer.Option(help="Checkpoint folder. \\[default: checkpoints/<first book's name>]"),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run saved in --out exactly where it stopped (weights, optimizer, "
        "stream position, carried state, random state, precision). Budget flags may change: "
        "the learning-rate decay follows the share of the budget used, so a larger budget "
        "stretches the rest of the schedule (the rate steps back up) and a smaller one "
        "shortens it.",
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace a model already in --out.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
OldSeedOption = Annotated[
    Optional[str], typer.Option("--seed", hidden=True, is_eager=True, callback=_old_seed)
]
MinutesOption = Annotated[
    Optional[float],
    typer.Option(help=TrainConfig.help("minutes") + SIZING, rich_help_panel=BUDGET),
]
EmbedSizeOption = Annotated[Optional[int], _model("embed_size", "--embed-size", "--embed")]
LearningRateOption = Annotated[float, _train("learning_rate", TRAINING, "--learning-rate", "--lr")]


def train(
    context: typer.Context,
    paths: BooksArgument,
    out: OutOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
    minutes: MinutesOption = TrainConfig.minutes,
    steps: Annotated[Optional[int], _train("steps", BUDGET)] = TrainConfig.steps,
    epochs: Annotated[Optional[float], _train("epochs", BUDGET)] = TrainConfig.epochs,
    level: LevelOption = TrainConfig.level,
    cell: CellOption = ModelConfig.cell,
    layers: LayersOption = ModelConfig.layers,
    hidden_size: HiddenSizeOption = ModelConfig.hidden_size,
    embed_size: EmbedSizeOption = ModelConfig.embed_size,
    dropout: Annotated[float, _model("dropout")] = ModelConfig.dropout,
    weight_drop: Annotated[float, _model("weight_drop")] = ModelConfig.weight_drop,
    vocab_size: Annotated[int, _train("vocab_size", WORDS)] = TrainConfig.vocab_size,
    min_count: Annotated[int, _train("min_count", WORDS)] = TrainConfig.min_count,
    lowercase: Annotated[bool, _train("lowercase", WORDS, "--lowercase")] = TrainConfig.lowercase,
    embeddings: Annotated[Optional[Path], _train("embeddings", WORDS)] = TrainConfig.embeddings,
    batch_size: BatchSizeOption = TrainConfig.batch_size,
    bptt: BpttOption = TrainConfig.bptt,
    learning_rate: LearningRateOption = TrainConfig.learning_rate,
    eval_every: Annotated[int | None, _train("eval_every")] = TrainConfig.eval_every,
    checkpoint_every: Annotated[
        int | None, _train("checkpoint_every")
    ] = TrainConfig.checkpoint_every,
    style_by: Annotated[StyleBy, _train("style_by", STYLES)] = TrainConfig.style_by,
    style_design: Annotated[
        StyleDesign, field_option(ModelConfig, "style_design", rich_help_panel=STYLES)
    ] = ModelConfig.style_design,
    val_fraction: Annotated[float, _train("val_fraction")] = TrainConfig.val_fraction,
    random_seed: Annotated[int, _train("random_seed")] = TrainConfig.random_seed,
    device: DeviceOption = TrainConfig.device,
    precision: Annotated[Precision, _train("precision")] = TrainConfig.precision,
    quiet: QuietOption = False,
    seed: OldSeedOption = None,
    encoding: EncodingOption = None,
    keep_markup: KeepMarkupOption = False,
) -> None:
    """Train a stateful character or word model on books and save it to a checkpoint folder.

    The books' text is laid end to end and cut into --batch-size parallel streams. Each step
    reads the next --bptt tokens of every stream; the hidden state is carried to the next window
    (and detached, so gradients stop there) and reset where a stream enters a new book. The last
    --val-fraction of each book is held out and evaluated the same way. Ctrl-C saves and stops;
    --resume continues. With a --minutes budget (the default) and no --layers, --hidden-size or
    --embed-size, a character model is sized for this machine (see --minutes).
    """
    # Only what was given goes on: the rest is the settings' default, or the saved run's.
    options = given(context, ModelConfig, TrainConfig)
    if "embeddings" in options:
        options["embeddings"] = str(options["embeddings"])
    if encoding is not None:
        options["encoding"] = encoding  # how to read, not a training setting: api.train's own
    if keep_markup:
        options["keep_markup"] = True
    result = _run(paths, out, resume, force, quiet, options)
    if result is None:  # not the process that reports
        return
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    err.print(f"saved to {result.out} (best validation loss {best} nats/token)")
    err.print(f"write with: bookgen sample --checkpoint {result.out} --seed 'Your text'")


def _run(paths: list[str], out, resume: bool, force: bool, quiet: bool, options: dict):
    """Train with one progress display (rank 0's); the result, or None on the other ranks."""
    from bookgen.api import train as run_training
    from bookgen.events import TrainingInterrupted

    display = TrainDisplay(quiet or rank() != 0)
    try:
        with display:
            result = run_training(
                paths, out, resume=resume, force=force, on_event=display.on_event,
                download_progress=display.on_download, **options,
            )  # fmt: skip
    except TrainingInterrupted as stop:
        if rank() == 0:
            err.print(f"{stop}")
            err.print(f"continue with: bookgen train {' '.join(paths)} --out {stop.out} --resume")
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:
        err.print("stopped at once; the last checkpoint saved is intact")
        raise typer.Exit(130) from None
    return result if rank() == 0 else None


def _streams(batch_size: int) -> str:
    """The run's streams (its whole batch), and under torchrun how the processes share them:
    --batch-size is per process, so N processes train N times as many rows."""
    from bookgen.distributed import processes

    count = processes()
    if count == 1:
        return f"{batch_size} streams"
    return f"{batch_size} streams ({batch_size // count} per process x {count} processes)"


def _progress(**options) -> Progress:
    """A rich progress display on stderr: what, bar, share done, figures, time left."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=err,
        **options,
    )


class TrainDisplay:
    """Renders the trainer's events (bookgen.events) as a rich progress bar on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = _progress(disable=quiet)
        self.task = None
        self.download_task = None
        self.token_progress = None  # bars while the books are read into the token cache
        self.token_tasks: dict[str, int] = {}  # stage -> its bar
        self.last_val = ""
        self.val_losses: list[float] = []  # the validation curve so far, drawn in the bar

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop_tokenizing()
        if self.progress.live.is_started:
            self.progress.stop()

    def _start(self) -> None:
        # Started lazily, so an error before training begins prints nothing but its own line.
        if not self.progress.live.is_started:
            self.progress.start()

    def on_download(self, done: int, total: int | None) -> None:
        self._start()
        if self.download_task is None:
            self.download_task = self.progress.add_task("download", total=total, info="")
        self.progress.update(self.download_task, completed=done, info=f"{done / 1e6:.1f} MB")

    def on_event(self, event) -> None:
        from bookgen import events

        if self.quiet:
            return
        if isinstance(event, events.Started):
            self._started(event)
        elif isinstance(event, events.Stepped):
            loss = f"{event.loss:.3f}" if event.loss is not None else "skipped"
            info = f"step {event.step}  loss {loss}{self.last_val}  {event.tokens_per_s:,.0f} tok/s"
            self.progress.update(self.task, completed=min(event.budget_used, 1.0), info=info)
        elif isinstance(event, events.Evaluated):
            self._evaluated(event)
        elif isinstance(event, events.Notice):
            self.progress.console.print(Text(event.message, style="yellow"))
        elif isinstance(event, events.Tokenizing):
            self._tokenizing(event)

    def _started(self, event) -> None:
        self._stop_tokenizing()
        if event.resumed_at_step:
            err.print(f"resuming at step {event.resumed_at_step}")
            from bookgen.checkpoint import read_metrics

            # The validation curve goes on from the saved run's.
            records = read_metrics(event.out)
            self.val_losses = [r["val_loss"] for r in records if "val_loss" in r]
        err.print(
            f"training on {', '.join(event.documents)}: {event.train_tokens:,} tokens "
            f"({event.val_tokens:,} held out), vocabulary {event.vocab_size}, "
            f"{event.parameters:,} parameters, {_streams(event.batch_size)} -> {event.out}",
            markup=False,
        )
        err.print(f"{event.device}, precision {event.precision_note}", markup=False)
        if event.size_note:
            err.print(event.size_note, markup=False)
        self._start()
        self.task = self.progress.add_task("train", total=1.0, info="")

    def _evaluated(self, event) -> None:
        from bookgen.report import val_sparkline

        m = event.metrics
        self.val_losses.append(m["val_loss"])
        curve = val_sparkline(self.val_losses) if len(self.val_losses) > 1 else ""
        self.last_val = (
            f"  val {curve}{' ' if curve else ''}{m['val_loss']:.3f} "
            f"({m['val_bits_per_char']:.3f} bpc)"
        )
        mark = " (best)" if event.best else ""
        self.progress.console.print(
            f"[bold]step {m['step']}[/]: val loss {m['val_loss']:.4f} nats/token, "
            f"{m['val_bits_per_char']:.4f} bits/char{mark}"
        )
        if event.preview:
            # Text, not markup: a book's "[Exit]" must print as it is.
            self.progress.console.print(Text(event.preview.strip(), style="dim"))

    def _tokenizing(self, event) -> None:
        """Bars for reading the books into the token cache, for corpora that take a while.

        Transient: they go when training starts, or when an error stops the run (so that its
        line is all that is left on stderr).
        """
        if self.token_progress is None:
            if event.total < 16_000_000:  # read in well under a second
                return
            self.token_progress = _progress(transient=True)
            self.token_progress.start()
        if event.stage not in self.token_tasks:
            task = self.token_progress.add_task(event.stage, total=event.total, info="")
            self.token_tasks[event.stage] = task
        unit = "M characters" if event.stage == "tokenizing" else "MB"
        info = f"{event.done / 1e6:,.1f} / {event.total / 1e6:,.1f} {unit}"
        self.token_progress.update(self.token_tasks[event.stage], completed=event.done, info=info)

    def _stop_tokenizing(self) -> None:
        if self.token_progress is not None:
            self.token_progress.stop()
            self.token_progress = None
