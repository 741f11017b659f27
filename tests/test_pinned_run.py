"""What a run computes, pinned: moving code around must not change it.

Two small runs with fixed random seeds (a character LSTM over two books with dropout, four
epochs; a word GRU with weight drop) were recorded in tests/data/pinned_runs.json: every
metrics.jsonl record, the sample previews written during training, and a sample after it. On
the machine they were recorded on (the processor's model, family and flags, which pick the
kernels, and torch's version), a run must reproduce them bit for bit. Elsewhere other kernels
round differently and the difference grows over 200 steps, so there the counters and learning
rates must still be exact and the losses agree within 1e-3, and the texts are not compared.
Both on one thread: two threads split some sums otherwise, and round differently. Both learn one
style (`style_by="none"`): their two books would otherwise be two styles, a model these pins
predate.

After a change that is meant to change what runs compute, record them again:

    BOOKGEN_RECORD_PINNED=1 .venv/bin/python -m pytest tests/test_pinned_run.py -p no:randomly
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import bookgen
from bookgen.context import machine_name
from bookgen.events import Evaluated
from tests.conftest import TINY_BOOK, TINY_MODEL

PINNED = Path(__file__).parent / "data" / "pinned_runs.json"
EXACT = ("step", "tokens", "epoch", "lr")
LOSSES = ("train_loss", "val_loss", "val_bits_per_char")

SECOND_BOOK = (
    "There were a king with a large jaw and a queen with a plain face, on the throne of "
    "England; there were a king with a large jaw and a queen with a fair face, on the throne "
    "of France.\n\n"
) * 6

RUNS = {
    "char-lstm": dict(
        TINY_MODEL, steps=200, eval_every=50, checkpoint_every=100, dropout=0.1, random_seed=7,
        preview_length=60, style_by="none",
    ),
    "word-gru": dict(
        TINY_MODEL, level="word", cell="gru", steps=100, eval_every=50, dropout=0.1,
        weight_drop=0.2, random_seed=11, preview_length=20, style_by="none",
    ),
}  # fmt: skip


def this_machine() -> str:
    """The processor as exactly as can be told (its flags pick the kernels), and torch."""
    return f"{machine_name(torch.device('cpu'))}, torch {torch.__version__}"


def run(name: str, folder: Path) -> dict:
    """One pinned run, and what it computed."""
    books = []
    for index, text in enumerate((TINY_BOOK, SECOND_BOOK)):
        books.append(folder / f"book{index}.txt")
        books[-1].write_text(text, encoding="utf-8")
    events: list = []
    result = bookgen.train(books, folder / name, on_event=events.append, **RUNS[name])
    writer = bookgen.load(folder / name)
    sample = "".join(writer.generate("It was", length=80, temperature=0.8, random_seed=3))
    return {
        "metrics": [{k: r[k] for k in EXACT + LOSSES} for r in result.metrics],
        "previews": [e.preview for e in events if isinstance(e, Evaluated)],
        "sample": sample,
    }


@pytest.mark.parametrize("name", list(RUNS))
def test_a_run_computes_what_it_computed_when_pinned(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        now = run(name, tmp_path)
    finally:
        torch.set_num_threads(threads)
    if os.environ.get("BOOKGEN_RECORD_PINNED"):
        pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {"runs": {}}
        pinned["machine"] = this_machine()
        pinned["runs"][name] = now
        PINNED.parent.mkdir(exist_ok=True)
        PINNED.write_text(json.dumps(pinned, indent=1, ensure_ascii=False) + "\n")
        pytest.skip(f"recorded {name} in {PINNED}")
    pinned = json.loads(PINNED.read_text())
    then = pinned["runs"][name]
    if this_machine() == pinned["machine"]:
        assert now == then
        return
    exact = lambda records: [{k: r[k] for k in EXACT} for r in records]  # noqa: E731
    assert exact(now["metrics"]) == exact(then["metrics"])
    for record, old in zip(now["metrics"], then["metrics"], strict=True):
        for key in LOSSES:
            assert record[key] == pytest.approx(old[key], rel=1e-3), (record["step"], key)
