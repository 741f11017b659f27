"""`python -m bookgen.cli`: the same as the `bookgen` command."""

from bookgen.cli.app import main

main()
