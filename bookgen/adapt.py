"""A model that adapts to the text it reads: dynamic evaluation (Krause et al. 2018, "Dynamic
Evaluation of Neural Sequence Models").

The text is read as one stream, in segments of n tokens, the state carried from segment to
segment as `bookgen eval` carries it from window to window. Each segment is first scored with
the weights as they stand; then one gradient step on that segment's loss moves the weights, and
a decay pulls them back toward the trained weights theta0:

    theta <- theta - lr * gradient                 (the gradient of the segment's mean loss)
    theta <- theta + decay * (theta0 - theta)

This is the paper's SGD rule with the step scaled by (1 - decay), a difference of a percent at
the decays that work, chosen so that the ends are exact: lr 0 never moves the weights, and decay
1 puts the trained weights back after every segment; both read the text as static evaluation
does. The `rms` rule divides each weight's gradient by the root of its mean square, as the
paper's RMS form does; the paper takes the mean squares from the training text beforehand,
here they are a moving average over the segments read so far (RMSprop's, corrected for its start
at zero as Adam's is), so that adapting needs nothing but the model and the text.

A segment is always scored before it is learned from, so no token is seen before it is
predicted: the figure is as fair as the static one.

    segments:  [ s0 ][ s1 ][ s2 ] ...      state carried ->, cut from the graph between segments
    weights:    th0   th1   th2            th(k+1) = step on s(k)'s loss, then the decay

Dropout is off (eval mode); gradients are taken for the weights only (`torch.autograd.grad`,
so no `.grad` is left behind). The weights change in memory only: `Adapter.reset` puts the
trained ones back, and a checkpoint on disk is never written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bookgen.context import RunContext, to_device
from bookgen.model import RecurrentLM, State, detach_state
from bookgen.scoring import scored_tokens, token_nats
from bookgen.settings import AdaptRule, AdaptSettings
from bookgen.streams import StreamBatcher, TokenStream
from bookgen.tokenizer import UNK_ID

# The rms rule's moving average of squared gradients (RMSprop's), and what keeps a weight that
# has had no gradient yet from dividing by zero.
RMS_BETA = 0.99
RMS_EPSILON = 1e-8

# (tokens read so far, tokens in all): called after each segment.
Progress = Callable[[int, int], None]


@dataclass
class AdaptedWeights:
    """What an Adapter has changed, copied (`Adapter.snapshot`): one tensor per weight each."""

    weights: list[torch.Tensor]
    squares: list[torch.Tensor]
    steps: int


class Adapter:
    """Moves a model's weights in place, one segment's gradient step at a time, and remembers
    the trained weights to decay toward and to reset to."""

    def __init__(self, model: RecurrentLM, settings: AdaptSettings) -> None:
        self.model = model
        self.settings = settings
        self.weights = list(model.parameters())  # a tied weight once
        self.trained = [weight.detach().clone() for weight in self.weights]
        # The rms rule: each weight's mean squared gradient (a moving average) and the steps.
        self.squares = [torch.zeros_like(weight) for weight in self.weights]
        self.steps = 0

    def learn(self, loss: torch.Tensor) -> None:
        """One step on `loss` (a scalar computed with the current weights), then the decay."""
        lr, decay = self.settings.adapt_lr, self.settings.adapt_decay
        # Unused weights (a styled model's starts when no style is given) get no gradient.
        gradients = torch.autograd.grad(loss, self.weights, allow_unused=True)
        self.steps += 1
        with torch.no_grad():
            for weight, gradient, trained, squares in zip(
                self.weights, gradients, self.trained, self.squares, strict=True
            ):
                if gradient is not None:
                    weight.sub_(self._scaled(gradient.to(weight.dtype), squares), alpha=lr)
                # lerp is exact at both ends: decay 0 leaves the weight, decay 1 gives `trained`.
                weight.lerp_(trained, decay)

    def _scaled(self, gradient: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
        """The gradient as the rule takes it: as it is (sgd), or over the root of its mean
        square so far (rms: a moving average, corrected for its start at zero as Adam's is)."""
        if self.settings.adapt_rule == AdaptRule.SGD:
            return gradient
        squares.mul_(RMS_BETA).addcmul_(gradient, gradient, value=1 - RMS_BETA)
        mean = squares / (1 - RMS_BETA**self.steps)
        return gradient / mean.sqrt_().add_(RMS_EPSILON)

    def snapshot(self) -> AdaptedWeights:
        """A copy of what adapting has changed so far (the weights, the rms rule's squares and
        its count of steps), for `restore`: twice the model's fp32 size, a copy per call."""
        return AdaptedWeights(
            [weight.detach().clone() for weight in self.weights],
            [squares.clone() for squares in self.squares],
            self.steps,
        )

    def restore(self, snapshot: AdaptedWeights) -> None:
        """The weights and the rule's memory exactly as they were at `snapshot`."""
        with torch.no_grad():
            for weight, squares, kept, kept_squares in zip(
                self.weights, self.squares, snapshot.weights, snapshot.squares, strict=True
            ):
                weight.copy_(kept)
                squares.copy_(kept_squares)
        self.steps = snapshot.steps

    def reset(self) -> None:
        """The trained weights again, and no gradient seen."""
        with torch.no_grad():
            for weight, trained, squares in zip(
                self.weights, self.trained, self.squares, strict=True
            ):
                weight.copy_(trained)
                squares.zero_()
        self.steps = 0


def read_sums(
    model: RecurrentLM,
    stream: TokenStream,
    segment: int,
    context: RunContext,
    adapter: Adapter | None = None,
    on_progress: Progress | None = None,
    mix: torch.Tensor | None = None,
) -> tuple[float, int]:
    """(total nats, tokens scored) over `stream` read as one row in segments of `segment`
    tokens, the state carried; with an `adapter`, learning from each segment once it is scored
    (the weights are left adapted), without one, static. A styled model reads it in the style
    `mix` (S,), if given.

    The text's first token of each book is left out as everywhere (`scoring.token_nats`).
    """
    batcher = StreamBatcher(stream, 1, segment)
    progress = on_progress or (lambda done, total: None)
    was_training = model.training
    model.eval()
    device = context.device
    style = None if mix is None else to_device(mix, device)[None]  # (1, S): one row
    state = model.init_state(1, device, style=style)
    # Summed in float64 on the device, read once at the end, as scoring.evaluate_sums does.
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    try:
        for window in batcher.windows():
            with torch.set_grad_enabled(adapter is not None), context.autocast():
                inputs = to_device(window.inputs, device)
                logits, state = model(inputs, state, window.resets, style)
            nats = token_nats(logits, window, device)
            total += nats.detach().sum().double()
            scored = scored_tokens(window)
            count += scored
            if adapter is not None and scored > 0:
                adapter.learn(nats.mean())
            state = detach_state(state)
            progress(window.start + window.inputs.size(0), batcher.row_length)
    finally:
        model.train(was_training)
    return float(total), count


def read_adapting(
    model: RecurrentLM,
    tokens: torch.Tensor,
    state: State,
    adapter: Adapter,
    segment: int,
    context: RunContext,
    style: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Read `tokens` ((N,) long, N >= 1, on the model's device) after `state`, learning from
    them in segments of `segment` tokens as `read_sums` does: (the logits after the last token
    (V,), fp32, and the state after it, detached). `style`: (1, S) mixing weights, or None.

    Each segment's inputs are predicted with the weights as they stand before it is learned
    from; its targets are the next tokens, so the last token is read but learned from only once
    the text that follows it is (its logits are the prediction returned). Used to write after
    adapting (sampler.py's `TextGenerator.adapted`, chat's --adapt)."""
    was_training = model.training
    model.eval()
    logits = None
    try:
        for start in range(0, tokens.numel(), segment):
            inputs = tokens[start : start + segment]
            targets = tokens[start + 1 : start + segment + 1]  # one fewer at the very end
            with torch.enable_grad(), context.autocast():
                logits, state = model(inputs.view(-1, 1), state, style=style)
            if targets.numel() > 0:
                # The unknown token is never written; its loss would teach nothing useful.
                loss = F.cross_entropy(
                    logits[: targets.numel(), 0].float(), targets, ignore_index=UNK_ID
                )
                if bool(torch.isfinite(loss)):  # NaN when every target is unknown
                    adapter.learn(loss)
            state = detach_state(state)
    finally:
        model.train(was_training)
    return logits[-1, 0].detach().float(), state
