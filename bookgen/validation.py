"""Validation during training: the held-out stream, read as `bookgen eval` reads text, and the
sample preview shown with each evaluation.

The validation stream (the last `val_fraction` of each book) is cut into `val_batch_size` rows
and read with the state carried from window to window, each row from a zero state (with
styles, from the learned start of its first token's style). A huge
corpus would spend its budget evaluating, so only the first windows are read, up to
`max_val_tokens`: the start of every row, stretches spread evenly over the stream. With several
processes, each scores a share of the rows, and the sums add up to the whole. With styles, the
loss is also summed per style (each token under its book's style): `val_loss_by_style`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from bookgen.context import RunContext
from bookgen.distributed import World
from bookgen.model import RecurrentLM
from bookgen.sampler import TextGenerator
from bookgen.scoring import evaluate_style_sums
from bookgen.settings import TrainConfig
from bookgen.streams import StreamBatcher, TokenStream
from bookgen.tokenizer import Tokenizer

# The sample preview after each evaluation generates one token per forward step.
PREVIEW_SECONDS_PER_TOKEN = 0.002


class Validation:
    """The held-out stream of a run, and how much of it an evaluation reads."""

    def __init__(
        self,
        stream: TokenStream,
        config: TrainConfig,
        world: World,
        device: torch.device,
        style_names: Sequence[str] = (),
        document_styles: np.ndarray | None = None,
    ) -> None:
        """`style_names` in id order and `document_styles` (D,), the style of each document of
        `stream`: with both, losses are also summed per style."""
        self.stream = stream
        self.style_names = list(style_names) if document_styles is not None else []
        self.batcher = StreamBatcher(stream, config.val_batch_size, config.bptt, document_styles)
        if device.type != "cpu":
            self.batcher.keep_on(device)  # on a GPU the windows are cut there
        per_window = self.batcher.batch_size * config.bptt
        cap = max(1, config.max_val_tokens // per_window)
        self.windows = min(self.batcher.windows_per_epoch(), cap)  # read by each evaluation
        self.world = world
        self.preview_length = config.preview_length  # tokens; 0: no preview

    def loss(self, model: RecurrentLM, context: RunContext) -> float:
        """Mean nats per token of `model` over the windows read, the same on every process."""
        return self.losses(model, context)[0]

    def losses(self, model: RecurrentLM, context: RunContext) -> tuple[float, dict[str, float]]:
        """`loss`, and the mean nats per token of each style ({name: nats}; {} without
        styles, and a style with no held-out token read is left out)."""
        share = self.world.share(self.batcher.batch_size)
        styles = len(self.style_names)
        sums = evaluate_style_sums(model, self.batcher, context, styles, None, self.windows, share)
        total, count, *by_style = self.world.sum(sums[0], sums[1], *sums[2], *sums[3])
        totals, counts = by_style[:styles], by_style[styles:]
        losses = {
            name: style_total / style_count
            for name, style_total, style_count in zip(self.style_names, totals, counts, strict=True)
            if style_count > 0
        }
        return total / max(count, 1), losses

    def seconds(self, model: RecurrentLM, context: RunContext) -> float:
        """An evaluation's time, to budget those that must fit in --minutes: one window timed,
        times the windows read, plus the sample preview."""
        # One window only: a list of them all would hold the whole stream as int64 tensors.
        first = next(self.batcher.windows(), None)
        if first is None:
            return 0.0
        model.eval()
        state = model.init_state(self.batcher.batch_size, context.device)
        inputs = first.inputs.to(context.device)
        with torch.no_grad(), context.autocast():
            model(inputs, state)  # warm-up
            begin = time.perf_counter()
            model(inputs, state)
            context.synchronize()
            seconds = time.perf_counter() - begin
        model.train()
        return seconds * self.windows + PREVIEW_SECONDS_PER_TOKEN * self.preview_length

    def preview(
        self, model: RecurrentLM, tokenizer: Tokenizer, context: RunContext, random_seed: int
    ) -> str:
        """A short sample of the model as it stands, shown after each evaluation ("": none)."""
        if self.preview_length <= 0:
            return ""
        was_training = model.training
        writer = TextGenerator(model.eval(), tokenizer, context)
        text = "".join(writer.generate("", self.preview_length, random_seed=random_seed))
        model.train(was_training)
        return text
