"""Sampling on a GPU: the draw on the device, the tokens read back a block at a time, the block
replayed as a CUDA graph.

At batch 1 a step on a GPU is a few dozen tiny kernels, and the CPU sampler's draw copies the
logits to the host every token: the GPU spends its time waiting for the host. Here the host
launches a block of K tokens at once and reads back only their ids:

    slot 0                    the state and logits the block starts from (the text read so far)
    unit i, i = 0 .. K-1:     token[i] = draw(logits[i], noise[i])               on the device
                              state[i+1], logits[i+1] = step(token[i], state[i])
    read back                 token[0 .. K)                              one host sync a block

    copy guard, token k turned away:  token[k] = draw again from logits[k], the book's runs
                              banned; step(token[k], state[k]); units k+1 .. run again (eagerly)

Every slot keeps its state and logits until the next block, so the text shown can stop after any
token with the state after exactly that token (chat's Ctrl-C). Once a runner has written
`CAPTURE_AFTER` tokens, its K units are captured as one CUDA graph (warmed up on a side stream,
as torch.cuda.graphs asks) and each block is one replay; a capture that fails leaves the runner
op by op, silently. The graph and the ops compute the same numbers with the same kernels, so the
text does not depend on whether a graph ran: the same random seed gives the same text on a given
device. (It is not the CPU sampler's text: other random numbers, and a GPU's arithmetic.)

Styles: a style's vector is folded into the step kernel's layer-0 bias (sampler.py), and a runner
steps with the kernel of the stream's style, so the blocks write in it with nothing added here.

Randomness: `noise[i]` is the Exp(1) noise of `choose_token`'s Gumbel-max draw for position i,
filled a block at a time from a generator seeded from the caller's; a redraw takes its noise from
a second one. Nothing here depends on CUDA: on the CPU the same code runs op by op (the tests).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

from bookgen.settings import SamplingSettings
from bookgen.tokenizer import UNK_ID

if TYPE_CHECKING:  # sampler.py imports this module
    from bookgen.guard import CopyGuard, CopyRun
    from bookgen.model import State
    from bookgen.sampler import Primed, Slot, StepKernel

BLOCK = 32  # tokens a block draws before the host reads them back
# Tokens a runner writes op by op before it captures its block: a capture costs about what a few
# blocks do, so a short one-off stream (training's 200-token preview, a new writer each time)
# never captures, and `sample` captures partway through its first 500 tokens.
CAPTURE_AFTER = 256
WARMUP = 3  # runs of the block on a side stream before capture (torch's examples use 3)


def draw(
    logits: torch.Tensor,
    settings: SamplingSettings,
    noise: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`choose_token`, op for op, with no host sync: the token id as a 0-d long tensor (`out`).

    `logits` (V,) float64 holds -inf for the tokens never drawn (unknown, banned) and is
    modified in place; `noise` (V,) is Exp(1) noise, one number per token. Masks are applied
    with `masked_fill_`, not boolean indexing, which would read the mask back to the host.
    """
    if settings.temperature == 0:
        return torch.argmax(logits, out=out)
    logits.sub_(logits.max()).div_(settings.temperature)
    if 0 < settings.top_k < logits.numel():
        kth = torch.topk(logits, settings.top_k).values[-1]
        logits.masked_fill_(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        drop = torch.cumsum(sorted_probs, 0) - sorted_probs >= settings.top_p
        sorted_probs.masked_fill_(drop, 0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return torch.argmax(probs / noise, out=out)  # the noise stays as it is: a rerun reads it


def device_generators(
    generator: torch.Generator, device: torch.device
) -> tuple[torch.Generator, torch.Generator]:
    """The block noise's generator and the redraws', on `device`, seeded from `generator` (which
    advances, so a story's next turn draws other numbers)."""
    seeds = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    return tuple(torch.Generator(device).manual_seed(seed) for seed in seeds)


# --- the step: torch's fused cells on CUDA ------------------------------------------------------

_LSTM_CELL = "_thnn_fused_lstm_cell"  # what nn.LSTMCell runs on CUDA: the gates' arithmetic in
_GRU_CELL = "_thnn_fused_gru_cell"  # one kernel, where the composite cell launches seven


class FusedStep:
    """`StepKernel.step` with each layer's elementwise work in one torch kernel (CUDA only):

        igates = table[token] (layer 0, folded)  or  x @ W_ih^T        bias beside it
        hgates = h @ W_hh^T
        h', c' = fused cell (igates, hgates, c, input bias, hidden bias)

    The GRU's hidden bias is (0, 0, b_hn): the kernel adds it inside r * (W_hn h + b_hn). Both
    biases are always given (zeros where there is none), as the kernel checks them as a pair.
    """

    def __init__(self, kernel: StepKernel) -> None:
        self.kernel = kernel
        weight = kernel.output_weight
        self.zeros = torch.zeros(kernel.hidden_weights[0].size(1), device=weight.device)

    def step(self, token: torch.Tensor, state: State, out: Slot) -> None:
        """Read `token` ((1,) long, on the device) after `state`; write `out` as StepKernel does."""
        kernel = self.kernel
        below, news, targets = None, [], []
        for index in range(kernel.layers):
            if index == 0 and kernel.table is not None:
                igates, bias = kernel.table.index_select(0, token), self.zeros
            else:
                x = below if index > 0 else kernel.embedding.index_select(0, token)
                igates, bias = torch.mm(x, kernel.input_weights[index]), kernel.input_biases[index]
            hgates = torch.mm(state[0][index], kernel.hidden_weights[index])
            if kernel.cell == "lstm":
                cell = getattr(torch.ops.aten, _LSTM_CELL)
                below, c, _ = cell(igates, hgates, state[1][index], bias, self.zeros)
                news += [below, c]
                targets += [out.state[0][index], out.state[1][index]]
            else:
                cell = getattr(torch.ops.aten, _GRU_CELL)
                below, _ = cell(igates, hgates, state[0][index], bias, kernel.hidden_biases[index])
                news.append(below)
                targets.append(out.state[0][index])
        torch._foreach_copy_(targets, news)  # one kernel for every layer's new state
        torch.addmm(kernel.output_bias, below, kernel.output_weight, out=out.logits_row)


@functools.cache
def fused_cells_work(device: torch.device) -> bool:
    """Whether torch's fused LSTM and GRU cells run on `device` and compute what the composite
    cells do (checked once, on small random gates; False on the CPU, which has no such kernel)."""
    if device.type != "cuda":
        return False
    try:
        with torch.no_grad():
            return _fused_cells_agree(device)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def _fused_cells_agree(device: torch.device, hidden: int = 8) -> bool:
    generator = torch.Generator(device).manual_seed(0)
    ig, hg = (torch.randn(1, 4 * hidden, device=device, generator=generator) for _ in "ih")
    b1, b2 = (torch.randn(4 * hidden, device=device, generator=generator) for _ in "ih")
    c = torch.randn(1, hidden, device=device, generator=generator)
    h_new, c_new, _ = getattr(torch.ops.aten, _LSTM_CELL)(ig, hg, c, b1, b2)
    i, f, g, o = (ig + hg + b1 + b2).split(hidden, dim=1)
    c_want = f.sigmoid() * c + i.sigmoid() * g.tanh()
    lstm = torch.allclose(c_new, c_want, atol=1e-5)
    lstm = lstm and torch.allclose(h_new, o.sigmoid() * c_want.tanh(), atol=1e-5)
    ig, hg, b1, b2 = ig[:, : 3 * hidden], hg[:, : 3 * hidden], b1[: 3 * hidden], b2[: 3 * hidden]
    h_new, _ = getattr(torch.ops.aten, _GRU_CELL)(ig, hg, c, b1, b2)  # c serves as h
    (ir, iz, i_n), (hr, hz, h_n) = (ig + b1).split(hidden, 1), (hg + b2).split(hidden, 1)
    r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
    n = (i_n + r * h_n).tanh()
    return lstm and torch.allclose(h_new, n + z * (c - n), atol=1e-5)


def step_function(kernel: StepKernel, device: torch.device) -> Callable:
    """The step a runner captures: fused cells where they work, else the kernel's own."""
    return FusedStep(kernel).step if fused_cells_work(device) else kernel.step


# --- a block of tokens -------------------------------------------------------------------------


def capture_graph(units: Callable[[], None], device: torch.device) -> torch.cuda.CUDAGraph:
    """`units()` as a CUDA graph: warmed up on a side stream, then captured (torch.cuda.graphs'
    recipe). Errors only in this thread's calls ("thread_local"): a background checkpoint write
    on another thread is not disturbed."""
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    try:
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                units()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            units()
    finally:
        # A capture that fails inside `torch.cuda.graph` leaves its stream current: put it back.
        torch.cuda.set_stream(current)
    return graph


class BlockRunner:
    """Static buffers for a block of `block` tokens, the units that fill them, and their graph.

    One runner serves one stream at a time (`busy`); the writer keeps it for the next stream of
    the same weights and settings, so a capture serves every later block.
    """

    def __init__(
        self,
        kernel: StepKernel,
        settings: SamplingSettings,
        block: int | None = None,
        capturable: bool | None = None,
    ) -> None:
        block = block or BLOCK
        self.kernel, self.settings, self.block = kernel, settings, block
        self.key = settings_key(settings)
        device = self.device = kernel.output_weight.device
        self.step = step_function(kernel, device)
        shape = (block + 1, kernel.layers, 1, kernel.hidden_size)
        count = 2 if kernel.cell == "lstm" else 1
        states = tuple(torch.zeros(shape, device=device) for _ in range(count))
        self.logits = torch.zeros(block + 1, kernel.vocab_size, device=device)
        self.tokens = torch.zeros(block, dtype=torch.long, device=device)
        self.noise = torch.ones(block, kernel.vocab_size, dtype=torch.float64, device=device)
        self.never = torch.zeros(kernel.vocab_size, dtype=torch.float64, device=device)
        self.never[UNK_ID] = float("-inf")  # added to the logits: the unknown is never drawn
        # Slot j: the state and logits after j tokens of the block (views: no copies, no kernels).
        self.slots: list[Slot] = [
            kernel.slot(tuple(s[j] for s in states), self.logits[j : j + 1])
            for j in range(block + 1)
        ]
        self.capturable = device.type == "cuda" if capturable is None else capturable
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_error: str | None = None  # why the capture failed, for benchmarks/gpu.py
        self.eager_tokens = 0  # written op by op so far
        self.busy = False

    def views(self, slot: int) -> tuple[State, torch.Tensor]:
        """The state and logits (V,) of a slot, as views."""
        return self.slots[slot].state, self.slots[slot].logits

    def load(self, state: State, logits: torch.Tensor) -> None:
        """Start the next block from `state` and `logits` (copied into slot 0)."""
        for ours, theirs in zip(self.slots[0].state, state, strict=True):
            ours.copy_(theirs)
        self.logits[0].copy_(logits)

    def carry(self, slot: int) -> None:
        """Start the next block where `slot` left off."""
        self.load(*self.views(slot))

    def unit(self, i: int) -> None:
        """Draw token i from slot i's logits, and read it into slot i + 1."""
        logits = torch.add(self.logits[i], self.never)  # (V,) float64: slot i's logits kept
        draw(logits, self.settings, self.noise[i], out=self.tokens[i])
        self.advance(i)

    def advance(self, i: int) -> None:
        self.step(self.tokens[i : i + 1], self.slots[i].state, self.slots[i + 1])

    def units(self) -> None:
        for i in range(self.block):
            self.unit(i)

    def run(self, count: int, generator: torch.Generator) -> list[int]:
        """Draw this block's noise and its first `count` tokens; their ids, read back at once."""
        self.noise.exponential_(generator=generator)
        if self.graph is None and self.capturable and self.eager_tokens >= CAPTURE_AFTER:
            self._capture()
        if self.graph is not None:
            self.graph.replay()  # all `block` units: those past `count` are not read
        else:
            for i in range(count):
                self.unit(i)
            self.eager_tokens += count
        return self.tokens[:count].tolist()

    def _capture(self) -> None:
        """Capture the units; keep the graph only if its block is the ops' to the bit."""
        try:
            graph = capture_graph(self.units, self.device)
            # The warm-up left this block as the ops compute it: the graph must agree.
            ops = self.tokens.clone(), self.logits.clone()
            graph.replay()
            if not (torch.equal(self.tokens, ops[0]) and torch.equal(self.logits, ops[1])):
                raise RuntimeError("the graph's block differs from the ops'")
            self.graph = graph
        except Exception as error:  # noqa: BLE001 - whatever failed, the ops still run
            self.capturable = False
            self.capture_error = f"{type(error).__name__}: {error}"

    def redraw(self, k: int, banned: torch.Tensor | None, generator: torch.Generator) -> int | None:
        """Token k drawn again from slot k's logits, never a `banned` one ((V,) bool); None when
        nothing is left. Rare (the copy guard's), so it reads back at once."""
        logits = torch.add(self.logits[k], self.never)
        if banned is not None:
            logits.masked_fill_(banned.to(self.device), float("-inf"))
            if not bool(torch.isfinite(logits).any()):
                return None
        noise = torch.empty_like(logits).exponential_(generator=generator)
        return int(draw(logits, self.settings, noise))

    def rerun(self, k: int, token: int, count: int) -> list[int]:
        """Put `token` at k and run the units after it again, op by op: tokens k+1 .. count-1."""
        self.tokens[k].fill_(token)
        self.advance(k)
        for i in range(k + 1, count):
            self.unit(i)
        return self.tokens[k + 1 : count].tolist()


def settings_key(settings: SamplingSettings) -> tuple:
    """The settings a runner's units depend on (the length and the guard do not)."""
    return settings.temperature, settings.top_k, settings.top_p


# --- a stream ----------------------------------------------------------------------------------


def write(
    runner: BlockRunner,
    primed: Primed,
    settings: SamplingSettings,
    generators: tuple[torch.Generator, torch.Generator],
    guard: CopyGuard | None,
    run: CopyRun | None,
) -> Iterator[str]:
    """`TextGenerator.stream` on the device: the same contract, a block of tokens per read-back.

    `primed` advances in place: while the stream is open its state and logits are views of the
    runner's slot for the last token read; when it closes, copies of them.
    """
    noise, redraws = generators
    runner.busy = True
    moved = False  # whether `primed` holds views of the runner's slots
    try:
        runner.load(primed.state, primed.logits)
        left = settings.length
        while left > 0:
            count = min(runner.block, left)
            tokens = runner.run(count, noise)
            for k in range(count):
                token = tokens[k]
                if run is not None:
                    if guard.blocks(run, token):
                        token = _redraw(guard, run, runner, k, redraws)
                        tokens[k + 1 :] = runner.rerun(k, token, count)
                    run.push(token)
                primed.state, primed.logits = runner.views(k + 1)
                moved = True
                piece = primed.decoder.push(token)
                if piece:
                    yield piece
            left -= count
            if left:
                runner.carry(count)
                primed.state, primed.logits = runner.views(0)
    finally:
        # Runs on completion and on close() alike: `primed` must outlive the runner's next use.
        if moved:
            primed.state = tuple(s.clone() for s in primed.state)
            primed.logits = primed.logits.clone()
        runner.busy = False


def _redraw(guard: CopyGuard, run: CopyRun, runner: BlockRunner, k: int, redraws) -> int:
    """`TextGenerator._redraw` on the device: again from the tokens that do not copy the book."""
    guard.excluded += 1
    blocked = guard.blocked_tokens(run, runner.kernel.vocab_size)
    token = runner.redraw(k, blocked, redraws)
    if token is None:  # every token would copy: write on rather than stop
        guard.fallbacks += 1
        token = runner.redraw(k, None, redraws)
    return token
