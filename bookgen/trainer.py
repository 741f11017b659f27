"""Stateful training: carry the hidden state across windows, detach it, reset it between books.

The trainer has no user interface. It reports what happens as events (`Started`, `Stepped`,
`Evaluated`, `Saved`, `Notice`) to an `on_event` callback: the CLI draws a progress display from
them, tests collect them in a list.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bookgen import checkpoint as ckpt
from bookgen.corpus import Document
from bookgen.errors import BookgenError
from bookgen.model import ModelConfig, RecurrentLM, State, detach_state
from bookgen.sampler import TextGenerator
from bookgen.streams import StreamBatcher, TokenStream, Window
from bookgen.tokenizer import CharTokenizer, Tokenizer

LN2 = math.log(2)
UNKNOWN_CHAR_BITS = 8.0


@dataclass(frozen=True)
class TrainConfig:
    level: str = "char"  # "char" or "word"
    vocab_size: int = 20000  # word level: the most frequent words kept (the rest are unknown)
    min_count: int = 1  # word level: words seen fewer times are unknown
    lowercase: bool = False  # word level
    embeddings: str | None = None  # word level: GloVe / word2vec text file to start from
    batch_size: int = 32  # B: number of parallel streams (batch rows)
    bptt: int = 64  # T: tokens per window; gradients flow back at most this far
    learning_rate: float = 5e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # the cosine decay ends at learning_rate * min_lr_ratio
    grad_clip: float = 1.0
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    eval_every: int = 250
    checkpoint_every: int = 200
    val_fraction: float = 0.1
    val_batch_size: int = 16
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32
    preview_length: int = 200
    max_bad_steps: int = 10  # consecutive non-finite steps before training stops

    def __post_init__(self) -> None:
        if self.level not in ("char", "word"):
            raise BookgenError(f"--level must be char or word, not {self.level!r}")
        if self.steps is None and self.epochs is None and self.minutes is None:
            raise BookgenError("give a training budget: --steps, --epochs or --minutes")
        for name in ("steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BookgenError(f"--{name} must be more than 0, not {value}")
        positive = ("batch_size", "bptt", "eval_every", "checkpoint_every", "val_batch_size")
        for name in (*positive, "vocab_size", "min_count", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise BookgenError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup_steps < 0:
            raise BookgenError(f"warmup_steps must be 0 or more, not {self.warmup_steps}")
        if not 0 < self.val_fraction < 1:
            raise BookgenError(f"--val-fraction must be in (0, 1), not {self.val_fraction}")
        if not self.learning_rate > 0:
            raise BookgenError(f"--lr must be more than 0, not {self.learning_rate}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BookgenError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise BookgenError(f"--precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.embeddings is not None and self.level != "word":
            raise BookgenError("--embeddings needs --level word")


# --- events ----------------------------------------------------------------------------------


@dataclass
class Started:
    out: Path
    device: str
    precision: str
    parameters: int
    vocab_size: int
    train_tokens: int
    val_tokens: int
    batch_size: int
    windows_per_epoch: int
    documents: list[str]
    resumed_at_step: int = 0


@dataclass
class Stepped:
    step: int
    epoch: float
    loss: float | None  # None: a non-finite step that was skipped
    lr: float
    tokens_per_s: float
    elapsed_s: float
    progress: float  # 0..1 of the budget


@dataclass
class Evaluated:
    metrics: dict  # the record written to metrics.jsonl
    preview: str
    best: bool


@dataclass
class Saved:
    path: Path
    step: int


@dataclass
class Notice:
    message: str


Event = Started | Stepped | Evaluated | Saved | Notice


@dataclass
class TrainResult:
    out: Path
    steps: int
    best_val_loss: float | None
    metrics: list[dict] = field(default_factory=list)


# --- data ------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train: TokenStream
    val: TokenStream
    corpus: dict  # recorded in the checkpoint: which books, their fingerprints


def split_document(text: str, val_fraction: float) -> tuple[str, str]:
    """The last `val_fraction` of a document's characters are held out (nanoGPT's split)."""
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def build_tokenizer(train_texts: Sequence[str], config: TrainConfig) -> Tokenizer:
    if config.level == "word":
        from bookgen.tokenizer import WordTokenizer

        return WordTokenizer.build(
            train_texts, config.vocab_size, config.min_count, config.lowercase
        )
    return CharTokenizer.build(train_texts)


def prepare_data(
    documents: Sequence[Document], config: TrainConfig, tokenizer: Tokenizer | None = None
) -> PreparedData:
    """Split each book, build the vocabulary from the training parts (unless given), encode."""
    splits = [split_document(d.text, config.val_fraction) for d in documents]
    train_texts = [t for t, _ in splits]
    val_texts = [v for _, v in splits if v]
    tokenizer = tokenizer or build_tokenizer(train_texts, config)
    train = TokenStream.from_documents(
        [tokenizer.encode(t) for t in train_texts], sum(map(len, train_texts))
    )
    if not val_texts or sum(map(len, val_texts)) < 2:
        raise BookgenError("the text is too short to hold out a validation part")
    val = TokenStream.from_documents(
        [tokenizer.encode(t) for t in val_texts],
        sum(map(len, val_texts)),
        sum(tokenizer.unknown_chars(t) for t in val_texts),
    )
    corpus = {
        "documents": [
            {
                "name": d.name,
                "chars": d.chars,
                "sha256": hashlib.sha256(d.text.encode("utf-8")).hexdigest(),
            }
            for d in documents
        ],
        "val_fraction": config.val_fraction,
    }
    return PreparedData(tokenizer, train, val, corpus)


# --- devices and precision -------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BookgenError("--device cuda: no CUDA GPU is available here (use --device cpu)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """bf16 autocast where the hardware runs it fast (recent GPUs, CPUs with AVX-512 bf16)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- evaluation ------------------------------------------------------------------------------


def token_nats(logits: torch.Tensor, window: Window, device: torch.device) -> torch.Tensor:
    """Nats of each target token (1-D), leaving out the first token of each new book."""
    nats = F.cross_entropy(
        logits.float().flatten(0, 1), window.targets.to(device).flatten(), reduction="none"
    )
    return nats[window.loss_mask.to(device).flatten()]


@torch.no_grad()
def evaluate(
    model: RecurrentLM,
    batcher: StreamBatcher,
    device: torch.device,
    precision: str,
    reset_every: int | None = None,
) -> float:
    """Mean nats per token over the whole stream, state carried from window to window.

    `reset_every` N zeroes the state every N tokens of each row, as a model that only ever sees
    N tokens of context would read the text: the gap to the carried-state loss is what the
    carried state is worth.
    """
    was_training = model.training
    model.eval()
    state = model.init_state(batcher.batch_size, device)
    total, count = 0.0, 0
    for window in batcher.windows():
        resets = window.resets
        if reset_every is not None:
            positions = torch.arange(window.start, window.start + resets.size(0))
            resets = resets | (positions % reset_every == 0).view(-1, 1)
        with autocast(device, precision):
            logits, state = model(window.inputs.to(device), state, resets.to(device))
        nats = token_nats(logits, window, device)
        total += float(nats.sum())
        count += nats.numel()
    model.train(was_training)
    return total / max(count, 1)


def bits_per_char(nats_per_token: float, stream: TokenStream) -> float:
    """Total bits over the text / characters: comparable across tokenizations.

    A model never pays for the spelling of a word it reads as unknown (a word model with a small
    vocabulary would look better than it is), so each character of an unknown piece is charged
    8 bits, as if spelled out in raw bytes: an upper bound that keeps the comparison honest.
    """
    bits = nats_per_token * len(stream) / LN2 + UNKNOWN_CHAR_BITS * stream.unknown_chars
    return bits / stream.chars


# --- the training loop -----------------------------------------------------------------------


class Trainer:
    """One training run. With `resume`, continues the run saved in `out` exactly."""

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
    ) -> None:
        self.created = time.perf_counter()
        self.config = config
        self.out = Path(out)
        self.emit = on_event or (lambda event: None)
        self.documents = [d.name for d in documents]
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        manifest = ckpt.read_manifest(self.out) if resume else None
        if manifest is None:
            _check_out(self.out, force)  # refuse early; nothing is removed until all is checked
        saved_tokenizer = ckpt.load_tokenizer(self.out, manifest) if manifest else None
        self.data = prepare_data(documents, config, saved_tokenizer)
        if manifest is not None:
            _check_same_books(manifest["corpus"], self.data.corpus)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        model_config = ModelConfig(vocab_size=self.data.tokenizer.vocab_size, **model_options)
        self.model = RecurrentLM(model_config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            betas=(0.9, 0.99),
        )
        self.batcher = StreamBatcher(self.data.train, config.batch_size, config.bptt)
        self.val_batcher = StreamBatcher(self.data.val, config.val_batch_size, config.bptt)
        self.state = ckpt.TrainingState()
        self.hidden: State = self.model.init_state(self.batcher.batch_size, self.device)
        if manifest is not None:
            self.state, hidden = ckpt.restore_training(
                self.out, manifest, self.model, self.optimizer, self.device
            )
            if hidden is not None:
                self.hidden = hidden
            ckpt.truncate_metrics(self.out, self.state.step)
        else:
            if config.embeddings is not None:
                self._load_embeddings(config.embeddings)
            _prepare_out(self.out)
        self.stop_signal: int | None = None
        self.bad_steps = 0

    # The learning rate: a cosine decay over the budget, scaled by a linear warm-up over the
    # first steps. The product is continuous, even when the warm-up takes much of a short budget.
    def learning_rate(self, progress: float) -> float:
        c = self.config
        warmup = min(1.0, (self.state.step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return c.learning_rate * warmup * (c.min_lr_ratio + (1 - c.min_lr_ratio) * decay)

    def progress(self, elapsed: float, reserve: float) -> float:
        """How much of the budget is used, 0..1: the largest of steps, epochs and time."""
        c, s = self.config, self.state
        parts = [0.0]
        if c.steps is not None:
            parts.append(s.step / c.steps)
        if c.epochs is not None:
            parts.append((s.epoch + s.position / self.batcher.row_length) / c.epochs)
        if c.minutes is not None:
            parts.append(elapsed / max(c.minutes * 60 - reserve, 1e-9))
        return max(parts)

    def run(self) -> TrainResult:
        with _stop_on_signals(self):
            return self._run()

    def _run(self) -> TrainResult:
        c, s = self.config, self.state
        self.emit(self._started())
        reserve = self._estimate_eval_seconds() * 1.3 + 1.0
        if c.minutes is not None:
            # On a busy machine the estimate can be wild; always leave half the time to train.
            reserve = min(reserve, c.minutes * 30)
        # The clock includes reading and tokenizing, so --minutes is the whole run's time.
        start = self.created - s.elapsed_s
        tokens_at_start, elapsed_at_start = s.tokens_seen, s.elapsed_s

        def tokens_per_s() -> float:  # this session's speed, not counting a resumed run's past
            return (s.tokens_seen - tokens_at_start) / max(s.elapsed_s - elapsed_at_start, 1e-9)

        while True:
            for window in self.batcher.windows(s.epoch, c.seed, s.position):
                progress = self.progress(time.perf_counter() - start, reserve)
                if progress >= 1.0:
                    break
                lr = self.learning_rate(progress)
                loss = self._step(window, lr)
                s.step += 1
                s.position = window.start + window.inputs.size(0)
                s.tokens_seen += window.inputs.numel()
                s.elapsed_s = time.perf_counter() - start
                if loss is not None:
                    s.loss_sum, s.loss_count = s.loss_sum + loss, s.loss_count + 1
                rate = tokens_per_s()
                progress = self.progress(s.elapsed_s, reserve)
                epoch = s.epoch + s.position / self.batcher.row_length
                self.emit(Stepped(s.step, epoch, loss, lr, rate, s.elapsed_s, progress))
                if s.step % c.eval_every == 0:
                    self._evaluate_and_save(lr, rate)
                elif s.step % c.checkpoint_every == 0:
                    self._save(is_best=False)
                if self.stop_signal is not None:
                    self._save(is_best=False)
                    raise TrainingInterrupted(self.stop_signal, self.out, s.step)
            else:
                # The epoch is over: rows jump back to the start of their streams, so the carried
                # state no longer matches the text and starts again from zero.
                s.epoch += 1
                s.position = 0
                self.hidden = self.model.init_state(self.batcher.batch_size, self.device)
                continue
            break
        if s.last_eval_step != s.step:
            self._evaluate_and_save(self.learning_rate(1.0), tokens_per_s())
        metrics = ckpt.read_metrics(self.out)
        return TrainResult(self.out, s.step, s.best_val_loss, metrics)

    def _step(self, window, lr: float) -> float | None:
        """One window forward and back. Returns the loss, or None if the step was skipped."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        inputs = window.inputs.to(self.device)
        with autocast(self.device, self.precision):
            logits, hidden = self.model(inputs, self.hidden, window.resets.to(self.device))
        nats = token_nats(logits, window, self.device)
        loss = nats.mean() if nats.numel() else logits.sum() * 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            # A non-finite loss or gradient never reaches the weights, nor the carried state.
            self._bad_step(float(loss.detach()))
            return None
        self.bad_steps = 0
        self.optimizer.step()
        # Truncated BPTT: keep the state's values for the next window, drop its history.
        self.hidden = detach_state(hidden)
        return float(loss.detach())

    def _bad_step(self, loss: float) -> None:
        self.bad_steps += 1
        step = self.state.step + 1
        self.emit(Notice(f"step {step}: loss or gradient is {loss}, step skipped"))
        if self.bad_steps >= self.config.max_bad_steps:
            saved = "no checkpoint was saved yet"
            if (self.out / ckpt.MANIFEST).exists():
                saved = f"the last good checkpoint is in {self.out}"
            raise BookgenError(
                f"training diverged: the loss was not finite for {self.bad_steps} steps in a row "
                f"(up to step {step}); those steps never changed the weights, and {saved}. "
                f"Try a lower --lr than {self.config.learning_rate:g}"
            )

    def _evaluate_and_save(self, lr: float, rate: float) -> None:
        s = self.state
        val_loss = evaluate(self.model, self.val_batcher, self.device, self.precision)
        val = self.data.val
        is_best = s.best_val_loss is None or val_loss < s.best_val_loss
        s.last_eval_step = s.step
        if is_best:
            s.best_val_loss, s.best_step = val_loss, s.step
        record = {
            "step": s.step,
            "tokens": s.tokens_seen,
            "epoch": round(s.epoch + s.position / self.batcher.row_length, 6),
            "train_loss": s.loss_sum / s.loss_count if s.loss_count else None,
            "val_loss": val_loss,
            "val_bits_per_char": bits_per_char(val_loss, val),
            "lr": lr,
            "elapsed_s": round(s.elapsed_s, 3),
            "tokens_per_s": round(rate, 1),
        }
        ckpt.append_metrics(self.out, record)
        s.loss_sum, s.loss_count = 0.0, 0
        self._save(is_best=is_best)
        self.emit(Evaluated(record, self._preview(), is_best))

    def _preview(self) -> str:
        if self.config.preview_length <= 0:
            return ""
        was_training = self.model.training
        writer = TextGenerator(self.model.eval(), self.data.tokenizer)
        pieces = writer.generate("", self.config.preview_length, random_seed=self.state.step)
        text = "".join(pieces)
        self.model.train(was_training)
        return text

    def _save(self, is_best: bool) -> None:
        self.state.python_rng = random.getstate()
        ckpt.save_checkpoint(
            self.out,
            model=self.model,
            tokenizer=self.data.tokenizer,
            train_config=asdict(self.config),
            corpus=self.data.corpus,
            state=self.state,
            optimizer=self.optimizer,
            hidden=self.hidden,
            is_best=is_best,
        )
        self.emit(Saved(self.out, self.state.step))

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

    def _estimate_eval_seconds(self) -> float:
        """Time one validation window to budget the evaluations that must fit in --minutes."""
        windows = list(self.val_batcher.windows())
        if not windows:
            return 0.0
        self.model.eval()
        state = self.model.init_state(self.val_batcher.batch_size, self.device)
        with torch.no_grad(), autocast(self.device, self.precision):
            self.model(windows[0].inputs.to(self.device), state)  # warm-up
            begin = time.perf_counter()
            self.model(windows[0].inputs.to(self.device), state)
            seconds = time.perf_counter() - begin
        self.model.train()
        # Plus the sample preview: one token per forward step.
        return seconds * len(windows) + 0.002 * self.config.preview_length

    def _started(self) -> Started:
        return Started(
            out=self.out,
            device=str(self.device),
            precision=self.precision,
            parameters=self.model.parameter_count(),
            vocab_size=self.data.tokenizer.vocab_size,
            train_tokens=len(self.data.train),
            val_tokens=len(self.data.val),
            batch_size=self.batcher.batch_size,
            windows_per_epoch=self.batcher.windows_per_epoch(),
            documents=self.documents,
            resumed_at_step=self.state.step,
        )


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM stopped training after the latest state was saved."""

    def __init__(self, signum: int, out: Path, step: int) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        super().__init__(f"{name}: stopped at step {step}; the latest state is saved in {out}")
        self.exit_code = 128 + signum
        self.out = out
        self.step = step


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


def _check_out(out: Path, force: bool) -> None:
    if (out / ckpt.MANIFEST).exists() and not force:
        raise BookgenError(
            f"{out} already holds a trained model; continue it with --resume, "
            "replace it with --force, or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise BookgenError(f"{out} exists and is not a folder")


def _prepare_out(out: Path) -> None:
    """Make `out` ready for a new run: only called once the run's settings have been checked.

    Files of an earlier run (replaced with --force, or left without a manifest by a run killed
    before its first save) are removed, so none of them is ever mistaken for this run's.
    """
    if out.is_dir():
        for name in (ckpt.MANIFEST, ckpt.TOKENIZER, ckpt.METRICS):
            (out / name).unlink(missing_ok=True)
        for pattern in ("model-*.safetensors", "train-*.safetensors"):
            for path in out.glob(pattern):
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BookgenError(f"cannot create {out}: {err.strerror or err}") from err
