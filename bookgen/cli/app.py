"""The `bookgen` command: its commands, in the order `--help` lists them, and `main`.

Each command parses its options, calls the library and renders; the library (and torch with it)
is imported inside the command that needs it, so `bookgen --help` and `bookgen <command> --help`
answer without loading either.
"""

from __future__ import annotations

import inspect as inspect_module
from typing import Annotated

import typer

from bookgen.cli import bench, inspect, train, write
from bookgen.cli.console import clean_errors, show_tracebacks

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


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of errors (for bug reports).")
    ] = False,
) -> None:
    show_tracebacks["on"] = debug


COMMANDS = {
    "corpus": inspect.corpus,
    "train": train.train,
    "explain": inspect.explain,
    "eval": inspect.evaluate,
    "report": inspect.report,
    "sample": write.sample,
    "styles": inspect.styles,
    "style": inspect.style,
    "chat": write.chat,
    "bench": bench.bench,
}


def _paragraphs(doc: str | None) -> str | None:
    """A docstring's paragraphs, each on one line: typer's rich help keeps a docstring's line
    breaks, which a terminal narrower than the source then wraps into ragged lines."""
    if doc is None:
        return None
    paragraphs = inspect_module.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


for name, command in COMMANDS.items():
    app.command(name=name, help=_paragraphs(command.__doc__))(clean_errors(command))


def main() -> None:
    app()
