"""Scoring a model on text: nats per token, the loss over a stream read with the state carried
(`evaluate`), and bits per character.

Training's loss (step.py), validation (validation.py) and `bookgen eval` (evaluation.py) all
score here, so that they measure alike. ("metrics" in bookgen is metrics.jsonl, the record a
run writes: checkpoint.py.)
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from bookgen.context import RunContext, to_device
from bookgen.model import RecurrentLM
from bookgen.streams import StreamBatcher, TokenStream, Window

LN2 = math.log(2)
UNKNOWN_CHAR_BITS = 8.0


def token_nats(logits: torch.Tensor, window: Window, device: torch.device) -> torch.Tensor:
    """Nats of each target token (1-D), leaving out the first token of each new book.

    logits (T, B, V) on `device`; the window's targets (T, B) on the host or `device`, its loss
    mask (T, B) on the host. The tokens left out are found on the host, so the device is never
    asked which (a boolean mask on a GPU tensor would wait for it); the rest are the same values
    in the same order as `nats[mask]`.
    """
    nats = F.cross_entropy(
        logits.float().flatten(0, 1),
        to_device(window.targets, device).flatten(),
        reduction="none",
    )
    if bool(window.loss_mask.all()):
        return nats
    kept = torch.nonzero(window.loss_mask.cpu().flatten()).flatten()
    return nats.index_select(0, to_device(kept, device))


def scored_tokens(window: Window) -> int:
    """How many of the window's targets count in the loss (a host count)."""
    return int(window.loss_mask.cpu().sum())


def evaluate(
    model: RecurrentLM,
    batcher: StreamBatcher,
    context: RunContext,
    reset_every: int | None = None,
    max_windows: int | None = None,
    mix: torch.Tensor | None = None,
) -> float:
    """Mean nats per token over the whole stream, state carried from window to window (a styled
    model's text read in the style `mix`, see `evaluate_style_sums`).

    `max_windows` reads only the first that many windows: the beginning of every row, which
    are `batch_size` stretches spread evenly over the stream.

    `reset_every` N zeroes the state every N tokens of each row, as a model that only ever sees
    N tokens of context would read the text: the gap to the carried-state loss is what the
    carried state is worth.
    """
    sums = evaluate_style_sums(model, batcher, context, 0, reset_every, max_windows, mix=mix)
    return sums[0] / max(sums[1], 1)


def evaluate_sums(
    model: RecurrentLM,
    batcher: StreamBatcher,
    context: RunContext,
    reset_every: int | None = None,
    max_windows: int | None = None,
    rows: slice = slice(None),
) -> tuple[float, int]:
    """(total nats, tokens scored) of `evaluate`, over some of the rows only if asked.

    Training processes each score a share of the rows; the sums of their sums are the whole.
    """
    sums = evaluate_style_sums(model, batcher, context, 0, reset_every, max_windows, rows)
    return sums[0], sums[1]


@torch.no_grad()
def evaluate_style_sums(
    model: RecurrentLM,
    batcher: StreamBatcher,
    context: RunContext,
    styles: int,
    reset_every: int | None = None,
    max_windows: int | None = None,
    rows: slice = slice(None),
    mix: torch.Tensor | None = None,
) -> tuple[float, int, list[float], list[int]]:
    """`evaluate_sums`, and the same two sums per style (S lists, empty without styles), each
    token counted under the style of its book (the batcher's `styles`).

    Each row starts from the learned start of its first token's style (zeros without styles).
    A text that is not the model's books has no styles of its own: a styled model then reads it
    in `mix` (S,) weights over its styles, if given (`bookgen eval --style`).
    """
    styles = styles if batcher.styles is not None else 0
    count_rows = len(range(batcher.batch_size)[rows])
    if count_rows == 0:
        return 0.0, 0, [0.0] * styles, [0] * styles
    was_training = model.training
    model.eval()
    device = context.device
    first = batcher.first_styles()
    first = None if first is None else to_device(first[rows], device)
    if first is None and mix is not None:
        first = to_device(mix, device).expand(count_rows, -1)
    state = model.init_state(count_rows, device, style=first)
    # Each window's sum is added in float64 on the device and read once at the end: the same
    # float as adding the windows' float32 sums on the host, without a wait per window.
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    style_totals = torch.zeros(styles, dtype=torch.float64, device=device)
    style_counts = torch.zeros(styles, dtype=torch.int64)
    for whole in itertools.islice(batcher.windows(), max_windows):
        window = whole.rows(rows)
        resets = window.resets
        if reset_every is not None:
            positions = torch.arange(window.start, window.start + resets.size(0))
            resets = resets | (positions % reset_every == 0).view(-1, 1)
        style = first if window.styles is None else to_device(window.styles, device)
        with context.autocast():
            logits, state = model(to_device(window.inputs, device), state, resets, style)
        nats = token_nats(logits, window, device)
        total += nats.sum().double()
        count += scored_tokens(window)
        if styles:
            # The style of each scored token, in the order token_nats keeps them (host).
            ids = window.styles.flatten()[window.loss_mask.cpu().flatten()]
            style_totals.index_add_(0, to_device(ids, device), nats.double())
            style_counts += torch.bincount(ids, minlength=styles)
    model.train(was_training)
    return float(total), count, style_totals.tolist(), style_counts.tolist()


def bits_per_char(nats_per_token: float, stream: TokenStream) -> float:
    """Total bits over the text / characters: comparable across tokenizations.

    A model never pays for the spelling of a word it reads as unknown (a word model with a small
    vocabulary would look better than it is), so each character of an unknown piece is charged
    8 bits, as if spelled out in raw bytes: an upper bound that keeps the comparison honest.
    """
    bits = nats_per_token * len(stream) / LN2 + UNKNOWN_CHAR_BITS * stream.unknown_chars
    return bits / stream.chars
