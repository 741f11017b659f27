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

Styles (a model of several authors or books): each document has a style, and each window
carries the style of every input token (`Window.styles`, (T, B)). Where a row resets (`*`), it
restarts from its new book's style's learned start, not zeros; and each epoch (and validation)
starts every row from the learned start of its first token's style:

    row 1:   a8 *b0  b1  b2      styles:  A  B  B  B      (a, b: books of styles A and B)
"""

from __future__ import annotations

import mmap
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

from bookgen.errors import BookgenError


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id: a character vocabulary fits in a byte."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise BookgenError(f"a vocabulary of {vocab_size:,} tokens is too large")


@dataclass(frozen=True)
class TokenStream:
    """All documents' tokens end to end, and where each document starts.

    `tokens` is a plain array, often an np.memmap of the token cache: the stream is read from
    disk as windows need it, never loaded whole.
    """

    tokens: np.ndarray  # (N,) unsigned ids, the smallest dtype for the vocabulary
    starts: np.ndarray  # (D,) int64, offset of the first token of each document, ascending
    chars: int  # characters of cleaned text behind these tokens (for bits per character)
    unknown_chars: int = 0  # of those, characters the vocabulary could only read as unknown
    # (D,) int64, the book (index among the corpus's books) each document is; None: the i-th
    # document is book i. A book with no tokens in this stream has no document in it.
    books: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.books is None:
            object.__setattr__(self, "books", np.arange(len(self.starts), dtype=np.int64))

    def document_styles(self, book_styles: Sequence[int]) -> np.ndarray:
        """(D,) int64: the style of each document, from the style of each book."""
        return np.asarray(book_styles, dtype=np.int64)[self.books]

    def style_tokens(self, styles: int, document_styles: np.ndarray) -> list[int]:
        """Tokens of each of `styles` styles in this stream (a style's share of the text)."""
        lengths = np.diff(np.append(self.starts, len(self.tokens)))
        counts = np.bincount(document_styles, weights=lengths, minlength=styles)
        return [int(count) for count in counts]

    def __len__(self) -> int:
        return len(self.tokens)

    def release(self) -> None:
        """Let the kernel drop the pages read so far from this process (they stay cached).

        Pages of a memmap that windows have touched count in the process's RSS until
        unmapped; over an epoch of a large corpus they would add up to the whole file.
        """
        mapped = getattr(self.tokens, "_mmap", None)
        if isinstance(mapped, mmap.mmap) and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED)


@dataclass(frozen=True)
class Window:
    """One step's batch: T consecutive tokens of every row."""

    inputs: torch.Tensor  # (T, B) token ids, int64, on the host or the device (`keep_on`)
    targets: torch.Tensor  # (T, B) the next token of each input, where the inputs are
    resets: torch.Tensor  # (T, B) bool, on the host: zero the row's state before inputs[t]
    loss_mask: torch.Tensor  # (T, B) bool, on the host: False where the target starts a book
    start: int  # position of inputs[0] within each row
    # (T, B) int64, on the host: the style of each input token's book; None: one style
    styles: torch.Tensor | None = None

    def rows(self, rows: slice) -> Window:
        """The same window for some of the rows (one training process's share)."""
        return Window(
            inputs=self.inputs[:, rows],
            targets=self.targets[:, rows],
            resets=self.resets[:, rows],
            loss_mask=self.loss_mask[:, rows],
            start=self.start,
            styles=None if self.styles is None else self.styles[:, rows],
        )


# Pages of the memmap windows may touch between two `TokenStream.release` calls (each window
# touches about one page per row): 16 MiB of 4 KiB pages; releasing costs one system call.
_RELEASE_PAGES = 4096
_UPLOAD_TOKENS = 1 << 26  # tokens read from the stream per copy to the device


class StreamBatcher:
    """Cuts a `TokenStream` into `batch_size` rows and yields `Window`s over them.

    The rows are a (B, L) view of the stream (no copy); each window copies out its own (T, B)
    slice, so memory per step is O(B*T) whatever the length of the stream.

    `styles` (D,) int64, the style of each document of the stream: each window then carries
    the style of every input token (`Window.styles`), found by a binary search of the token's
    position among the documents' starts. None (one style): no styles.
    """

    def __init__(
        self, stream: TokenStream, batch_size: int, bptt: int, styles: np.ndarray | None = None
    ) -> None:
        if batch_size < 1 or bptt < 1:
            raise BookgenError("batch size and bptt must be at least 1")
        if len(stream) < 2:
            raise BookgenError("the text is too short: it needs at least two tokens")
        # Fewer rows than asked when the text is too short to give each row a full window.
        self.batch_size = max(1, min(batch_size, (len(stream) - 1) // bptt))
        self.bptt = bptt
        self.row_length = (len(stream) - 1) // self.batch_size  # L
        self.stream = stream
        rows, length = self.batch_size, self.row_length
        used = rows * length
        # (B, L) views: row i is tokens [i*L, (i+1)*L). Targets are inputs shifted by one
        # token, so the last target of row i is the first input of row i+1.
        self._inputs = stream.tokens[:used].reshape(rows, length)
        self._targets = stream.tokens[1 : used + 1].reshape(rows, length)
        # Resets where an input starts a document; masked losses where a target does. Each as
        # (column, row) pairs sorted by column, so a window finds its own with a binary search.
        self._resets = _by_column(stream.starts, used, length)
        self._masked = _by_column(stream.starts - 1, used, length)
        if styles is not None and len(styles) != len(stream.starts):
            raise ValueError(f"{len(styles)} styles for {len(stream.starts)} documents")
        self.styles = None if styles is None else np.asarray(styles, dtype=np.int64)
        self._on_device: tuple[torch.Tensor, torch.Tensor] | None = None  # see `keep_on`

    def keep_on(self, device: torch.device) -> bool:
        """Keep the rows' tokens on `device` and cut each window there: on a GPU, no work on
        the host and no copy per step. The reset and loss flags stay on the host, where the
        trainer decides from them without asking the device.

        Returns False (windows are then cut on the host, as on a CPU, and copied from pinned
        memory) where the tokens would take more than a quarter of the device's free memory:
        as int32, a 1 GB corpus of characters is 4 GB.
        """
        used = self.batch_size * self.row_length
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if (used + 1) * 4 > free // 4:
                return False
        flat = torch.empty(used + 1, dtype=torch.int32, device=device)
        for begin in range(0, used + 1, _UPLOAD_TOKENS):  # a memmap is read a piece at a time
            piece = np.asarray(self.stream.tokens[begin : min(begin + _UPLOAD_TOKENS, used + 1)])
            flat[begin : begin + len(piece)] = torch.from_numpy(piece.astype(np.int32))
        rows, length = self.batch_size, self.row_length
        self._on_device = (flat[:used].view(rows, length), flat[1:].view(rows, length))
        return True

    def epoch_shift(self, epoch: int, random_seed: int) -> int:
        """Length cut from the first window of `epoch`: 0 <= shift < bptt, fixed by the seed."""
        if epoch == 0:
            return 0
        return random.Random(random_seed * 1_000_003 + epoch).randrange(self.bptt)

    def window_starts(self, epoch: int, random_seed: int) -> list[int]:
        """Start positions of the windows of `epoch` within each row."""
        shift = self.epoch_shift(epoch, random_seed)
        first = [0] if shift > 0 else []
        return first + list(range(shift, self.row_length, self.bptt))

    def windows(self, epoch: int = 0, random_seed: int = 0, start: int = 0) -> Iterator[Window]:
        """The windows of one epoch, beginning with the window that starts at `start`."""
        bounds = self.window_starts(epoch, random_seed) + [self.row_length]
        release_every = max(1, _RELEASE_PAGES // self.batch_size)
        for count, (begin, end) in enumerate(pairwise(bounds)):
            if begin < start:
                continue
            if count % release_every == release_every - 1:
                self.stream.release()
            yield self.window(begin, end)

    def window(self, begin: int, end: int) -> Window:
        """Columns [begin, end) of every row, as (T, B) tensors."""
        shape = (end - begin, self.batch_size)
        if self._on_device is not None:
            inputs, targets = (_device_columns(rows, begin, end) for rows in self._on_device)
        else:
            inputs = _columns(self._inputs, begin, end)
            targets = _columns(self._targets, begin, end)
        return Window(
            inputs=inputs,
            targets=targets,
            resets=_flags(self._resets, begin, end, shape),
            loss_mask=~_flags(self._masked, begin, end, shape),
            start=begin,
            styles=self.styles_at(begin, end),
        )

    def styles_at(self, begin: int, end: int) -> torch.Tensor | None:
        """(end - begin, B) int64: the style of the token at each of columns [begin, end) of
        every row (its document's); None without styles."""
        if self.styles is None:
            return None
        rows = np.arange(self.batch_size, dtype=np.int64) * self.row_length
        positions = rows[None, :] + np.arange(begin, end, dtype=np.int64)[:, None]  # (T, B)
        documents = np.searchsorted(self.stream.starts, positions, side="right") - 1
        return torch.from_numpy(self.styles[np.maximum(documents, 0)])

    def first_styles(self) -> torch.Tensor | None:
        """(B,) int64: the style of each row's first token, which an epoch's first state is
        the learned start of; None without styles."""
        found = self.styles_at(0, 1)
        return None if found is None else found[0]

    def windows_per_epoch(self, epoch: int = 0, random_seed: int = 0) -> int:
        return len(self.window_starts(epoch, random_seed))

    @property
    def tokens_per_epoch(self) -> int:
        return self.batch_size * self.row_length


def _columns(rows: np.ndarray, begin: int, end: int) -> torch.Tensor:
    """(T, B) int64 copy of columns [begin, end) of a (B, L) array."""
    return torch.from_numpy(np.ascontiguousarray(rows[:, begin:end].T, dtype=np.int64))


def _device_columns(rows: torch.Tensor, begin: int, end: int) -> torch.Tensor:
    """(T, B) int64 copy of columns [begin, end) of a (B, L) tensor, where it lives."""
    return rows[:, begin:end].t().to(torch.int64, memory_format=torch.contiguous_format)


def _by_column(positions: np.ndarray, used: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows) of the stream positions inside [0, used), sorted by column."""
    inside = positions[(positions >= 0) & (positions < used)]
    columns, rows = inside % length, inside // length
    order = np.argsort(columns, kind="stable")
    return columns[order], rows[order]


def _flags(
    by_column: tuple[np.ndarray, np.ndarray], begin: int, end: int, shape: tuple[int, int]
) -> torch.Tensor:
    columns, rows = by_column
    low, high = np.searchsorted(columns, [begin, end])
    flags = torch.zeros(shape, dtype=torch.bool)
    flags[torch.from_numpy(columns[low:high] - begin), torch.from_numpy(rows[low:high])] = True
    return flags
