"""Looking at books, runs and texts: `bookgen corpus`, `explain`, `eval`, `report`, `styles`,
`style`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from bookgen.cli.console import err
from bookgen.cli.options import (
    BatchSizeOption,
    BooksArgument,
    BpttOption,
    CheckpointOption,
    EncodingOption,
    JsonOption,
    KeepMarkupOption,
    LevelOption,
    field_option,
    given,
)
from bookgen.settings import AdaptRule, AdaptSettings, TrainConfig

if TYPE_CHECKING:
    from bookgen.corpus import Document


def corpus(
    paths: BooksArgument,
    dump: Annotated[
        Optional[Path],
        typer.Option(help="Write the exact cleaned text that training will see (UTF-8)."),
    ] = None,
    encoding: EncodingOption = None,
    keep_markup: KeepMarkupOption = False,
) -> None:
    """Show how bookgen reads your books: encoding, what was stripped, characters.

    Real books come in many encodings and line-end conventions; bookgen decodes them, turns every
    line end into \\n, drops control characters and removes the Project Gutenberg licence and
    Aozora Bunko's markup, so the model learns the book and not the licence. Where a detector
    chose the encoding, how sure it was follows the name, from 0 to 1: "gb18030 (0.99)".
    """
    from bookgen.catalog import resolve_inputs
    from bookgen.corpus import Reading, read_corpus
    from bookgen.files import atomic_write

    documents = read_corpus(resolve_inputs(paths), Reading(encoding, keep_markup))
    console = Console()
    console.print(_corpus_table(documents, console.width))
    for d in documents:
        if d.encoding_unsure:
            err.print(
                f"[yellow]warning:[/] {d.name}: the detector is unsure it is {d.encoding} "
                f"({d.confidence:.2f}); check the text (--dump) or force one with --encoding",
                soft_wrap=True,
            )
    if dump is not None:
        atomic_write(dump, "".join(d.text for d in documents).encode("utf-8"))
        err.print(f"wrote the cleaned text to {dump}")


_CORPUS_COLUMNS = ("book", "encoding", "stripped", "characters", "distinct")


def _corpus_table(documents: list[Document], width: int) -> Table:
    """One row per book, fitted to `width` columns without cutting a word: the encoding and
    what was stripped wrap between words first, then a book's name folds."""
    rows = [_corpus_row(d) for d in documents]
    cells = list(zip(_CORPUS_COLUMNS, *rows, strict=True))
    natural = [max(map(cell_len, column)) for column in cells]  # 红楼梦 is 6 cells wide
    words = [max(cell_len(word) for cell in column for word in cell.split()) for column in cells]
    room = width - 3 * (len(cells) - 1)  # " │ " between columns, none at the edges
    widths = list(natural)
    for index in (2, 1):  # stripped, then encoding, down to their longest word
        widths[index] -= min(max(0, sum(widths) - room), natural[index] - words[index])
    widths[0] = max(4, widths[0] - max(0, sum(widths) - room))  # the book's name folds last
    shown = any(d.confidence is not None for d in documents)
    table = Table(
        title="bookgen corpus",
        caption="encoding (0-1): how sure the detector was" if shown else None,
        show_edge=False,
        pad_edge=False,
    )
    for index, (name, column_width) in enumerate(zip(_CORPUS_COLUMNS, widths, strict=True)):
        figures = index >= 3
        table.add_column(
            name,
            width=column_width,
            justify="right" if figures else "left",
            overflow="fold",
        )
    for row in rows:
        table.add_row(*row)
    return table


def _corpus_row(d: Document) -> tuple[str, ...]:
    # How sure the detector was only where one was asked (not for a byte-order mark, UTF or
    # plain Western text).
    encoding = d.encoding if d.confidence is None else f"{d.encoding} ({d.confidence:.2f})"
    stripped = [("Gutenberg licence", d.gutenberg_stripped), ("Aozora markup", d.markup_stripped)]
    stripped_text = ", ".join(what for what, done in stripped if done) or "-"
    return d.name, encoding, stripped_text, f"{d.chars:,}", f"{d.distinct_chars:,}"


def explain(
    context: typer.Context,
    paths: BooksArgument,
    batch_size: BatchSizeOption = TrainConfig.batch_size,
    bptt: BpttOption = TrainConfig.bptt,
    windows: Annotated[
        int, typer.Option(help="How many windows of each row to show side by side.")
    ] = 3,
    level: LevelOption = TrainConfig.level,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            help="A trained model: explain with its tokenizer and settings (its --batch-size, "
            "--bptt and --level are then the defaults), and measure what its carried state is "
            "worth on these books (bits per character, carried vs reset every T)."
        ),
    ] = None,
    encoding: EncodingOption = None,
    keep_markup: KeepMarkupOption = False,
) -> None:
    """Show, on your own books, how training cuts them into batch rows and windows.

    The books are read exactly as `bookgen train` reads them (the first 90% of each, end to end)
    and cut into B rows, one stream each. Each step reads the next T tokens of every row, so row
    i of one window continues row i of the window before it, and the hidden state carried from
    window to window belongs to the text read next. The tables show where each row begins, its
    first windows side by side, and where a row crosses into the next book and its state is
    reset (|*).
    """
    from bookgen.explain import explain_renderables, explain_streams

    options = given(context, TrainConfig)  # not given: training's default, or the checkpoint's
    with err.status("reading the books"):
        explanation = explain_streams(
            paths, options.get("batch_size"), options.get("bptt"), windows, checkpoint,
            options.get("level"), encoding=encoding, keep_markup=keep_markup,
        )  # fmt: skip
    console = Console()
    for renderable in explain_renderables(explanation, width=console.width):
        console.print(renderable)


ADAPTING = "Adapting"
AdaptLrOption = Annotated[
    float, field_option(AdaptSettings, "adapt_lr", metavar="LR", rich_help_panel=ADAPTING)
]
AdaptDecayOption = Annotated[
    float, field_option(AdaptSettings, "adapt_decay", metavar="SHARE", rich_help_panel=ADAPTING)
]
AdaptSegmentOption = Annotated[
    int, field_option(AdaptSettings, "adapt_segment", metavar="TOKENS", rich_help_panel=ADAPTING)
]

AdaptRuleOption = Annotated[
    AdaptRule, field_option(AdaptSettings, "adapt_rule", rich_help_panel=ADAPTING)
]


def evaluate(
    context: typer.Context,
    paths: BooksArgument,
    checkpoint: CheckpointOption = None,
    reset_every: Annotated[
        Optional[int],
        typer.Option(
            help="Reset the hidden state every N tokens, as a model with only N tokens of "
            "context would read: compare with the default (carried state) to see what the "
            "state is worth."
        ),
    ] = None,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt",
            help="Also score the text while adapting to it (dynamic evaluation): after each "
            "segment is scored, one gradient step on it, with a decay back toward the trained "
            "weights. Both figures read the text as one stream in segments; the checkpoint is "
            "never changed.",
            rich_help_panel=ADAPTING,
        ),
    ] = False,
    adapt_lr: AdaptLrOption = AdaptSettings.adapt_lr,
    adapt_decay: AdaptDecayOption = AdaptSettings.adapt_decay,
    adapt_segment: AdaptSegmentOption = AdaptSettings.adapt_segment,
    adapt_rule: AdaptRuleOption = AdaptSettings.adapt_rule,
    style: Annotated[
        Optional[str],
        typer.Option(
            help="For a model trained on several styles: read the text in this style or mix "
            "(as sample --style) [default: the mix of its styles by their share of the text]."
        ),
    ] = None,
    as_json: JsonOption = False,
    encoding: EncodingOption = None,
    keep_markup: KeepMarkupOption = False,
) -> None:
    """Score a model on text: nats per token, perplexity and bits per character.

    The text is read as for training and run through the model with its state carried along.
    Bits per character (total bits / characters, each character of a piece read as unknown
    charged 8 bits) is comparable between character and word models on the same text; lower
    is better. With --adapt, static and adapted figures side by side.
    """
    from bookgen.errors import BookgenError
    from bookgen.evaluation import evaluate_texts

    settings = given(context, AdaptSettings)
    if settings and not adapt:
        raise BookgenError(f"--{next(iter(settings)).replace('_', '-')} needs --adapt")
    adapting = AdaptSettings(**settings) if adapt else None
    with _ReadingBar(disable=as_json or not err.is_terminal) as bar:
        scores = evaluate_texts(
            paths,
            checkpoint,
            reset_every=reset_every,
            encoding=encoding,
            keep_markup=keep_markup,
            adapt=adapting,
            on_progress=bar.update,
            style=style,
        )
    if as_json:
        print(json.dumps(scores))
        return
    if adapting is not None:
        Console().print(_adapted_table(scores))
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


def _adapted_table(scores: dict) -> Table:
    """Static and adapted figures of the same reading, one row each."""
    table = Table(
        title="bookgen eval --adapt",
        caption=f"{scores['tokens']:,} tokens, {scores['chars']:,} characters, read as one "
        f"stream in segments of {scores['adapt_segment']}; adapted by {scores['adapt_rule']} "
        f"with lr {scores['adapt_lr']:g}, decay {scores['adapt_decay']:g}",
    )
    table.add_column("reading")
    for key in ("nats_per_token", "perplexity", "bits_per_char"):
        table.add_column(key, justify="right")
    for name, prefix in (("static", ""), ("adapted", "adapted_")):
        table.add_row(
            name, f"{scores[prefix + 'nats_per_token']:.4f}",
            f"{scores[prefix + 'perplexity']:.2f}", f"{scores[prefix + 'bits_per_char']:.4f}",
        )  # fmt: skip
    return table


# Texts shorter than this many tokens are read too fast for a progress bar to help.
_LONG_TEXT = 20_000


class _ReadingBar:
    """A progress bar on stderr for each reading of `eval --adapt` (static, then adapted), on
    long texts only; started at the first report, so an error before it prints only its line."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.progress = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, what: str, done: int, total: int) -> None:
        if self.disable or total < _LONG_TEXT:
            return
        if self.progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=total)
        self.progress.update(self.tasks[what], completed=done)


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


def styles(checkpoint: CheckpointOption = None) -> None:
    """List the styles a model was trained on: each one's share of the training text and its
    last validation loss.

    A model trained on several styles (authors, or books) writes in one of them, or in a mix,
    when asked: bookgen sample --style NAME, or --style NAME=0.7,OTHER=0.3. Without --style it
    starts from the mix of them all, each weighted by its share. The validation loss is nats
    per token on each style's held-out text, at the run's last evaluation ("-": none recorded).
    """
    from bookgen.styles import style_table

    folder, rows, one_style = style_table(checkpoint)
    if not rows:
        named = f" ({one_style})" if one_style else ""
        print(f"{folder}: this model has one style{named}: it writes in it, and takes no --style")
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("style")
    table.add_column("share", justify="right")
    table.add_column("val loss", justify="right")
    for row in rows:
        loss = f"{row.val_loss:.4f}" if row.val_loss is not None else "-"
        table.add_row(row.name, f"{row.share:.1%}", loss)
    console = Console()
    console.print(f"{folder}: {len(rows)} styles", markup=False, soft_wrap=True)
    console.print(table)
    console.print(
        "share: of the training tokens; val loss: nats per token on the style's held-out text; "
        "--style NAME writes in one, --style NAME=0.7,OTHER=0.3 in a mix",
        style="dim",
        markup=False,
    )


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
    as_json: JsonOption = False,
    encoding: EncodingOption = None,
    keep_markup: KeepMarkupOption = False,
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
    from bookgen.style import compare_style, style_tables

    result = compare_style(
        text, checkpoint, against or (), encoding=encoding, keep_markup=keep_markup
    )
    if as_json:
        print(json.dumps(result.to_json()))
        return
    console = Console()
    for renderable in style_tables(result):
        console.print(renderable)
