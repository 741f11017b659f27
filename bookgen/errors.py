"""The one error type the library raises for anything a user can fix.

The CLI turns a `BookgenError` into one line on stderr and exit code 2, with no traceback.
Anything else escaping the library is a bug in bookgen, and keeps its traceback.
"""

from __future__ import annotations


class BookgenError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""

    # Under torchrun every process meets the same bad input, so only rank 0 reports it; an error
    # only one process meets (it lost the others) sets this, and that process reports it.
    own_to_each_process = False


class BookgenWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. unknown seed characters)."""
