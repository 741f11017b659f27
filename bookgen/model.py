"""The recurrent language model: embedding -> LSTM/GRU layers -> linear output.

The recurrent state is explicit: `init_state(batch)` makes a zero state and
`forward(tokens, state, resets) -> (logits, state)` returns the state after the last token. The
model never decides when state is carried, detached or reset: the trainer and sampler do.

Styles. A model trained on books of several styles (`config.styles` > 1: authors, or books) may
learn, per style, an initial state (`style_starts`: a row that starts a book of that style starts
from it, not from zeros) and a vector added to every input embedding (`style_vectors`); which of
the two, or both, is `config.style_design`. Both start at zero, so an untrained styled model
computes what a model without styles does. A style is given to `forward` and `init_state` either
as ids, one per token (training: rows cross from one book into the next), or as mixing weights
over the styles, one row of them per batch row (sampling: `austen=0.7,shelley=0.3`), which mix
the starts and the vectors linearly.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
from torch import nn
from torch.func import functional_call

from bookgen.context import to_device

# ModelConfig is declared with the other settings (help, allowed values, check), away from
# torch, so that `bookgen --help` reads it without loading torch; it is imported here as before.
from bookgen.settings import ModelConfig

# LSTM state is (h, c), each (layers, batch, hidden); GRU state is h alone, as a 1-tuple.
State = tuple[torch.Tensor, ...]
# A stretch of steps [begin, end) run in one call, and the (1, B, 1) mask that zeroes the state of
# the rows that reset at `begin` (None where no row does).
Span = tuple[int, int, torch.Tensor | None]
# A style: (T, B) int64 ids, the style of each input token, or (B, S) float weights over the S
# styles, the same at every step (see the module's docstring).
Style = torch.Tensor


class LockedDropout(nn.Module):
    """Variational dropout (AWD-LSTM): one mask per sequence, shared over all time steps."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        # Training on several processes: this process holds `rows` of a batch of `batch` rows.
        # The mask is drawn for the whole batch and cut, so every process draws what one
        # process training the whole batch would, and the runs agree exactly.
        self.batch: int | None = None
        self.rows: slice = slice(None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, C)
        if not self.training or self.p == 0:
            return x
        batch = self.batch if self.batch is not None else x.size(1)
        mask = x.new_empty(1, batch, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        if self.batch is not None:
            mask = mask[:, self.rows]
        return x * mask


class RecurrentLM(nn.Module):
    """Embedding -> `layers` single-layer LSTMs/GRUs -> linear output, with locked dropout.

    Each layer is its own fused nn.LSTM/nn.GRU (one cuDNN/oneDNN call per layer) rather than one
    multi-layer module, because the multi-layer module's `dropout=` draws a new mask at every
    time step; here one LockedDropout mask per sequence sits on every layer's input and on the
    last layer's output. Parameters: `layers.{i}.weight_ih_l0`, `layers.{i}.weight_hh_l0`, ...
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        rnn_class = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        sizes = [config.embed_size] + [config.hidden_size] * (config.layers - 1)
        self.layers = nn.ModuleList(rnn_class(size, config.hidden_size) for size in sizes)
        self.drop = LockedDropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tied:
            self.output.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.output.bias)
        kinds = 2 if config.cell == "lstm" else 1
        # (kinds, layers, styles, hidden): per style, the state a row starts a book of it from.
        self.style_starts = (
            nn.Parameter(torch.zeros(kinds, config.layers, config.styles, config.hidden_size))
            if config.learned_starts
            else None
        )
        # (styles, embed): per style, a vector added to every input embedding.
        self.style_vectors = (
            nn.Parameter(torch.zeros(config.styles, config.embed_size))
            if config.style_vectors
            else None
        )

    def flatten_parameters(self) -> None:
        """Pack each layer's weights into the one buffer cuDNN reads them from (a no-op off cuDNN).

        `.to(device)` packs them; a `copy.deepcopy` does not, and cuDNN then copies a layer's
        weights into a fresh buffer at every call, warning "RNN module weights are not part of
        single contiguous chunk of memory"."""
        for layer in self.layers:
            layer.flatten_parameters()

    def hold_rows(self, rows: slice, batch: int) -> None:
        """Train as `rows` of a `batch`-row batch (one of several processes): see LockedDropout."""
        self.drop.batch, self.drop.rows = batch, rows

    def init_state(
        self, batch: int, device: torch.device | str | None = None, style: Style | None = None
    ) -> State:
        """The state `batch` rows start from: zeros, or with learned starts, `style`'s start
        (ids (B,) or weights (B, S), one per row)."""
        c = self.config
        device = device if device is not None else self.embedding.weight.device
        shape = (c.layers, batch, c.hidden_size)
        count = 2 if c.cell == "lstm" else 1
        if self.style_starts is None or style is None:
            return tuple(torch.zeros(shape, device=device) for _ in range(count))
        return tuple(self._starts(style, layer=None)[kind] for kind in range(count))

    def forward(
        self,
        tokens: torch.Tensor,
        state: State,
        resets: torch.Tensor | None = None,
        style: Style | None = None,
    ) -> tuple[torch.Tensor, State]:
        """tokens (T, B) -> logits (T, B, V) and the state after the last token.

        `resets` (T, B) bool, optional: reset row b's state just before it reads tokens[t] (a row
        crossing into a new book): to zeros, or with learned starts to the start of the row's
        style at t. The sequence is split at such steps, which are rare. `style`: see `Style`;
        None (or a model without styles) adds no style vector and resets to zeros.
        """
        style = style if self.config.styles > 1 else None
        spans = self._spans(tokens.size(0), resets, state[0])
        x = self.embedding(tokens)  # (T, B, E)
        if self.style_vectors is not None and style is not None:
            x = x + self._vectors(style)
        finals = []  # per layer: its state after the last token, each tensor (1, B, H)
        for index, layer in enumerate(self.layers):
            # Layers loop outermost so that each layer's input gets one dropout mask for the
            # whole sequence, across reset cuts too.
            layer_state = tuple(s[index : index + 1] for s in state)
            starts = None
            if self.style_starts is not None and style is not None:
                starts = lambda begin, i=index: self._starts(style, i, begin)  # noqa: E731
            x, layer_state = self._run_layer(layer, self.drop(x), layer_state, spans, starts)
            finals.append(layer_state)
        # Back to one tensor per kind, each (layers, B, H).
        state = tuple(torch.cat(parts) for parts in zip(*finals, strict=True))
        return self.output(self.drop(x)), state

    @staticmethod
    def _spans(length: int, resets: torch.Tensor | None, like: torch.Tensor) -> list[Span]:
        """Split [0, length) at the steps where some row resets; see `Span`.

        `resets` is best given on the host (where the windows are cut): the cuts are then found
        there, and only the rare masks travel to the state's device, without waiting for it.
        """
        if resets is None:
            return [(0, length, None)]
        cuts = torch.nonzero(resets.any(dim=1)).flatten().tolist()
        bounds = sorted(set([0, *cuts, length]))
        return [
            (begin, end, _keep_mask(resets[begin], like) if begin in cuts else None)
            for begin, end in pairwise(bounds)
        ]

    def _vectors(self, style: Style) -> torch.Tensor:
        """The style vector added to each input: (T, B, E) for ids, (1, B, E) for weights."""
        assert self.style_vectors is not None
        if style.is_floating_point():
            return (style.to(self.style_vectors.dtype) @ self.style_vectors).unsqueeze(0)
        return nn.functional.embedding(style.to(self.style_vectors.device), self.style_vectors)

    def _starts(self, style: Style, layer: int | None, step: int = 0) -> torch.Tensor:
        """The learned start of each row's style: (kinds, 1, B, H) for one layer, or
        (kinds, layers, B, H) for all (`layer` None); for ids, the style at `step`."""
        assert self.style_starts is not None
        starts = self.style_starts if layer is None else self.style_starts[:, layer : layer + 1]
        if style.is_floating_point():  # (B, S) weights: mix the starts
            return torch.einsum("bs,klsh->klbh", style.to(starts.dtype), starts)
        ids = style if style.dim() == 1 else style[step]
        return starts[:, :, ids.to(starts.device)]

    def _run_layer(
        self,
        layer: nn.Module,
        x: torch.Tensor,
        state: State,
        spans: list[Span],
        starts: Callable[[int], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, State]:
        """One layer over x (T, B, C), span by span, resetting rows' state between spans: to
        zeros, or to `starts(begin)` (kinds, 1, B, H), the learned start of each row's style."""
        outputs = []
        for begin, end, keep in spans:
            if keep is not None:
                if starts is None:
                    state = tuple(s * keep for s in state)
                else:
                    start = starts(begin)
                    state = tuple(s * keep + start[k] * (1 - keep) for k, s in enumerate(state))
            out, state = self._step(layer, x[begin:end], state)
            outputs.append(out)
        return (torch.cat(outputs) if len(outputs) > 1 else outputs[0]), state

    def _step(self, layer: nn.Module, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.training and self.config.weight_drop > 0:
            # The layer runs with a dropped-out copy of its recurrent matrix; the parameter
            # itself is untouched and gets the gradient through the copy. (AWD-LSTM patched
            # nn.LSTM's internals for this, which broke on later PyTorch releases.)
            dropped = nn.functional.dropout(layer.weight_hh_l0, self.config.weight_drop)
            weights = packed_like(layer, {"weight_hh_l0": dropped})
            run = lambda *args: functional_call(layer, weights, args)  # noqa: E731
        else:
            run = layer
        if self.config.cell == "lstm":
            out, (h, c) = run(x, state)
            return out, (h, c)
        out, h = run(x, state[0])
        return out, (h,)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def packed_like(layer: nn.Module, replaced: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights to run `layer` with: its own, with those named in `replaced` replaced, laid
    out in one buffer as its own are where they are packed.

    On a GPU a layer's weights are views into one buffer in cuDNN's layout (`flatten_parameters`),
    which cuDNN reads in place. A weight swapped for a new tensor (weight drop's dropped copy of
    `weight_hh_l0`, new at every call) breaks that: cuDNN would copy all of them into a fresh
    buffer at every call and warn that the weights are "not part of single contiguous chunk of
    memory". Here the copy is ours, made once per call by `torch.cat` (so gradients reach the
    parameters and the dropped copy), each weight at its own place in it: cuDNN reads it in place.
    Weights that share no buffer (on a CPU, where nothing packs them) are not copied: only
    `replaced` comes back, and the layer keeps the rest.
    """
    weights = dict(layer.named_parameters())
    first = next(iter(weights.values()))
    storage = first.untyped_storage()
    shared = all(w.untyped_storage().data_ptr() == storage.data_ptr() for w in weights.values())
    if not shared or not all(w.is_contiguous() for w in weights.values()):
        return replaced
    pieces, end = [], 0  # the buffer's contents in order, and where the last piece ends
    for name, weight in sorted(weights.items(), key=lambda item: item[1].storage_offset()):
        offset = weight.storage_offset()
        if offset < end:  # overlapping weights: not a layout to copy
            return replaced
        if offset > end:  # padding between two weights
            pieces.append(first.new_zeros(offset - end))
        pieces.append(replaced.get(name, weight).reshape(-1))
        end = offset + weight.numel()
    size = storage.nbytes() // first.element_size()
    if size > end:
        pieces.append(first.new_zeros(size - end))
    flat = torch.cat(pieces)
    return {
        name: flat[w.storage_offset() : w.storage_offset() + w.numel()].view_as(w)
        for name, w in weights.items()
    }


def _keep_mask(resets: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(1, B, 1) ones for the rows that carry their state, zeros for those that reset."""
    keep = (~resets.cpu()).to(like.dtype).view(1, -1, 1)
    return to_device(keep, like.device)


def detach_state(state: State) -> State:
    """Cut the graph between windows: gradients stop here (truncated BPTT), values carry on."""
    return tuple(s.detach() for s in state)
