"""`bookgen explain`: how training cuts your books into batch rows and windows, on their text.

Newcomers to stateful training ask: does row i of batch k+1 continue row i of batch k? When does
the state reset? What is a batch row? This module answers with the user's own books, read
exactly as training reads them (`data.prepare_data`: the same cleaning, split and token
cache) and cut by the same `StreamBatcher`:

    books --prepare_data--> training stream (N tokens) --StreamBatcher(B, T)--> windows
          rows:    row i = tokens [i*L, (i+1)*L),  L = (N - 1) // B
          windows: columns [k*T, (k+1)*T) of every row (epoch 0; later epochs shift the cuts)

Nothing here trains: `explain_streams` returns an `Explanation` (plain data, testable), and
`explain_renderables` turns it into rich tables and text for the CLI to print. Given a
checkpoint, the explanation also holds what its carried state is worth on these books
(`Explanation.state_value`: bits per character with the state carried, and reset every T
tokens). The books are found and opened once, the checkpoint loaded once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import RenderableType
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from bookgen.budget import SHORT_RUN
from bookgen.catalog import resolve_inputs
from bookgen.checkpoint import Checkpoint, load_checkpoint
from bookgen.context import resolve_device
from bookgen.corpus import BookFile, Reading, open_corpus
from bookgen.data import PreparedData, prepare_data
from bookgen.errors import BookgenError
from bookgen.evaluation import score, whole_text
from bookgen.settings import TrainConfig
from bookgen.streams import StreamBatcher, TokenStream, Window
from bookgen.tokenizer import StreamDecoder, Tokenizer

DEFAULT_WINDOWS = 3
SNIPPET_TOKENS = {"char": 40, "word": 10}  # how much text is shown where a row begins
RESET_MARK = "|*"  # drawn before the first token of a new book, where the state is zeroed
LISTED_CROSSINGS = 20  # book starts listed by name; a folder of many books lists the first
VISIBLE = str.maketrans({"\n": "⏎", "\t": "→"})  # one character each: offsets stay the same


@dataclass(frozen=True)
class RowStart:
    """Where one batch row begins."""

    row: int
    token: int  # offset of the row's first token in the training stream
    book: str  # the book it begins in
    book_token: int  # offset within that book's training tokens (char level: its character)
    snippet: str  # the text there


@dataclass(frozen=True)
class WindowText:
    """One row's inputs in one window, decoded."""

    begin: int  # position of the first token within the row (the window's column)
    tokens: int  # T, or fewer in the last window of an epoch
    text: str
    resets: tuple[int, ...]  # indices into `text` where a new book begins: the state is zeroed


@dataclass(frozen=True)
class Crossing:
    """A row crossing into the next book: its state is zeroed before that book's first token."""

    row: int
    window: int  # the window of epoch 0 it happens in, from 0
    column: int  # position within the row
    token: int  # position in the training stream
    book: str  # the book that begins
    # That row's text in that window (for the first LISTED_CROSSINGS crossings, else None).
    window_text: WindowText | None = None


@dataclass
class Explanation:
    """How training cuts these books, with the numbers and the text to show it."""

    books: list[str]
    level: str  # char or word
    batch_size: int  # B, as explained
    bptt: int  # T
    batch_source: str  # where B came from: "given", "training's default", "the checkpoint's"
    tokens: int  # the training stream: the first (1 - val_fraction) of each book, end to end
    chars: int  # characters behind those tokens
    val_fraction: float
    val_tokens: int
    val_rows: int  # validation reads its stream the same way, in this many rows
    row_length: int  # L: tokens per row
    windows_per_epoch: int
    left_out: int  # the last tokens, read neither as input nor as target (fewer than B)
    random_seed: int  # training's random seed, which fixes each epoch's shift
    epoch_shifts: list[int]  # length of the first window of epochs 1 and 2 (0: not shifted)
    rows: list[RowStart]
    windows: list[list[WindowText]]  # [row][window]: the first windows of epoch 0
    crossings: list[Crossing]  # every book boundary inside the rows, in stream order
    checkpoint: str | None = None
    state_value: dict | None = None  # with a checkpoint: see `_state_value`


# --- building the explanation ----------------------------------------------------------------


def explain_streams(
    paths: Sequence[str | Path],
    batch_size: int | None = None,
    bptt: int | None = None,
    windows: int = DEFAULT_WINDOWS,
    checkpoint: str | Path | None = None,
    level: str | None = None,
    encoding: str | None = None,
    keep_markup: bool = False,
) -> Explanation:
    """Read the books as training does and show how `StreamBatcher` cuts them.

    `batch_size`, `bptt` and `level` default to training's defaults, or to the checkpoint's
    settings when one is given (its tokenizer is then used, as `--resume` would, and what its
    carried state is worth on the books is measured: `Explanation.state_value`).
    """
    if windows < 1:
        raise BookgenError(f"--windows must be at least 1, not {windows}")
    reading = Reading(encoding, keep_markup)  # a wrong name is said before the checkpoint is loaded
    loaded = None
    if checkpoint is not None:
        loaded = load_checkpoint(Path(checkpoint), device=resolve_device("auto"))
    config, batch_source = _settings(batch_size, bptt, loaded, level)
    books = open_corpus(resolve_inputs([str(p) for p in paths]), reading)
    if loaded is not None:  # read twice through the token cache: split, and whole
        books = [_HashedOnce.of(book) for book in books]
    data = prepare_data(books, config, loaded.tokenizer if loaded is not None else None)
    batcher = _batcher(data.train, config)
    names = [record["name"] for record in data.corpus["documents"]]
    shown = min(windows, batcher.windows_per_epoch())
    return Explanation(
        books=names,
        level=config.level,
        batch_size=batcher.batch_size,
        bptt=config.bptt,
        batch_source=batch_source,
        tokens=len(data.train),
        chars=data.train.chars,
        val_fraction=config.val_fraction,
        val_tokens=len(data.val),
        val_rows=_validation_rows(data, config),
        row_length=batcher.row_length,
        windows_per_epoch=batcher.windows_per_epoch(),
        left_out=len(data.train) - 1 - batcher.tokens_per_epoch,
        random_seed=config.random_seed,
        epoch_shifts=[batcher.epoch_shift(epoch, config.random_seed) for epoch in (1, 2)],
        rows=_row_starts(batcher, data.tokenizer, names),
        windows=_window_texts(batcher, data.tokenizer, shown),
        crossings=_crossings(batcher, data.tokenizer, names),
        checkpoint=str(checkpoint) if checkpoint is not None else None,
        state_value=_state_value(loaded, books, config.bptt) if loaded is not None else None,
    )


# What a checkpoint's train_config decides about how its books were read and cut.
_SAVED_SETTINGS = (
    "level",
    "vocab_size",
    "min_count",
    "lowercase",
    "batch_size",
    "bptt",
    "val_fraction",
    "val_batch_size",
    "random_seed",
)


def _settings(
    batch_size: int | None, bptt: int | None, loaded: Checkpoint | None, level: str | None
) -> tuple[TrainConfig, str]:
    """Training's config for these options (with the checkpoint's settings, if one is given),
    and where B came from."""
    saved: dict = {}
    if loaded is not None:
        saved = {k: v for k, v in loaded.train_config.items() if k in _SAVED_SETTINGS}
        if level is not None and level != loaded.level:
            raise BookgenError(
                f"--level {level} does not match the checkpoint, a {loaded.level}-level model"
            )
        level = loaded.level
    given = {"batch_size": batch_size, "bptt": bptt, "level": level}
    settings = {**saved, **{k: v for k, v in given.items() if v is not None}}
    # TrainConfig checks every value (e.g. "--batch-size must be at least 1"). It also insists
    # on a budget, which explain never spends.
    config = TrainConfig(**settings, epochs=1)
    if batch_size is not None:
        source = "given"
    elif "batch_size" in saved:
        source = "the checkpoint's"
    else:
        source = "training's default"
    return config, source


def _batcher(stream: TokenStream, config: TrainConfig) -> StreamBatcher:
    """Training's batcher, refusing a text too short for B full rows of T tokens (training
    would quietly use fewer rows: explaining B rows that do not exist would mislead)."""
    fills = (len(stream) - 1) // config.bptt
    share = f"the first {1 - config.val_fraction:.0%} of each book"
    if fills < 1:
        raise BookgenError(
            f"{len(stream):,} training tokens ({share}) are too few for one window of "
            f"{config.bptt}: use --bptt {max(len(stream) - 1, 1)} or less"
        )
    if fills < config.batch_size:
        raise BookgenError(
            f"{len(stream):,} training tokens ({share}) are too few for {config.batch_size} rows "
            f"of {config.bptt}: they fill {fills}, and training would use only {fills} rows; "
            f"try --batch-size {fills}"
        )
    return StreamBatcher(stream, config.batch_size, config.bptt)


def _validation_rows(data: PreparedData, config: TrainConfig) -> int:
    return StreamBatcher(data.val, config.val_batch_size, config.bptt).batch_size


def _book_of(stream: TokenStream, token: int) -> int:
    """Index of the book that holds stream position `token`."""
    return int(np.searchsorted(stream.starts, token, side="right")) - 1


def _row_starts(batcher: StreamBatcher, tokenizer: Tokenizer, names: list[str]) -> list[RowStart]:
    stream, length = batcher.stream, batcher.row_length
    snippet = SNIPPET_TOKENS[tokenizer.level]
    rows = []
    for row in range(batcher.batch_size):
        token = row * length
        book = _book_of(stream, token)
        ids = stream.tokens[token : token + min(snippet, length)].tolist()
        offset = token - int(stream.starts[book])
        rows.append(RowStart(row, token, names[book], offset, tokenizer.decode(ids)))
    return rows


def _window_texts(
    batcher: StreamBatcher, tokenizer: Tokenizer, count: int
) -> list[list[WindowText]]:
    """The first `count` windows of epoch 0, decoded row by row.

    Each row has one stream decoder across its windows, so a row's window texts add up to the
    decoded row (for characters: exactly the book's text from the row's start).
    """
    decoders = [tokenizer.stream_decoder() for _ in range(batcher.batch_size)]
    table: list[list[WindowText]] = [[] for _ in range(batcher.batch_size)]
    for window in itertools.islice(batcher.windows(), count):
        for row, decoder in enumerate(decoders):
            table[row].append(_decoded(window, row, decoder))
    return table


def _decoded(window: Window, row: int, decoder: StreamDecoder) -> WindowText:
    """One row of a window as text, with the positions of its resets in that text."""
    pieces, resets, length = [], [], 0
    flags = window.resets[:, row].tolist()
    for token_id, reset in zip(window.inputs[:, row].tolist(), flags, strict=True):
        if reset:
            resets.append(length)
        piece = decoder.push(token_id)
        pieces.append(piece)
        length += len(piece)
    return WindowText(window.start, len(flags), "".join(pieces), tuple(resets))


def _crossings(batcher: StreamBatcher, tokenizer: Tokenizer, names: list[str]) -> list[Crossing]:
    """Every book start inside the rows (the first book's too, at the start of row 0): where
    the batcher flags a reset, found by arithmetic, with the first ones' window text."""
    length, bptt = batcher.row_length, batcher.bptt
    crossings = []
    for book, start in enumerate(batcher.stream.starts.tolist()):
        if start >= batcher.tokens_per_epoch:
            continue
        row, column = divmod(start, length)
        text = None
        if len(crossings) < LISTED_CROSSINGS:
            begin = column - column % bptt
            window = batcher.window(begin, min(begin + bptt, length))
            text = _decoded(window, row, tokenizer.stream_decoder())
        crossings.append(Crossing(row, column // bptt, column, start, names[book], text))
    return crossings


# --- what the carried state is worth ---------------------------------------------------------


@dataclass(frozen=True)
class _HashedOnce(BookFile):
    """A book whose sha256 is taken once, for its two reads through the token cache (split as
    training reads it, and whole to score the state): the hash is most of a cached read's cost."""

    digest: str = ""

    @classmethod
    def of(cls, book: BookFile) -> _HashedOnce:
        return cls(book.name, book.path, book.size, book.reading, digest=book.sha256())

    def sha256(self, on_bytes: Callable[[int], None] | None = None) -> str:
        if on_bytes is not None:
            on_bytes(self.size)
        return self.digest


def _state_value(loaded: Checkpoint, books: list[BookFile], bptt: int) -> dict:
    stream = whole_text(loaded, books)  # the whole text, as `bookgen eval` reads it
    carried = score(loaded, stream)
    reset = score(loaded, stream, reset_every=bptt)
    return {
        "reset_every": bptt,
        "tokens": carried["tokens"],
        "chars": carried["chars"],
        "carried_bits_per_char": carried["bits_per_char"],
        "reset_bits_per_char": reset["bits_per_char"],
        "difference": reset["bits_per_char"] - carried["bits_per_char"],
    }


# --- rendering -------------------------------------------------------------------------------


def explain_renderables(explanation: Explanation, width: int = 100) -> list[RenderableType]:
    """What `bookgen explain` prints, in order; `width` (the terminal's) sizes the window cells."""
    value = explanation.state_value  # None without a checkpoint
    parts: list[RenderableType] = [
        _title(explanation),
        _rows_table(explanation),
        _windows_table(explanation, width),
        _crossings_text(explanation, width),
        _story(explanation),
    ]
    if value is not None:
        parts.append(_value_table(value))
    return parts


def _title(e: Explanation) -> Text:
    level = "character" if e.level == "char" else "word"
    books = ", ".join(e.books)
    return Text.assemble(
        ("bookgen explain: ", "bold"),
        f"{books}, {level} level, B = {e.batch_size} rows, T = {e.bptt} tokens per window",
        (" (the checkpoint's tokenizer and settings)" if e.checkpoint else "", "dim"),
    )


def _rows_table(e: Explanation) -> Table:
    table = Table(
        title=f"the {e.batch_size} batch rows: {e.row_length:,} tokens each, end to end",
        title_justify="left",
    )
    table.add_column("row", justify="right")
    table.add_column("starts at token", justify="right")
    table.add_column("in book", no_wrap=True, min_width=max(len(row.book) for row in e.rows))
    table.add_column("at character" if e.level == "char" else "at token", justify="right")
    table.add_column("text there", no_wrap=True)
    for row in e.rows:
        table.add_row(
            str(row.row), f"{row.token:,}", row.book, f"{row.book_token:,}",
            Text(row.snippet.translate(VISIBLE), style="green") + "…",
        )  # fmt: skip
    return table


def _windows_table(e: Explanation, width: int) -> Table:
    shown = len(e.windows[0])
    # The row numbers and the outer borders take 7 columns, each cell 3 more than its text.
    limit = max(12, (width - 7) // shown - 3)
    table = Table(
        title=f"the first {shown} of {e.windows_per_epoch:,} windows (epoch 0): "
        f"each row continues itself across",
        title_justify="left",
        caption=f"⏎ newline, {RESET_MARK} state reset: a new book begins",
        caption_justify="left",
    )
    table.add_column("row", justify="right")
    for cell in e.windows[0]:
        end = cell.begin + cell.tokens - 1
        table.add_column(f"window {cell.begin // e.bptt}: tokens {cell.begin:,}–{end:,}")
    for row, cells in enumerate(e.windows):
        table.add_row(str(row), *(_cell(cell, limit) for cell in cells))
    return table


def _cell(cell: WindowText, limit: int) -> Text:
    """A window's text with visible newlines and reset marks, cut to `limit` characters.

    Kept: the start and the end (where it joins the windows beside it), or, when a book begins
    in it, the text around the first reset mark."""
    text = Text()
    marks = set(cell.resets)
    for index, char in enumerate(cell.text.translate(VISIBLE)):
        if index in marks:
            text.append(RESET_MARK, style="bold red")
        text.append(char)
    if len(text) <= limit:
        return text
    if cell.resets:
        begin = max(0, min(cell.resets[0] - limit // 3, len(text) - limit))
        piece = text[begin : begin + limit]
        if begin > 0:
            piece = Text("…", style="dim") + piece[1:]
        if begin + limit < len(text):
            piece = piece[:-1] + Text("…", style="dim")
        return piece
    head = (limit - 1) // 2
    return text[:head] + Text("…", style="dim") + text[len(text) - (limit - 1 - head) :]


def _crossings_text(e: Explanation, width: int) -> Text:
    """Each book start, in the row and window where the batcher zeroes the state for it."""
    lines = Text(f"Where a book begins ({RESET_MARK}: that row's state is zeroed first):\n")
    for crossing in e.crossings[:LISTED_CROSSINGS]:
        where = f"window {crossing.window:,}, token {crossing.column:,} of the row"
        lines.append(f"  row {crossing.row}, {where}: ")
        lines.append(f"state reset: {crossing.book} begins", style="bold")
        if crossing.token == 0:
            lines.append(" (the start of the stream)\n")
            continue
        lines.append("\n    ")
        lines.append_text(_cell(crossing.window_text, width - 4))
        lines.append("\n")
    if len(e.crossings) > LISTED_CROSSINGS:
        lines.append(f"  and {len(e.crossings) - LISTED_CROSSINGS:,} more book starts\n")
    rows = e.batch_size - len({c.row for c in e.crossings if c.column > 0})
    if rows == e.batch_size:
        stay = "No row crosses into another book: the state"
    else:
        stay = f"{rows} of the {e.batch_size} rows stay in one book: their state"
    if rows:
        lines.append(f"{stay} resets only at the start of each epoch.\n", style="dim")
    return lines


def _story(e: Explanation) -> Markdown:
    """The plain-English account, with this corpus's numbers."""
    held = f"{e.val_fraction:.0%}"
    first, second = e.epoch_shifts
    return Markdown(
        f"""**A batch row is one piece of the text.** Training reads the first
{1 - e.val_fraction:.0%} of each book (the last {held} is held out for validation), all books
end to end: {e.tokens:,} tokens ({e.chars:,} characters). That stream is cut into B =
{e.batch_size} equal pieces of L = {e.row_length:,} tokens; row i+1 begins where row i ends, and
each row is read from its start to its end over one epoch.

**Each step reads the next T = {e.bptt} tokens of every row**: one window, a (T, B) =
({e.bptt}, {e.batch_size}) batch. Row i of window k+1 continues exactly where row i of window
k stopped, so the hidden state carried in row i always belongs to the text it reads next. After
every window the state is *detached*: its values carry on, gradients flow back at most T tokens.
The targets are the inputs shifted by one token (the last target of row i is the first token
of row i+1). One epoch is {e.windows_per_epoch:,} windows (steps); {_left_out(e.left_out)}.

**The state is reset (zeroed) only**

- where a row crosses into the next book ({RESET_MARK} above); predicting the new book's first
  token from the old book's last is left out of the loss;
- at the start of every epoch, when the rows go back to their beginnings. Later epochs also
  move the cuts: {_shift(1, first)}, {_shift(2, second)} (fixed by training's random seed
  {e.random_seed}), then windows of T, so the model does not always see the same boundaries;
- at the start of validation (the held-out {held}: {e.val_tokens:,} tokens, read the same way in
  {e.val_rows} rows) and of every `bookgen sample`.

{_batch_note(e)}"""
    )


def _left_out(count: int) -> str:
    if count == 0:
        return "every token is read"
    if count == 1:
        return "the last token, which fills no row, is left out"
    return f"the last {count} tokens, too few to give every row one more, are left out"


def _shift(epoch: int, shift: int) -> str:
    if shift == 0:
        return f"epoch {epoch} keeps full windows (its random shift is 0)"
    return f"epoch {epoch} starts with a window of {shift}"


def _batch_note(e: Explanation) -> str:
    default = _training_default("batch_size")
    short = f"{SHORT_RUN['batch_size']} in a short `--minutes` run that sizes its own model"
    if e.batch_source == "training's default":
        return f"B = {e.batch_size} is training's default ({short})."
    usual = f"training's default is {default} ({short})"
    if e.batch_source == "the checkpoint's":
        return f"B = {e.batch_size} is what the checkpoint trained with; {usual}."
    return f"This is with `--batch-size {e.batch_size}`; {usual}."


def _training_default(name: str) -> int:
    (default,) = [f.default for f in dataclasses.fields(TrainConfig) if f.name == name]
    return default


def _value_table(value: dict) -> Table:
    every = value["reset_every"]
    table = Table(
        title="what the carried state is worth",
        title_justify="left",
        caption=f"over the whole text ({value['chars']:,} characters), as bookgen eval reads it; "
        "lower is better",
        caption_justify="left",
    )
    table.add_column("state")
    table.add_column("bits per character", justify="right")
    table.add_row("carried across windows (as trained)", f"{value['carried_bits_per_char']:.4f}")
    table.add_row(f"reset every {every} tokens", f"{value['reset_bits_per_char']:.4f}")
    saved = value["difference"]
    share = saved / value["reset_bits_per_char"] if value["reset_bits_per_char"] else math.nan
    table.add_row("saved by carrying it", f"{saved:+.4f} ({share:.1%})", style="bold")
    return table
