"""The recurrent language model: embedding -> LSTM/GRU layers -> linear output.

The recurrent state is explicit: `init_state(batch)` makes a zero state and
`forward(tokens, state, resets) -> (logits, state)` returns the state after the last token. The
model never decides when state is carried, detached or reset: the trainer and sampler do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise

import torch
from torch import nn

from bookgen.errors import BookgenError

# LSTM state is (h, c), each (layers, batch, hidden); GRU state is h alone, as a 1-tuple.
State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"  # "lstm" or "gru"
    layers: int = 1
    hidden_size: int = 512
    embed_size: int | None = None  # None: the same as hidden_size, so the weights can be tied
    dropout: float = 0.25  # locked dropout; measured: better at 10 minutes, a little worse at 1
    tie_weights: bool = True  # share embedding and output weights when embed == hidden

    def __post_init__(self) -> None:
        if self.embed_size is None:
            object.__setattr__(self, "embed_size", self.hidden_size)
        if self.cell not in ("lstm", "gru"):
            raise BookgenError(f"--cell must be lstm or gru, not {self.cell!r}")
        if self.vocab_size < 2:
            raise BookgenError("the vocabulary needs at least two tokens")
        for name in ("layers", "hidden_size", "embed_size"):
            if getattr(self, name) < 1:
                raise BookgenError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise BookgenError(f"dropout must be in [0, 1), not {self.dropout}")

    @property
    def tied(self) -> bool:
        return self.tie_weights and self.embed_size == self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**data)


class LockedDropout(nn.Module):
    """Variational dropout (AWD-LSTM): one mask per sequence, shared over all time steps."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, C)
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


class RecurrentLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        rnn_class = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.rnn = rnn_class(
            config.embed_size,
            config.hidden_size,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = LockedDropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tied:
            self.output.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.output.bias)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """A zero state for `batch` rows."""
        c = self.config
        device = device if device is not None else self.embedding.weight.device
        shape = (c.layers, batch, c.hidden_size)
        count = 2 if c.cell == "lstm" else 1
        return tuple(torch.zeros(shape, device=device) for _ in range(count))

    def forward(
        self, tokens: torch.Tensor, state: State, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """tokens (T, B) -> logits (T, B, V) and the state after the last token.

        `resets` (T, B) bool, optional: zero row b's state just before it reads tokens[t] (a row
        crossing into a new book). The sequence is split at such steps, which are rare.
        """
        x = self.drop(self.embedding(tokens))  # (T, B, E)
        cuts = [] if resets is None else torch.nonzero(resets.any(dim=1)).flatten().tolist()
        outputs = []
        bounds = sorted(set([0, *cuts, tokens.size(0)]))
        for begin, end in pairwise(bounds):
            if resets is not None and begin in cuts:
                keep = (~resets[begin]).to(state[0].dtype).view(1, -1, 1)
                state = tuple(s * keep for s in state)
            out, state = self._run(x[begin:end], state)
            outputs.append(out)
        hidden = self.drop(torch.cat(outputs) if len(outputs) > 1 else outputs[0])
        return self.output(hidden), state

    def _run(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.config.cell == "lstm":
            out, (h, c) = self.rnn(x, state)
            return out, (h, c)
        out, h = self.rnn(x, state[0])
        return out, (h,)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state: State) -> State:
    """Cut the graph between windows: gradients stop here (truncated BPTT), values carry on."""
    return tuple(s.detach() for s in state)
