"""Stateful training: carry the hidden state across windows, detach it, reset it between books.

The trainer has no user interface. It reports what happens as events (`Started`, `Stepped`,
`Evaluated`, `Saved`, `Notice`) to an `on_event` callback: the CLI draws a progress display from
them, tests collect them in a list.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from bookgen import checkpoint as ckpt
from bookgen import guard
from bookgen.budget import Measured, choose_size, describe, settings_for
from bookgen.context import (
    PrecisionChoice,
    RunContext,
    choose_precision,
    measured_speed,
    precision_cache_key,
    processor_name,
    resolve_device,
)
from bookgen.corpus import Document
from bookgen.data import prepare_data
from bookgen.distributed import SINGLE, World
from bookgen.errors import BookgenError
from bookgen.events import (
    Evaluated,
    Event,
    Notice,
    Saved,
    Started,
    Stepped,
    Tokenizing,
    TrainingInterrupted,
    TrainResult,
)
from bookgen.scoring import bits_per_char, evaluate_sums, token_nats
from bookgen.model import ModelConfig, RecurrentLM, State, detach_state
from bookgen.sampler import DEFAULTS as SAMPLING
from bookgen.sampler import TextGenerator
from bookgen.settings import TrainConfig
from bookgen.streams import StreamBatcher, Window

# --- one step ----------------------------------------------------------------------------------


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    window: Window,
    state: State,
    context: RunContext,
    grad_clip: float,
    world: World = SINGLE,
    rows: slice = slice(None),
) -> tuple[torch.Tensor, State, bool]:
    """One window forward and back; returns (loss, state after the window, whether applied).

    A step whose loss or gradient is not finite never reaches the weights (the optimizer is not
    stepped) and the caller keeps its old state.

    With several processes (`world`), `model` is in DistributedDataParallel and trains `rows` of
    the window; the loss returned is the whole window's, the same on every process.
    """
    device = context.device
    model.train()
    local = window.rows(rows) if world.active else window
    with context.autocast():
        logits, state = model(local.inputs.to(device), state, local.resets.to(device))
    nats = token_nats(logits, local, device)
    if world.active:
        # Over the whole window's count, times the processes: DDP's average of the gradients
        # is then the gradient of the whole window's mean, as one process would compute it.
        count = max(int(window.loss_mask.sum()), 1)
        total = nats.sum()
        loss = total * (world.size / count)
    else:
        loss = nats.mean() if nats.numel() else logits.sum() * 0
    optimizer.zero_grad(set_to_none=True)
    with world.guard("averaging the gradients"):  # DDP's all-reduce runs inside backward
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if world.active:
        (whole,) = world.sum(float(total.detach()))
        loss = torch.tensor(whole / count)
    # The same on every process: the gradients (so their norm) are averaged, the loss summed.
    finite = bool(torch.isfinite(loss) and torch.isfinite(norm))
    if finite:
        optimizer.step()
    # Truncated BPTT: keep the state's values for the next window, drop its history.
    return loss.detach(), detach_state(state), finite


def make_optimizer(model: RecurrentLM, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=(0.9, 0.99),
    )


# --- the training loop -----------------------------------------------------------------------


class Trainer:
    """One training run. With `resume`, continues the run saved in `out` exactly.

    What it holds, by name: `progress` (step, epoch, stream position, counters: a
    `TrainingProgress`), `state` (the recurrent state carried from window to window, one row per
    stream), `context` (device and precision).
    """

    def __init__(
        self,
        documents: Sequence[Document],
        model_options: dict,
        config: TrainConfig,
        out: Path,
        on_event: Callable[[Event], None] | None = None,
        *,
        force: bool = False,
        resume: bool = False,
        world: World = SINGLE,
    ) -> None:
        self.created = time.perf_counter()  # --minutes counts from here: reading is included
        self.config = config
        self.out = Path(out)
        self.world = world  # this process among several (torchrun); SINGLE when alone
        quiet = lambda event: None  # noqa: E731
        self.emit = (on_event or quiet) if world.is_main else quiet
        self.documents = [d.name for d in documents]
        # Books given as text (from Python) are indexed for the copy guard from that text.
        texts = [getattr(d, "text", None) for d in documents]
        self.texts = texts if all(t is not None for t in texts) else None
        device = world.device if world.active else resolve_device(config.device)
        manifest = ckpt.read_manifest(self.out) if resume else None
        if manifest is None:
            ckpt.check_out(self.out, force)  # refuse early; nothing is removed until all is checked
        saved_tokenizer = ckpt.load_tokenizer(self.out, manifest) if manifest else None
        with world.main_first():  # rank 0 writes the token cache, the others then read it
            self.data = prepare_data(
                documents, config, saved_tokenizer, lambda *done: self.emit(Tokenizing(*done))
            )
        if manifest is not None:
            _check_same_books(manifest["corpus"], self.data.corpus)
        self.batcher = StreamBatcher(self.data.train, config.batch_size, config.bptt)
        self.val_batcher = StreamBatcher(self.data.val, config.val_batch_size, config.bptt)
        self.size_note = ""
        if manifest is None and config.auto_size:
            changes: dict = {}
            if world.is_main:  # measured once; every process builds the same model
                model_options, changes = self._size_for_budget(device, model_options)
            model_options, changes, self.size_note = world.broadcast(
                (model_options, changes, self.size_note)
            )
            if changes:  # a short run's batch size and learning rate
                config = self.config = dataclasses.replace(config, **changes)
                self.batcher = StreamBatcher(self.data.train, config.batch_size, config.bptt)
        batch = self.batcher.batch_size
        if batch % world.size:
            fewer = f" (the text only fills {batch} rows)" if batch < config.batch_size else ""
            raise BookgenError(
                f"--batch-size {batch}{fewer} does not divide among {world.size} training "
                f"processes: each owns an equal share of the rows; use a multiple of {world.size}"
            )
        self.rows = world.rows(batch)  # the batch rows (streams) this process trains
        torch.manual_seed(config.random_seed)
        model_config = ModelConfig(vocab_size=self.data.tokenizer.vocab_size, **model_options)
        self.model = RecurrentLM(model_config).to(device)
        self.optimizer = make_optimizer(self.model, config)
        choice = self._choose_precision(device, manifest, self.model) if world.is_main else None
        self.precision_choice: PrecisionChoice = world.broadcast(choice)
        self.context = RunContext(device, self.precision_choice.precision)
        self.progress = ckpt.TrainingProgress()
        self.local_batch = len(range(batch)[self.rows])
        self.state: State = self.model.init_state(self.local_batch, device)
        if manifest is not None:
            self.progress, state = ckpt.restore_training(
                self.out, manifest, self.model, self.optimizer, device
            )
            if state is not None:  # all B rows were saved; this process carries its own
                self.state = tuple(s[:, self.rows] for s in state)
            if world.is_main:
                ckpt.truncate_metrics(self.out, self.progress.step)
        else:
            if config.embeddings is not None:
                self._load_embeddings(config.embeddings)
            if world.is_main:
                ckpt.prepare_out(self.out)
        # What the training steps call: the model itself, or (several processes) the model in
        # DistributedDataParallel, which averages the gradients across processes in backward.
        self.network: torch.nn.Module = self.model
        if world.active:
            from torch.nn.parallel import DistributedDataParallel

            self.model.hold_rows(self.rows, batch)
            ids = [device.index] if device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)
        self.stop_signal: int | None = None
        self.bad_steps = 0

    def _choose_precision(
        self, device: torch.device, manifest: dict | None, model: RecurrentLM
    ) -> PrecisionChoice:
        """As asked; on resume, the saved run's; else measured on this machine (cached)."""
        if manifest is not None and self.config.precision == "auto":
            return PrecisionChoice.from_dict({**manifest["precision"], "how": "saved"})
        shape = {k: v for k, v in model.config.to_dict().items() if k != "dropout"}
        key = precision_cache_key(device, shape, self.batcher.batch_size, self.config.bptt)
        return choose_precision(
            self.config.precision,
            device,
            model.config.cell,
            self._probe_step(device, model),
            self.batcher.batch_size * self.config.bptt,
            key,
        )

    def _probe_step(self, device: torch.device, model: RecurrentLM) -> Callable[[str], None]:
        """A training step of a copy of the model, for timing: the run itself is untouched."""
        model = copy.deepcopy(model)
        optimizer = make_optimizer(model, self.config)
        window = next(self.batcher.windows())
        state = model.init_state(self.batcher.batch_size, device)

        def step(precision: str) -> None:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                context = RunContext(device, precision)
                train_step(model, optimizer, window, state, context, self.config.grad_clip)

        return step

    def _size_for_budget(self, device: torch.device, model_options: dict) -> tuple[dict, dict]:
        """The size this --minutes budget is best spent on, and the settings that suit it.

        Returns `model_options` with the size (and dropout) set, and the changes to the training
        settings (batch size, learning rate); see `budget.py`. Settings given by hand are kept.
        Each size considered is timed with real training steps of its model (the precision
        probe, cached per machine); building them leaves the run's random stream alone.
        """
        c = self.config
        if c.minutes is None or c.steps is not None or c.epochs is not None or c.level != "char":
            return model_options, {}
        # What is left of the budget once reading is done (the evaluations' share is small).
        seconds = max(c.minutes * 60 - (time.perf_counter() - self.created), 1.0)
        vocab_size = self.data.tokenizer.vocab_size

        def measure(layers: int, hidden_size: int) -> Measured:
            options = {**model_options, "layers": layers, "hidden_size": hidden_size}
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                model = RecurrentLM(ModelConfig(vocab_size, **options)).to(device)
            choice = self._choose_precision(device, None, model)
            rate = choice.tokens_per_s.get(choice.precision)
            if rate is None:  # the precision was not measured (asked for, or fp32 is all)
                rate = self._speed(device, model, choice.precision)
            weights = sum(p.numel() for p in model.parameters())
            return Measured(layers, hidden_size, weights, rate, choice.precision)

        chosen, timed = choose_size(measure, seconds)
        given = set(model_options) | set(c.given)
        text_tokens = len(self.data.train)
        settings = {
            k: v for k, v in settings_for(chosen, seconds, text_tokens).items() if k not in given
        }
        self.size_note = describe(chosen, timed, seconds, text_tokens, settings)
        sized = {"layers": chosen.layers, "hidden_size": chosen.hidden_size}
        model_options = {**model_options, **sized}
        if "dropout" in settings:
            model_options["dropout"] = settings.pop("dropout")
        return model_options, settings

    def _speed(self, device: torch.device, model: RecurrentLM, precision: str) -> float:
        """Training tokens/s of `model` in `precision` here, cached like the precision choice."""
        shape = {k: v for k, v in model.config.to_dict().items() if k != "dropout"}
        batch = self.batcher.batch_size
        key = precision_cache_key(device, shape, batch, self.config.bptt) + f" | {precision}"
        probe = self._probe_step(device, model)
        return measured_speed(device, probe, precision, batch * self.config.bptt, key)

    # The learning rate: a cosine decay over the budget, scaled by a linear warm-up over the
    # first steps. The product is continuous, even when the warm-up takes much of a short budget.
    # The decay follows the share of the budget used, so a resumed run with a larger budget
    # stretches the rest of the schedule (the rate steps back up), and a smaller one shortens it.
    def learning_rate(self, budget_used: float) -> float:
        c = self.config
        warmup = min(1.0, (self.progress.step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * min(budget_used, 1.0)))
        return c.learning_rate * warmup * (c.min_lr_ratio + (1 - c.min_lr_ratio) * decay)

    def budget_used(self, elapsed: float, reserve: float) -> float:
        """How much of the budget is used, 0..1: the largest of steps, epochs and time."""
        c, p = self.config, self.progress
        parts = [0.0]
        if c.steps is not None:
            parts.append(p.step / c.steps)
        if c.epochs is not None:
            parts.append(self.epoch / c.epochs)
        if c.minutes is not None:
            parts.append(elapsed / max(c.minutes * 60 - reserve, 1e-9))
        return max(parts)

    @property
    def epoch(self) -> float:
        """Epochs done, with the share of the current one."""
        return self.progress.epoch + self.progress.position / self.batcher.row_length

    def run(self) -> TrainResult:
        with _stop_on_signals(self):
            return self._run()

    def _run(self) -> TrainResult:
        c, p = self.config, self.progress
        self.emit(self._started())
        reserve = self._estimate_eval_seconds() * 1.3 + 1.0
        if c.minutes is not None:
            # On a busy machine the estimate can be wild; always leave half the time to train.
            reserve = min(reserve, c.minutes * 30)
        # The clock includes reading and tokenizing, so --minutes is the whole run's time.
        start = self.created - p.elapsed_s
        tokens_at_start, elapsed_at_start = p.tokens_seen, p.elapsed_s

        def tokens_per_s() -> float:  # this session's speed, not counting a resumed run's past
            return (p.tokens_seen - tokens_at_start) / max(p.elapsed_s - elapsed_at_start, 1e-9)

        while True:
            for window in self.batcher.windows(p.epoch, c.random_seed, p.position):
                used = self.budget_used(time.perf_counter() - start, reserve)
                if self.world.active:  # the slowest clock decides: one rate, one last step
                    (used,) = self.world.max(used)
                if used >= 1.0:
                    break
                lr = self.learning_rate(used)
                loss = self._step(window, lr)
                p.step += 1
                p.position = window.start + window.inputs.size(0)
                p.tokens_seen += window.inputs.numel()
                p.elapsed_s = time.perf_counter() - start
                if loss is not None:
                    p.loss_sum, p.loss_count = p.loss_sum + loss, p.loss_count + 1
                rate = tokens_per_s()
                used = self.budget_used(p.elapsed_s, reserve)
                self.emit(Stepped(p.step, self.epoch, loss, lr, rate, p.elapsed_s, used))
                if p.step % c.eval_every == 0:
                    self._evaluate_and_save(lr, rate)
                elif p.step % c.checkpoint_every == 0:
                    self._save(is_best=False)
                if self.world.active:  # a Ctrl-C or SIGTERM on any process stops them all
                    (signum,) = self.world.max(self.stop_signal or 0)
                    self.stop_signal = int(signum) or None
                if self.stop_signal is not None:
                    self._save(is_best=False)
                    raise TrainingInterrupted(self.stop_signal, self.out, p.step)
            else:
                # The epoch is over: rows jump back to the start of their streams, so the carried
                # state no longer matches the text and starts again from zero.
                p.epoch += 1
                p.position = 0
                self.state = self.model.init_state(self.local_batch, self.context.device)
                continue
            break
        if p.last_eval_step != p.step:
            self._evaluate_and_save(self.learning_rate(1.0), tokens_per_s())
        if self.world.is_main:
            self._index_for_copy_guard()
        self.world.barrier()  # rank 0 has written the last metrics
        metrics = ckpt.read_metrics(self.out)
        return TrainResult(self.out, p.step, p.best_val_loss, metrics)

    def _step(self, window: Window, lr: float) -> float | None:
        """One window forward and back. Returns the loss, or None if the step was skipped."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, state, applied = train_step(
            self.network,
            self.optimizer,
            window,
            self.state,
            self.context,
            self.config.grad_clip,
            self.world,
            self.rows,
        )
        if not applied:
            # A non-finite loss or gradient never reaches the weights, nor the carried state.
            self._bad_step(float(loss))
            return None
        if not _all_finite(self.model):
            # A finite loss and gradient can still overflow the weights in the update (AdamW's
            # decay at an absurd rate does). Nothing can come back from that: stop before it is
            # saved, so the last checkpoint stays good.
            step = self.progress.step + 1
            raise BookgenError(
                f"training diverged: the update of step {step} made the weights infinite or NaN "
                f"(its loss was {float(loss):g}); that step was not saved, and "
                f"{self._last_good()}. Try a lower --lr than {self.config.learning_rate:g}"
            )
        self.bad_steps = 0
        self.state = state
        return float(loss)

    def _bad_step(self, loss: float) -> None:
        self.bad_steps += 1
        step = self.progress.step + 1
        self.emit(Notice(f"step {step}: loss or gradient is {loss}, step skipped"))
        if self.bad_steps >= self.config.max_bad_steps:
            raise BookgenError(
                f"training diverged: the loss was not finite for {self.bad_steps} steps in a row "
                f"(up to step {step}); those steps never changed the weights, and "
                f"{self._last_good()}. Try a lower --lr than {self.config.learning_rate:g}"
            )

    def _last_good(self) -> str:
        if ckpt.has_checkpoint(self.out):
            return f"the last good checkpoint is in {self.out}"
        return "no checkpoint was saved yet"

    def _evaluate_and_save(self, lr: float, rate: float) -> None:
        p = self.progress
        # Each process scores a share of the validation rows; the sums add up to the whole.
        share = self.world.share(self.val_batcher.batch_size)
        sums = evaluate_sums(
            self.model, self.val_batcher, self.context, None, self._val_windows(), share
        )
        total, count = self.world.sum(*sums)
        val_loss = total / max(count, 1)
        is_best = p.best_val_loss is None or val_loss < p.best_val_loss
        p.last_eval_step = p.step
        if is_best:
            p.best_val_loss, p.best_step = val_loss, p.step
        record = {
            "step": p.step,
            "tokens": p.tokens_seen,
            "epoch": round(self.epoch, 6),
            "train_loss": p.loss_sum / p.loss_count if p.loss_count else None,
            "val_loss": val_loss,
            "val_bits_per_char": bits_per_char(val_loss, self.data.val),
            "lr": lr,
            "elapsed_s": round(p.elapsed_s, 3),
            "tokens_per_s": round(rate, 1),
        }
        if self.world.is_main:
            ckpt.append_metrics(self.out, record)
        p.loss_sum, p.loss_count = 0.0, 0
        self._save(is_best=is_best)
        if self.world.is_main:
            self.emit(Evaluated(record, self._preview(), is_best))

    def _preview(self) -> str:
        if self.config.preview_length <= 0:
            return ""
        was_training = self.model.training
        writer = TextGenerator(self.model.eval(), self.data.tokenizer, self.context)
        pieces = writer.generate("", self.config.preview_length, random_seed=self.progress.step)
        text = "".join(pieces)
        self.model.train(was_training)
        return text

    def _save(self, is_best: bool) -> None:
        state = self.world.gather_rows(self.state)  # all B rows, so any world size resumes
        if not self.world.is_main:
            return
        ckpt.save_checkpoint(
            self.out,
            model=self.model,
            tokenizer=self.data.tokenizer,
            train_config=asdict(self.config),
            corpus=self.data.corpus,
            progress=self.progress,
            precision=self.precision_choice.to_dict(),
            optimizer=self.optimizer,
            state=state,
            is_best=is_best,
            machine=self._machine(),
        )
        self.emit(Saved(self.out, self.progress.step))

    @functools.cached_property
    def _processor(self) -> str:
        return processor_name()  # read from /proc/cpuinfo: once, not at every save

    def _machine(self) -> dict:
        """Where this run trained, for `bookgen report` (a resumed run records where it ended)."""
        return {
            "processor": self._processor,
            "device": str(self.context.device),
            "threads": torch.get_num_threads(),
            "processes": self.world.size,
            "torch": torch.__version__,
            "size_note": self.size_note,
        }

    def _index_for_copy_guard(self) -> None:
        """Index the books for sampling's copy guard now, while they are surely at hand (one
        pass over the text; for another --max-copy, sampling builds its own)."""
        reason = guard.too_large(self.data.corpus)
        if reason is not None:
            self.emit(Notice(reason))
            return
        try:
            guard.save_index(
                self.out, self.data.corpus, self.data.tokenizer, SAMPLING.max_copy, self.texts
            )
        except BookgenError as error:  # the books moved during training: sampling will say
            self.emit(Notice(f"copy guard: no index built ({error})"))

    def _load_embeddings(self, path: str) -> None:
        from bookgen.embeddings import load_vectors

        coverage = load_vectors(
            path, self.data.tokenizer, self.model.config.embed_size, self.model.embedding.weight
        )
        self.emit(
            Notice(
                f"--embeddings: {coverage.found:,} of {coverage.total:,} vocabulary words "
                f"({coverage.fraction:.1%}) start from {path}; the rest start at random"
            )
        )

    def _val_windows(self) -> int:
        """How many validation windows an evaluation reads: all, up to `max_val_tokens`."""
        per_window = self.val_batcher.batch_size * self.config.bptt
        cap = max(1, self.config.max_val_tokens // per_window)
        return min(self.val_batcher.windows_per_epoch(), cap)

    def _estimate_eval_seconds(self) -> float:
        """Time one validation window to budget the evaluations that must fit in --minutes."""
        # One window only: a list of them all would hold the whole stream as int64 tensors.
        first = next(self.val_batcher.windows(), None)
        if first is None:
            return 0.0
        windows = range(self._val_windows())
        self.model.eval()
        state = self.model.init_state(self.val_batcher.batch_size, self.context.device)
        inputs = first.inputs.to(self.context.device)
        with torch.no_grad(), self.context.autocast():
            self.model(inputs, state)  # warm-up
            begin = time.perf_counter()
            self.model(inputs, state)
            self.context.synchronize()
            seconds = time.perf_counter() - begin
        self.model.train()
        # Plus the sample preview: one token per forward step.
        return seconds * len(windows) + 0.002 * self.config.preview_length

    def _started(self) -> Started:
        return Started(
            out=self.out,
            device=str(self.context.device),
            precision=self.context.precision,
            precision_note=self.precision_choice.describe(),
            parameters=self.model.parameter_count(),
            vocab_size=self.data.tokenizer.vocab_size,
            train_tokens=len(self.data.train),
            val_tokens=len(self.data.val),
            batch_size=self.batcher.batch_size,
            windows_per_epoch=self.batcher.windows_per_epoch(),
            documents=self.documents,
            size_note=self.size_note,
            resumed_at_step=self.progress.step,
        )


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """First SIGINT/SIGTERM: finish the step, save, stop. A second one stops at once.

    Stopping at once is safe too: every checkpoint file is replaced atomically.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt
        trainer.stop_signal = signum

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _all_finite(model: torch.nn.Module) -> bool:
    """Whether every weight is finite: one reduction, one device sync."""
    flags = torch.stack([p.detach().isfinite().all() for p in model.parameters()])
    return bool(flags.all())


def _check_same_books(saved: dict, now: dict) -> None:
    """--resume must continue on the same text: the stream positions refer to it."""
    before = [(d["name"], d["sha256"]) for d in saved.get("documents", [])]
    after = [(d["name"], d["sha256"]) for d in now["documents"]]
    if before != after:
        names = lambda docs: ", ".join(n for n, _ in docs)  # noqa: E731
        raise BookgenError(
            "--resume: the books differ from the saved run "
            f"(saved: {names(before)}; now: {names(after)}, or their text changed)"
        )
