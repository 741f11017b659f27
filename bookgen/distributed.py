"""Several training processes on PyTorch's own engine: torchrun and DistributedDataParallel.

`torchrun --nproc_per_node N -m bookgen train BOOKS ...` starts N processes; each learns its
rank from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...) and
joins one process group: gloo on the CPU, NCCL on GPUs. Nothing here is home-made transport.

What is split, and how it stays exact (N processes at --batch-size B train the very model one
process trains at B x N):
- --batch-size is per process: the run has B x N streams (batch rows), and rank r owns rows
  [r*B, (r+1)*B) and their hidden states. Every rank cuts the same windows of all B x N rows
  and keeps its own columns. A resumed run keeps the saved run's B x N rows (the carried state
  and the stream positions refer to them), divided among however many processes resume it.
- Random draws are global. Every rank starts from the same seed and draws dropout masks for all
  B rows, keeping its own, so the masks are the ones one process would draw.
- The loss on each rank is its rows' nats over the count of the *whole* window, times N: the
  average DistributedDataParallel takes of the gradients is then the one-process gradient.
- Decisions are agreed in one all-reduce per step (`World.agree`), which carries the window's
  loss (so a non-finite step is skipped everywhere: the averaged gradient's norm is the same on
  every rank already), the share of the budget used (so the learning rate and the stop are the
  same everywhere, under --minutes too) and a Ctrl-C or SIGTERM on any rank. Besides it, a step
  has only DistributedDataParallel's own all-reduce of the gradients, inside backward.
- Rank 0 alone writes checkpoints and metrics, and reports progress; the hidden state of all
  rows is gathered into the checkpoint, so a run resumes on any number of processes that
  divides them. Resuming reads the checkpoint on every process: with several machines, --out
  must be one folder they share (the processes check that they all read the same save).

How a lost process is reported, on gloo and NCCL alike: every collective bookgen makes is started
asynchronously and waited on, with the timeout, inside `World.collective`, which turns a failure
into one line and exit 2 (`LostContact`). NCCL runs with TORCH_NCCL_BLOCKING_WAIT, so that the
waits torch makes itself (DistributedDataParallel's, in backward) also fail in this thread, inside
the guard, instead of NCCL's watchdog killing the process. Work that one process does while the
others wait (tokenizing a corpus into the cache, measuring the precision or the size, building
the copy guard's index) is waited for on a second, gloo group with a long timeout (`barrier`,
`broadcast`), so the short one only ever measures silence inside training steps.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bookgen.errors import BookgenError

TIMEOUT_VARIABLE = "BOOKGEN_DIST_TIMEOUT"  # seconds a collective waits for a silent rank
DEFAULT_TIMEOUT_S = 120.0
# How long the others wait for rank 0's own work (a large corpus tokenized, an index built). A
# process that stops is seen at once (its connections close); this only bounds a hung one.
PATIENT_TIMEOUT = datetime.timedelta(days=1)


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
    timeout: datetime.timedelta = datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)  # in steps
    patient: Any = None  # the gloo group that waits PATIENT_TIMEOUT for one process's work

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
            self._wait(dist.all_reduce(table, op=dist.ReduceOp.SUM, async_op=True))
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
            self._wait(dist.all_reduce(tensor, op=kind, async_op=True))
        return tensor.tolist()

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object) on every rank. Patient: rank 0 may have
        measured it for minutes (the precision, the size for a budget) while the others waited."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        with self.collective("receiving rank 0's settings"):
            # On the gloo group, in host memory: the wait is bounded by that group's timeout.
            dist.broadcast_object_list(box, src=0, group=self.patient, device=torch.device("cpu"))
        return box[0]

    def gather_objects(self, value) -> list:
        """Every rank's `value` (any picklable object), in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        values = [None] * self.size
        with self.collective("comparing the processes' values"):
            dist.all_gather_object(values, value, group=self.patient)
        return values

    def gather_rows(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The hidden state of all B rows from each rank's (layers, B/N, hidden) share."""
        if not self.active:
            return state
        import torch.distributed as dist

        gathered = []
        for tensor in state:
            parts = [torch.empty_like(tensor) for _ in range(self.size)]
            with self.collective("gathering the hidden state"):
                self._wait(dist.all_gather(parts, tensor.contiguous(), async_op=True))
            gathered.append(torch.cat(parts, dim=1))
        return tuple(gathered)

    def barrier(self) -> None:
        """Wait until every process is here. Patient: the others wait for rank 0's own work
        (tokenizing, the copy guard's index) as long as it takes, not the steps' timeout."""
        if self.active:
            import torch.distributed as dist

            with self.collective("waiting for the others"):
                self._wait(dist.barrier(group=self.patient, async_op=True), PATIENT_TIMEOUT)

    def _wait(self, work, timeout: datetime.timedelta | None = None) -> None:
        """Wait for an asynchronous collective, inside `collective` so that a failure is a
        `LostContact`. A timeout given to the wait blocks this thread on NCCL too (without
        one, NCCL's wait only orders the streams, and a lost rank surfaces later, elsewhere)."""
        work.wait(timeout or self.timeout)

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
        """The first process of each machine runs the block first (e.g. writes the token cache
        of that machine); then the others do, reading what it wrote. The others wait patiently."""
        first = self.local_rank == 0
        if not first:
            self.barrier()
        try:
            yield
        finally:
            if first:
                self.barrier()


SINGLE = World()


def processes() -> int:
    """How many training processes torchrun (or another launcher) started: 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return processes() > 1


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
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S)))
    if cuda:  # torch's own NCCL waits (DDP's, in backward) raise here, not in NCCL's watchdog
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
    # DistributedDataParallel imports torch.distributed.nn.functional, whose functions take
    # `group=group.WORLD` as a default argument: imported after the group exists, they hold it
    # for good, so destroy_process_group never frees it and its gloo threads are still running
    # while the interpreter exits (the rare "terminate called without an active exception").
    # Imported first, the defaults hold the placeholder.
    importlib.import_module("torch.distributed.nn.functional")
    try:
        if not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if cuda else "gloo",
                timeout=timeout,
                device_id=device if cuda else None,
            )
        patient = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
    except (RuntimeError, ValueError) as error:
        raise LostContact(f"could not join the other training processes: {error}") from error
    return World(rank, size, local_rank, device, timeout, patient)


def leave(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            gc.collect()  # what is left of DistributedDataParallel, before the group it uses
            dist.destroy_process_group()
