"""bookgen: train recurrent language models (LSTM, GRU) on whole books and write in their style.

import bookgen
result = bookgen.train(["book.txt"], minutes=1)
writer = bookgen.load(result.out)
print("".join(writer.generate("It was", length=200, random_seed=1)))
"""

from __future__ import annotations

from bookgen.api import train
from bookgen.errors import BookgenError, BookgenWarning
from bookgen.sampler import TextGenerator, load

__version__ = "0.1.0"
__all__ = ["BookgenError", "BookgenWarning", "TextGenerator", "load", "train", "__version__"]
