"""The one error type the library raises for anything a user can fix.

The CLI turns a `BookgenError` into one line on stderr and exit code 2, with no traceback.
Anything else escaping the library is a bug in bookgen, and keeps its traceback.
"""

from __future__ import annotations


class BookgenError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""


class BookgenWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. unknown seed characters)."""
