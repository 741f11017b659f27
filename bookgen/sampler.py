"""Streaming generation from a trained model.

Priming: the whole seed is run through the model, token by token in one forward pass, so the
hidden state holds the seed's context; the first new token is drawn from the distribution after
the seed's *last* token. From then on each drawn token is fed back in. Randomness comes only
from an explicit `torch.Generator`, so the same random seed gives the same text on a given
device. On a GPU the tokens are drawn on the device, a block at a time (device_sampler.py).

Styles. A model trained on several styles writes in the style asked for (`style=`, a spec of
styles.py: "austen" or "austen=0.7,shelley=0.3"), or from the neutral mix of them all. The style
is mixing weights (S,): the state starts from `model.init_state(1, style=...)` and every step
adds the style's vector to its input. The step kernel folds that vector's contribution into
layer 0's input bias, so the fast step and the device's blocks write in the style with no work
per token. A `Primed` carries its style: what is read or written after it keeps it.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bookgen.adapt import Adapter, read_adapting
from bookgen.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint
from bookgen.context import RunContext, inference_context, resolve_device
from bookgen.device_sampler import BlockRunner, device_generators, settings_key, write
from bookgen.errors import BookgenError, BookgenWarning
from bookgen.guard import CopyGuard, CopyRun, load_guard
from bookgen.model import RecurrentLM, State
from bookgen.settings import (
    WRITING_ADAPT_LR,
    AdaptSettings,
    SamplingSettings,
)  # declared there, away from torch (for --help)
from bookgen.styles import (
    Style,
    model_styles,
    neutral_weights,
    one_style_name,
    parse_style,
    strengthen,
)
from bookgen.tokenizer import UNK_ID, StreamDecoder, Tokenizer

DEFAULTS = SamplingSettings()


def choose_token(
    logits: torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator,
    banned: torch.Tensor | None = None,
) -> int | None:
    """Draw one token id from 1-D `logits` (V,), never the unknown token nor a `banned` one
    ((V,) bool: the copy guard's); None when nothing is left to draw from.

    Per token this is a handful of tiny ops on V numbers, so each one is counted: at 65
    characters their dispatch, not their arithmetic, is what costs.
    """
    # float64: a tiny temperature must not round to 0. A new tensor, so the caller's is kept.
    logits = logits.to("cpu", torch.float64, copy=True)
    logits[UNK_ID] = float("-inf")
    if banned is not None:
        logits[banned] = float("-inf")
        if not bool(torch.isfinite(logits).any()):
            return None
    if settings.temperature == 0:
        return int(torch.argmax(logits))
    # Shifted so the largest is 0 before dividing: a tiny temperature then gives -inf for the
    # rest (greedy in effect) rather than inf - inf = NaN.
    logits.sub_(logits.max()).div_(settings.temperature)
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
    # What torch.multinomial(probs, 1) does for one sample (argmax of p / q with q ~ Exp(1),
    # the Gumbel-max trick), without its checks: the same draws, at half the cost.
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return int(torch.argmax(torch.div(probs, noise, out=noise)))


@dataclass
class Primed:
    """The model's state after some text, and its prediction for the next token."""

    state: State
    logits: torch.Tensor  # (V,)
    decoder: StreamDecoder | None = None  # writes tokens as text, knowing what came before
    copy_run: CopyRun | None = None  # the model's own latest tokens, for the copy guard
    style: torch.Tensor | None = None  # (S,) mixing weights; None: a model without styles

    def copy(self) -> Primed:
        """A snapshot that later generation (which advances a Primed in place) cannot touch."""
        state = tuple(s.clone() for s in self.state)
        run = self.copy_run.copy() if self.copy_run is not None else None
        return Primed(state, self.logits.clone(), copy.deepcopy(self.decoder), run, self.style)


# Layer 0's input projection is folded into a (V, G*H) table when that table is at most this many
# times the size of W_ih itself: always for characters, never for a 30,000-word vocabulary, whose
# table would take hundreds of megabytes and a long matrix product to build.
FOLD_LIMIT = 4
# Styled step kernels a writer keeps (chat's /style goes back and forth between a few).
STYLED_KERNELS = 8


class StepKernel:
    """A RecurrentLM in eval mode, one token at batch 1: its own logits, several times faster.

    Sampling feeds the model one token at a time, where a call of nn.LSTM costs far more than
    its arithmetic (on the CPU, oneDNN reorders the weights at every call). Here a step is a few
    matrix-vector products into preallocated buffers, with every weight pre-transposed:

        layer 0:   gates = table[token] + h_0 @ W_hh^T      table = emb @ W_ih^T + biases (V, G*H)
        layer l:   gates = h_{l-1}' @ W_ih^T + bias + h_l @ W_hh^T                       (1, G*H)
        output:    logits = h_last' @ W_out^T + b_out                                      (1, V)

    G = 4 for an LSTM (gates i, f, g, o) and 3 for a GRU (r, z, n, whose b_hn stays with W_hn h
    inside r * (W_hn h + b_hn)). Steps run in fp32, whatever precision the model trained in.
    A style's vector v adds v @ W_ih^T to layer 0's input gates at every step: `styled` folds
    that constant into the biases (and the table).
    The weights are copied as they are when the kernel is built: `matches` tells whether the
    model's still are (a model under training moves on).
    """

    def __init__(self, model: RecurrentLM, fold: bool | None = None) -> None:
        config = model.config
        self.cell, self.layers = config.cell, config.layers
        self.hidden_size, self.vocab_size = config.hidden_size, config.vocab_size
        self.version = self.weights_version(model)
        if fold is None:
            fold = config.vocab_size <= FOLD_LIMIT * config.embed_size
        hidden = self.hidden_size
        self.input_weights, self.input_biases = [], []  # W_ih^T (in, G*H); (G*H,)
        self.hidden_weights, self.hidden_biases = [], []  # W_hh^T (H, G*H); GRU: (G*H,)
        for layer in model.layers:
            w_ih, w_hh, b_ih, b_hh = (
                getattr(layer, f"{name}_l0").detach().float()
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            if self.cell == "lstm":
                self.input_biases.append(b_ih + b_hh)
                self.hidden_biases.append(None)
            else:  # b_hr and b_hz add to the input side; b_hn must stay inside r * (...)
                self.input_biases.append(
                    torch.cat([b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden :]])
                )
                self.hidden_biases.append(
                    torch.cat([torch.zeros_like(b_hh[: 2 * hidden]), b_hh[2 * hidden :]])
                )
            self.input_weights.append(w_ih.t().contiguous())
            self.hidden_weights.append(w_hh.t().contiguous())
        embedding = model.embedding.weight.detach().float()
        self.table = self.embedding = None
        if fold:  # (V, G*H): token -> layer 0's input gates, biases included
            self.table = torch.addmm(self.input_biases[0], embedding, self.input_weights[0])
        else:
            self.embedding = embedding.contiguous()
        self.output_weight = model.output.weight.detach().float().t().contiguous()  # (H, V)
        self.output_bias = model.output.bias.detach().float()

    @staticmethod
    def weights_version(model: RecurrentLM) -> tuple:
        """Changes whenever a weight the kernel reads does: replaced, or updated in place."""
        tensors = [model.embedding.weight, model.output.weight, model.output.bias]
        if model.style_vectors is not None:
            tensors.append(model.style_vectors)
        for layer in model.layers:
            tensors += [
                getattr(layer, f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
        return tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)

    def matches(self, model: RecurrentLM) -> bool:
        return self.version == self.weights_version(model)

    def styled(self, model: RecurrentLM, style: torch.Tensor | None) -> StepKernel:
        """This kernel writing in `style` ((S,) mixing weights): the style's vector v = style @
        model.style_vectors (E,) adds v @ W_ih^T (G*H,) to layer 0's input gates at every step,
        so that is added once to layer 0's input bias and to the table. The other weights are
        this kernel's own, shared. Itself for no style or a model without style vectors."""
        if style is None or model.style_vectors is None:
            return self
        device = self.output_weight.device
        vector = style.to(device, torch.float32) @ model.style_vectors.detach().float()
        gates = vector @ self.input_weights[0]  # (G*H,)
        kernel = copy.copy(self)
        kernel.input_biases = [self.input_biases[0] + gates, *self.input_biases[1:]]
        if self.table is not None:
            kernel.table = self.table + gates
        return kernel

    def slot(self, state: State | None = None, logits_row: torch.Tensor | None = None) -> Slot:
        """Buffers for one step's results and its scratch work (the state and the (1, V) logits
        may be given: views of a block's slots, device_sampler.py)."""
        return Slot(self, state, logits_row)

    def step(self, token: int | torch.Tensor, state: State, out: Slot) -> None:
        """Read `token` after `state` (fp32, (layers, 1, H) each): the new state and the logits
        go to `out`, which must not hold `state`. `token` is an int, or a (1,) long tensor on the
        device (read there, with no host sync)."""
        below = None  # the layer below's new h (1, H)
        for index in range(self.layers):
            gates = self._gates(index, token, state[0][index], below, out)
            if self.cell == "lstm":
                below = self._lstm(gates, state[1][index], out, index)
            else:
                below = self._gru(gates, state[0][index], out, index)
        torch.addmm(self.output_bias, below, self.output_weight, out=out.logits_row)

    def _gates(self, index, token, h, below, out) -> torch.Tensor:
        """LSTM: all the pre-activations, input and hidden side; GRU: the input side only."""
        if index == 0 and self.table is not None:
            if self.cell == "gru":
                return self.table[token]  # (G*H,), read only
            return torch.addmm(self.table[token], h, self.hidden_weights[0], out=out.gates)
        if index > 0:
            x = below
        elif isinstance(token, int):
            x = self.embedding[token : token + 1]
        else:
            x = self.embedding.index_select(0, token)  # slicing would read the token back
        gates = torch.addmm(self.input_biases[index], x, self.input_weights[index], out=out.gates)
        if self.cell == "lstm":
            gates.addmm_(h, self.hidden_weights[index])
        return gates

    def _lstm(self, gates, c, out, index) -> torch.Tensor:
        hidden = self.hidden_size
        gates[..., : 2 * hidden].sigmoid_()  # i, f
        gates[..., 2 * hidden : 3 * hidden].tanh_()  # g
        gates[..., 3 * hidden :].sigmoid_()  # o
        i, f, g, o = gates.split(hidden, dim=-1)
        c_new = torch.mul(c, f, out=out.state[1][index]).addcmul_(i, g)
        return torch.tanh(c_new, out=out.state[0][index]).mul_(o)

    def _gru(self, input_gates, h, out, index) -> torch.Tensor:
        hidden = self.hidden_size
        hidden_gates = torch.addmm(
            self.hidden_biases[index], h, self.hidden_weights[index], out=out.hidden_gates
        )
        rz = torch.add(
            input_gates[..., : 2 * hidden], hidden_gates[..., : 2 * hidden], out=out.rz
        ).sigmoid_()
        r, z = rz.split(hidden, dim=-1)
        n = torch.addcmul(
            input_gates[..., 2 * hidden :], r, hidden_gates[..., 2 * hidden :], out=out.new_gate
        ).tanh_()
        # h' = (1 - z) n + z h, written as nn.GRU's CPU kernel does: n + z (h - n)
        return torch.sub(h, n, out=out.state[0][index]).mul_(z).add_(n)


class Slot:
    """What one step writes: the state after the token, the logits, and scratch buffers."""

    def __init__(
        self,
        kernel: StepKernel,
        state: State | None = None,
        logits_row: torch.Tensor | None = None,
    ) -> None:
        device = kernel.output_weight.device
        shape = (kernel.layers, 1, kernel.hidden_size)
        count = 2 if kernel.cell == "lstm" else 1
        if state is None:
            state = tuple(torch.empty(shape, device=device) for _ in range(count))
        if logits_row is None:
            logits_row = torch.empty(1, kernel.vocab_size, device=device)
        self.state: State = state
        self.logits_row = logits_row
        self.logits = self.logits_row[0]  # (V,), the same memory
        gates = (4 if kernel.cell == "lstm" else 3) * kernel.hidden_size
        self.gates = torch.empty(1, gates, device=device)
        if kernel.cell == "gru":
            self.hidden_gates = torch.empty(1, gates, device=device)
            self.rz = torch.empty(1, 2 * kernel.hidden_size, device=device)
            self.new_gate = torch.empty(1, kernel.hidden_size, device=device)


class TextGenerator:
    """A trained model with its tokenizer, ready to write. Returned by `bookgen.load`."""

    def __init__(
        self,
        model: RecurrentLM,
        tokenizer: Tokenizer,
        context: RunContext | None = None,
        checkpoint: Checkpoint | None = None,
        styles: list[Style] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context = context or RunContext(next(model.parameters()).device)
        self.checkpoint = checkpoint
        # The styles the model knows, by name (styles.py): the checkpoint's, or `styles`; a
        # styled model with neither gets the names "1", "2", ... and equal shares.
        manifest = checkpoint.manifest if checkpoint is not None else {}
        if styles is None:
            styles = model_styles(manifest)
        count = model.config.styles
        if count > 1 and len(styles) != count:
            styles = [Style(str(index + 1), 1 / count) for index in range(count)]
        self.styles: list[Style] = styles if count > 1 else []
        self.one_style = one_style_name(manifest)  # a one-style model's style, if recorded
        self._kernel: StepKernel | None = None
        self._styled: dict[tuple[float, ...], StepKernel] = {}  # style's weights -> its kernel
        self._guards: dict[int, CopyGuard | None] = {}  # max_copy -> its guard
        # On a GPU the draw runs on the device, the tokens are read back a block at a time and
        # the block is replayed as a CUDA graph (device_sampler.py). On the CPU the loop in
        # `stream` is the faster: there the host computes the logits anyway.
        self.draw_on_device = self.context.device.type == "cuda"
        self.capture_graphs: bool | None = None  # None: on CUDA; False: op by op (benchmarks)
        self._runner: BlockRunner | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, context: RunContext) -> TextGenerator:
        return cls(checkpoint.model.eval(), checkpoint.tokenizer, context, checkpoint)

    def style_weights(self, style: str | torch.Tensor | None = None) -> torch.Tensor | None:
        """The mixing weights (S,) on the model's device that `style` stands for: a spec
        ("austen", "austen=0.7,shelley=0.3"; styles.py; pushed away from the neutral mix by
        `styles.STYLE_STRENGTH`), weights (S,) as they are, or None: the
        neutral mix, the styles weighted by their shares. None for a model without styles, which
        refuses a style (BookgenError, one line)."""
        if isinstance(style, str):
            weights = strengthen(parse_style(style, self.styles, self.one_style), self.styles)
        elif style is None:
            if not self.styles:
                return None
            weights = neutral_weights(self.styles)
        else:
            if not self.styles:
                parse_style("weights", self.styles, self.one_style)  # raises: one style
            weights = style
        weights = torch.as_tensor(weights, dtype=torch.float32).flatten()
        if weights.numel() != len(self.styles):
            raise BookgenError(
                f"style weights: {weights.numel()} given, the model has {len(self.styles)} styles"
            )
        return weights.to(self.context.device)

    @torch.no_grad()
    def prime(
        self, text: str, primed: Primed | None = None, style: str | torch.Tensor | None = None
    ) -> Primed:
        """Run `text` through the model, starting from `primed` (or a fresh state in `style`,
        see `style_weights`). A `primed` keeps its own style: give `style` only without one."""
        return self._read(text, primed, style, None)

    def read_adapting(
        self,
        text: str,
        adapter: Adapter,
        primed: Primed | None = None,
        style: str | torch.Tensor | None = None,
    ) -> Primed:
        """`prime`, learning from `text` as it is read: `adapter` (over this writer's model)
        moves the weights in place, a segment at a time (adapt.py's `read_adapting`). The fast
        step sees the new weights: `step_kernel` rebuilds itself when they change."""
        return self._read(text, primed, style, adapter)

    def _read(
        self,
        text: str,
        primed: Primed | None,
        style: str | torch.Tensor | None,
        adapter: Adapter | None,
    ) -> Primed:
        if primed is not None and style is not None:
            raise ValueError("prime: a primed state keeps its style; give a style only to start")
        if not text and primed is None:
            # Nothing to read: start as at the beginning of a line, if the book has lines.
            text = "" if self.tokenizer.unknown("\n") else "\n"
        unknown = self.tokenizer.unknown(text)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10])
            warnings.warn(
                f"not in the model's vocabulary, read as unknown: {shown}",
                BookgenWarning,
                stacklevel=4,
            )
        ids = self.tokenizer.encode(text)
        device = self.context.device
        weights = primed.style if primed is not None else self.style_weights(style)
        batch_style = weights[None] if weights is not None else None  # (1, S): one row
        if primed is not None:
            state = primed.state
        else:
            state = self.model.init_state(1, device, style=batch_style)
        if not ids:
            if primed is not None:
                return primed
            ids = [UNK_ID]
        decoder = primed.decoder if primed is not None else None
        decoder = decoder or self.tokenizer.stream_decoder()
        for token in ids:
            decoder.push(token)  # the seed is already written; the decoder only learns context
        tokens = torch.tensor(ids, dtype=torch.long, device=device)
        if adapter is None:
            with self.context.autocast():
                logits, state = self.model(tokens.view(-1, 1), state, style=batch_style)
            last = logits[-1, 0].float()
        else:
            segment = adapter.settings.adapt_segment
            last, state = read_adapting(
                self.model, tokens, state, adapter, segment, self.context, batch_style
            )
        # Text read from outside (a seed, the user's turn) is not the model's: copying starts
        # counting again after it.
        return Primed(state, last, decoder, style=weights)

    def adapted(
        self,
        text: str,
        settings: AdaptSettings | None = None,
        *,
        adapt_lr: float | None = None,
        adapt_decay: float | None = None,
        style: str | torch.Tensor | None = None,
    ) -> TextGenerator:
        """A writer whose model has read `text` (in `style`), adapting to it as `bookgen eval
        --adapt` does (adapt.py): it writes with the names and the diction of `text`.

        The adapted weights are a copy (the model's size once more): this writer, and the
        checkpoint on disk, are unchanged, so adapt once and write from the result as often as
        wanted. `settings` (AdaptSettings, default its defaults) with `adapt_lr` and
        `adapt_decay` overriding theirs."""
        settings = adapt_settings(settings, adapt_lr, adapt_decay)
        model = copy.deepcopy(self.model)
        writer = TextGenerator(model, self.tokenizer, self.context, self.checkpoint, self.styles)
        writer._guards = self._guards  # the guard knows the book, not the weights: shared
        writer.draw_on_device, writer.capture_graphs = self.draw_on_device, self.capture_graphs
        if text:
            writer.read_adapting(text, Adapter(model, settings), style=style)
        return writer

    def prime_written(self, text: str, primed: Primed, max_copy: int) -> Primed:
        """Read `text` that the model itself wrote, from `primed` (taken over, as by `prime`).

        For a continuation stopped partway (Ctrl-C in chat): the sampler may have read a token
        more or less than it had shown, so what was shown is read again. Unlike `prime`, the copy
        guard goes on counting the text as the model's own, from where `primed` left off.
        """
        run = primed.copy_run
        primed = self.prime(text, primed)
        guard = self.copy_guard(max_copy)
        if guard is not None:
            primed.copy_run = guard.resume(run)
            for token in self.tokenizer.encode(text):
                primed.copy_run.push(token)
        return primed

    @torch.inference_mode()
    def stream(
        self, primed: Primed, settings: SamplingSettings, generator: torch.Generator
    ) -> Iterator[str]:
        """Yield `settings.length` tokens' text one at a time; `primed` is advanced in place.

        Each token is read into the state *before* its text is yielded, so a caller that stops
        early (Ctrl-C in chat) holds the state after exactly the text it has shown. Tokens are
        read by a `StepKernel`, into two sets of buffers in turn: a step reads one and writes the
        other, and `primed` moves to the new one only once the step is complete. With
        `settings.max_copy`, each drawn token is first put to the copy guard (see guard.py).
        With `draw_on_device` (on a GPU), device_sampler.py writes, to the same contract.
        """
        if primed.decoder is None:
            primed.decoder = self.tokenizer.stream_decoder()
        guard = self.copy_guard(settings.max_copy)
        # What is written unguarded is not counted: a later guarded stream starts afresh.
        run = primed.copy_run = guard.resume(primed.copy_run) if guard is not None else None
        if self.draw_on_device:
            runner = self.device_runner(settings, primed.style)
            generators = device_generators(generator, runner.device)
            yield from write(runner, primed, settings, generators, guard, run)
            return
        kernel = self.step_kernel(primed.style)
        slots = (kernel.slot(), kernel.slot())
        state = tuple(s.float() for s in primed.state)  # a bf16 forward may have left bf16
        for index in range(settings.length):
            token = choose_token(primed.logits, settings, generator)
            if run is not None:
                if guard.blocks(run, token):
                    token = self._redraw(guard, run, primed.logits, settings, generator)
                run.push(token)
            slot = slots[index % 2]
            kernel.step(token, state, slot)
            state = slot.state
            primed.state, primed.logits = slot.state, slot.logits
            piece = primed.decoder.push(token)
            if piece:
                yield piece

    def _redraw(self, guard, run, logits, settings, generator) -> int:
        """Draw again from the tokens that do not extend a copy of the book."""
        guard.excluded += 1
        blocked = guard.blocked_tokens(run, self.tokenizer.vocab_size)
        token = choose_token(logits, settings, generator, banned=blocked)
        if token is None:  # every token would copy: write on rather than stop
            guard.fallbacks += 1
            token = choose_token(logits, settings, generator)
        return token

    def copy_guard(self, max_copy: int) -> CopyGuard | None:
        """The guard for `max_copy` characters (None: 0, books too large to index, or a model not
        loaded from a checkpoint, which has no book to guard against: training's previews)."""
        if max_copy <= 0 or self.checkpoint is None:
            return None
        if max_copy not in self._guards:
            checkpoint = self.checkpoint
            self._guards[max_copy] = load_guard(
                checkpoint.path, checkpoint.manifest, self.tokenizer, max_copy
            )
        return self._guards[max_copy]

    def step_kernel(self, style: torch.Tensor | None = None) -> StepKernel:
        """The fast step for the model's weights as they are now (rebuilt when they change), in
        `style` ((S,) weights; None: no style vector). Kept per style: the same style gets the
        same kernel (and the device its runner and graph)."""
        if self._kernel is None or not self._kernel.matches(self.model):
            self._kernel = StepKernel(self.model)
            self._styled.clear()
        if style is None or self.model.style_vectors is None:
            return self._kernel
        key = tuple(style.tolist())
        if key not in self._styled:
            if len(self._styled) >= STYLED_KERNELS:
                del self._styled[next(iter(self._styled))]  # the oldest
            self._styled[key] = self._kernel.styled(self.model, style)
        return self._styled[key]

    def device_runner(
        self, settings: SamplingSettings, style: torch.Tensor | None = None
    ) -> BlockRunner:
        """The block runner for the model's weights, these settings and this style: the one kept
        from the last stream, with its graph, or a new one (not kept while the kept one is in
        use)."""
        kernel = self.step_kernel(style)
        kept = self._runner
        if kept is not None and not kept.busy:
            if kept.kernel is kernel and kept.key == settings_key(settings):
                return kept
        runner = BlockRunner(kernel, settings, capturable=self.capture_graphs)
        if kept is None or not kept.busy:
            self._runner = runner
        return runner

    def generate(
        self,
        seed: str = "",
        length: int = DEFAULTS.length,
        temperature: float = DEFAULTS.temperature,
        top_k: int = DEFAULTS.top_k,
        top_p: float = DEFAULTS.top_p,
        random_seed: int | None = None,
        max_copy: int = DEFAULTS.max_copy,
        style: str | torch.Tensor | None = None,
        adapt_on: str | None = None,
        adapt_lr: float | None = None,
        adapt_decay: float | None = None,
        adapt: AdaptSettings | None = None,
    ) -> Iterator[str]:
        """Prime with the whole `seed`, then yield the continuation piece by piece.

        `seed` is the text to continue; `random_seed` fixes the draws (the same one gives the
        same text). The settings are those of `SamplingSettings`. `style`, for a model trained
        on several: "austen", or a mix "austen=0.7,shelley=0.3" (see `style_weights`).

        `adapt_on`: a passage of your own (your names, your diction) that the model first reads,
        adapting its weights to it (dynamic evaluation, adapt.py; `adapt` an AdaptSettings,
        `adapt_lr` and `adapt_decay` overriding its values); then it reads `seed` from a fresh
        state and writes with the adapted weights. They are a copy made for this call: this
        writer's own weights are unchanged afterwards, and so is the checkpoint on disk (to
        adapt once and write many times, use `adapted`).
        """
        settings = SamplingSettings(
            length=length, temperature=temperature, top_k=top_k, top_p=top_p, max_copy=max_copy
        )
        writer = self
        if adapt_on is not None:
            writer = self.adapted(
                adapt_on, adapt, adapt_lr=adapt_lr, adapt_decay=adapt_decay, style=style
            )
        elif (adapt_lr, adapt_decay, adapt) != (None, None, None):
            raise BookgenError(
                "adapt_lr, adapt_decay and adapt need adapt_on: the text to adapt to"
            )
        generator = make_generator(random_seed)
        return writer.stream(writer.prime(seed, style=style), settings, generator)


def adapt_settings(
    settings: AdaptSettings | None = None,
    adapt_lr: float | None = None,
    adapt_decay: float | None = None,
) -> AdaptSettings:
    """`settings` (default: AdaptSettings's, with the learning rate for writing,
    `WRITING_ADAPT_LR`) with the lr and decay given replacing its."""
    changes = {
        name: value
        for name, value in (("adapt_lr", adapt_lr), ("adapt_decay", adapt_decay))
        if value is not None
    }
    return dataclasses.replace(settings or AdaptSettings(adapt_lr=WRITING_ADAPT_LR), **changes)


def make_generator(random_seed: int | None) -> torch.Generator:
    """A CPU generator: the same seed gives the same text on a given device. (The CPU draws from
    it; a GPU from generators of its own that it seeds, device_sampler.py.)"""
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
