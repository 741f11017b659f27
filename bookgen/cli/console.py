"""What every command shares at its edges: stderr, and a user's error as one line and exit 2."""

from __future__ import annotations

import functools
import os
import warnings
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from bookgen.errors import BookgenError

err = Console(stderr=True)
show_tracebacks = {"on": False}  # set by `bookgen --debug`


def clean_errors(command):
    """Turn a `BookgenError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return command(*args, **kwargs)
        except BookgenError as error:
            if show_tracebacks["on"]:
                raise
            fail(str(error), error.own_to_each_process)

    return wrapper


def fail(message: str, own_to_each_process: bool = False) -> NoReturn:
    """Say `message` as one line on stderr and exit with code 2.

    Under torchrun every process meets the same bad input: rank 0 says it once. Only a process
    that lost the others (`own_to_each_process`) speaks for itself.
    """
    if rank() == 0 or own_to_each_process:
        prefix = f"[rank {rank()}] " if rank() else ""
        err.print(Text.assemble((f"{prefix}error:", "bold red"), f" {message}"), soft_wrap=True)
    raise typer.Exit(2) from None


def rank() -> int:
    """This process's rank when torchrun started several (0 otherwise)."""
    return int(os.environ.get("RANK", "0") or 0)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(Text.assemble(("warning:", "yellow"), f" {message}"), soft_wrap=True)
