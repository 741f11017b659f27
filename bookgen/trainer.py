"""Stateful training: carry the hidden state across windows, detach it, reset it between books.

The loop (`Trainer._train`) reads top to bottom, once per window:

    budget used? stop -> learning rate (schedule.py) -> step: forward and back (step.py), the
    processes' one agreement, update or skip -> count -> report -> evaluate and save when due
    (cadence.py, validation.py, saving.py) -> stop if a signal came

Opening the run, fresh or resumed, is run.py's; writing its folder, saving.py's. What is here is
the loop, the step with its guard against bad steps, the cadence and the signals. The trainer
has no user interface: it reports what happens as events (`Started`, `Stepped`, `Evaluated`,
`Saved`, `Notice`) to an `on_event` callback; the CLI draws a progress display from them, tests
collect them in a list.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bookgen import checkpoint as ckpt
from bookgen.cadence import Cadence
from bookgen.corpus import Document
from bookgen.distributed import SINGLE, Agreement, World
from bookgen.errors import BookgenError
from bookgen.events import (
    Evaluated,
    Event,
    Notice,
    Saved,
    Stepped,
    TrainingInterrupted,
    TrainResult,
)
from bookgen.run import Books, first_state, open_run
from bookgen.saving import RunSaver
from bookgen.schedule import RunClock, budget_used, evaluation_reserve, learning_rate
from bookgen.scoring import bits_per_char
from bookgen.settings import TrainConfig
from bookgen.step import carried, forward_backward, update, weights_finite, window_loss
from bookgen.streams import Window
from bookgen.validation import Validation

# On a GPU the host reads the steps' losses back every this many steps (or this many seconds,
# whichever comes first): one wait for the device instead of one per step.
READ_BACK_STEPS = 64
READ_BACK_SECONDS = 0.5


class Trainer:
    """One training run. With `resume`, continues the run saved in `out` exactly.

    What it holds, by name: `progress` (step, epoch, stream position, counters: a
    `TrainingProgress`), `state` (the recurrent state carried from window to window, one row per
    stream this process trains), `context` (device and precision).
    """

    def __init__(
        self,
        books: Books,
        model_options: dict,
        config: TrainConfig,
        out: Path,
        on_event: Callable[[Event], None] | None = None,
        *,
        force: bool = False,
        resume: bool = False,
        world: World = SINGLE,
        labels: Sequence[str] | None = None,
    ) -> None:
        self.created = time.perf_counter()  # --minutes counts from here: reading is included
        self.out, self.world = Path(out), world  # world: this process among several (torchrun)
        self.emit = (on_event or _quiet) if world.is_main else _quiet
        run = open_run(
            books, model_options, config, self.out, world, self.emit,
            started=self.created, resume=resume, force=force, labels=labels,
        )  # fmt: skip
        self.config, self.data, self.batcher = run.config, run.data, run.batcher
        self.model, self.network, self.optimizer = run.model, run.network, run.optimizer
        self.context, self.progress, self.state = run.context, run.progress, run.state
        self.started = run.started(self.out, [book.name for book in books])
        self.styles = run.styles  # names in id order, each book's id (one style: count 0)
        self.validation = Validation(
            self.data.val, self.config, world, self.context.device, self.styles.names,
            self.styles.of_documents(self.data.val),
        )  # fmt: skip
        # Books given as text (from Python) are indexed for the copy guard from that text.
        texts = [book.text for book in books if isinstance(book, Document)]
        self.saver = RunSaver(self.out, world, run, texts if len(texts) == len(books) else None)
        self.clock = RunClock(self.created, self.progress)
        self.cadence = Cadence(self.config, world.size)
        self.reserve = 0.0  # seconds of a --minutes budget kept for evaluations
        self.signals = StopSignals()
        self.bad_steps = 0  # non-finite steps in a row
        self.unread: list[Unread] = []  # steps whose results are still on the device
        self.last_read = time.perf_counter()

    def run(self) -> TrainResult:
        with self.signals:
            try:
                return self._train()
            finally:
                # However the run ends, the checkpoint being written lands first. Its failure
                # is raised even over another error (which becomes its context): what is on
                # disk is what the user goes on from.
                try:
                    self._report_saves(wait=True)
                finally:
                    self.saver.close()

    def _train(self) -> TrainResult:
        c, p = self.config, self.progress
        self.emit(self.started)
        seconds = self.validation.seconds(self.model, self.context)
        self.reserve = evaluation_reserve(seconds, c.minutes)
        (used,) = self.world.max(self._budget_used(p.step))  # later, each step's agreement
        self.cadence.start(p, used, self.clock.elapsed())
        for window in self._windows():
            if used >= 1.0:
                break
            lr = learning_rate(c, p.step, used)
            loss, applied, agreed = self._step(window, lr)
            p.step, p.position = p.step + 1, window.start + window.inputs.size(0)
            p.tokens_seen += window.inputs.numel()
            p.elapsed_s = self.clock.elapsed()
            used, rate = agreed.budget_used, self.clock.tokens_per_s(p)
            stepped = Stepped(p.step, self.epochs(), None, lr, rate, p.elapsed_s, used)
            self.unread.append(Unread(stepped, loss, applied, weights_finite(self.model)))
            if self._read_due():
                self._read_back()
            self._report_saves()
            seconds = self.cadence.seconds(used, p.elapsed_s)
            if self.cadence.evaluation_due(p.step, used, p.last_eval_used):
                self._evaluate_and_save(lr, rate, used, seconds)
            elif self.cadence.save_due(p.step, seconds):
                self._save(is_best=False, seconds=seconds)
            self._stop_if_asked(agreed)
        self._read_back()
        if p.last_eval_step != p.step:  # always an evaluation and a save at the end
            lr, rate = learning_rate(c, p.step, 1.0), self.clock.tokens_per_s(p)
            seconds = self.cadence.seconds(used, self.clock.elapsed())
            self._evaluate_and_save(lr, rate, used, seconds)
        self._report_saves(wait=True)  # the last checkpoint is on disk before the run returns
        if self.world.is_main:
            self._index_for_copy_guard()
        self.world.barrier()  # rank 0 has written the last metrics
        return TrainResult(self.out, p.step, p.best_val_loss, ckpt.read_metrics(self.out))

    def _windows(self) -> Iterator[Window]:
        """The windows from where the run stands, epoch after epoch, without end."""
        p = self.progress
        while True:
            yield from self.batcher.windows(p.epoch, self.config.random_seed, p.position)
            # The epoch is over: rows jump back to the start of their streams, so the carried
            # state no longer matches the text and starts again: from zero, or from the learned
            # start of each row's first style.
            p.epoch, p.position = p.epoch + 1, 0
            self.state = first_state(self.model, self.batcher, self.world, self.context.device)

    def _step(self, window: Window, lr: float) -> tuple[Tensor, Tensor, Agreement]:
        """One window forward and back, the processes' agreement, the update: the loss and
        whether the step was applied (0-d tensors on the device, read later: `_read_back`) and
        what was agreed."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        part, state = forward_backward(self.network, window, self.state, self.context, self.world)
        # The budget used once this step is done, by this process's clock.
        used = self._budget_used(self.progress.step + 1, window.start + window.inputs.size(0))
        if self.world.active:
            # The step's one collective: the window's loss (a non-finite one is skipped
            # everywhere), the budget used (the slowest clock decides), a stop signal. It is
            # the one wait for the device in a step of several processes.
            agreed = self.world.agree(float(part), used, self.signals.received)
            whole = window_loss(agreed.loss_parts, window, self.world)
            loss = torch.tensor(whole, dtype=torch.float32, device=self.context.device)
        else:
            agreed, loss = Agreement(0.0, used, self.signals.received), part
        applied = update(self.model, self.optimizer, loss, self.config.grad_clip)
        self.state = carried(applied, state, self.state)  # a skipped step keeps the old state
        return loss, applied, agreed

    def _read_due(self) -> bool:
        """Whether to read the steps' results back now: every step on a CPU (where reading
        waits for nothing), else every `READ_BACK_STEPS` steps or `READ_BACK_SECONDS`."""
        waited = time.perf_counter() - self.last_read
        return len(self.unread) >= read_back_steps(self.context.device) or (
            waited >= READ_BACK_SECONDS
        )

    def _read_back(self) -> None:
        """Read the unread steps' losses at once (one wait for the device), then count them,
        report them and stop on a run of bad steps or a diverged update.

        What the steps did was decided on the device already; reading later changes only when
        the user hears of it. Every save reads back first, so a bad step is never saved unseen.
        """
        self.last_read = time.perf_counter()
        if not self.unread:
            return
        unread, self.unread = self.unread, []
        flags = torch.stack(
            [torch.stack([u.loss.float(), u.applied.float(), u.finite.float()]) for u in unread]
        ).tolist()
        p = self.progress
        for u, (loss, applied, finite) in zip(unread, flags, strict=True):
            step = u.stepped.step
            if not applied:
                self._bad_step(loss, step)  # it never reached the weights, nor the state
                self.emit(u.stepped)
                continue
            if not finite:
                # A finite loss and gradient can still overflow the weights in the update
                # (AdamW's decay at an absurd rate does). Nothing comes back from that: stop
                # before it is saved, so the last checkpoint stays good.
                raise self._diverged(
                    f"the update of step {step} made the weights infinite or NaN "
                    f"(its loss was {loss:g}); that step was not saved"
                )
            self.bad_steps = 0
            p.loss_sum, p.loss_count = p.loss_sum + loss, p.loss_count + 1
            self.emit(dataclasses.replace(u.stepped, loss=loss))

    def _bad_step(self, loss: float, step: int) -> None:
        self.bad_steps += 1
        self.emit(Notice(f"step {step}: loss or gradient is {loss}, step skipped"))
        if self.bad_steps >= self.config.max_bad_steps:
            raise self._diverged(
                f"the loss was not finite for {self.bad_steps} steps in a row (up to step "
                f"{step}); those steps never changed the weights"
            )

    def _diverged(self, what: str) -> BookgenError:
        self._report_saves(wait=True)  # the write in flight decides which is the last good one
        last = (
            f"the last good checkpoint is in {self.out}"
            if ckpt.has_checkpoint(self.out)
            else "no checkpoint was saved yet"
        )
        return BookgenError(
            f"training diverged: {what}, and {last}. "
            f"Try a lower --learning-rate than {self.config.learning_rate:g}"
        )

    def _stop_if_asked(self, agreed: Agreement) -> None:
        """Save and stop on a Ctrl-C or SIGTERM. Several processes stop together, on a signal
        agreed in a step's collective (one received since is seen at the next step); a process
        alone stops on any received by now."""
        signum = agreed.stop_signal if self.world.active else self.signals.received
        if signum:
            self._save(is_best=False, seconds=None)  # it stops here: no more to time
            raise TrainingInterrupted(signum, self.out, self.progress.step)

    def _evaluate_and_save(
        self, lr: float, rate: float, used: float, seconds: float | None
    ) -> None:
        self._read_back()  # the training loss of the steps since the last evaluation
        p = self.progress
        val_loss, by_style = self.validation.losses(self.model, self.context)
        is_best = p.best_val_loss is None or val_loss < p.best_val_loss
        p.last_eval_step, p.last_eval_used = p.step, used
        if is_best:
            p.best_val_loss, p.best_step = val_loss, p.step
        record = {
            "step": p.step,
            "tokens": p.tokens_seen,
            "epoch": round(self.epochs(), 6),
            "train_loss": p.loss_sum / p.loss_count if p.loss_count else None,
            "val_loss": val_loss,
            "val_bits_per_char": bits_per_char(val_loss, self.data.val),
            **({"val_loss_by_style": by_style} if by_style else {}),
            "lr": lr,
            "elapsed_s": round(p.elapsed_s, 3),
            "tokens_per_s": round(rate, 1),
        }
        self.saver.append_metrics(record)
        p.loss_sum, p.loss_count = 0.0, 0
        self._save(is_best=is_best, seconds=seconds)
        if self.world.is_main:
            preview = self.validation.preview(self.model, self.data.tokenizer, self.context, p.step)
            self.emit(Evaluated(record, preview, is_best))

    def _save(self, is_best: bool, seconds: float | None) -> None:
        """Snapshot the run and write it in the background (the first process writes)."""
        self._read_back()  # a bad step or a diverged update stops the run before it is saved
        self._report_saves(wait=True)  # one write at a time; each reported while the latest
        run = self.model, self.optimizer, self.config, self.progress, self.state
        self.saver.save(*run, is_best=is_best)
        self.cadence.saved(seconds)

    def _report_saves(self, wait: bool = False) -> None:
        """`Saved` for each checkpoint that has landed (with `wait`, once the one in flight
        has); a failed write raises its one-line error here."""
        for step in self.saver.written(wait):
            self.emit(Saved(self.out, step))

    def _index_for_copy_guard(self) -> None:
        reason = self.saver.index_for_copy_guard()
        if reason is not None:
            self.emit(Notice(reason))

    def epochs(self, position: int | None = None) -> float:
        """Epochs done, with the share of the current one (at `position` in the rows, if given)."""
        p = self.progress
        return p.epoch + (p.position if position is None else position) / self.batcher.row_length

    def _budget_used(self, step: int, position: int | None = None) -> float:
        """The budget used (0..1) at `step` steps and `position` in the rows, by this clock."""
        elapsed = self.clock.elapsed()
        return budget_used(self.config, step, self.epochs(position), elapsed, self.reserve)


@dataclass(frozen=True)
class Unread:
    """A step done whose results the host has not read yet: its event without the loss, and
    the loss, whether it was applied and whether the weights stayed finite (0-d tensors)."""

    stepped: Stepped
    loss: Tensor
    applied: Tensor
    finite: Tensor


def read_back_steps(device: torch.device) -> int:
    """Steps whose results wait on the device before the host reads them: 1 on a CPU, where
    reading waits for nothing and the progress display shows every step."""
    return 1 if device.type == "cpu" else READ_BACK_STEPS


def _quiet(event: Event) -> None:
    pass


class StopSignals:
    """First SIGINT/SIGTERM: finish the step, save, stop. A second one stops at once.

    Stopping at once is safe too: every checkpoint file is replaced atomically. Only the main
    thread receives signals; elsewhere (a run in a thread) nothing is installed.
    """

    def __init__(self) -> None:
        self.received = 0  # the first signal's number; 0: none
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            signals = (signal.SIGINT, signal.SIGTERM)
            self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signum
