"""One training step: a window forward and back, then the update, unless it is not finite.

`train_step` is the whole step for a process training alone (`bookgen bench` times it, the
precision probe runs it). The trainer runs the same two halves with the processes' agreement
between them (`World.agree`): the loss of the whole window must be known everywhere before any
process decides whether to update.

The step never waits for the device. Its loss and whether it was applied stay tensors on the
device; the decision to skip a non-finite step is taken there too (the fused AdamW skips its
update where `found_inf` is 1, as it does for torch's GradScaler), and so is the choice of the
state carried on (`carried`). The host reads the results back when it needs them, for many
steps at once (trainer.py), so that on a GPU the host queues the next steps while the device
runs this one. On a CPU nothing waits either way; it is the same code.
"""

from __future__ import annotations

import torch

from bookgen.context import RunContext, to_device
from bookgen.distributed import SINGLE, World
from bookgen.model import RecurrentLM, State, detach_state
from bookgen.scoring import scored_tokens, token_nats
from bookgen.settings import TrainConfig
from bookgen.streams import Window


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    window: Window,
    state: State,
    context: RunContext,
    grad_clip: float,
) -> tuple[torch.Tensor, State, torch.Tensor]:
    """One window forward and back, and the update: (loss, state carried on, applied).

    `loss` (float32) and `applied` (bool) are 0-d tensors on the device. A step whose loss or
    gradient is not finite never reaches the weights, and `state` is carried on instead.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, after = forward_backward(model, window, state, context)
    applied = update(model, optimizer, loss, grad_clip)
    return loss, carried(applied, after, state), applied


def forward_backward(
    network: torch.nn.Module,
    window: Window,
    state: State,
    context: RunContext,
    world: World = SINGLE,
) -> tuple[torch.Tensor, State]:
    """The window forward and back, gradients into `.grad`: (loss part, state after the window).

    Alone, the part is the loss: the mean nats per scored token of the window. With several
    processes (`world`), `network` is the model in DistributedDataParallel reading this
    process's rows, and the part is their nats summed; `window_loss` makes the processes' parts,
    added up, the whole window's loss. The part is a detached 0-d tensor on the device.
    """
    device = context.device
    network.train()
    local = window.rows(world.rows(window.inputs.size(1))) if world.active else window
    styles = None if local.styles is None else to_device(local.styles, device)
    with context.autocast():
        logits, state = network(to_device(local.inputs, device), state, local.resets, styles)
    nats = token_nats(logits, local, device)
    if not world.active:
        loss = nats.mean() if nats.numel() else logits.sum() * 0
        loss.backward()
        return loss.detach(), state
    # Over the whole window's count, times the processes: DDP's average of the gradients is
    # then the gradient of the whole window's mean, as one process would compute it.
    total = nats.sum()
    with world.collective("averaging the gradients"):  # DDP's all-reduce runs inside backward
        (total * (world.size / _scored(window))).backward()
    return total.detach(), state


def window_loss(parts: float, window: Window, world: World = SINGLE) -> float:
    """The whole window's loss from the sum of the processes' `forward_backward` parts."""
    if not world.active:
        return parts
    return float(torch.tensor(parts / _scored(window)))  # float32, as one process's mean is


def _scored(window: Window) -> int:
    """Tokens of the whole window (all rows) whose prediction counts in the loss."""
    return max(scored_tokens(window), 1)


def update(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float
) -> torch.Tensor:
    """Clip the gradient and step the optimizer, unless the loss or the gradient is not finite.

    Returns whether the weights were updated, as a 0-d bool tensor on the device: the decision
    is taken there, without a wait. With several processes, `loss` is the whole window's and the
    gradients are averaged: every process decides alike. `optimizer` is `make_optimizer`'s.
    """
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    finite = torch.isfinite(loss) & torch.isfinite(norm)
    # What torch's GradScaler does for a fused optimizer: the step reads `found_inf` (1: skip)
    # on the device, leaving weights, moments and its step count as they were.
    optimizer.found_inf = (~finite).float()
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
    return finite


def carried(applied: torch.Tensor, after: State, before: State) -> State:
    """The state the next window starts from: the state after this window where the step was
    applied, the state before it where it was skipped; values only (truncated BPTT; `before`
    may be an epoch's first state, a learned start with its graph)."""
    pairs = zip(detach_state(after), detach_state(before), strict=True)
    return tuple(torch.where(applied, a, b) for a, b in pairs)


def weights_finite(model: torch.nn.Module) -> torch.Tensor:
    """Whether every weight is finite: a 0-d bool tensor on the device."""
    return torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()


def make_optimizer(model: RecurrentLM, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=(0.9, 0.99),
        fused=True,  # one kernel for all weights, and it can skip a step on the device
    )
