"""`python -m bookgen`: the same as the `bookgen` command (and what torchrun starts)."""

from bookgen.cli import main

main()
