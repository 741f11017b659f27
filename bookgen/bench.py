"""`bookgen bench`: how fast bookgen trains and samples on this machine, against the stock recipe.

Everything is measured here, in one run, on random tokens of the chosen shape (speed does not
depend on what the weights have learned):

- training tokens/s of bookgen's own step (`step.train_step`) in fp32 and, where it runs, bf16
  autocast, and the precision `--precision auto` would pick from those two figures;
- the baseline: the stock PyTorch recipe on the same model (one multi-layer fp32 `nn.LSTM`,
  embedding and tied linear output, dropout as bookgen's, AdamW, gradient clipping: PyTorch's
  `word_language_model` example with bookgen's optimizer);
- sampling tokens/s at batch 1: bookgen's `TextGenerator.generate` against the stock loop (one
  `nn.LSTM` call per token, softmax, `torch.multinomial`);
- the machine's matrix-product peak and the share of it training reaches (`peak_figures`): large
  square products, many queued between two synchronisations, in the precision picked, fp32 ones
  in TF32 on a GPU where training's cuDNN RNN runs in TF32 (torch's default there). Training
  cannot beat the machine's peak, so a training figure above the products' is the peak
  (utilization 1, `peak_from` "training"): the products then measured less than the machine
  does, and the JSON keeps their own figure (`matmul_gflops`) beside it.

Each figure is the best of `rounds` rounds, the candidates timed in turn within a round, so a
burst of other work slows one round rather than one candidate; within a round, a figure is the
best of the short measurements `context.time_training` (the one `--precision auto` makes) that
fit in `seconds`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial

import torch
from torch import nn

from bookgen.context import (
    BF16_MARGIN,
    RunContext,
    bf16_runs,
    machine_name,
    resolve_device,
    time_training,
)
from bookgen.errors import BookgenError
from bookgen.model import ModelConfig, RecurrentLM
from bookgen.sampler import TextGenerator
from bookgen.settings import BenchSettings, TrainConfig
from bookgen.step import make_optimizer, train_step
from bookgen.streams import Window
from bookgen.tokenizer import CharTokenizer

# BenchSettings (what is measured) lives with every other setting in settings.py, away from
# torch, so that `bookgen bench --help` reads its defaults without loading torch.
DROPOUT = ModelConfig.dropout  # the stock model drops out as much as bookgen's default


def _rate(work: Callable[[], int], seconds: float, device: torch.device) -> float:
    """Units per second of `work` (each call returns how many units it did): the best of the
    measurements `context.time_training` (the one `--precision auto` makes) that fit in
    `seconds`. Each measurement warms up once, then times at least two calls; the best of
    several keeps a burst of other work on the machine out of the figure."""
    units = [0]  # what the last call did: a call's work does not change from call to call

    def call(_precision: str) -> None:
        units[0] = work()

    best, begin = 0.0, time.perf_counter()
    while True:
        # One unit per call here, scaled by the units a call does: time_training's warm-up call
        # tells how many that is, so no call runs only to count them.
        calls_per_second = time_training(device, call, "fp32", 1)
        if calls_per_second is None:
            raise BookgenError("a step of the benchmark fails on this machine")
        best = max(best, calls_per_second * units[0])
        if time.perf_counter() - begin >= seconds:
            return best


def _best(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, measure in candidates.items():
            best[name] = max(best.get(name, 0.0), measure())
    return best


# --- training ------------------------------------------------------------------------------


def random_window(settings: BenchSettings, generator: torch.Generator) -> Window:
    shape = (settings.bptt + 1, settings.batch_size)
    tokens = torch.randint(1, settings.vocab_size, shape, generator=generator)
    flags = torch.zeros(shape[0] - 1, shape[1], dtype=torch.bool)
    return Window(tokens[:-1], tokens[1:], flags, ~flags, start=0)


class StockLM(nn.Module):
    """The stock recipe's model: embedding, one multi-layer nn.LSTM/GRU, tied linear output."""

    def __init__(self, settings: BenchSettings) -> None:
        super().__init__()
        vocab, hidden = settings.vocab_size, settings.hidden_size
        rnn_class = nn.LSTM if settings.cell == "lstm" else nn.GRU
        self.embedding = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(DROPOUT)
        dropout = DROPOUT if settings.layers > 1 else 0.0
        self.rnn = rnn_class(hidden, hidden, settings.layers, dropout=dropout)
        self.output = nn.Linear(hidden, vocab)
        self.output.weight = self.embedding.weight

    def forward(self, tokens, state):
        out, state = self.rnn(self.drop(self.embedding(tokens)), state)
        return self.output(self.drop(out)), state

    def init_state(self, device):
        shape = (self.rnn.num_layers, 1, self.rnn.hidden_size)
        zeros = lambda: torch.zeros(shape, device=device)  # noqa: E731
        return (zeros(), zeros()) if isinstance(self.rnn, nn.LSTM) else zeros()


def stock_trainer(settings: BenchSettings, device: torch.device) -> Callable[[], int]:
    """One fp32 step of the stock recipe per call; returns the tokens it trained on."""
    model = StockLM(settings).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    window = random_window(settings, torch.Generator().manual_seed(0))
    inputs, targets = window.inputs.to(device), window.targets.to(device)
    zeros = torch.zeros(settings.layers, settings.batch_size, settings.hidden_size, device=device)
    state = [(zeros, zeros) if settings.cell == "lstm" else zeros]

    def step() -> int:
        logits, new_state = model(inputs, state[0])
        loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        detached = tuple(s.detach() for s in new_state) if settings.cell == "lstm" else None
        state[0] = detached if detached is not None else new_state.detach()
        return inputs.numel()

    return step


def bookgen_model(settings: BenchSettings, device: torch.device) -> RecurrentLM:
    config = ModelConfig(
        vocab_size=settings.vocab_size,
        cell=settings.cell,
        layers=settings.layers,
        hidden_size=settings.hidden_size,
    )
    return RecurrentLM(config).to(device)


def bookgen_trainer(
    settings: BenchSettings, device: torch.device, precision: str
) -> Callable[[], int]:
    """One step of bookgen's own training step per call, in `precision`."""
    model = bookgen_model(settings, device)
    optimizer = make_optimizer(model, TrainConfig(steps=1))
    context = RunContext(device, precision)
    window = random_window(settings, torch.Generator().manual_seed(0))
    state = [model.init_state(settings.batch_size, device)]

    def step() -> int:
        _, state[0], _ = train_step(model, optimizer, window, state[0], context, 1.0)
        return window.inputs.numel()

    return step


def flops_per_training_token(settings: BenchSettings) -> float:
    """Multiply-adds x 2 of one token's forward (gates of every layer, the output layer), x 3 for
    forward and backward. The embedding lookup is free."""
    gates = 4 if settings.cell == "lstm" else 3
    hidden = settings.hidden_size
    recurrent = settings.layers * 2 * gates * hidden * (hidden + hidden)
    output = 2 * hidden * settings.vocab_size
    return 3.0 * (recurrent + output)


# --- sampling ------------------------------------------------------------------------------


def stock_sampler(
    settings: BenchSettings, device: torch.device, tokens: int = 200
) -> Callable[[], int]:
    """The stock loop: one nn.LSTM call per token, softmax, torch.multinomial."""
    model = StockLM(settings).to(device).eval()
    generator = torch.Generator(device=device).manual_seed(0)

    def run() -> int:
        with torch.no_grad():
            state = model.init_state(device)
            token = torch.ones(1, 1, dtype=torch.long, device=device)
            for _ in range(tokens):
                logits, state = model(token, state)
                probs = torch.softmax(logits[0, 0] / 0.8, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).view(1, 1)
        return tokens

    return run


def bookgen_sampler(
    settings: BenchSettings, device: torch.device, tokens: int = 200
) -> Callable[[], int]:
    """bookgen's `generate` (the path `sample`, `chat` and the preview take), from a short seed."""
    model = bookgen_model(settings, device).eval()
    # Any tokenizer with the level's vocabulary size writes at the same speed.
    symbols = [chr(0x4E00 + i) for i in range(settings.vocab_size - 1)]
    writer = TextGenerator(model, CharTokenizer(symbols), RunContext(device))
    seed = "".join(symbols[:4])
    calls = [0]

    def run() -> int:
        calls[0] += 1
        pieces = writer.generate(seed, length=tokens, temperature=0.8, random_seed=calls[0])
        for _ in pieces:
            pass
        return tokens

    return run


# --- the machine ---------------------------------------------------------------------------


# A product big enough that the device computes rather than waits on the host: a 1024 x 1024
# one takes an H200 a few microseconds, about what launching it costs. On the CPU 1024 already
# reaches the plateau (AMD EPYC: 9 GFLOP/s fp32 at 1024, 10 at 2048) and a larger one would
# make `bench` minutes longer. Several products per call, so the GPU's queue never runs dry.
PEAK_SIZE = {"cuda": 8192}
PEAK_PRODUCTS_PER_CALL = {"cuda": 16}
CPU_PEAK_SIZE = 1024


def cudnn_rnn_runs_tf32() -> bool:
    """Whether cuDNN runs fp32 RNNs in TF32 (torch's default: `torch.backends.cudnn.rnn`'s
    `fp32_precision` is "tf32"). "none" defers to cuDNN's setting, which defers to torch's."""
    backends = torch.backends
    for owner in (getattr(backends.cudnn, "rnn", None), backends.cudnn, backends):
        value = getattr(owner, "fp32_precision", "none")
        if value != "none":
            return value == "tf32"
    return False


@contextlib.contextmanager
def training_arithmetic(device: torch.device, precision: str):
    """fp32 matrix products in TF32 while inside, where training's fp32 runs in TF32 (cuDNN's
    RNN on a GPU); nothing changes on a CPU, or in bf16. The setting is put back after.

    Through `torch.set_float32_matmul_precision`, which sets the old flag and the new
    (`torch.backends.cuda.matmul.fp32_precision`) together: cuBLAS refuses to run when the two
    disagree."""
    if device.type != "cuda" or precision != "fp32" or not cudnn_rnn_runs_tf32():
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def matmul_peak_gflops(
    device: torch.device,
    precision: str,
    seconds: float = 1.0,
    size: int | None = None,
    products: int | None = None,
) -> float:
    """GFLOP/s of square (size x size) matrix products, `products` queued per call: what the
    device can do at best in the arithmetic training does (`training_arithmetic`). The timer
    synchronises only before and after a measurement, never between products."""
    size = size or PEAK_SIZE.get(device.type, CPU_PEAK_SIZE)
    products = products or PEAK_PRODUCTS_PER_CALL.get(device.type, 1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    generator = torch.Generator(device).manual_seed(0)  # the run's random stream is left alone
    a, b = (torch.randn(size, size, generator=generator, device=device) for _ in range(2))
    a, b = a.to(dtype), b.to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def work() -> int:
        for _ in range(products):
            torch.mm(a, b, out=out)
        return products

    with training_arithmetic(device, precision):
        return _rate(work, seconds, device) * 2 * size**3 / 1e9


def peak_figures(train_tokens_per_s: float, flops_per_token: float, matmul_gflops: float) -> dict:
    """Training's GFLOP/s, the peak and the share of it training reaches, never above 1: the
    peak is the best the machine was seen to do, the products or training itself."""
    reached = train_tokens_per_s * flops_per_token / 1e9
    peak = max(matmul_gflops, reached)
    return {
        "matmul_gflops": round(matmul_gflops, 1),
        "peak_gflops": round(peak, 1),
        "peak_from": "matrix products" if matmul_gflops >= reached else "training",
        # Three significant figures: a tiny model reaches well under 0.001 of the peak.
        "training_gflops": float(f"{reached:.3g}"),
        "utilization": float(f"{reached / peak:.3g}") if peak > 0 else 0.0,
    }


# --- all of it -----------------------------------------------------------------------------


def run_bench(settings: BenchSettings, on_progress: Callable[[str], None] | None = None) -> dict:
    """Measure everything; returns the figures as one dict (what `bookgen bench --json` prints).

    Rates are rounded to 0.1 token/s and the ratios are those of the rounded rates, so the
    figures printed agree with each other.
    """
    device = resolve_device(settings.device)
    say = on_progress or (lambda _: None)
    precisions = ["fp32"] + (["bf16"] if bf16_runs(device.type, settings.cell) else [])

    def best_of(works: dict[str, Callable[[], int]]) -> dict[str, float]:
        timers = {name: partial(_rate, w, settings.seconds, device) for name, w in works.items()}
        measured = _best(timers, settings.rounds)
        return {name: round(value, 1) for name, value in measured.items()}

    say("training")
    trainers = {"stock fp32": stock_trainer(settings, device)}
    for precision in precisions:
        trainers[f"bookgen {precision}"] = bookgen_trainer(settings, device, precision)
    train = best_of(trainers)
    bf16 = train.get("bookgen bf16")
    picks_bf16 = bf16 is not None and bf16 >= BF16_MARGIN * train["bookgen fp32"]
    precision = "bf16" if picks_bf16 else "fp32"

    say("sampling")
    sample = best_of(
        {"stock": stock_sampler(settings, device), "bookgen": bookgen_sampler(settings, device)}
    )

    say("matrix-product peak")
    matmul = max(matmul_peak_gflops(device, precision) for _ in range(settings.rounds))
    train_rate = train[f"bookgen {precision}"]
    return {
        "machine": machine_name(device),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "settings": asdict(settings),
        "precision": precision,
        "train_tokens_per_s": train_rate,
        "train_tokens_per_s_fp32": train["bookgen fp32"],
        "train_tokens_per_s_bf16": bf16,
        "baseline_train_tokens_per_s": train["stock fp32"],
        "train_speedup": round(train_rate / train["stock fp32"], 3),
        "sample_tokens_per_s": sample["bookgen"],
        "baseline_sample_tokens_per_s": sample["stock"],
        "sample_speedup": round(sample["bookgen"] / sample["stock"], 3),
        **peak_figures(train_rate, flops_per_training_token(settings), matmul),
    }
