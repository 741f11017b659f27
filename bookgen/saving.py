"""What a training run writes into its folder as it goes, through checkpoint.py: checkpoints
with the record of the machine they trained on, the metrics, and at the end the copy guard's
index of the books.

Only the first process writes; the others take part in gathering the carried state, which is
saved for all B rows so that any number of processes can resume the run.

A save copies the run into host memory on the step's path (a snapshot: the state of one step,
whatever training does next), then writes and fsyncs it on a thread of its own while training
goes on. One write at a time: a save waits for the one before. Each file is still replaced
atomically and the manifest last, so a kill -9 mid-write leaves the last complete checkpoint.
The trainer asks which writes have landed (`written`), to report them and to raise a failed
one's error, and waits for the last before the run returns, stops or fails.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

from bookgen import checkpoint as ckpt
from bookgen import guard
from bookgen.context import processor_name
from bookgen.distributed import World
from bookgen.errors import BookgenError
from bookgen.model import RecurrentLM, State
from bookgen.run import Run
from bookgen.sampler import DEFAULTS as SAMPLING
from bookgen.settings import TrainConfig


class RunSaver:
    """Writes one run's folder: `out`, on the first of the `world`'s processes."""

    def __init__(self, out: Path, world: World, run: Run, texts: list[str] | None = None) -> None:
        self.out = out
        self.world = world
        self.tokenizer = run.data.tokenizer
        self.corpus = run.data.corpus  # which books, their fingerprints (data.prepare_data)
        self.precision = run.precision
        self.device = run.context.device
        self.size_note = run.size_note
        self.texts = texts  # books given as text (from Python): the copy guard indexes these
        self.writes = BackgroundWrites()

    def save(
        self,
        model: RecurrentLM,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        progress: ckpt.TrainingProgress,
        state: State,
        *,
        is_best: bool,
    ) -> None:
        """Save the run as it stands (`state`: this process's rows): snapshot it now, write it
        in the background (after the write before, if one is in flight)."""
        state = self.world.gather_rows(state)  # all B rows, so any world size resumes
        if not self.world.is_main:
            return
        self.writes.wait()
        snapshot = ckpt.snapshot_checkpoint(
            model=model,
            tokenizer=self.tokenizer,
            train_config=asdict(config),
            corpus=self.corpus,
            progress=progress,
            precision=self.precision.to_dict(),
            optimizer=optimizer,
            state=state,
            is_best=is_best,
            machine=self.machine(),
        )
        write = functools.partial(ckpt.write_checkpoint, self.out, snapshot)
        self.writes.submit(progress.step, write)

    def written(self, wait: bool = False) -> list[int]:
        """The steps whose checkpoints have landed since last asked; with `wait`, once the write
        in flight has. Raises a failed write's error."""
        return self.writes.landed(wait)

    def close(self) -> None:
        self.writes.close()

    def append_metrics(self, record: dict) -> None:
        if self.world.is_main:
            ckpt.append_metrics(self.out, record)

    def machine(self) -> dict:
        """Where this run trained, for `bookgen report` (a resumed run records where it ended)."""
        return {
            "processor": self._processor,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "processes": self.world.size,
            "torch": torch.__version__,
            "size_note": self.size_note,
        }

    @functools.cached_property
    def _processor(self) -> str:
        return processor_name()  # read from /proc/cpuinfo: once, not at every save

    def index_for_copy_guard(self) -> str | None:
        """Index the books for sampling's copy guard now, while they are surely at hand (one
        pass over the text; for another --max-copy, sampling builds its own). Returns why no
        index was built, if none was."""
        reason = guard.too_large(self.corpus)
        if reason is not None:
            return reason
        try:
            guard.ensure_index(self.out, self.corpus, self.tokenizer, SAMPLING.max_copy, self.texts)
        except BookgenError as error:  # the books moved during training: sampling will say
            return f"copy guard: no index built ({error})"
        return None


class BackgroundWrites:
    """Writes on a thread of their own, one at a time, each known by the step it saves."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None  # started at the first write
        self._pending: tuple[int, Future] | None = None
        self._landed: list[int] = []

    def submit(self, step: int, write) -> None:
        self.wait()  # never two at once
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bookgen-save")
        self._pending = step, self._pool.submit(write)

    def wait(self) -> None:
        """Until the write in flight has landed; raises its error if it failed."""
        self._collect(block=True)

    def landed(self, wait: bool) -> list[int]:
        self._collect(block=wait)
        steps, self._landed = self._landed, []
        return steps

    def close(self) -> None:
        """Wait for the write in flight (its error is the caller's to ask for) and stop."""
        if self._pending is not None:
            self._pending[1].exception()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _collect(self, block: bool) -> None:
        if self._pending is None:
            return
        step, future = self._pending
        if not block and not future.done():
            return
        self._pending = None
        error = future.exception()  # waits
        if isinstance(error, (BookgenError, OSError)):
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise BookgenError(f"the checkpoint of step {step} was not saved: {reason}") from error
        if error is not None:
            raise error  # a bug: its own traceback
        self._landed.append(step)
