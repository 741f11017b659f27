"""`bookgen eval`: score a trained model on any text, in a currency all models share.

Bits per character = total bits over the text / characters. A character model and a word model
scored on the same text are directly comparable this way, whatever their tokens. Characters in
pieces a model can only read as unknown are charged 8 bits each (see `scoring.bits_per_char`).
The scoring itself (`scoring.evaluate`) is the one validation uses during training.

With adapting (`adapt=AdaptSettings()`, `bookgen eval --adapt`), the text is read as one stream in
segments and scored twice, static and adapted to the text as it is read (`adapt.py`); both
figures come from that same reading, so their difference is what adapting is worth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from bookgen.adapt import Adapter, read_sums
from bookgen.catalog import resolve_inputs
from bookgen.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint
from bookgen.context import inference_context, resolve_device
from bookgen.corpus import BookFile, Reading, open_corpus
from bookgen.errors import BookgenError
from bookgen.scoring import bits_per_char, evaluate
from bookgen.settings import AdaptSettings
from bookgen.streams import StreamBatcher, TokenStream
from bookgen.styles import model_styles, neutral_weights, one_style_name, parse_style
from bookgen.tokencache import tokenize_corpus

# (what: "static" or "adapted", tokens read, tokens in all)
AdaptProgress = Callable[[str, int, int], None]

EVAL_ROWS = 16  # parallel streams; each starts from a zero state, as validation does


def evaluate_texts(
    paths: Sequence[str | Path],
    checkpoint: str | Path | None = None,
    *,
    reset_every: int | None = None,
    device: str = "auto",
    encoding: str | None = None,
    keep_markup: bool = False,
    adapt: AdaptSettings | None = None,
    on_progress: AdaptProgress | None = None,
    style: str | None = None,
) -> dict:
    """Run the checkpoint's best model statefully over the cleaned texts and score it
    (`encoding` forces how they are decoded, default: detected; `keep_markup` keeps
    Aozora Bunko's markup). With `adapt`, static and adapted figures of the one-stream reading
    (`score_adapted`; `reset_every` does not apply). A model trained on several styles reads
    the text in `style` (a spec, styles.py), by default in the neutral mix of its styles."""
    _check_reset_every(reset_every)
    if adapt is not None and reset_every is not None:
        raise BookgenError("--reset-every and --adapt do not go together")
    reading = Reading(encoding, keep_markup)  # a wrong name is said before the checkpoint is loaded
    folder = Path(checkpoint) if checkpoint is not None else latest_checkpoint()
    loaded = load_checkpoint(folder, device=resolve_device(device))
    mix = style_mix(loaded, style)
    books = open_corpus(resolve_inputs([str(p) for p in paths]), reading)
    if adapt is not None:
        return score_adapted(loaded, whole_text(loaded, books), adapt, on_progress, mix)
    return score(loaded, whole_text(loaded, books), reset_every, mix)


def style_mix(loaded: Checkpoint, style: str | None) -> torch.Tensor | None:
    """The weights (S,) over a styled model's styles that `style` asks for (None: the neutral
    mix, by their shares); None for a one-style model, which refuses a style in one line."""
    styles = model_styles(loaded.manifest)
    if style is not None:
        weights = parse_style(style, styles, one_style_name(loaded.manifest))
    elif styles:
        weights = neutral_weights(styles)
    else:
        return None
    return torch.tensor(weights, dtype=torch.float32)


def _check_reset_every(reset_every: int | None) -> None:
    if reset_every is not None and reset_every < 1:
        raise BookgenError(f"--reset-every must be at least 1, not {reset_every}")


def whole_text(loaded: Checkpoint, books: Sequence[BookFile]) -> TokenStream:
    """The books end to end in the checkpoint's tokens (no validation split), through the token
    cache."""
    return tokenize_corpus(books, {}, loaded.tokenizer).train


def score(
    loaded: Checkpoint,
    stream: TokenStream,
    reset_every: int | None = None,
    mix: torch.Tensor | None = None,
) -> dict:
    """The checkpoint's model over `stream`, in the checkpoint's window length and precision
    (a styled model in the style `mix`, see `style_mix`)."""
    bptt = int(loaded.train_config.get("bptt", 64))
    batcher = StreamBatcher(stream, EVAL_ROWS, bptt)
    device = next(loaded.model.parameters()).device
    # The precision the model was trained and validated in, so the numbers agree.
    context = inference_context(device, loaded.precision, loaded.model_config.cell)
    nats = evaluate(loaded.model, batcher, context, reset_every, mix=mix)
    return {
        "tokens": len(stream),
        "chars": stream.chars,
        **_figures(nats, stream),
        "unknown_chars": stream.unknown_chars,
    }


def _figures(nats: float, stream: TokenStream, prefix: str = "") -> dict:
    """Mean nats per token as eval reports it: with perplexity and bits per character."""
    return {
        f"{prefix}nats_per_token": nats,
        f"{prefix}perplexity": math.exp(min(nats, 700.0)),
        f"{prefix}bits_per_char": bits_per_char(nats, stream),
    }


def score_adapted(
    loaded: Checkpoint,
    stream: TokenStream,
    settings: AdaptSettings,
    on_progress: AdaptProgress | None = None,
    mix: torch.Tensor | None = None,
) -> dict:
    """Static and adapted figures over `stream`, both read as one stream in segments of
    `settings.adapt_segment` tokens (adapt.py), a styled model in the style `mix`. The model's
    weights are the trained ones again afterwards."""
    progress = on_progress or (lambda what, done, total: None)
    model = loaded.model
    device = next(model.parameters()).device
    context = inference_context(device, loaded.precision, loaded.model_config.cell)
    segment = settings.adapt_segment
    static = read_sums(
        model, stream, segment, context, None, lambda *a: progress("static", *a), mix
    )
    adapter = Adapter(model, settings)
    try:
        adapted = read_sums(
            model, stream, segment, context, adapter, lambda *a: progress("adapted", *a), mix
        )
    finally:
        adapter.reset()
    nats, adapted_nats = (total / max(count, 1) for total, count in (static, adapted))
    return {
        "tokens": len(stream),
        "chars": stream.chars,
        **_figures(nats, stream),
        "unknown_chars": stream.unknown_chars,
        **_figures(adapted_nats, stream, "adapted_"),
        **asdict(settings),
    }
