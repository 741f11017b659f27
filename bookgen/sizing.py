"""Measured on this machine before a run starts: its precision, and the model a --minutes budget
buys.

Both time real training steps of the run's own model, on a copy (`probe`): the run's weights,
optimizer and random stream are untouched. The figures are cached per machine (context.py), so
the next run with the same shapes measures nothing. The rule that turns speeds into a size is
`budget.py`'s; this module only measures what it needs.
"""

from __future__ import annotations

import copy
import time

import torch

from bookgen.budget import Measured, choose_size, describe, settings_for
from bookgen.context import (
    PrecisionChoice,
    Probe,
    RunContext,
    choose_precision,
    measured_speed,
    precision_cache_key,
)
from bookgen.model import ModelConfig, RecurrentLM
from bookgen.settings import TrainConfig
from bookgen.step import make_optimizer, train_step
from bookgen.streams import StreamBatcher, TokenStream


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
) -> tuple[dict, dict, str]:
    """The size the rest of the budget is best spent on, and the settings that suit it.

    Returns `model_options` with the size (and dropout) set, the changes to the training
    settings (batch size, learning rate; see `budget.py`) and the start line's account of the
    choice. Settings given by hand are kept. Only a character model with a time budget alone is
    sized; otherwise everything comes back as it was, with an empty account.
    """
    c = config
    if c.minutes is None or c.steps is not None or c.epochs is not None or c.level != "char":
        return model_options, {}, ""
    # What is left once reading is done (`started`: the run's perf_counter at its start); the
    # evaluations' share is small.
    seconds = max(c.minutes * 60 - (time.perf_counter() - started), 1.0)
    # Timed at the batch size asked for: the size chosen may change it, not the timing.
    batcher = StreamBatcher(train, c.batch_size, c.bptt)

    def build(layers: int, hidden_size: int) -> RecurrentLM:
        options = {**model_options, "layers": layers, "hidden_size": hidden_size}
        # Building it leaves the run's random stream alone.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return RecurrentLM(ModelConfig(vocab_size, **options))

    def weights(layers: int, hidden_size: int) -> int:
        return sum(p.numel() for p in build(layers, hidden_size).parameters())

    def measure(layers: int, hidden_size: int) -> Measured:
        model = build(layers, hidden_size).to(device)
        choice = run_precision(c, device, model, batcher)
        rate = choice.tokens_per_s.get(choice.precision)
        if rate is None:  # the precision was not measured (asked for, or fp32 is all)
            rate = speed(c, device, model, batcher, choice.precision)
        count = sum(p.numel() for p in model.parameters())
        return Measured(layers, hidden_size, count, rate, choice.precision)

    chosen, considered = choose_size(measure, weights, seconds)
    given = set(model_options) | set(c.given)
    settings = {
        k: v for k, v in settings_for(chosen, seconds, len(train)).items() if k not in given
    }
    note = describe(chosen, considered, seconds, len(train), settings)
    sized = {**model_options, "layers": chosen.layers, "hidden_size": chosen.hidden_size}
    if "dropout" in settings:
        sized["dropout"] = settings.pop("dropout")
    return sized, settings, note
