"""The `bookgen` command: parse options, call the library, render. No torch work here."""

from __future__ import annotations

import functools
import sys
import warnings
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from bookgen.api import DEFAULT_MINUTES
from bookgen.budget import LADDER, TOKENS_PER_WEIGHT
from bookgen.errors import BookgenError
from bookgen.model import ModelConfig
from bookgen.sampler import DEFAULTS as SAMPLING
from bookgen.sampler import SamplingSettings
from bookgen.settings import TrainConfig

app = typer.Typer(
    help=(
        "Train recurrent language models (LSTM, GRU) on whole books and write new text in the "
        "book's style.\n\n"
        "Typical use: bookgen train BOOK.txt --minutes 5, then bookgen sample --seed 'It was'."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
_show_tracebacks = {"on": False}  # set by --debug


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of errors (for bug reports).")
    ] = False,
) -> None:
    _show_tracebacks["on"] = debug


def clean_errors(command):
    """Turn a `BookgenError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return command(*args, **kwargs)
        except BookgenError as error:
            if _show_tracebacks["on"]:
                raise
            # Under torchrun every process meets the same bad input: rank 0 says it once. Only
            # a process that lost the others speaks for itself.
            if _rank() == 0 or error.own_to_each_process:
                prefix = f"[rank {_rank()}] " if _rank() else ""
                message = Text.assemble((f"{prefix}error:", "bold red"), f" {error}")
                err.print(message, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _rank() -> int:
    """This process's rank when torchrun started several (0 otherwise)."""
    import os

    return int(os.environ.get("RANK", "0") or 0)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(Text.assemble(("warning:", "yellow"), f" {message}"), soft_wrap=True)


def _default(config, name: str, unless: str = "") -> str:
    """'[default: X]' read from a config dataclass: --help never restates a default by hand."""
    (default,) = [f.default for f in fields(config) if f.name == name]
    assert default is not MISSING, name
    text = f"{default:g}" if isinstance(default, float) else f"{default}"
    return f"\\[default: {text}{', ' + unless if unless else ''}]"


def _sizes() -> str:
    """The model sizes a --minutes budget chooses among, as --help lists them."""
    return ", ".join(f"{layers} x {hidden}" for layers, hidden in LADDER)


# The option of every command that reads a trained model (eval, sample, chat).
CheckpointOption = Annotated[
    Optional[Path], typer.Option(help="Checkpoint folder \\[default: newest under checkpoints/].")
]


# The sampling options of `sample` and `chat`: help and defaults from SamplingSettings.
LengthOption = Annotated[int, typer.Option(help=SamplingSettings.help("length"))]
TemperatureOption = Annotated[float, typer.Option(help=SamplingSettings.help("temperature"))]
TopKOption = Annotated[int, typer.Option(help=SamplingSettings.help("top_k"))]
TopPOption = Annotated[float, typer.Option(help=SamplingSettings.help("top_p"))]
MaxCopyOption = Annotated[
    int, typer.Option(help=SamplingSettings.help("max_copy"), metavar="CHARACTERS")
]


# --- bookgen corpus --------------------------------------------------------------------------


@app.command()
@clean_errors
def corpus(
    paths: Annotated[
        list[str], typer.Argument(help="Book files, folders of .txt books, or globs.")
    ],
    dump: Annotated[
        Optional[Path],
        typer.Option(help="Write the exact cleaned text that training will see (UTF-8)."),
    ] = None,
) -> None:
    """Show how bookgen reads your books: encoding, Gutenberg licence stripped, characters.

    Real books come in many encodings and line-end conventions; bookgen decodes them, turns every
    line end into \\n, drops control characters and removes the Project Gutenberg licence, so the
    model learns the book and not the licence.
    """
    from bookgen.catalog import resolve_inputs
    from bookgen.corpus import read_corpus
    from bookgen.files import atomic_write

    documents = read_corpus(resolve_inputs(paths))
    table = Table(title="bookgen corpus")
    # A book's name is more use whole than the other columns.
    table.add_column("book", no_wrap=True, min_width=max(len(d.name) for d in documents))
    for column in ("encoding", "gutenberg header", "characters", "distinct"):
        table.add_column(
            column, justify="right" if column in ("characters", "distinct") else "left"
        )
    for d in documents:
        stripped = "stripped" if d.gutenberg_stripped else "none"
        table.add_row(d.name, d.encoding, stripped, f"{d.chars:,}", str(d.distinct_chars))
    Console().print(table)
    if dump is not None:
        atomic_write(dump, "".join(d.text for d in documents).encode("utf-8"))
        err.print(f"wrote the cleaned text to {dump}")


# --- bookgen train ---------------------------------------------------------------------------


BUDGET = "Budget (stops at whichever comes first)"
MODEL = "Model"
WORDS = "Word level"
TRAINING = "Training"


@app.command()
@clean_errors
def train(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Books: .txt files, folders of them, globs, or a catalogue name "
            "(shakespeare, pride-and-prejudice, moby-dick, ...).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(help="Checkpoint folder. \\[default: checkpoints/<first book's name>]"),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run saved in --out exactly where it stopped (weights, optimizer, "
            "stream position, carried state, random state, precision). Budget flags may change: "
            "the learning-rate decay follows the share of the budget used, so a larger budget "
            "stretches the rest of the schedule (the rate steps back up) and a smaller one "
            "shortens it.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a model already in --out.")
    ] = False,
    minutes: Annotated[
        Optional[float],
        typer.Option(
            help="Wall-clock budget; the last evaluation and save fit inside it. "
            f"\\[default: {DEFAULT_MINUTES:g} when no budget is given]",
            rich_help_panel=BUDGET,
        ),
    ] = None,
    steps: Annotated[
        Optional[int], typer.Option(help="Stop after this many windows.", rich_help_panel=BUDGET)
    ] = None,
    epochs: Annotated[
        Optional[float],
        typer.Option(help="Stop after this many passes over the text.", rich_help_panel=BUDGET),
    ] = None,
    level: Annotated[
        Optional[str],
        typer.Option(
            help="Tokens: char (letters) or word. " + _default(TrainConfig, "level"),
            rich_help_panel=MODEL,
        ),
    ] = None,
    cell: Annotated[
        Optional[str],
        typer.Option(
            help="Recurrent cell: lstm or gru. " + _default(ModelConfig, "cell"),
            rich_help_panel=MODEL,
        ),
    ] = None,
    layers: Annotated[
        Optional[int],
        typer.Option(
            help="Stacked layers. Not given (nor --hidden, --embed), a character model with a "
            "--minutes budget is sized for this machine: see --hidden. "
            + _default(ModelConfig, "layers", "or sized for --minutes"),
            rich_help_panel=MODEL,
        ),
    ] = None,
    hidden: Annotated[
        Optional[int],
        typer.Option(
            help="Hidden state size per layer. Not given (nor --layers, --embed), a character "
            "model with a --minutes budget is sized for this machine: training steps of "
            f"{_sizes()} are timed here, and the largest that reads at least "
            f"{TOKENS_PER_WEIGHT:g} token per weight in the budget is taken (a smaller model "
            "that reads more text beats a bigger one that reads too little); the start line "
            "shows the figures. " + _default(ModelConfig, "hidden_size", "or sized for --minutes"),
            rich_help_panel=MODEL,
        ),
    ] = None,
    embed: Annotated[
        Optional[int],
        typer.Option(
            help="Embedding size; equal to --hidden, input and output weights are tied. "
            "\\[default: = --hidden]",
            rich_help_panel=MODEL,
        ),
    ] = None,
    dropout: Annotated[
        Optional[float],
        typer.Option(
            help="Dropout, one mask per sequence. " + _default(ModelConfig, "dropout"),
            rich_help_panel=MODEL,
        ),
    ] = None,
    weight_drop: Annotated[
        Optional[float],
        typer.Option(
            help="AWD-LSTM's weight drop: dropout on each layer's recurrent matrix, one mask "
            "per window, while training. " + _default(ModelConfig, "weight_drop"),
            rich_help_panel=MODEL,
        ),
    ] = None,
    vocab_size: Annotated[
        Optional[int],
        typer.Option(
            help="Words kept; rarer ones are unknown. " + _default(TrainConfig, "vocab_size"),
            rich_help_panel=WORDS,
        ),
    ] = None,
    min_count: Annotated[
        Optional[int],
        typer.Option(
            help="Words seen fewer times are unknown. " + _default(TrainConfig, "min_count"),
            rich_help_panel=WORDS,
        ),
    ] = None,
    lowercase: Annotated[
        Optional[bool],
        typer.Option("--lowercase", help="Lowercase all words.", rich_help_panel=WORDS),
    ] = None,
    embeddings: Annotated[
        Optional[Path],
        typer.Option(
            help="GloVe or word2vec text file: start word embeddings from it.",
            rich_help_panel=WORDS,
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            help="B: parallel streams. The text is cut into B contiguous pieces, one per batch "
            "row; each row's state carries on to its next window. "
            + _default(TrainConfig, "batch_size"),
            rich_help_panel=TRAINING,
        ),
    ] = None,
    bptt: Annotated[
        Optional[int],
        typer.Option(
            help="T: tokens per window. Gradients flow back at most T tokens; the state "
            "itself carries on across windows. " + _default(TrainConfig, "bptt"),
            rich_help_panel=TRAINING,
        ),
    ] = None,
    lr: Annotated[
        Optional[float],
        typer.Option(
            help="Peak learning rate (AdamW, warm-up then cosine decay). "
            + _default(TrainConfig, "learning_rate"),
            rich_help_panel=TRAINING,
        ),
    ] = None,
    eval_every: Annotated[
        Optional[int],
        typer.Option(
            help="Evaluate on the held-out text and save every N steps. "
            + _default(TrainConfig, "eval_every"),
            rich_help_panel=TRAINING,
        ),
    ] = None,
    checkpoint_every: Annotated[
        Optional[int],
        typer.Option(
            help="Save the latest state every N steps, so a crash loses little. "
            + _default(TrainConfig, "checkpoint_every"),
            rich_help_panel=TRAINING,
        ),
    ] = None,
    val_fraction: Annotated[
        Optional[float],
        typer.Option(
            help="Share of each book held out for validation (its end). "
            + _default(TrainConfig, "val_fraction"),
            rich_help_panel=TRAINING,
        ),
    ] = None,
    random_seed: Annotated[
        Optional[int],
        typer.Option(
            help="Fixes the randomness (weights, dropout, where windows are cut): the same "
            "random seed and settings give the same run. " + _default(TrainConfig, "random_seed"),
            rich_help_panel=TRAINING,
        ),
    ] = None,
    device: Annotated[
        Optional[str],
        typer.Option(help="auto (CUDA when present), cpu or cuda.", rich_help_panel=TRAINING),
    ] = None,
    precision: Annotated[
        Optional[str],
        typer.Option(
            help="auto: time a few training steps in fp32 and in bf16 autocast on this machine "
            "and keep the faster (cached per machine and model shape; a resumed run keeps its "
            "precision); or bf16, or fp32. \\[default: auto]",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Train a stateful character or word model on books and save it to a checkpoint folder.

    The books' text is laid end to end and cut into --batch-size parallel streams. Each step
    reads the next --bptt tokens of every stream; the hidden state is carried to the next window
    (and detached, so gradients stop there) and reset where a stream enters a new book. The last
    --val-fraction of each book is held out and evaluated the same way. Ctrl-C saves and stops;
    --resume continues.
    """
    from bookgen.api import train as run_training
    from bookgen.events import TrainingInterrupted

    options = dict(
        minutes=minutes, steps=steps, epochs=epochs, level=level, cell=cell, layers=layers,
        hidden_size=hidden, embed_size=embed, dropout=dropout, weight_drop=weight_drop,
        vocab_size=vocab_size, min_count=min_count, lowercase=lowercase,
        embeddings=str(embeddings) if embeddings else None, batch_size=batch_size, bptt=bptt,
        learning_rate=lr, eval_every=eval_every, checkpoint_every=checkpoint_every,
        val_fraction=val_fraction, random_seed=random_seed, device=device, precision=precision,
    )  # fmt: skip
    rank = _rank()
    display = _TrainDisplay(quiet or rank != 0)  # one progress display: rank 0's
    try:
        with display:
            result = run_training(
                paths, out, resume=resume, force=force, on_event=display.on_event,
                download_progress=display.on_download, **options,
            )  # fmt: skip
    except TrainingInterrupted as stop:
        if rank == 0:
            err.print(f"{stop}")
            err.print(f"continue with: bookgen train {' '.join(paths)} --out {stop.out} --resume")
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:
        err.print("stopped at once; the last checkpoint saved is intact")
        raise typer.Exit(130) from None
    if rank != 0:
        return
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    err.print(f"saved to {result.out} (best validation loss {best} nats/token)")
    err.print(f"write with: bookgen sample --checkpoint {result.out} --seed 'Your text'")


class _TrainDisplay:
    """Renders trainer events as a rich progress bar on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
        )
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
        from bookgen import events as t

        if self.quiet:
            return
        if isinstance(event, t.Started):
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
                f"{event.parameters:,} parameters, {event.batch_size} streams -> {event.out}",
                markup=False,
            )
            err.print(f"{event.device}, precision {event.precision_note}", markup=False)
            if event.size_note:
                err.print(event.size_note, markup=False)
            self._start()
            self.task = self.progress.add_task("train", total=1.0, info="")
        elif isinstance(event, t.Stepped):
            loss = f"{event.loss:.3f}" if event.loss is not None else "skipped"
            info = f"step {event.step}  loss {loss}{self.last_val}  {event.tokens_per_s:,.0f} tok/s"
            self.progress.update(self.task, completed=min(event.budget_used, 1.0), info=info)
        elif isinstance(event, t.Evaluated):
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
        elif isinstance(event, t.Notice):
            self.progress.console.print(Text(event.message, style="yellow"))
        elif isinstance(event, t.Tokenizing):
            self._tokenizing(event)

    def _tokenizing(self, event) -> None:
        """Bars for reading the books into the token cache, for corpora that take a while.

        Transient: they go when training starts, or when an error stops the run (so that its
        line is all that is left on stderr).
        """
        if self.token_progress is None:
            if event.total < 16_000_000:  # read in well under a second
                return
            self.token_progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=err, transient=True,
            )  # fmt: skip
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


# --- bookgen explain -------------------------------------------------------------------------


@app.command()
@clean_errors
def explain(
    paths: Annotated[
        list[str], typer.Argument(help="Book files, folders of .txt books, globs or book names.")
    ],
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            help="B: batch rows (streams). "
            + _default(TrainConfig, "batch_size", "or the checkpoint's")
        ),
    ] = None,
    bptt: Annotated[
        Optional[int],
        typer.Option(
            help="T: tokens per window. " + _default(TrainConfig, "bptt", "or the checkpoint's")
        ),
    ] = None,
    windows: Annotated[
        int, typer.Option(help="How many windows of each row to show side by side.")
    ] = 3,
    level: Annotated[
        Optional[str],
        typer.Option(help="char or word. " + _default(TrainConfig, "level", "or the checkpoint's")),
    ] = None,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            help="A trained model: explain with its tokenizer and settings, and measure what its "
            "carried state is worth on these books (bits per character, carried vs reset every T)."
        ),
    ] = None,
) -> None:
    """Show, on your own books, how training cuts them into batch rows and windows.

    The books are read exactly as `bookgen train` reads them (the first 90% of each, end to end)
    and cut into B rows, one stream each. Each step reads the next T tokens of every row, so row
    i of one window continues row i of the window before it, and the hidden state carried from
    window to window belongs to the text read next. The tables show where each row begins, its
    first windows side by side, and where a row crosses into the next book and its state is
    reset (|*).
    """
    from bookgen.explain import explain_renderables, explain_streams, state_value

    with err.status("reading the books"):
        explanation = explain_streams(paths, batch_size, bptt, windows, checkpoint, level)
    value = None
    if checkpoint is not None:
        with err.status("scoring the model, state carried and reset every T tokens"):
            value = state_value(paths, checkpoint, explanation.bptt)
    console = Console()
    for renderable in explain_renderables(explanation, value, width=console.width):
        console.print(renderable)


# --- bookgen eval ----------------------------------------------------------------------------


@app.command(name="eval")
@clean_errors
def evaluate(
    paths: Annotated[list[str], typer.Argument(help="Text files, folders or globs to score.")],
    checkpoint: CheckpointOption = None,
    reset_every: Annotated[
        Optional[int],
        typer.Option(
            help="Reset the hidden state every N tokens, as a model with only N tokens of "
            "context would read: compare with the default (carried state) to see what the "
            "state is worth."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Score a model on text: nats per token, perplexity and bits per character.

    The text is read as for training and run through the model with its state carried along.
    Bits per character (total bits / characters, each character of a piece read as unknown
    charged 8 bits) is comparable between character and word models on the same text; lower
    is better.
    """
    import json

    from bookgen.evaluation import evaluate_texts

    scores = evaluate_texts(paths, checkpoint, reset_every=reset_every)
    if as_json:
        print(json.dumps(scores))
        return
    table = Table(
        title="bookgen eval" + (f" (state reset every {reset_every})" if reset_every else "")
    )
    for key in ("tokens", "chars", "nats_per_token", "perplexity", "bits_per_char"):
        table.add_column(key, justify="right")
    table.add_row(
        f"{scores['tokens']:,}", f"{scores['chars']:,}", f"{scores['nats_per_token']:.4f}",
        f"{scores['perplexity']:.2f}", f"{scores['bits_per_char']:.4f}",
    )  # fmt: skip
    Console().print(table)


# --- bookgen report --------------------------------------------------------------------------


@app.command()
@clean_errors
def report(
    checkpoint: CheckpointOption = None,
    png: Annotated[
        Optional[Path],
        typer.Option(
            help="Also draw the loss curves into this PNG image (800 x 450, with matplotlib)."
        ),
    ] = None,
) -> None:
    """Show a training run: its books, model and settings, what it reached, its loss curves.

    Read from the checkpoint folder alone (checkpoint.json and metrics.jsonl); nothing is
    trained or scored again. Losses are nats per token on the held-out text (the last
    --val-fraction of each book) and on the training windows since the evaluation before; bits
    per character is comparable between character and word models. One point per evaluation
    (train --eval-every): a run with no evaluation yet shows its settings and no curve.
    """
    from bookgen.report import load_report, report_renderables, write_png

    run = load_report(checkpoint)
    if png is not None:  # before printing: a bad --png is then the only line shown
        written = write_png(run, png)
    console = Console()
    for renderable in report_renderables(run, width=min(console.width, 100)):
        console.print(renderable)
    if png is not None:
        err.print(f"curves written to {written}", markup=False, soft_wrap=True)


# --- bookgen sample --------------------------------------------------------------------------


@app.command()
@clean_errors
def sample(
    seed: Annotated[
        str,
        typer.Option(
            help="Text to start from. The model reads all of it first, then continues it."
        ),
    ] = "",
    checkpoint: CheckpointOption = None,
    length: LengthOption = SAMPLING.length,
    temperature: TemperatureOption = SAMPLING.temperature,
    top_k: TopKOption = SAMPLING.top_k,
    top_p: TopPOption = SAMPLING.top_p,
    max_copy: MaxCopyOption = SAMPLING.max_copy,
    random_seed: Annotated[
        Optional[int], typer.Option(help="Fix the draws: the same seed gives the same text.")
    ] = None,
) -> None:
    """Write a continuation of --seed in the style of the book.

    stdout carries only the seed and the continuation, streamed as it is written, so it can be
    piped. The continuation is drawn at random from the model's predictions, so a model primed
    with "K" may well go on with any letter; use --temperature 0 for the single likeliest text.
    The copy guard (--max-copy) keeps the model from writing out long passages of its book; the
    seed is yours and does not count.
    """
    from bookgen.sampler import load

    SamplingSettings(length, temperature, top_k, top_p, max_copy)  # fail before loading
    writer = load(checkpoint)
    guard = writer.copy_guard(max_copy)  # its index, built now if need be: before the seed shows
    pieces = writer.generate(seed, length, temperature, top_k, top_p, random_seed, max_copy)
    out = sys.stdout
    out.write(seed)
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    if guard is not None and guard.excluded:
        # Some are the index's false alarms (about 1 draw in 1,300), so they are not all copies.
        err.print(
            f"copy guard: {guard.excluded} token(s) drawn again, where a run of the book would "
            f"have grown past {max_copy} characters (or, about 1 draw in 1,300, a false alarm)"
            + (
                f"; {guard.fallbacks} could not be, nothing else being left"
                if guard.fallbacks
                else ""
            ),
            style="dim",
            markup=False,
        )


# --- bookgen style ---------------------------------------------------------------------------


@app.command()
@clean_errors
def style(
    text: Annotated[
        Path,
        typer.Argument(
            help="The text to judge, e.g. a sample saved with bookgen sample > sample.txt.",
            show_default=False,
        ),
    ],
    checkpoint: CheckpointOption = None,
    against: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Another book to measure the distance to: a file, a folder of .txt books or a "
            "catalogue name; repeat for more (--against moby-dick --against little-women).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
) -> None:
    """How close is a text to the book the model learned from, and to other books?

    Copying: the longest run of characters of the text found verbatim in the training book,
    and the share of the text's 20-character runs (one starting at each character) found
    there; spaces and line ends are compared as one space. Style: sentence and word lengths,
    punctuation, the share of characters in quotation marks, the type-token ratio over
    windows of equal length and the rates of the book's commonest function words, for the
    text beside the book. Distance to each book, lower is closer: Burrows' Delta and Cosine
    Delta (the commonest words of all the books, z-scored over chunks of them) and the bits
    per character of the text under a character n-gram model of the book. The closest book
    is the one with the fewest bits per character: that measure reads every character, so it
    also judges an early model's half-formed words. No model is loaded: the training books
    are read again from where they were trained. --json prints the settings used.
    """
    import json

    from bookgen.style import compare_style, style_tables

    report = compare_style(text, checkpoint, against or ())
    if as_json:
        print(json.dumps(report.to_json()))
        return
    console = Console()
    for renderable in style_tables(report):
        console.print(renderable)


# --- bookgen chat ----------------------------------------------------------------------------


@app.command()
@clean_errors
def chat(
    checkpoint: CheckpointOption = None,
    length: LengthOption = SAMPLING.length,
    temperature: TemperatureOption = SAMPLING.temperature,
    top_k: TopKOption = SAMPLING.top_k,
    top_p: TopPOption = SAMPLING.top_p,
    max_copy: MaxCopyOption = SAMPLING.max_copy,
    random_seed: Annotated[
        Optional[int], typer.Option(help="Fix the draws: the same seed gives the same text.")
    ] = None,
) -> None:
    """Write a story together with the model, turn by turn, in the terminal.

    You type some text, the model continues it; then you type more. The model's hidden state
    carries across turns, so it remembers the whole story without re-reading it; only your new
    text is read each turn. Your text is read exactly as typed (start with a space to begin a
    new word). Type /help in the session for commands (/undo, /retry, /reset, /temperature,
    /copy, /save, /quit). Ctrl-C stops the model mid-turn; Ctrl-C or Ctrl-D at an empty prompt
    ends the session. With stdin from a pipe, each line is one turn:
    printf 'It was\n/quit\n' | bookgen chat
    """
    from bookgen.interactive import chat_main

    settings = SamplingSettings(length, temperature, top_k, top_p, max_copy)
    raise typer.Exit(chat_main(checkpoint, random_seed, settings))


# --- bookgen bench ---------------------------------------------------------------------------

BENCH = "What is measured"


@app.command()
@clean_errors
def bench(
    hidden: Annotated[
        int, typer.Option("--hidden", help="Hidden units per layer.", rich_help_panel=BENCH)
    ] = 512,
    layers: Annotated[int, typer.Option(help="Stacked layers.", rich_help_panel=BENCH)] = 2,
    batch_size: Annotated[
        int, typer.Option(help="B: batch rows (streams).", rich_help_panel=BENCH)
    ] = 64,
    bptt: Annotated[int, typer.Option(help="T: tokens per window.", rich_help_panel=BENCH)] = 128,
    level: Annotated[
        str,
        typer.Option(
            help="char (65 symbols) or word (20,000 words): the vocabulary size measured.",
            rich_help_panel=BENCH,
        ),
    ] = "char",
    cell: Annotated[str, typer.Option(help="lstm or gru.", rich_help_panel=BENCH)] = "lstm",
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    seconds: Annotated[
        float, typer.Option(help="Seconds timed per figure and round (two rounds).")
    ] = 3.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Measure how fast bookgen trains and samples on this machine, in about a minute.

    Times bookgen's training step in fp32 and bf16 autocast (and says which one --precision auto
    would pick), the stock PyTorch recipe (one multi-layer fp32 nn.LSTM) on the same model as
    the baseline, sampling at batch 1 (bookgen and the stock one-call-per-token loop), and the
    machine's matrix-product peak with the share of it training reaches. Random tokens: speed
    does not depend on the book. Run it on a quiet machine; other work beside it skews it.
    """
    import json

    from bookgen.bench import BenchSettings, run_bench

    settings = BenchSettings(hidden, layers, batch_size, bptt, level, cell, device, seconds)
    if as_json:
        print(json.dumps(run_bench(settings)))
        return
    with err.status("measuring") as status:
        result = run_bench(settings, lambda stage: status.update(f"measuring {stage}"))
    shape = f"{layers} x {hidden} {cell.upper()}, {level} level, B {batch_size}, T {bptt}"
    table = Table(title=f"bookgen bench: {shape}, {result['machine']}")
    for column in ("", "bookgen", "stock PyTorch", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    r, stock = result, result["baseline_train_tokens_per_s"]
    rows = [
        ("training tok/s, fp32", r["train_tokens_per_s_fp32"], stock),
        ("training tok/s, bf16", r["train_tokens_per_s_bf16"], stock),
        ("sampling tok/s, batch 1", r["sample_tokens_per_s"], r["baseline_sample_tokens_per_s"]),
    ]
    for name, ours, theirs in rows:
        if ours is None:
            table.add_row(name, "does not run here", f"{theirs:,.0f}", "")
        else:
            table.add_row(name, f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.2f}x")
    Console().print(table)
    Console().print(
        f"--precision auto picks {result['precision']}. Matrix-product peak "
        f"{result['peak_gflops']:,.0f} GFLOP/s in {result['precision']}; training reaches "
        f"{result['training_gflops']:,.0f} ({result['utilization']:.0%})."
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
