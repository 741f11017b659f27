"""Opening a training run: a fresh one, or one resumed from its folder. Two plain branches.

    fresh:    check the folder -> prepare the books -> size the model for a --minutes budget
              -> batcher -> model, optimizer -> precision -> embeddings -> empty the folder
    resumed:  read the manifest -> prepare the books with its tokenizer -> the same books?
              -> batcher -> model, optimizer -> precision -> weights, optimizer, RNG, state

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

import torch

from bookgen import checkpoint as ckpt
from bookgen.context import PrecisionChoice, RunContext, resolve_device
from bookgen.corpus import BookFile, Document
from bookgen.data import PreparedData, prepare_data
from bookgen.distributed import World
from bookgen.errors import BookgenError
from bookgen.events import Event, Notice, Started, Tokenizing
from bookgen.model import ModelConfig, RecurrentLM, State
from bookgen.settings import TrainConfig
from bookgen.sizing import run_precision, size_for_budget
from bookgen.step import make_optimizer
from bookgen.streams import StreamBatcher
from bookgen.tokenizer import Tokenizer

Books = Sequence[BookFile | Document]  # files not read yet (bookgen.train), or texts (Python)


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
) -> Run:
    """The run saved in `out` when `resume`, else a fresh one (`force`: over a saved one).

    `started` is the run's perf_counter at its start: sizing for --minutes counts from there.
    """
    device = world.device if world.active else resolve_device(config.device)
    if resume:
        return _resumed(books, model_options, config, out, world, emit, device)
    return _fresh(books, model_options, config, out, world, emit, device, started, force)


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
) -> Run:
    ckpt.check_out(out, force)  # refuse early; nothing is removed until all is checked
    data = _prepare(books, config, None, world, emit)
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
    batcher = _batcher(data, config, world, device)
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
        state=model.init_state(_own_rows(batcher, world), device),
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
) -> Run:
    _check_rows_divide(config.batch_size, world)  # the saved run's whole batch
    manifest = ckpt.read_manifest(out)
    _check_same_save(out, world)
    ckpt.check_weights(out, manifest, "model")  # before a model of the manifest's size is built
    data = _prepare(books, config, ckpt.load_tokenizer(out, manifest), world, emit)
    _check_same_books(manifest["corpus"], data.corpus)
    batcher = _batcher(data, config, world, device)
    model, optimizer = _build(model_options, config, data, device)
    saved = manifest["precision"]
    choice = run_precision(config, device, model, batcher, saved) if world.is_main else None
    precision: PrecisionChoice = world.broadcast(choice)
    progress, state = ckpt.restore_training(out, manifest, model, optimizer, device)
    if state is None:  # saved before the first step
        state = model.init_state(_own_rows(batcher, world), device)
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
    data: PreparedData, config: TrainConfig, world: World, device: torch.device
) -> StreamBatcher:
    """The training stream in batch rows (all processes'), refused if a short text fills too
    few rows to divide among the processes. On a GPU the rows live there (`keep_on`)."""
    batcher = StreamBatcher(data.train, config.batch_size, config.bptt)
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
        return DistributedDataParallel(model, device_ids=ids)


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
