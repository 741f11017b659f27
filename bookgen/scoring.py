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

from bookgen.context import RunContext
from bookgen.model import RecurrentLM
from bookgen.streams import StreamBatcher, TokenStream, Window

LN2 = math.log(2)
UNKNOWN_CHAR_BITS = 8.0


def token_nats(logits: torch.Tensor, window: Window, device: torch.device) -> torch.Tensor:
    """Nats of each target token (1-D), leaving out the first token of each new book.

    logits (T, B, V); the window's targets and loss mask are (T, B).
    """
    nats = F.cross_entropy(
        logits.float().flatten(0, 1), window.targets.to(device).flatten(), reduction="none"
    )
    return nats[window.loss_mask.to(device).flatten()]


def evaluate(
    model: RecurrentLM,
    batcher: StreamBatcher,
    context: RunContext,
    reset_every: int | None = None,
    max_windows: int | None = None,
) -> float:
    """Mean nats per token over the whole stream, state carried from window to window.

    `max_windows` reads only the first that many windows: the beginning of every row, which
    are `batch_size` stretches spread evenly over the stream.

    `reset_every` N zeroes the state every N tokens of each row, as a model that only ever sees
    N tokens of context would read the text: the gap to the carried-state loss is what the
    carried state is worth.
    """
    total, count = evaluate_sums(model, batcher, context, reset_every, max_windows)
    return total / max(count, 1)


@torch.no_grad()
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
    count_rows = len(range(batcher.batch_size)[rows])
    if count_rows == 0:
        return 0.0, 0
    was_training = model.training
    model.eval()
    device = context.device
    state = model.init_state(count_rows, device)
    total, count = 0.0, 0
    for whole in itertools.islice(batcher.windows(), max_windows):
        window = whole.rows(rows)
        resets = window.resets
        if reset_every is not None:
            positions = torch.arange(window.start, window.start + resets.size(0))
            resets = resets | (positions % reset_every == 0).view(-1, 1)
        with context.autocast():
            logits, state = model(window.inputs.to(device), state, resets.to(device))
        nats = token_nats(logits, window, device)
        total += float(nats.sum())
        count += nats.numel()
    model.train(was_training)
    return total, count


def bits_per_char(nats_per_token: float, stream: TokenStream) -> float:
    """Total bits over the text / characters: comparable across tokenizations.

    A model never pays for the spelling of a word it reads as unknown (a word model with a small
    vocabulary would look better than it is), so each character of an unknown piece is charged
    8 bits, as if spelled out in raw bytes: an upper bound that keeps the comparison honest.
    """
    bits = nats_per_token * len(stream) / LN2 + UNKNOWN_CHAR_BITS * stream.unknown_chars
    return bits / stream.chars
