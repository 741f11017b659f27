"""`bookgen.train`: the one call behind `bookgen train`, usable from Python."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from bookgen import checkpoint as ckpt
from bookgen import distributed
from bookgen.catalog import is_corpus_name, resolve_inputs
from bookgen.corpus import Reading, open_corpus, style_labels
from bookgen.errors import BookgenError
from bookgen.events import Event, TrainResult
from bookgen.settings import DEFAULT_MINUTES, ModelConfig, TrainConfig
from bookgen.trainer import Trainer

# vocab_size comes from the tokenizer, styles from the books' labels (`style_by`): not options.
MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size", "styles"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
BUDGET = {"steps", "epochs", "minutes"}
# What a resumed run may change: how long it runs and where, not what it learns from.
MAY_CHANGE_ON_RESUME = BUDGET | {
    "device",
    "precision",
    "eval_every",
    "checkpoint_every",
    "preview_length",
}


def default_out(first_document_name: str) -> Path:
    return Path("checkpoints") / first_document_name


def train(
    corpus: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    on_event: Callable[[Event], None] | None = None,
    download: bool = True,
    download_progress: Callable[[int, int | None], None] | None = None,
    encoding: str | None = None,
    keep_markup: bool = False,
    **options: Any,
) -> TrainResult:
    """Train on books (files, folders, globs or catalogue names) into a checkpoint folder.

    `options` are fields of `ModelConfig` (cell, layers, hidden_size, embed_size, dropout,
    style_design) and of `TrainConfig` (steps, minutes, epochs, level, batch_size, bptt,
    learning_rate, random_seed, device, style_by, ...); None or absent means the default, or with
    `resume` the saved run's value. The styles the model learns come from the books (`style_by`:
    each file, each folder, or none), as the vocabulary does. With no
    budget at all, training runs for `settings.DEFAULT_MINUTES` (10). `encoding` forces how
    the books are decoded (default: detected, book by book); `keep_markup` keeps Aozora Bunko's.
    """
    unknown = set(options) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise TypeError(f"bookgen.train() got unknown options: {', '.join(sorted(unknown))}")
    options = {k: v for k, v in options.items() if v is not None}
    reading = Reading(encoding, keep_markup)  # a wrong name is said before a book is downloaded
    paths = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    inputs = resolve_inputs([str(p) for p in paths], download=download, progress=download_progress)
    # read later, in chunks, unless the token cache has them
    documents = open_corpus(inputs, reading)
    named = [path for arg, path in zip(paths, inputs, strict=True) if is_corpus_name(str(arg))]
    out_path = Path(out) if out is not None else default_out(documents[0].name)
    if resume:
        model_options, train_options = _resumed_options(out_path, options)
    else:
        model_options, train_options = _fresh_options(options)
    config = TrainConfig(**train_options)
    labels = style_labels(documents, config.style_by, own_style=named)  # a catalogue book: its own
    # Started by torchrun: join the other processes (gloo on the CPU, NCCL on GPUs).
    world = distributed.join(config.device)
    trainer = None
    try:
        trainer = Trainer(
            documents,
            model_options,
            config,
            out_path,
            on_event,
            force=force,
            resume=resume,
            world=world,
            labels=labels,
        )
        return trainer.run()
    finally:
        # DistributedDataParallel's reducer holds work of the process group: it goes first, so
        # that no gloo work outlives the group (a rank once aborted at exit, "terminate called
        # without an active exception", in 1 of about 10 runs of the 2-process tests).
        trainer = None
        distributed.leave(world)


def _fresh_options(options: dict) -> tuple[dict, dict]:
    """The settings of a new run: those given, the rest the configs' defaults."""
    model_options = {k: v for k, v in options.items() if k in MODEL_FIELDS}
    train_options = {k: v for k, v in options.items() if k in TRAIN_FIELDS}
    if not BUDGET & set(train_options):
        train_options["minutes"] = DEFAULT_MINUTES
    # No size given: a --minutes budget gets the model it buys on this machine, and the
    # settings that suit it, except those given (budget.py).
    size_given = {"layers", "hidden_size", "embed_size"} & set(model_options)
    train_options.setdefault("auto_size", not size_given)
    train_options.setdefault("given", tuple(sorted(set(options))))
    return model_options, train_options


def _resumed_options(out: Path, options: dict) -> tuple[dict, dict]:
    """The saved run's settings, with the changes a resumed run may make."""
    if not ckpt.has_checkpoint(out):
        raise BookgenError(f"--resume: {out} holds no saved run to continue")
    manifest = ckpt.read_manifest(out)
    saved_model = {k: v for k, v in manifest["model_config"].items() if k in MODEL_FIELDS}
    saved_train = {k: v for k, v in manifest["train_config"].items() if k in TRAIN_FIELDS}
    saved_train.setdefault("style_by", "none")  # a run saved before styles learned one
    saved = {**saved_model, **saved_train}
    conflicts = [
        f"{name} is {saved.get(name)!r} in the saved run, {value!r} now"
        for name, value in options.items()
        if name not in MAY_CHANGE_ON_RESUME and saved.get(name) != value
    ]
    if conflicts:
        raise BookgenError(
            f"--resume: settings differ from the run saved in {out}: {'; '.join(conflicts)}"
        )
    train_options = {**saved_train, **{k: v for k, v in options.items() if k in TRAIN_FIELDS}}
    if BUDGET & set(options):  # a new budget replaces the saved one whole
        for name in BUDGET - set(options):
            train_options[name] = None
    return saved_model, train_options
