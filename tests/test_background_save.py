"""Checkpoints written on a thread of their own (saving.py): a snapshot of the step, one write at
a time, landed before the run returns or stops, and a failed write one line."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
import time

import pytest
from typer.testing import CliRunner

import bookgen
from bookgen import checkpoint
from bookgen.checkpoint import read_manifest, read_metrics
from bookgen.cli import app
from bookgen.errors import BookgenError
from bookgen.events import Saved, Stepped, TrainingInterrupted
from tests.conftest import TINY_MODEL

RUN = dict(TINY_MODEL, dropout=0.1, random_seed=5, preview_length=0)
EXACT_FIELDS = ("step", "tokens", "epoch", "train_loss", "val_loss", "lr")


def slow_writes(monkeypatch, seconds: float) -> list[tuple[str, int]]:
    """Every checkpoint write takes `seconds` longer; returns a log of ("begin"/"end", step)."""
    real, log = checkpoint.write_checkpoint, []

    def write(folder, snapshot):
        log.append(("begin", snapshot.step))
        time.sleep(seconds)
        real(folder, snapshot)
        log.append(("end", snapshot.step))

    monkeypatch.setattr(checkpoint, "write_checkpoint", write)
    return log


def test_the_write_in_flight_lands_before_the_run_returns(tiny_book, tmp_path, monkeypatch):
    log = slow_writes(monkeypatch, 0.5)
    events = []
    out = tmp_path / "run"
    bookgen.train(tiny_book, out, steps=12, checkpoint_every=5, on_event=events.append, **RUN)
    assert read_manifest(out)["progress"]["step"] == 12
    # One write at a time, each begun after the one before ended; each reported once landed.
    assert log == [("begin", 5), ("end", 5), ("begin", 10), ("end", 10), ("begin", 12), ("end", 12)]
    assert [e.step for e in events if isinstance(e, Saved)] == [5, 10, 12]
    assert not [t for t in threading.enumerate() if t.name.startswith("bookgen-save")]


def test_a_signal_stops_once_the_write_has_landed(tiny_book, tmp_path, monkeypatch):
    slow_writes(monkeypatch, 0.5)
    out = tmp_path / "run"

    def interrupt_at_7(event):
        if isinstance(event, Stepped) and event.step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        bookgen.train(tiny_book, out, steps=50, on_event=interrupt_at_7, **RUN)
    assert read_manifest(out)["progress"]["step"] == 7


def test_a_write_is_of_the_step_it_was_taken_at(tiny_book, tmp_path, monkeypatch):
    """The save of step 20 is held back until step 25 is done, while training changes the
    weights, moments and state in place. Resumed from that save, the run is the straight one:
    the save held step 20's copies, not the live tensors."""
    straight, held = tmp_path / "straight", tmp_path / "held"
    run = dict(RUN, steps=30, eval_every=30, checkpoint_every=20)
    bookgen.train(tiny_book, straight, **run)

    step_25, real = threading.Event(), checkpoint.write_checkpoint

    def write(folder, snapshot):
        if snapshot.step == 20:
            assert step_25.wait(timeout=120)
            real(folder, snapshot)
            shutil.copytree(folder, tmp_path / "at-20")
        else:
            real(folder, snapshot)

    def hook(event):
        if isinstance(event, Stepped) and event.step == 25:
            step_25.set()

    monkeypatch.setattr(checkpoint, "write_checkpoint", write)
    bookgen.train(tiny_book, held, on_event=hook, **run)
    monkeypatch.setattr(checkpoint, "write_checkpoint", real)
    assert read_manifest(tmp_path / "at-20")["progress"]["step"] == 20
    bookgen.train(tiny_book, tmp_path / "at-20", resume=True)

    def exact(folder):
        return [{k: r[k] for k in EXACT_FIELDS} for r in read_metrics(folder)]

    assert exact(tmp_path / "at-20") == exact(straight) == exact(held)


def no_space_from_the_second_write(monkeypatch) -> None:
    real, writes = checkpoint.write_checkpoint, []

    def write(folder, snapshot):
        writes.append(snapshot.step)
        if len(writes) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(folder, snapshot)

    monkeypatch.setattr(checkpoint, "write_checkpoint", write)


def test_a_failed_write_stops_training_with_one_line(tiny_book, tmp_path, monkeypatch):
    no_space_from_the_second_write(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(BookgenError) as error:
        bookgen.train(tiny_book, out, steps=40, checkpoint_every=5, **RUN)
    assert str(error.value) == "the checkpoint of step 10 was not saved: No space left on device"
    assert read_manifest(out)["progress"]["step"] == 5  # the last good one


def test_a_failed_write_is_one_line_and_exit_2_from_the_cli(tiny_book, tmp_path, monkeypatch):
    no_space_from_the_second_write(monkeypatch)
    args = ["train", str(tiny_book), "--out", str(tmp_path / "run"), "--steps", "40"]
    args += ["--checkpoint-every", "5", "--hidden-size", "32", "--batch-size", "4"]
    args += ["--bptt", "16", "--precision", "fp32", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.exception
    assert result.stderr.splitlines() == [
        "error: the checkpoint of step 10 was not saved: No space left on device"
    ]
