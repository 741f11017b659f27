"""Aligned token streams for stateful training (truncated backpropagation through time).

The books' tokens are laid end to end and cut into B contiguous streams, one per batch row.
Each step takes the next window of T tokens from every row, so row i of window k+1 continues
exactly where row i of window k stopped, and the hidden state the model carries from one window
to the next is the state of the *same* running text. Example with B=3 rows, two books (a, b):

    token stream:  a0 a1 a2 a3 a4 a5 a6 a7 a8 | b0 b1 b2 b3 b4 b5 b6 b7 b8 b9 b10 b11 ...

               window 0        window 1        window 2
    row 0:   a0  a1  a2  a3 | a4  a5  a6  a7 | ...        state carried  ->
    row 1:   a8 *b0  b1  b2 | b3  b4  b5  b6 | ...        * = state reset: a new book begins
    row 2:   b7  b8  b9  b10| b11 ...
             <----- T ----->

    targets are the inputs shifted by one token: row 0 learns a0->a1, a1->a2, ...

Where a row crosses from one book into the next (`*`), the trainer zeroes that row's state before
the first token of the new book, and the prediction *of* that first token from the previous
book's last token is left out of the loss: nothing should be learned across books.

Every epoch shifts the window boundaries by a random offset (the first window is shorter), so
the model does not always see the same cut points. Every epoch uses each training token once as
an input and once as a target; only the last few tokens (fewer than B) that do not fill a row are
left out. At the start of each epoch (and of validation) all rows start from a zero state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch

from bookgen.errors import BookgenError


@dataclass(frozen=True)
class TokenStream:
    """All documents' tokens end to end, with a flag where each document starts."""

    tokens: torch.Tensor  # (N,) int64
    starts: torch.Tensor  # (N,) bool, True at the first token of each document
    chars: int  # characters of cleaned text behind these tokens (for bits per character)
    unknown_chars: int = 0  # of those, characters the vocabulary could only read as unknown

    @classmethod
    def from_documents(
        cls, token_lists: Sequence[Sequence[int]], chars: int, unknown_chars: int = 0
    ) -> TokenStream:
        lists = [t for t in token_lists if len(t) > 0]
        if not lists:
            raise BookgenError("no tokens to train on")
        tokens = torch.tensor([tok for toks in lists for tok in toks], dtype=torch.long)
        starts = torch.zeros(len(tokens), dtype=torch.bool)
        offset = 0
        for toks in lists:
            starts[offset] = True
            offset += len(toks)
        return cls(tokens, starts, chars, unknown_chars)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Window:
    """One step's batch: T consecutive tokens of every row."""

    inputs: torch.Tensor  # (T, B) token ids
    targets: torch.Tensor  # (T, B) the next token of each input
    resets: torch.Tensor  # (T, B) bool: zero the row's state before consuming inputs[t]
    loss_mask: torch.Tensor  # (T, B) bool: False where the target starts a new book
    start: int  # position of inputs[0] within each row
    epoch: int


class StreamBatcher:
    """Cuts a `TokenStream` into `batch_size` rows and yields `Window`s over them."""

    def __init__(self, stream: TokenStream, batch_size: int, bptt: int) -> None:
        if batch_size < 1 or bptt < 1:
            raise BookgenError("batch size and bptt must be at least 1")
        if len(stream) < 2:
            raise BookgenError("the text is too short: it needs at least two tokens")
        # Fewer rows than asked when the text is too short to give each row a full window.
        self.batch_size = max(1, min(batch_size, (len(stream) - 1) // bptt))
        self.bptt = bptt
        self.row_length = (len(stream) - 1) // self.batch_size  # L
        used = self.batch_size * self.row_length
        rows, length = self.batch_size, self.row_length
        # (L, B) views: column i is row i. Targets are inputs shifted by one token, so the last
        # target of row i is the first input of row i+1.
        self.inputs = stream.tokens[:used].view(rows, length).t().contiguous()
        self.targets = stream.tokens[1 : used + 1].view(rows, length).t().contiguous()
        self.resets = stream.starts[:used].view(rows, length).t().contiguous()
        self.loss_mask = ~stream.starts[1 : used + 1].view(rows, length).t().contiguous()

    def epoch_shift(self, epoch: int, seed: int) -> int:
        """Length cut from the first window of `epoch`: 0 <= shift < bptt, fixed by the seed."""
        if epoch == 0:
            return 0
        return random.Random(seed * 1_000_003 + epoch).randrange(self.bptt)

    def window_starts(self, epoch: int, seed: int) -> list[int]:
        """Start positions of the windows of `epoch` within each row."""
        shift = self.epoch_shift(epoch, seed)
        first = [0] if shift > 0 else []
        return first + list(range(shift, self.row_length, self.bptt))

    def windows(self, epoch: int = 0, seed: int = 0, start: int = 0) -> Iterator[Window]:
        """The windows of one epoch, beginning with the window that starts at `start`."""
        bounds = self.window_starts(epoch, seed) + [self.row_length]
        for begin, end in pairwise(bounds):
            if begin < start:
                continue
            yield Window(
                inputs=self.inputs[begin:end],
                targets=self.targets[begin:end],
                resets=self.resets[begin:end],
                loss_mask=self.loss_mask[begin:end],
                start=begin,
                epoch=epoch,
            )

    def windows_per_epoch(self, epoch: int = 0, seed: int = 0) -> int:
        return len(self.window_starts(epoch, seed))

    @property
    def tokens_per_epoch(self) -> int:
        return self.batch_size * self.row_length
