"""Measured on this machine before a run starts: its precision, and the model a --minutes budget
buys.

Both time real training steps of the run's own model, on a copy (`probe`): the run's weights,
optimizer and random stream are untouched. The figures are cached per machine (context.py), so
the next run with the same shapes measures nothing. The rule that turns speeds into a size is
`budget.py`'s; this module only measures what it needs.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import torch

from bookgen.budget import Budget, Measured, choose_batch, choose_size, describe, settings_for
from bookgen.context import (
    PrecisionChoice,
    Probe,
    RunContext,
    choose_precision,
    measured_speed,
    precision_cache_key,
)
from bookgen.errors import BookgenError
from bookgen.model import ModelConfig, RecurrentLM
from bookgen.settings import TrainConfig
from bookgen.step import make_optimizer, train_step
from bookgen.streams import StreamBatcher, TokenStream

# The devices where each size's batch is chosen by timing it (budget.py): a GPU's. A CPU's stays
# as asked: a doubling buys it little, and its defaults were chosen for quality (README).
GROWS_BATCH = ("cuda",)


def run_precision(
    config: TrainConfig,
    device: torch.device,
    model: RecurrentLM,
    batcher: StreamBatcher,
    saved: dict | None = None,
) -> PrecisionChoice:
    """As asked; on resume (`saved`, the run's recorded choice), the saved run's; else measured
    on this machine (cached)."""
    if saved is not None and config.precision == "auto":
        return PrecisionChoice.from_dict({**saved, "how": "saved"})
    key = precision_cache_key(device, _shape(model), batcher.batch_size, config.bptt)
    return choose_precision(
        config.precision,
        device,
        model.config.cell,
        probe(model, config, batcher, device),
        batcher.batch_size * config.bptt,
        key,
    )


def probe(
    model: RecurrentLM, config: TrainConfig, batcher: StreamBatcher, device: torch.device
) -> Probe:
    """A training step of a copy of `model` in a given precision, for timing.

    The copy is packed as the run's model is (`flatten_parameters`): a `deepcopy` leaves cuDNN's
    weights unpacked, and the probe would time cuDNN copying them at every call, and warn."""
    model = copy.deepcopy(model)
    model.flatten_parameters()
    optimizer = make_optimizer(model, config)
    window = next(batcher.windows())
    state = model.init_state(batcher.batch_size, device)

    def step(precision: str) -> None:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            context = RunContext(device, precision)
            train_step(model, optimizer, window, state, context, config.grad_clip)

    return step


def speed(
    config: TrainConfig,
    device: torch.device,
    model: RecurrentLM,
    batcher: StreamBatcher,
    precision: str,
) -> float:
    """Training tokens/s of `model` in `precision` here, cached like the precision choice."""
    batch = batcher.batch_size
    key = precision_cache_key(device, _shape(model), batch, config.bptt) + f" | {precision}"
    step = probe(model, config, batcher, device)
    return measured_speed(device, step, precision, batch * config.bptt, key)


def _shape(model: RecurrentLM) -> dict:
    """What the speed of a model depends on (dropout does not change the work)."""
    return {k: v for k, v in model.config.to_dict().items() if k != "dropout"}


def size_for_budget(
    config: TrainConfig,
    model_options: dict,
    train: TokenStream,
    vocab_size: int,
    device: torch.device,
    started: float,
    processes: int = 1,
) -> tuple[dict, dict, str]:
    """The size the rest of the budget is best spent on, and the settings that suit it.

    Returns `model_options` with the size (and dropout) set, the changes to the training
    settings (batch size, learning rate; see `budget.py`) and the start line's account of the
    choice. Settings given by hand are kept. Only a character model with a time budget alone is
    sized; otherwise everything comes back as it was, with an empty account. `processes`: how
    many train together, each with the batch chosen (the text must give them all rows).
    """
    c = config
    if c.minutes is None or c.steps is not None or c.epochs is not None or c.level != "char":
        return model_options, {}, ""
    # What is left once reading is done (`started`: the run's perf_counter at its start); the
    # evaluations' share is small.
    budget = Budget(max(c.minutes * 60 - (time.perf_counter() - started), 1.0), len(train))
    given = set(model_options) | set(c.given)
    grow = device.type in GROWS_BATCH and "batch_size" not in given

    def build(layers: int, hidden_size: int) -> RecurrentLM:
        options = {**model_options, "layers": layers, "hidden_size": hidden_size}
        # Building it leaves the run's random stream alone.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return RecurrentLM(ModelConfig(vocab_size, **options))

    def weights(layers: int, hidden_size: int) -> int:
        return sum(p.numel() for p in build(layers, hidden_size).parameters())

    def measure(layers: int, hidden_size: int) -> Measured:
        model = build(layers, hidden_size).to(device)
        measured = _measure(c, device, model, train)
        if not grow:
            return measured

        def at(batch_size: int) -> float | None:
            if batch_size == c.batch_size:
                return measured.tokens_per_s
            return _speed_at(c, device, model, train, batch_size, measured.precision)

        batch = choose_batch(at, c.batch_size, budget, c.bptt, processes)
        return dataclasses.replace(measured, tokens_per_s=batch.tokens_per_s, batch=batch)

    chosen, considered = choose_size(measure, weights, budget)
    settings = {k: v for k, v in settings_for(chosen, budget).items() if k not in given}
    note = describe(chosen, considered, budget, settings)
    sized = {**model_options, "layers": chosen.layers, "hidden_size": chosen.hidden_size}
    if "dropout" in settings:
        sized["dropout"] = settings.pop("dropout")
    return sized, settings, note


def _measure(
    config: TrainConfig, device: torch.device, model: RecurrentLM, train: TokenStream
) -> Measured:
    """`model` timed at the batch size asked for, in the precision it would train in."""
    batcher = StreamBatcher(train, config.batch_size, config.bptt)
    choice = run_precision(config, device, model, batcher)
    rate = choice.tokens_per_s.get(choice.precision)
    if rate is None:  # the precision was not measured (asked for, or fp32 is all)
        rate = speed(config, device, model, batcher, choice.precision)
    count = sum(p.numel() for p in model.parameters())
    c = model.config
    return Measured(c.layers, c.hidden_size, count, rate, choice.precision)


def _speed_at(
    config: TrainConfig,
    device: torch.device,
    model: RecurrentLM,
    train: TokenStream,
    batch_size: int,
    precision: str,
) -> float | None:
    """`model`'s tokens/s at another batch size (None: a step fails there, e.g. out of memory)."""
    try:
        return speed(
            config, device, model, StreamBatcher(train, batch_size, config.bptt), precision
        )
    except (BookgenError, torch.cuda.OutOfMemoryError):  # a step, or the copy it times
        return None
