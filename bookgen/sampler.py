"""Streaming generation from a trained model.

Priming: the whole seed is run through the model, token by token in one forward pass, so the
hidden state holds the seed's context; the first new token is drawn from the distribution after
the seed's *last* token. From then on each drawn token is fed back in. Randomness comes only
from an explicit `torch.Generator`, so the same random seed gives the same text.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from bookgen.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint
from bookgen.context import RunContext, inference_context, resolve_device
from bookgen.errors import BookgenError, BookgenWarning
from bookgen.model import RecurrentLM, State
from bookgen.tokenizer import UNK_ID, StreamDecoder, Tokenizer


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SamplingSettings:
    """How text is drawn: the one definition that `generate`, `bookgen sample`, `bookgen chat`
    and chat's /commands all read their defaults and help from."""

    length: int = _setting(500, "Tokens to write (characters for a character model).")
    temperature: float = _setting(
        0.8,
        "Randomness: 0 always takes the likeliest token, 1 samples the model as it is, "
        "above 1 is wilder.",
    )
    top_k: int = _setting(0, "Draw only from the K likeliest tokens (0: no limit).")
    top_p: float = _setting(
        1.0,
        "Draw only from the likeliest tokens that together make up P of the probability "
        "(1: no limit).",
    )

    def __post_init__(self) -> None:
        if self.length < 0:
            raise BookgenError(f"length must be 0 or more, not {self.length}")
        if not 0 <= self.temperature < float("inf"):
            raise BookgenError(f"temperature must be 0 or more and finite, not {self.temperature}")
        if self.top_k < 0:
            raise BookgenError(f"top-k must be 0 (off) or more, not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise BookgenError(f"top-p must be in (0, 1], not {self.top_p}")

    @staticmethod
    def help(name: str) -> str:
        """The help text of one setting, as `--help` and chat's /help show it."""
        return next(f.metadata["help"] for f in fields(SamplingSettings) if f.name == name)


DEFAULTS = SamplingSettings()


def choose_token(
    logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator
) -> int:
    """Draw one token id from 1-D `logits` (V,), never the unknown token."""
    logits = logits.double().cpu().clone()  # float64: a tiny temperature must not round to 0
    logits[UNK_ID] = float("-inf")
    if settings.temperature == 0:
        return int(torch.argmax(logits))
    # Shifted so the largest is 0 before dividing: a tiny temperature then gives -inf for the
    # rest (greedy in effect) rather than inf - inf = NaN.
    logits = (logits - logits.max()) / settings.temperature
    if 0 < settings.top_k < logits.numel():
        kth = torch.topk(logits, settings.top_k).values[-1]
        logits[logits < kth] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set of tokens whose mass reaches top_p (always at least one).
        drop = torch.cumsum(sorted_probs, 0) - sorted_probs >= settings.top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Primed:
    """The model's state after some text, and its prediction for the next token."""

    state: State
    logits: torch.Tensor  # (V,)
    decoder: StreamDecoder | None = None  # writes tokens as text, knowing what came before

    def copy(self) -> Primed:
        """A snapshot that later generation (which advances a Primed in place) cannot touch."""
        state = tuple(s.clone() for s in self.state)
        return Primed(state, self.logits.clone(), copy.deepcopy(self.decoder))


class TextGenerator:
    """A trained model with its tokenizer, ready to write. Returned by `bookgen.load`."""

    def __init__(
        self,
        model: RecurrentLM,
        tokenizer: Tokenizer,
        context: RunContext | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context = context or RunContext(next(model.parameters()).device)
        self.checkpoint = checkpoint
        self.device = self.context.device

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, context: RunContext) -> TextGenerator:
        return cls(checkpoint.model.eval(), checkpoint.tokenizer, context, checkpoint)

    @torch.no_grad()
    def prime(self, text: str, primed: Primed | None = None) -> Primed:
        """Run `text` through the model, starting from `primed` (or a fresh state)."""
        if not text and primed is None:
            # Nothing to read: start as at the beginning of a line, if the book has lines.
            text = "" if self.tokenizer.unknown("\n") else "\n"
        unknown = self.tokenizer.unknown(text)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10])
            warnings.warn(
                f"not in the model's vocabulary, read as unknown: {shown}",
                BookgenWarning,
                stacklevel=3,
            )
        ids = self.tokenizer.encode(text)
        state = primed.state if primed is not None else self.model.init_state(1, self.device)
        if not ids:
            if primed is not None:
                return primed
            ids = [UNK_ID]
        decoder = primed.decoder if primed is not None else None
        decoder = decoder or self.tokenizer.stream_decoder()
        for token in ids:
            decoder.push(token)  # the seed is already written; the decoder only learns context
        tokens = torch.tensor(ids, dtype=torch.long, device=self.device).view(-1, 1)
        with self.context.autocast():
            logits, state = self.model(tokens, state)
        return Primed(state, logits[-1, 0].float(), decoder)

    @torch.no_grad()
    def stream(
        self, primed: Primed, settings: SamplingSettings, generator: torch.Generator
    ) -> Iterator[str]:
        """Yield `settings.length` tokens' text one at a time; `primed` is advanced in place.

        Each token is read into the state *before* its text is yielded, so a caller that stops
        early (Ctrl-C in chat) holds the state after exactly the text it has shown.
        """
        if primed.decoder is None:
            primed.decoder = self.tokenizer.stream_decoder()
        for _ in range(settings.length):
            token = choose_token(primed.logits, settings, generator)
            inputs = torch.tensor([[token]], device=self.device)
            with self.context.autocast():
                logits, primed.state = self.model(inputs, primed.state)
            primed.logits = logits[-1, 0].float()
            piece = primed.decoder.push(token)
            if piece:
                yield piece

    def generate(
        self,
        seed: str = "",
        length: int = DEFAULTS.length,
        temperature: float = DEFAULTS.temperature,
        top_k: int = DEFAULTS.top_k,
        top_p: float = DEFAULTS.top_p,
        random_seed: int | None = None,
    ) -> Iterator[str]:
        """Prime with the whole `seed`, then yield the continuation piece by piece.

        `seed` is the text to continue; `random_seed` fixes the draws (the same one gives the
        same text). The settings are those of `SamplingSettings`.
        """
        settings = SamplingSettings(length, temperature, top_k, top_p)
        generator = make_generator(random_seed)
        return self.stream(self.prime(seed), settings, generator)


def make_generator(random_seed: int | None) -> torch.Generator:
    """A CPU generator: the same seed gives the same draws on any device."""
    if random_seed is None:
        random_seed = random.SystemRandom().randrange(2**63)
    return torch.Generator().manual_seed(random_seed)


def load(
    path: str | Path | None = None, *, device: str = "cpu", which: str = "best_model"
) -> TextGenerator:
    """Load a checkpoint folder (default: the newest under ./checkpoints) for generation.

    The model runs in the precision it was trained in, as recorded in the checkpoint.
    """
    folder = Path(path) if path is not None else latest_checkpoint()
    torch_device = resolve_device(device)
    checkpoint = load_checkpoint(folder, which=which, device=torch_device)
    context = inference_context(torch_device, checkpoint.precision, checkpoint.model_config.cell)
    return TextGenerator.from_checkpoint(checkpoint, context)
