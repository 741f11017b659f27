"""Losses worked out by hand, apart from the code under test: each row of a stream is read in
whole forward passes from a zero state, never in the trainer's or evaluator's windows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bookgen.model import RecurrentLM
from bookgen.streams import TokenStream

# evaluate_texts and scoring.evaluate sum float32 losses window by window, batched over rows;
# the hand computation runs one row at a time in longer passes. The matrix products differ in
# shape, so the sums agree to about 1e-7 (measured: 5e-8), not bit for bit. 1e-6 is far below
# what any of the mistakes checked here changes (each changes the mean by 1e-4 or more).
CLOSE = dict(rtol=1e-6, atol=0.0)


def stream_by_hand(books: Sequence[Sequence[int]], chars: int) -> TokenStream:
    """The books' ids end to end, each book starting where the last ended (no token cache)."""
    tokens = np.array([token for book in books for token in book], dtype=np.int64)
    starts = np.cumsum([0] + [len(book) for book in books[:-1]], dtype=np.int64)
    return TokenStream(tokens, starts, chars)


@torch.no_grad()
def nats_by_hand(
    model: RecurrentLM,
    books: Sequence[Sequence[int]],
    rows: int,
    reset_every: int | None = None,
    columns: int | None = None,
) -> torch.Tensor:
    """Nats of every scored target (float64), from whole forward passes, never windows.

    The books' tokens end to end are cut into `rows` rows of L = (N - 1) // rows tokens: row i
    reads tokens [i*L, (i+1)*L), each predicting the token after it. Each row is read from a
    zero state in one forward pass per stretch; a stretch ends where a book begins and, with
    `reset_every` N, every N tokens of the row. A target that is a book's first token is left
    out (nothing is learned across books). `columns`: only the first that many tokens of each
    row, as validation reads them.
    """
    model.eval()
    stream = torch.tensor([token for book in books for token in book])
    lengths = [len(book) for book in books]
    starts = {sum(lengths[:index]) for index in range(len(books))}
    length = (len(stream) - 1) // rows
    scored = []
    for row in range(rows):
        begin = row * length
        end = begin + (columns if columns is not None else length)
        cuts = {begin, end} | {s for s in starts if begin < s < end}
        if reset_every is not None:
            cuts |= set(range(begin, end, reset_every))
        bounds = sorted(cuts)
        for first, last in zip(bounds[:-1], bounds[1:], strict=True):
            logits, _ = model(stream[first:last].view(-1, 1), model.init_state(1))
            nats = F.cross_entropy(logits[:, 0], stream[first + 1 : last + 1], reduction="none")
            kept = [position + 1 not in starts for position in range(first, last)]
            scored.append(nats[torch.tensor(kept)])
    return torch.cat(scored).double()


def bits_per_char_by_hand(mean_nats: float, tokens: int, unknown: int, chars: int) -> float:
    """Total bits over the text / its characters: the mean loss over every token, plus 8 bits
    for each character the vocabulary reads only as unknown (spelled out in raw bytes)."""
    return (mean_nats * tokens / math.log(2) + 8 * unknown) / chars


def split_by_hand(text: str, val_fraction: float) -> tuple[str, str]:
    """A book's training and validation parts: the last `val_fraction` of its characters are
    held out (nanoGPT's split), the cut rounded down."""
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]
