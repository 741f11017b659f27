"""`bookgen.train`: the one call behind `bookgen train`, usable from Python."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bookgen.catalog import resolve_inputs
from bookgen.corpus import read_corpus
from bookgen.trainer import Event, TrainConfig, Trainer, TrainResult

DEFAULT_MINUTES = 10.0


def default_out(first_document_name: str) -> Path:
    return Path("checkpoints") / first_document_name


def train(
    corpus: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    cell: str = "lstm",
    layers: int = 1,
    hidden_size: int = 512,
    embed_size: int | None = None,
    dropout: float = 0.0,
    on_event: Callable[[Event], None] | None = None,
    force: bool = False,
    download: bool = True,
    download_progress: Callable[[int, int | None], None] | None = None,
    **train_options,
) -> TrainResult:
    """Train on books (files, folders, globs or catalogue names) and write a checkpoint folder.

    `train_options` are the fields of `TrainConfig` (steps, minutes, epochs, batch_size, bptt,
    learning_rate, seed, device, ...). With no budget given, training runs for 10 minutes.
    """
    paths = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    documents = read_corpus(
        resolve_inputs([str(p) for p in paths], download=download, progress=download_progress)
    )
    if not any(train_options.get(k) is not None for k in ("steps", "epochs", "minutes")):
        train_options["minutes"] = DEFAULT_MINUTES
    config = TrainConfig(**train_options)
    model_options = {
        "cell": cell,
        "layers": layers,
        "hidden_size": hidden_size,
        "embed_size": embed_size if embed_size is not None else hidden_size,
        "dropout": dropout,
    }
    out_path = Path(out) if out is not None else default_out(documents[0].name)
    return Trainer(documents, model_options, config, out_path, on_event, force).run()
