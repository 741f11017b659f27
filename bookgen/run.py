"""Opening a training run: a fresh one, or one resumed from its folder. Two plain branches.

    fresh:    check the folder -> prepare the books -> size the model for a --minutes budget
              -> styles -> batcher -> model, optimizer -> precision -> embeddings -> empty the
              folder
    resumed:  read the manifest -> prepare the books with its tokenizer -> the same books and
              styles? -> batcher -> model, optimizer -> precision -> weights, optimizer, RNG,
              state

Styles: each book's label (`--style-by`: its file's name, its folder's, or none) is numbered in
order of first appearance; with two or more, the model learns each (ModelConfig.styles), every
window carries its tokens' styles, and the checkpoint's corpus record lists the styles and their
shares of the training text. With fewer than two the run is as before styles.

Both end in a `Run`: everything the training loop needs, where the run stands. Nothing in the
folder is removed until every setting has been checked. With several processes, the first
measures (precision, size) and tells the others, so that every process builds the same model.

With N processes, --batch-size B is each process's: a fresh run trains B x N streams, and
`Run.config.batch_size` (what the checkpoint records) is that whole batch. A resumed run keeps
the saved whole batch, whatever the number of processes now, and each trains its share.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bookgen import checkpoint as ckpt
from bookgen.context import PrecisionChoice, RunContext, resolve_device
from bookgen.corpus import BookFile, Document, number_styles, style_labels
from bookgen.data import PreparedData, prepare_data
from bookgen.distributed import World
from bookgen.errors import BookgenError
from bookgen.events import Event, Notice, Started, Tokenizing
from bookgen.model import ModelConfig, RecurrentLM, State
from bookgen.settings import TrainConfig
from bookgen.sizing import run_precision, size_for_budget
from bookgen.step import make_optimizer
from bookgen.streams import StreamBatcher, TokenStream
from bookgen.tokenizer import Tokenizer

Books = Sequence[BookFile | Document]  # files not read yet (bookgen.train), or texts (Python)


@dataclass(frozen=True)
class Styles:
    """The styles a run learns: their names in id order, and each book's style id."""

    names: list[str]
    of_books: list[int]

    @classmethod
    def of(cls, labels: Sequence[str]) -> Styles:
        return cls(*number_styles(labels))

    @property
    def count(self) -> int:
        """ModelConfig.styles: 0 (one style, a model as before) with fewer than two."""
        return len(self.names) if len(self.names) > 1 else 0

    def of_documents(self, stream: TokenStream) -> np.ndarray | None:
        """(D,) int64: the style of each document of `stream`; None with one style."""
        return stream.document_styles(self.of_books) if self.count else None

    def record(self, corpus: dict, style_by: str, train: TokenStream) -> dict:
        """The corpus record with the styles: their names and shares of the training tokens
        (`styles`, [] with one style), how they were labelled, and each book's label."""
        corpus = {**corpus, "style_by": str(style_by), "styles": []}
        if not self.count:
            return corpus
        tokens = train.style_tokens(self.count, self.of_documents(train))
        total = max(sum(tokens), 1)
        corpus["styles"] = [
            {"name": name, "share": round(count / total, 6)}
            for name, count in zip(self.names, tokens, strict=True)
        ]
        corpus["documents"] = [
            {**document, "style": self.names[style]}
            for document, style in zip(corpus["documents"], self.of_books, strict=True)
        ]
        return corpus


@dataclass
class Run:
    """A run ready to train, and where it stands."""

    config: TrainConfig  # as trained: the whole batch (all processes'), a budget's rate
    data: PreparedData
    batcher: StreamBatcher
    model: RecurrentLM
    network: torch.nn.Module  # what steps call: the model, or the model in DDP (processes)
    optimizer: torch.optim.Optimizer
    context: RunContext
    precision: PrecisionChoice  # the context's precision, how it was chosen, the speeds
    progress: ckpt.TrainingProgress
    state: State  # carried from window to window: (layers, rows of this process, hidden) each
    styles: Styles
    size_note: str = ""  # how the size was chosen for the budget ("" when given)

    def started(self, out: Path, books: list[str]) -> Started:
        """The event a run begins with: what it trains, where, from which step."""
        return Started(
            out=out,
            device=str(self.context.device),
            precision=self.context.precision,
            precision_note=self.precision.describe(),
            parameters=self.model.parameter_count(),
            vocab_size=self.data.tokenizer.vocab_size,
            train_tokens=len(self.data.train),
            val_tokens=len(self.data.val),
            batch_size=self.batcher.batch_size,
            windows_per_epoch=self.batcher.windows_per_epoch(),
            documents=books,
            size_note=self.size_note,
            resumed_at_step=self.progress.step,
        )


def open_run(
    books: Books,
    model_options: dict,
    config: TrainConfig,
    out: Path,
    world: World,
    emit: Callable[[Event], None],
    *,
    started: float,
    resume: bool = False,
    force: bool = False,
    labels: Sequence[str] | None = None,
) -> Run:
    """The run saved in `out` when `resume`, else a fresh one (`force`: over a saved one).

    `started` is the run's perf_counter at its start: sizing for --minutes counts from there.
    `labels`: each book's style label; None: as `config.style_by` takes them from the books.
    """
    device = world.device if world.active else resolve_device(config.device)
    styles = Styles.of(labels if labels is not None else style_labels(books, config.style_by))
    if resume:
        return _resumed(books, model_options, config, out, world, emit, device, styles)
    return _fresh(books, model_options, config, out, world, emit, device, started, force, styles)


def _fresh(
    books: Books,
    model_options: dict,
    config: TrainConfig,
    out: Path,
    world: World,
    emit: Callable[[Event], None],
    device: torch.device,
    started: float,
    force: bool,
    styles: Styles,
) -> Run:
    ckpt.check_out(out, force)  # refuse early; nothing is removed until all is checked
    data = _prepare(books, config, None, world, emit)
    data.corpus = styles.record(data.corpus, config.style_by, data.train)
    size_note = ""
    if config.auto_size:
        sized = None
        if world.is_main:  # measured once; every process builds the same model
            vocab_size = data.tokenizer.vocab_size
            sized = size_for_budget(
                config, model_options, data.train, vocab_size, device, started, world.size
            )
        model_options, changes, size_note = world.broadcast(sized)
        config = dataclasses.replace(config, **changes)  # a short run's batch size and rate
    # --batch-size is per process (sizing measured one process): the run's rows are N times it.
    config = dataclasses.replace(config, batch_size=config.batch_size * world.size)
    model_options = {**model_options, "styles": styles.count}  # from the books, as vocab_size
    batcher = _batcher(data, config, world, device, styles)
    model, optimizer = _build(model_options, config, data, device)
    choice = run_precision(config, device, model, batcher) if world.is_main else None
    precision: PrecisionChoice = world.broadcast(choice)
    if config.embeddings is not None:
        _load_embeddings(model, data, config.embeddings, emit)
    if world.is_main:
        ckpt.prepare_out(out)
    return Run(
        config=config,
        data=data,
        batcher=batcher,
        model=model,
        network=_network(model, batcher, world, device),
        optimizer=optimizer,
        context=RunContext(device, precision.precision),
        precision=precision,
        progress=ckpt.TrainingProgress(),
        state=first_state(model, batcher, world, device),
        styles=styles,
        size_note=size_note,
    )


def _resumed(
    books: Books,
    model_options: dict,
    config: TrainConfig,
    out: Path,
    world: World,
    emit: Callable[[Event], None],
    device: torch.device,
    styles: Styles,
) -> Run:
    _check_rows_divide(config.batch_size, world)  # the saved run's whole batch
    manifest = ckpt.read_manifest(out)
    _check_same_save(out, world)
    ckpt.check_weights(out, manifest, "model")  # before a model of the manifest's size is built
    data = _prepare(books, config, ckpt.load_tokenizer(out, manifest), world, emit)
    data.corpus = styles.record(data.corpus, config.style_by, data.train)
    _check_same_books(manifest["corpus"], data.corpus)
    _check_same_styles(manifest["corpus"], data.corpus, manifest["model_config"])
    model_options = {**model_options, "styles": styles.count}  # the saved count, checked
    batcher = _batcher(data, config, world, device, styles)
    model, optimizer = _build(model_options, config, data, device)
    saved = manifest["precision"]
    choice = run_precision(config, device, model, batcher, saved) if world.is_main else None
    precision: PrecisionChoice = world.broadcast(choice)
    progress, state = ckpt.restore_training(out, manifest, model, optimizer, device)
    if state is None:  # saved before the first step
        state = first_state(model, batcher, world, device)
    else:  # all B rows were saved; this process carries its own
        state = tuple(s[:, world.rows(batcher.batch_size)] for s in state)
    if world.is_main:
        ckpt.truncate_metrics(out, progress.step)
    return Run(
        config=config,
        data=data,
        batcher=batcher,
        model=model,
        network=_network(model, batcher, world, device),
        optimizer=optimizer,
        context=RunContext(device, precision.precision),
        precision=precision,
        progress=progress,
        state=state,
        styles=styles,
    )


def _prepare(
    books: Books,
    config: TrainConfig,
    tokenizer: Tokenizer | None,
    world: World,
    emit: Callable[[Event], None],
) -> PreparedData:
    with world.main_first():  # rank 0 writes the token cache, the others then read it
        return prepare_data(books, config, tokenizer, lambda *done: emit(Tokenizing(*done)))


def _batcher(
    data: PreparedData, config: TrainConfig, world: World, device: torch.device, styles: Styles
) -> StreamBatcher:
    """The training stream in batch rows (all processes'), refused if a short text fills too
    few rows to divide among the processes. On a GPU the rows live there (`keep_on`)."""
    document_styles = styles.of_documents(data.train)
    batcher = StreamBatcher(data.train, config.batch_size, config.bptt, document_styles)
    batch = batcher.batch_size
    if batch % world.size:
        raise BookgenError(
            f"the text only fills {batch} streams, which do not divide among {world.size} "
            f"training processes: use a --batch-size of at most {batch // world.size}"
        )
    if device.type != "cpu":
        batcher.keep_on(device)
    return batcher


def _check_rows_divide(batch: int, world: World) -> None:
    """A resumed run's rows (the saved run's whole batch) must divide among the processes."""
    if batch % world.size:
        raise BookgenError(
            f"--resume: the saved run trains {batch} streams, which do not divide among "
            f"{world.size} training processes: resume it on a number of processes that divides "
            f"{batch}"
        )


def _check_same_save(out: Path, world: World) -> None:
    """Every process must read the very save rank 0 reads: with several machines, --out is one
    folder they all share. A stale copy on one machine would silently train another model."""
    if not world.active:
        return
    try:
        mine = hashlib.sha256((out / ckpt.MANIFEST).read_bytes()).hexdigest()
    except OSError:
        mine = None
    seen = world.gather_objects(mine)
    others = [rank for rank, digest in enumerate(seen) if digest != seen[0]]
    if others:
        names = ", ".join(str(rank) for rank in others)
        raise BookgenError(
            f"--resume: training process {names} of {world.size} does not find in {out} the "
            f"save process 0 reads there: on several machines, --out must be one folder they "
            f"all share (the same path on each)"
        )


def first_state(
    model: RecurrentLM, batcher: StreamBatcher, world: World, device: torch.device
) -> State:
    """The state this process's rows start an epoch from: zeros, or with learned styles the
    start of each row's first token's style (not detached: the epoch's first window teaches
    the starts as a reset inside a window does; `step.carried` detaches what carries on)."""
    styles = batcher.first_styles()
    if styles is not None:
        styles = styles[world.rows(batcher.batch_size)].to(device)
    return model.init_state(_own_rows(batcher, world), device, style=styles)


def _own_rows(batcher: StreamBatcher, world: World) -> int:
    """How many batch rows (streams) this process trains."""
    return len(range(batcher.batch_size)[world.rows(batcher.batch_size)])


def _build(
    model_options: dict, config: TrainConfig, data: PreparedData, device: torch.device
) -> tuple[RecurrentLM, torch.optim.Optimizer]:
    """The model, from the run's random seed, and its optimizer."""
    torch.manual_seed(config.random_seed)
    model_config = ModelConfig(vocab_size=data.tokenizer.vocab_size, **model_options)
    model = RecurrentLM(model_config).to(device)
    return model, make_optimizer(model, config)


def _network(
    model: RecurrentLM, batcher: StreamBatcher, world: World, device: torch.device
) -> torch.nn.Module:
    """What the training steps call: the model itself, or (several processes) the model in
    DistributedDataParallel, which averages the gradients across processes in backward."""
    if not world.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    model.hold_rows(world.rows(batcher.batch_size), batcher.batch_size)
    ids = [device.index] if device.type == "cuda" else None
    with world.collective("starting DistributedDataParallel"):  # it broadcasts rank 0's weights
        # A learned start gets a gradient only in windows where a row resets (or an epoch
        # begins): in the others DDP must not wait for it.
        unused = model.style_starts is not None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def _load_embeddings(
    model: RecurrentLM, data: PreparedData, path: str, emit: Callable[[Event], None]
) -> None:
    from bookgen.embeddings import load_vectors

    coverage = load_vectors(path, data.tokenizer, model.config.embed_size, model.embedding.weight)
    emit(
        Notice(
            f"--embeddings: {coverage.found:,} of {coverage.total:,} vocabulary words "
            f"({coverage.fraction:.1%}) start from {path}; the rest start at random"
        )
    )


def _check_same_styles(saved: dict, now: dict, model_config: dict) -> None:
    """--resume must keep each book's style: the model learned them by their ids."""
    before = [d.get("style") for d in saved.get("documents", [])]
    after = [d.get("style") for d in now["documents"]]
    if before != after or model_config.get("styles", 0) != len(now["styles"]):
        show = lambda labels: ", ".join(str(label) for label in labels)  # noqa: E731
        raise BookgenError(
            f"--resume: the books' styles differ from the saved run's (saved: {show(before)}; "
            f"now: {show(after)}): keep each book where it was, or train a new model"
        )


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
