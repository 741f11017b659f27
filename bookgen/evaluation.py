"""`bookgen eval`: score a trained model on any text, in a currency all models share.

Bits per character = total bits over the text / characters. A character model and a word model
scored on the same text are directly comparable this way, whatever their tokens. Characters in
pieces a model can only read as unknown are charged 8 bits each (see `scoring.bits_per_char`).
The scoring itself (`scoring.evaluate`) is the one validation uses during training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from bookgen.catalog import resolve_inputs
from bookgen.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint
from bookgen.context import inference_context, resolve_device
from bookgen.corpus import BookFile, Reading, open_corpus
from bookgen.errors import BookgenError
from bookgen.scoring import bits_per_char, evaluate
from bookgen.streams import StreamBatcher, TokenStream
from bookgen.tokencache import tokenize_corpus

EVAL_ROWS = 16  # parallel streams; each starts from a zero state, as validation does


def evaluate_texts(
    paths: Sequence[str | Path],
    checkpoint: str | Path | None = None,
    *,
    reset_every: int | None = None,
    device: str = "auto",
    encoding: str | None = None,
    keep_markup: bool = False,
) -> dict:
    """Run the checkpoint's best model statefully over the cleaned texts and score it
    (`encoding` forces how they are decoded, default: detected; `keep_markup` keeps
    Aozora Bunko's markup)."""
    _check_reset_every(reset_every)
    reading = Reading(encoding, keep_markup)  # a wrong name is said before the checkpoint is loaded
    folder = Path(checkpoint) if checkpoint is not None else latest_checkpoint()
    loaded = load_checkpoint(folder, device=resolve_device(device))
    books = open_corpus(resolve_inputs([str(p) for p in paths]), reading)
    return score(loaded, whole_text(loaded, books), reset_every)


def _check_reset_every(reset_every: int | None) -> None:
    if reset_every is not None and reset_every < 1:
        raise BookgenError(f"--reset-every must be at least 1, not {reset_every}")


def whole_text(loaded: Checkpoint, books: Sequence[BookFile]) -> TokenStream:
    """The books end to end in the checkpoint's tokens (no validation split), through the token
    cache."""
    return tokenize_corpus(books, {}, loaded.tokenizer).train


def score(loaded: Checkpoint, stream: TokenStream, reset_every: int | None = None) -> dict:
    """The checkpoint's model over `stream`, in the checkpoint's window length and precision."""
    bptt = int(loaded.train_config.get("bptt", 64))
    batcher = StreamBatcher(stream, EVAL_ROWS, bptt)
    device = next(loaded.model.parameters()).device
    # The precision the model was trained and validated in, so the numbers agree.
    context = inference_context(device, loaded.precision, loaded.model_config.cell)
    nats = evaluate(loaded.model, batcher, context, reset_every)
    return {
        "tokens": len(stream),
        "chars": stream.chars,
        "nats_per_token": nats,
        "perplexity": math.exp(min(nats, 700.0)),
        "bits_per_char": bits_per_char(nats, stream),
        "unknown_chars": stream.unknown_chars,
    }
