"""The device sampler (device_sampler.py): the draw on the device, a block of tokens per read-back,
the block replayed as a CUDA graph. On the CPU it runs op by op, which checks everything but the
graph itself: the same draws as `choose_token`, the same text as the CPU sampler from the same
noise, one host read a block, the copy guard's rollbacks, the state after the text shown, and a
capture that fails. The tests at the end need CUDA (graph against op by op, on the same GPU)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from bookgen import device_sampler
from bookgen.device_sampler import FusedStep, device_generators, draw, fused_cells_work
from bookgen.guard import CopyGuard, CopyIndex
from bookgen.model import ModelConfig, RecurrentLM
from bookgen.sampler import SamplingSettings, StepKernel, TextGenerator, choose_token
from bookgen.tokenizer import UNK_ID, CharTokenizer

CHARS = list("abcdefghijklmnopqrstuvwxyz .,")
SETTINGS = [
    dict(temperature=1.0),
    dict(temperature=0),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8),
    dict(temperature=0.9, top_k=10, top_p=0.6),
]
# Hot draws with tight limits: the last token a limit keeps is drawn often.
DRAWS = [*SETTINGS, dict(temperature=5.0, top_k=2), dict(temperature=5.0, top_p=0.3)]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def model_of(cell="lstm", layers=2, embed=None, device="cpu", seed=0) -> RecurrentLM:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=len(CHARS) + 1, cell=cell, layers=layers, hidden_size=48, embed_size=embed
    )
    model = RecurrentLM(config).eval()
    with torch.no_grad():  # sharper than at init: the text is not uniform noise, the state counts
        model.output.weight.mul_(4)
        for layer in model.layers:
            layer.weight_hh_l0.mul_(3)
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return model.to(device)


class Guarded(TextGenerator):
    """A writer with a copy guard over `book` (no checkpoint needed)."""

    def __init__(self, model, book: str, run_tokens: int, **kwargs) -> None:
        super().__init__(model, CharTokenizer(CHARS), **kwargs)
        tokens = torch.tensor(self.tokenizer.encode(book)).numpy()
        self.guard = CopyGuard(CopyIndex.build([tokens], run_tokens, ["book"]), run_tokens)

    def copy_guard(self, max_copy):
        return self.guard if max_copy > 0 else None


def on_device(writer: TextGenerator, capture: bool | None = False) -> TextGenerator:
    writer.draw_on_device, writer.capture_graphs = True, capture
    return writer


def write(writer, seed_text="it was", random_seed=3, **settings) -> str:
    settings = SamplingSettings(**{"length": 60, "max_copy": 0, **settings})
    generator = torch.Generator().manual_seed(random_seed)
    return "".join(writer.stream(writer.prime(seed_text), settings, generator))


def noise_generator(random_seed: int) -> torch.Generator:
    """The generator the device path fills its blocks' noise from, for `random_seed`'s caller."""
    return device_generators(torch.Generator().manual_seed(random_seed), torch.device("cpu"))[0]


class HostReads(TorchFunctionMode):
    """Counts the calls that read a tensor back to the host (each a sync on a GPU)."""

    READS = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS or (name == "to" and "cpu" in map(str, args[1:])):
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


# --- the draw ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", DRAWS)
def test_the_device_draw_is_choose_token_given_the_same_noise(kwargs):
    settings = SamplingSettings(**kwargs)
    source = torch.Generator().manual_seed(0)
    for random_seed in range(40):
        logits = torch.randn(len(CHARS) + 1, generator=source) * 3
        banned = torch.rand(logits.shape, generator=source) < 0.3 if random_seed % 2 else None
        want = choose_token(logits, settings, torch.Generator().manual_seed(random_seed), banned)
        masked = logits.double()
        masked[UNK_ID] = float("-inf")
        if banned is not None:
            masked[banned] = float("-inf")
        noise = torch.empty_like(masked).exponential_(
            generator=torch.Generator().manual_seed(random_seed)
        )
        with HostReads() as host:
            token = draw(masked, settings, noise)
        assert host.reads == []  # nothing comes back to the host
        assert int(token) == want, random_seed


# --- the text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("embed", [None, 6])  # the folded table; the embedding (V > 4 E) gathered
@pytest.mark.parametrize("kwargs", SETTINGS)
def test_from_the_same_noise_it_writes_the_cpu_samplers_text(cell, embed, kwargs, monkeypatch):
    monkeypatch.setattr(device_sampler, "BLOCK", 7)  # 60 tokens: blocks carried, the last short
    model = model_of(cell, embed=embed)
    ours = write(on_device(TextGenerator(model, CharTokenizer(CHARS))), **kwargs)
    cpu = TextGenerator(model, CharTokenizer(CHARS))
    settings = SamplingSettings(length=60, max_copy=0, **kwargs)
    theirs = "".join(cpu.stream(cpu.prime("it was"), settings, noise_generator(3)))
    assert ours == theirs and len(ours) == 60
    if kwargs["temperature"]:
        assert len(set(ours)) > 2  # not one letter over and over: the draws matter


def test_same_random_seed_same_text_other_seed_other_text():
    writer = on_device(TextGenerator(model_of(), CharTokenizer(CHARS)))
    assert write(writer, random_seed=5) == write(writer, random_seed=5)
    assert write(writer, random_seed=5) != write(writer, random_seed=6)


def test_the_host_reads_the_tokens_back_once_a_block(monkeypatch):
    monkeypatch.setattr(device_sampler, "BLOCK", 8)
    writer = on_device(TextGenerator(model_of(), CharTokenizer(CHARS)))
    primed = writer.prime("it was")
    pieces = writer.stream(primed, SamplingSettings(length=50, max_copy=0), torch.Generator())
    with HostReads() as host:
        text = "".join(pieces)
    # The generators' seeds (from the caller's CPU generator), then one read per block of 8.
    assert host.reads == ["tolist"] * (1 + math.ceil(50 / 8)) and len(text) == 50


# --- the copy guard ----------------------------------------------------------------------------


def longest_copy(text: str, book: str) -> int:
    best = 0
    for start in range(len(text)):
        while start + best < len(text) and text[start : start + best + 1] in book:
            best += 1
    return best


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_guard_turns_tokens_away_whatever_the_block(cell, monkeypatch):
    # The book is the text the model writes unguarded: guarded, the same draws run into it at
    # once, and each block has tokens to take back and units to run again after them.
    model = model_of(cell)
    book = write(on_device(TextGenerator(model, CharTokenizer(CHARS))), length=300)
    texts = []
    for block in (1, 3, 8, 32):  # 1: every token read back alone, nothing run ahead
        monkeypatch.setattr(device_sampler, "BLOCK", block)
        writer = on_device(Guarded(model, book, run_tokens=4))
        texts.append(write(writer, length=300, max_copy=4))
        assert writer.guard.excluded > 10
    assert texts == [texts[0]] * 4
    assert longest_copy(texts[0], book) <= 4 and len(texts[0]) == 300


def test_where_every_token_would_copy_it_writes_on(monkeypatch):
    monkeypatch.setattr(device_sampler, "BLOCK", 8)
    book = "".join(a + b for a in CHARS for b in CHARS)  # every pair of characters
    writer = on_device(Guarded(model_of(), book, run_tokens=1))
    text = write(writer, length=40, max_copy=1)
    assert len(text) == 40
    # The first token follows the seed, which does not count; each one after it copies.
    assert writer.guard.excluded == writer.guard.fallbacks == 39


# --- the state after the text shown ------------------------------------------------------------


@pytest.mark.parametrize("shown", [3, 8, 13, 40])  # inside a block, at its end, the last token
def test_stopping_leaves_the_state_after_exactly_the_text_shown(shown, monkeypatch):
    monkeypatch.setattr(device_sampler, "BLOCK", 8)
    writer = on_device(TextGenerator(model_of(), CharTokenizer(CHARS)))
    primed = writer.prime("the ")
    settings = SamplingSettings(length=40, temperature=1.0, max_copy=0)
    pieces = writer.stream(primed, settings, torch.Generator().manual_seed(3))
    text = "".join(next(pieces) for _ in range(shown))
    pieces.close()
    reread = writer.prime("the " + text)
    for ours, theirs in zip(primed.state, reread.state, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    assert torch.allclose(primed.logits, reread.logits, atol=1e-5, rtol=0)
    # Copies, not the runner's buffers: the next stream does not move them.
    kept = [s.clone() for s in primed.state]
    write(writer, random_seed=9, temperature=1.0)  # the same runner
    assert all(torch.equal(a, b) for a, b in zip(kept, primed.state, strict=True))


def test_two_streams_open_at_once_each_write_their_own():
    writer = on_device(TextGenerator(model_of(), CharTokenizer(CHARS)))
    alone = [write(writer, random_seed=seed) for seed in (1, 2)]
    settings = SamplingSettings(length=60, max_copy=0)
    primed = [writer.prime("it was") for _ in range(2)]
    streams = [
        writer.stream(primed[seed - 1], settings, torch.Generator().manual_seed(seed))
        for seed in (1, 2)
    ]
    together = ["", ""]
    for first, second in zip(*streams, strict=True):
        together[0] += first
        together[1] += second
    assert together == alone
    for text, state in zip(together, primed, strict=True):  # each the state after its own text
        reread = writer.prime("it was" + text)
        assert torch.allclose(state.logits, reread.logits, atol=1e-5, rtol=0)


def test_a_runner_is_kept_for_the_same_weights_and_settings():
    model = model_of()
    writer = on_device(TextGenerator(model, CharTokenizer(CHARS)))
    settings = SamplingSettings(length=10)
    first = writer.device_runner(settings)
    assert writer.device_runner(SamplingSettings(length=99, max_copy=0)) is first
    assert writer.device_runner(SamplingSettings(temperature=0.5)) is not first
    with torch.no_grad():
        model.output.bias.add_(1)  # weights moved on: a new kernel, a new runner
    assert writer.device_runner(SamplingSettings(temperature=0.5)).kernel is writer.step_kernel()


# --- the graph ---------------------------------------------------------------------------------


class FakeGraph:
    """Stands in for a CUDA graph on the CPU: a replay runs the captured units."""

    def __init__(self, units) -> None:
        self.units, self.replays = units, 0

    def replay(self) -> None:
        self.replays += 1
        self.units()


def test_once_captured_each_block_is_one_replay(monkeypatch):
    monkeypatch.setattr(device_sampler, "BLOCK", 8)
    monkeypatch.setattr(device_sampler, "CAPTURE_AFTER", 20)
    graphs = []

    def capture(units, device):
        units()  # the warm-up, op by op
        graphs.append(FakeGraph(units))
        return graphs[-1]

    monkeypatch.setattr(device_sampler, "capture_graph", capture)
    model = model_of()
    eager = write(on_device(TextGenerator(model, CharTokenizer(CHARS))), length=100)
    writer = on_device(TextGenerator(model, CharTokenizer(CHARS)), capture=True)
    assert write(writer, length=100) == eager
    # 3 blocks op by op (24 tokens >= 20), then a capture checked by a replay against the ops,
    # then the other 10 blocks replayed.
    assert len(graphs) == 1 and graphs[0].replays == 1 + 10
    assert write(writer, length=100, random_seed=4) != eager  # the same graph, other noise
    assert len(graphs) == 1 and graphs[0].replays == 1 + 10 + 13


def test_a_graph_that_writes_other_numbers_than_the_ops_is_dropped(monkeypatch):
    monkeypatch.setattr(device_sampler, "BLOCK", 8)
    monkeypatch.setattr(device_sampler, "CAPTURE_AFTER", 20)

    class Wrong(FakeGraph):
        def replay(self) -> None:
            super().replay()
            self.units.__self__.logits[3] += 1e-6  # a pointer captured stale, say

    def capture(units, device):
        units()
        return Wrong(units)

    monkeypatch.setattr(device_sampler, "capture_graph", capture)
    model = model_of()
    eager = write(on_device(TextGenerator(model, CharTokenizer(CHARS))), length=100)
    writer = on_device(TextGenerator(model, CharTokenizer(CHARS)), capture=True)
    assert write(writer, length=100) == eager
    runner = writer.device_runner(SamplingSettings())
    assert runner.graph is None and "differs" in runner.capture_error


def test_a_capture_that_fails_leaves_the_ops_and_says_nothing(monkeypatch, recwarn):
    monkeypatch.setattr(device_sampler, "BLOCK", 8)
    monkeypatch.setattr(device_sampler, "CAPTURE_AFTER", 20)
    tries = []

    def fail(units, device):
        tries.append(units)
        units()  # a warm-up that got partway: the slots hold its numbers
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(device_sampler, "capture_graph", fail)
    model = model_of()
    eager = write(on_device(TextGenerator(model, CharTokenizer(CHARS))), length=100)
    writer = on_device(TextGenerator(model, CharTokenizer(CHARS)), capture=True)
    assert write(writer, length=100) == eager
    assert write(writer, length=100) == eager  # and it does not try again
    assert len(tries) == 1 and len(recwarn) == 0
    assert "not permitted" in writer.device_runner(SamplingSettings()).capture_error


# --- on a GPU ----------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("embed", [None, 20])
def test_the_fused_step_gives_the_models_own_logits_and_state(cell, embed):
    assert fused_cells_work(torch.device("cuda"))
    model = model_of(cell, layers=3, embed=embed, device="cuda")
    tokens = torch.randint(1, len(CHARS) + 1, (40,), device="cuda")
    with torch.no_grad():
        start = tuple(torch.randn_like(s) * 0.5 for s in model.init_state(1))
        full_logits, full_state = model(tokens.view(-1, 1), start)
        kernel = StepKernel(model, fold=embed is None)
        step, slots, state = FusedStep(kernel).step, (kernel.slot(), kernel.slot()), start
        for index in range(len(tokens)):
            step(tokens[index : index + 1], state, slots[index % 2])
            state = slots[index % 2].state
            assert torch.allclose(slots[index % 2].logits, full_logits[index, 0], atol=1e-4)
    for ours, theirs in zip(state, full_state, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-4)


@CUDA
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("kwargs", SETTINGS)
def test_on_a_gpu_the_graph_writes_what_the_ops_write(cell, kwargs, monkeypatch):
    monkeypatch.setattr(device_sampler, "CAPTURE_AFTER", 64)
    model = model_of(cell, device="cuda")
    eager = on_device(TextGenerator(model, CharTokenizer(CHARS)), capture=False)
    graphed = on_device(TextGenerator(model, CharTokenizer(CHARS)), capture=True)
    for random_seed in (1, 2):
        text = write(graphed, length=400, random_seed=random_seed, **kwargs)
        assert text == write(eager, length=400, random_seed=random_seed, **kwargs)
    runner = graphed.device_runner(SamplingSettings(**kwargs))
    assert runner.graph is not None and runner.capture_error is None


@CUDA
def test_on_a_gpu_the_guarded_graph_writes_what_the_ops_write(monkeypatch):
    monkeypatch.setattr(device_sampler, "CAPTURE_AFTER", 64)
    model = model_of(device="cuda")
    book = write(on_device(TextGenerator(model, CharTokenizer(CHARS))), length=400)
    texts = [
        write(on_device(Guarded(model, book, 4), capture=capture), length=400, max_copy=4)
        for capture in (False, True)
    ]
    assert texts[0] == texts[1] and longest_copy(texts[0], book) <= 4


@CUDA
def test_on_a_gpu_the_host_reads_once_a_block():
    writer = TextGenerator(model_of(device="cuda"), CharTokenizer(CHARS))
    assert writer.draw_on_device  # the default on CUDA
    write(writer, length=600)  # past CAPTURE_AFTER: the graph is captured
    pieces = writer.stream(
        writer.prime("it was"), SamplingSettings(length=320, max_copy=0), torch.Generator()
    )
    with HostReads() as host:
        "".join(pieces)
    assert host.reads == ["tolist"] * (1 + 320 // device_sampler.BLOCK)
    assert writer.device_runner(SamplingSettings()).graph is not None
