"""bookgen: train recurrent language models (LSTM, GRU) on whole books and write in their style.

import bookgen
result = bookgen.train(["book.txt"], minutes=1)
writer = bookgen.load(result.out)
print("".join(writer.generate("It was", length=200, random_seed=1)))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bookgen.errors import BookgenError, BookgenWarning

if TYPE_CHECKING:
    from bookgen.api import train
    from bookgen.sampler import TextGenerator, load

__version__ = "0.1.0"
__all__ = ["BookgenError", "BookgenWarning", "TextGenerator", "load", "train", "__version__"]

# These bring torch with them (1.6 s): they are imported on first use, so that `bookgen --help`,
# which imports this package first, answers without loading torch.
_LAZY = {"train": "bookgen.api", "load": "bookgen.sampler", "TextGenerator": "bookgen.sampler"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'bookgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
