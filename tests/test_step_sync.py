"""The training step never waits for the device, and reading its results later changes nothing.

On a GPU every `.item()`, `float(tensor)`, `bool(tensor)`, `.tolist()`, boolean-mask index or
`nonzero` of a device tensor makes the host wait until the device has run everything queued: at
~100 steps a second, nine such waits per step kept an H200 four-fifths idle (issue 25). A CPU
has no such wait to observe, so these tests follow where each tensor came from instead: the
window's reset and loss flags are the host's (it cuts the windows), and whatever is computed
from them alone is too; everything else lives on the device. A step that reads a device value
on the host is counted, whichever device it runs on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

import bookgen
from bookgen import scoring
from bookgen import trainer as training
from bookgen.checkpoint import read_manifest, read_metrics, read_tensors
from bookgen.errors import BookgenError
from bookgen.events import Notice, Stepped
from tests.conftest import TINY_BOOK, TINY_MODEL

aten = torch.ops.aten
# Ops whose result the host can only know by waiting for the device's values.
HOST_READS = {
    aten._local_scalar_dense.default,  # .item(), float(), int(), bool()
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.masked_select.default,
}


class DeviceReads(TorchDispatchMode):
    """Records each op that reads a device value on the host.

    `host` tensors (and all computed from host tensors only) may be read freely: they live on
    the host wherever the model runs."""

    def __init__(self) -> None:
        super().__init__()
        self.host = WeakTensorKeyDictionary()
        self.reads: list[str] = []

    def mark_host(self, *tensors: torch.Tensor) -> None:
        for tensor in tensors:
            self.host[tensor] = True

    def is_host(self, tensor: torch.Tensor) -> bool:
        return tensor in self.host

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_host = all(self.is_host(t) for t in inputs)
        bool_index = func in (aten.index.Tensor, aten.index_put_.default) and any(
            t.dtype == torch.bool for t in tree_leaves(args[1]) if isinstance(t, torch.Tensor)
        )
        if not on_host and (func in HOST_READS or bool_index):
            self.reads.append(str(func))
        out = func(*args, **(kwargs or {}))
        if on_host:
            self.mark_host(*[t for t in tree_leaves(out) if isinstance(t, torch.Tensor)])
        return out


@pytest.fixture
def two_books(tmp_path: Path) -> list[Path]:
    """Two books, so that windows cross from one into the next (a reset and a masked target)."""
    paths = []
    for index, text in enumerate((TINY_BOOK, TINY_BOOK[::-1])):
        path = tmp_path / f"book{index}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def watch_steps(monkeypatch, reads: DeviceReads, windows: list) -> None:
    """Run every training step (and the check of the weights after it) under `reads`."""
    step, finite = training.Trainer._step, training.weights_finite

    def watched_step(self, window, lr):
        windows.append(window)
        with reads:
            reads.mark_host(window.resets, window.loss_mask)
            return step(self, window, lr)

    def watched_finite(model):
        with reads:
            return finite(model)

    monkeypatch.setattr(training.Trainer, "_step", watched_step)
    monkeypatch.setattr(training, "weights_finite", watched_finite)


def test_the_counter_sees_a_host_read_and_lets_host_flags_pass():
    """The instrument itself: a read of a computed value is counted, one of a flag is not."""
    reads, weights = DeviceReads(), torch.ones(2)  # made before: a device tensor
    flags = torch.tensor([True, False])
    with reads:
        reads.mark_host(flags)
        computed = weights.sum() * 2
        assert bool(flags.any()) and torch.nonzero(flags).tolist() == [[0]]
        assert reads.reads == []
        float(computed)
        _ = computed.expand(2)[torch.tensor([True, False])]
    assert reads.reads == ["aten._local_scalar_dense.default", "aten.index.Tensor"]


def test_a_training_step_reads_nothing_back_from_the_device(
    two_books: list[Path], tmp_path: Path, monkeypatch
):
    """Forty steps over two books, with resets, masked targets and a skipped step among them:
    the steps themselves never wait for the device; the trainer reads their results at once,
    later."""
    monkeypatch.setattr(training, "read_back_steps", lambda device: 10)
    monkeypatch.setattr(training, "READ_BACK_SECONDS", math.inf)
    reads, windows = DeviceReads(), []
    watch_steps(monkeypatch, reads, windows)
    nats, calls = scoring.token_nats, [0]

    def one_bad_step(logits, window, device):
        calls[0] += 1
        values = nats(logits, window, device)
        return values * math.nan if calls[0] == 7 else values

    monkeypatch.setattr("bookgen.step.token_nats", one_bad_step)
    events: list = []
    bookgen.train(two_books, tmp_path / "run", steps=40, on_event=events.append, **TINY_MODEL)
    assert len(windows) == 40
    assert any(bool(w.resets.any()) for w in windows), "no window crossed into the next book"
    assert any(not bool(w.loss_mask.all()) for w in windows), "no target was left out"
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == ["step 7: loss or gradient is nan, step skipped"]
    assert reads.reads == []


def run_events(books, out: Path, monkeypatch, every: int, bad: set[int] = frozenset(), **options):
    """A run's events, its results read back every `every` steps; `bad` steps get a NaN loss."""
    monkeypatch.setattr(training, "read_back_steps", lambda device: every)
    monkeypatch.setattr(training, "READ_BACK_SECONDS", math.inf)
    nats, calls = scoring.token_nats, [0]

    def poisoned(logits, window, device):
        calls[0] += 1
        values = nats(logits, window, device)
        return values * math.nan if calls[0] in bad else values

    monkeypatch.setattr("bookgen.step.token_nats", poisoned)
    events: list = []
    try:
        bookgen.train(books, out, on_event=events.append, **options, **TINY_MODEL)
    except BookgenError as err:
        events.append(str(err))
    return events


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in records]


def saved(out: Path) -> dict[str, torch.Tensor]:
    files = read_manifest(out)["files"]
    return {**read_tensors(out, files["model"]), **read_tensors(out, files["train_state"])}


def test_reading_the_losses_later_changes_nothing(two_books: list[Path], tmp_path, monkeypatch):
    """Read back every step or every 7: the same losses, notices, metrics and saved bytes."""
    runs = {}
    for every in (1, 7):
        out = tmp_path / f"every-{every}"
        events = run_events(two_books, out, monkeypatch, every, {5, 6}, steps=30, eval_every=12)
        runs[every] = (events, saved(out), untimed(read_metrics(out)))
    (events_1, saved_1, metrics_1), (events_7, saved_7, metrics_7) = runs[1], runs[7]

    def losses(events):
        return [(e.step, e.loss) for e in events if isinstance(e, Stepped)]

    assert losses(events_1) == losses(events_7)
    assert [s for s, loss in losses(events_1) if loss is None] == [5, 6]
    notices = [e.message for e in events_7 if isinstance(e, Notice)]
    assert notices == [f"step {s}: loss or gradient is nan, step skipped" for s in (5, 6)]
    assert metrics_1 == metrics_7
    assert saved_1.keys() == saved_7.keys()
    assert all(torch.equal(saved_1[k], saved_7[k]) for k in saved_1)


def test_a_run_of_bad_steps_read_late_stops_before_anything_is_saved(
    two_books: list[Path], tmp_path: Path, monkeypatch
):
    """Steps 10–12 bad with a limit of 3, results read back every 8 steps, a save every 4: the
    save due at step 12 reads steps 9–12 first and the run stops there, naming step 12; the
    folder keeps step 8's save."""
    out = tmp_path / "run"
    events = run_events(
        two_books, out, monkeypatch, 8, {10, 11, 12}, steps=30, max_bad_steps=3,
        checkpoint_every=4,
    )  # fmt: skip
    assert events[-1].startswith("training diverged: the loss was not finite for 3 steps")
    assert "(up to step 12)" in events[-1] and "the last good checkpoint is in" in events[-1]
    assert read_manifest(out)["progress"]["step"] == 8
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == [f"step {s}: loss or gradient is nan, step skipped" for s in (10, 11, 12)]


def test_a_run_saved_before_the_fused_optimizer_resumes_with_it(
    tiny_book: Path, tmp_path: Path, monkeypatch
):
    """Saves from before the fused AdamW name `foreach`/`fused: null` in their optimizer groups;
    loading those as they are would turn the fused update off, and the device-side skip of a bad
    step with it. The resumed run updates with the fused AdamW, from the saved moments."""
    out = tmp_path / "run"
    bookgen.train(tiny_book, out, steps=4, **TINY_MODEL)
    manifest = json.loads((out / "checkpoint.json").read_text())
    for group in manifest["optimizer_groups"]:
        assert group["fused"] is True
        group["fused"], group["foreach"] = None, None  # as bookgen wrote them before
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    seen = {}
    opened = training.open_run

    def keep(*args, **kwargs):
        run = opened(*args, **kwargs)
        seen["groups"] = run.optimizer.param_groups
        seen["steps"] = [s["step"].clone() for s in run.optimizer.state.values()]
        return run

    monkeypatch.setattr(training, "open_run", keep)
    result = bookgen.train(tiny_book, out, resume=True, steps=6, **TINY_MODEL)
    assert [g["fused"] for g in seen["groups"]] == [True]
    assert [float(s) for s in seen["steps"]] == [4.0] * len(seen["steps"])
    assert result.steps == 6
