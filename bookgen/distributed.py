"""Several training processes on PyTorch's own engine: torchrun and DistributedDataParallel.

`torchrun --nproc_per_node N -m bookgen train BOOKS ...` starts N processes; each learns its
rank from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...) and
joins one process group: gloo on the CPU, NCCL on GPUs. Nothing here is home-made transport.

What is split, and how it stays exact (N processes train the very model one process trains):
- The B streams (batch rows) are divided: rank r owns rows [r*B/N, (r+1)*B/N) and their hidden
  states. Every rank cuts the same windows of all B rows and keeps its own columns.
- Random draws are global. Every rank starts from the same seed and draws dropout masks for all
  B rows, keeping its own, so the masks are the ones one process would draw.
- The loss on each rank is its rows' nats over the count of the *whole* window, times N: the
  average DistributedDataParallel takes of the gradients is then the one-process gradient.
- Decisions are agreed in one all-reduce per step (`World.agree`), which carries the window's
  loss (so a non-finite step is skipped everywhere: the averaged gradient's norm is the same on
  every rank already), the share of the budget used (so the learning rate and the stop are the
  same everywhere, under --minutes too) and a Ctrl-C or SIGTERM on any rank. Besides it, a step
  has only DistributedDataParallel's own all-reduce of the gradients, inside backward.
- Rank 0 alone writes the token cache, checkpoints and metrics, and reports progress; the hidden
  state of all B rows is gathered into the checkpoint, so a run resumes on any number of
  processes that divides B.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from bookgen.errors import BookgenError

TIMEOUT_VARIABLE = "BOOKGEN_DIST_TIMEOUT"  # seconds a collective waits for a silent rank
DEFAULT_TIMEOUT_S = 120.0


class LostContact(BookgenError):
    """A collective failed or timed out: another training process stopped."""

    own_to_each_process = True


@dataclass(frozen=True)
class Agreement:
    """What all training processes agree on once per step (see `World.agree`)."""

    loss_parts: float  # the processes' parts of the window's loss added (step.window_loss)
    budget_used: float  # 0..1, by the slowest clock
    stop_signal: int  # a SIGINT or SIGTERM some process received; 0: none


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives' tensors live

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def rows(self, batch: int) -> slice:
        """The batch rows this rank owns: an equal, contiguous share (batch % size == 0)."""
        share = batch // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def share(self, count: int) -> slice:
        """A contiguous share of `count` items for this rank; shares differ by at most one."""
        begin = self.rank * count // self.size
        return slice(begin, (self.rank + 1) * count // self.size)

    # --- collectives: one process returns its own values -------------------------------------

    def sum(self, *values: float) -> list[float]:
        return self._reduce(values, "sum")

    def max(self, *values: float) -> list[float]:
        return self._reduce(values, "max")

    def agree(self, loss_part: float, budget_used: float, stop_signal: int) -> Agreement:
        """What every process decides a step by, in the step's one collective.

        Each rank brings its part of the window's loss (`step.forward_backward`), the share of
        the budget its own clock says is used, and the signal it received (0: none). One
        all-reduce gives every rank the (size, 3) table of all of them: each rank fills its own
        row, the other rows are zero, and adding zeros is exact. Every rank then reduces the
        table alike: the loss parts added in rank order (the same float everywhere), the
        largest budget used (the slowest clock decides) and the largest signal.
        """
        if not self.active:
            return Agreement(loss_part, budget_used, stop_signal)
        import torch.distributed as dist

        mine = torch.tensor([loss_part, budget_used, stop_signal], dtype=torch.float64)
        table = torch.zeros(self.size, 3, dtype=torch.float64, device=self.device)
        table[self.rank] = mine
        with self.collective("agreeing on a step"):
            dist.all_reduce(table, op=dist.ReduceOp.SUM)
        rows = table.cpu().tolist()
        return Agreement(
            loss_parts=sum(row[0] for row in rows),
            budget_used=max(row[1] for row in rows),
            stop_signal=int(max(row[2] for row in rows)),
        )

    def _reduce(self, values: tuple[float, ...], op: str) -> list[float]:
        if not self.active:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        kind = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
        what = "adding up" if op == "sum" else "taking the largest of"
        with self.collective(f"{what} the processes' values"):
            dist.all_reduce(tensor, op=kind)
        return tensor.tolist()

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object) on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        with self.collective("receiving rank 0's settings"):
            dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather_rows(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The hidden state of all B rows from each rank's (layers, B/N, hidden) share."""
        if not self.active:
            return state
        import torch.distributed as dist

        gathered = []
        for tensor in state:
            parts = [torch.empty_like(tensor) for _ in range(self.size)]
            with self.collective("gathering the hidden state"):
                dist.all_gather(parts, tensor.contiguous())
            gathered.append(torch.cat(parts, dim=1))
        return tuple(gathered)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            with self.collective("waiting for the others"):
                dist.barrier()

    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Turns a failed collective inside the block into `LostContact` (one process: as is)."""
        if not self.active:
            yield
            return
        try:
            yield
        except (RuntimeError, ValueError) as error:  # DistBackendError is a RuntimeError
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise LostContact(
                f"training process {self.rank} of {self.size} lost contact with the others "
                f"while {what} (did one of them stop?): {first}"
            ) from error

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. writes the token cache); then the others do."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()


SINGLE = World()


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_name: str) -> World:
    """Join the process group torchrun describes in the environment (one process: SINGLE).

    gloo on the CPU, NCCL on CUDA (each process on `cuda:LOCAL_RANK`).
    """
    if not launched():
        return SINGLE
    import torch.distributed as dist

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise BookgenError("--device cuda: no CUDA GPU is available here (use --device cpu)")
        if local_rank >= torch.cuda.device_count():
            raise BookgenError(
                f"process {rank} wants cuda:{local_rank}, but only "
                f"{torch.cuda.device_count()} GPUs are here: start at most that many per node"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        timeout = float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S))
        try:
            dist.init_process_group(
                backend="nccl" if cuda else "gloo",
                timeout=datetime.timedelta(seconds=timeout),
                device_id=device if cuda else None,
            )
        except (RuntimeError, ValueError) as error:
            raise LostContact(f"could not join the other training processes: {error}") from error
    return World(rank, size, local_rank, device)


def leave(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            gc.collect()  # what is left of DistributedDataParallel, before the group it uses
            dist.destroy_process_group()
