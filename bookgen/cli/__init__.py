"""The `bookgen` command (typer): `app` holds the commands, `main` runs them.

app.py      the app, its commands in --help's order, main
options.py  the options several commands share, their help read from bookgen.settings
console.py  stderr, and a user's error (BookgenError) as one line and exit code 2
train.py    bookgen train, and its progress display
write.py    bookgen sample, bookgen chat
inspect.py  bookgen corpus, explain, eval, report, styles, style
bench.py    bookgen bench
"""

from bookgen.cli.app import app, main

__all__ = ["app", "main"]
