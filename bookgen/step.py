"""One training step: a window forward and back, then the update, unless it is not finite.

`train_step` is the whole step for a process training alone (`bookgen bench` times it, the
precision probe runs it). The trainer runs the same two halves with the processes' agreement
between them (`World.agree`): the loss of the whole window must be known everywhere before any
process decides whether to update.
"""

from __future__ import annotations

import math

import torch

from bookgen.context import RunContext
from bookgen.distributed import SINGLE, World
from bookgen.model import RecurrentLM, State, detach_state
from bookgen.scoring import token_nats
from bookgen.settings import TrainConfig
from bookgen.streams import Window


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    window: Window,
    state: State,
    context: RunContext,
    grad_clip: float,
) -> tuple[float, State, bool]:
    """One window forward and back, and the update: (loss, state after the window, applied).

    A step whose loss or gradient is not finite never reaches the weights (the optimizer is not
    stepped), and the caller keeps its old state.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, state = forward_backward(model, window, state, context)
    applied = update(model, optimizer, loss, grad_clip)
    # Truncated BPTT: keep the state's values for the next window, drop its history.
    return loss, detach_state(state), applied


def forward_backward(
    network: torch.nn.Module,
    window: Window,
    state: State,
    context: RunContext,
    world: World = SINGLE,
) -> tuple[float, State]:
    """The window forward and back, gradients into `.grad`: (loss part, state after the window).

    Alone, the part is the loss: the mean nats per scored token of the window. With several
    processes (`world`), `network` is the model in DistributedDataParallel reading this
    process's rows, and the part is their nats summed; `window_loss` makes the processes' parts,
    added up, the whole window's loss.
    """
    device = context.device
    network.train()
    local = window.rows(world.rows(window.inputs.size(1))) if world.active else window
    with context.autocast():
        logits, state = network(local.inputs.to(device), state, local.resets.to(device))
    nats = token_nats(logits, local, device)
    if not world.active:
        loss = nats.mean() if nats.numel() else logits.sum() * 0
        loss.backward()
        return float(loss.detach()), state
    # Over the whole window's count, times the processes: DDP's average of the gradients is
    # then the gradient of the whole window's mean, as one process would compute it.
    total = nats.sum()
    with world.collective("averaging the gradients"):  # DDP's all-reduce runs inside backward
        (total * (world.size / _scored(window))).backward()
    return float(total.detach()), state


def window_loss(parts: float, window: Window, world: World = SINGLE) -> float:
    """The whole window's loss from the sum of the processes' `forward_backward` parts."""
    if not world.active:
        return parts
    return float(torch.tensor(parts / _scored(window)))  # float32, as one process's mean is


def _scored(window: Window) -> int:
    """Tokens of the whole window (all rows) whose prediction counts in the loss."""
    return max(int(window.loss_mask.sum()), 1)


def update(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: float, grad_clip: float
) -> bool:
    """Clip the gradient and step the optimizer, unless the loss or the gradient is not finite.

    Returns whether the weights were updated. With several processes, `loss` is the whole
    window's and the gradients are averaged: every process decides alike.
    """
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    finite = math.isfinite(loss) and bool(torch.isfinite(norm))
    if finite:
        optimizer.step()
    return finite


def all_finite(model: torch.nn.Module) -> bool:
    """Whether every weight is finite: one reduction, one device sync."""
    flags = torch.stack([p.detach().isfinite().all() for p in model.parameters()])
    return bool(flags.all())


def make_optimizer(model: RecurrentLM, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=(0.9, 0.99),
    )
