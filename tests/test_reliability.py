"""Exact resume, crash safety, signals, divergence and hostile input."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bookgen
from bookgen.checkpoint import MANIFEST, load_checkpoint, read_manifest, read_metrics
from bookgen.corpus import clean_text, decode_bytes
from bookgen.errors import BookgenError
from bookgen.tokenizer import CharTokenizer
from bookgen.trainer import Stepped, TrainingInterrupted
from tests.conftest import TINY_MODEL

RESUME_RUN = dict(TINY_MODEL, steps=60, eval_every=20, dropout=0.1, seed=5)
EXACT_FIELDS = ("step", "tokens", "epoch", "train_loss", "val_loss", "val_bits_per_char", "lr")


def interrupt_at(step: int):
    """An event hook that sends this process a real SIGINT once `step` is done."""

    def hook(event):
        if isinstance(event, Stepped) and event.step == step:
            os.kill(os.getpid(), signal.SIGINT)

    return hook


def test_resume_continues_bit_for_bit(tiny_book: Path, tmp_path: Path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    bookgen.train(tiny_book, straight, **RESUME_RUN)
    with pytest.raises(TrainingInterrupted) as stop:
        bookgen.train(tiny_book, resumed, on_event=interrupt_at(30), **RESUME_RUN)
    assert stop.value.exit_code == 130 and stop.value.step == 30
    assert [r["step"] for r in read_metrics(resumed)] == [20]
    bookgen.train(tiny_book, resumed, resume=True)  # settings and budget come from the save

    def exact(folder):
        return [{k: r[k] for k in EXACT_FIELDS} for r in read_metrics(folder)]

    assert exact(resumed) == exact(straight)
    assert [r["step"] for r in read_metrics(resumed)] == [20, 40, 60]
    a = "".join(bookgen.load(straight).generate("It was", length=60, random_seed=4))
    b = "".join(bookgen.load(resumed).generate("It was", length=60, random_seed=4))
    assert a == b


def test_resume_at_the_end_of_the_budget_still_evaluates(tiny_book: Path, tmp_path: Path):
    out = tmp_path / "r"
    run = dict(TINY_MODEL, steps=30, eval_every=1000, checkpoint_every=5)
    with pytest.raises(TrainingInterrupted):
        bookgen.train(tiny_book, out, on_event=interrupt_at(30), **run)
    assert read_metrics(out) == []
    files = read_manifest(out)["files"]
    # Never evaluated: the best weights so far are the latest, not the first ones saved.
    assert files["best_model"] == files["model"] == "model-0000030.safetensors"
    result = bookgen.train(tiny_book, out, resume=True)
    assert [r["step"] for r in result.metrics] == [30]
    assert result.best_val_loss == result.metrics[0]["val_loss"]


def test_checkpoint_files_get_the_usual_permissions(trained: Path):
    umask = os.umask(0)
    os.umask(umask)
    for path in trained.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


def test_resume_refuses_conflicting_settings(trained: Path, tiny_book: Path, tmp_path: Path):
    with pytest.raises(BookgenError, match=r"hidden_size is 32 in the saved run, 64 now"):
        bookgen.train(tiny_book, trained, resume=True, hidden_size=64)
    other = tmp_path / "other.txt"
    other.write_text("A different book entirely. " * 80)
    with pytest.raises(BookgenError, match="the books differ from the saved run"):
        bookgen.train(other, trained, resume=True)
    with pytest.raises(BookgenError, match="holds no saved run"):
        bookgen.train(tiny_book, tmp_path / "empty", resume=True)
    # Budget flags may change: run 10 more steps.
    result = bookgen.train(tiny_book, trained, resume=True, steps=50)
    assert result.steps == 50


def test_absurd_learning_rate_never_reaches_the_weights(tiny_book: Path, tmp_path: Path):
    out = tmp_path / "diverge"
    with pytest.raises(BookgenError, match="training diverged.*Try a lower --lr"):
        bookgen.train(tiny_book, out, steps=200, learning_rate=1e30, warmup_steps=1, **TINY_MODEL)


def training_process(book: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "bookgen.cli", "train", str(book), "--out", str(out),
        "--steps", "100000", "--hidden", "32", "--batch-size", "4", "--bptt", "16",
        "--precision", "fp32", "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_save_and_exit_with_the_right_code(tiny_book: Path, tmp_path: Path, sig, code):
    out = tmp_path / "run"
    process = training_process(tiny_book, out, "--checkpoint-every", "50")
    wait_for(out / MANIFEST)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == code, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(out, which="model")
    assert saved.manifest["progress"]["step"] > 0


def test_kill_9_at_random_moments_never_breaks_the_checkpoint(tiny_book: Path, tmp_path: Path):
    out = tmp_path / "run"
    rng = random.Random(0)
    steps_seen = []
    for attempt in range(4):
        extra = ["--checkpoint-every", "1"] + (["--resume"] if attempt else [])
        before = (out / MANIFEST).stat().st_mtime_ns if attempt else None
        process = training_process(tiny_book, out, *extra)
        wait_for(out / MANIFEST)
        while (out / MANIFEST).stat().st_mtime_ns == before:  # it is saving again
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))  # then kill it at any moment, mid-write or not
        process.kill()
        process.wait()
        loaded = load_checkpoint(out, which="model")  # never half-written
        steps_seen.append(loaded.manifest["progress"]["step"])
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]


def test_unwritable_output_folder_is_a_clear_error(tiny_book: Path, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BookgenError, match="exists and is not a folder|cannot create"):
        bookgen.train(tiny_book, blocker / "sub", steps=2, **TINY_MODEL)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_decoded_or_refused_cleanly(data: bytes):
    try:
        text, _ = decode_bytes(data)
    except BookgenError:
        return
    cleaned = clean_text(text)
    assert "\x00" not in cleaned and "\r" not in cleaned


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1), st.text())
def test_char_round_trip_for_covered_text(train_text: str, probe: str):
    tokenizer = CharTokenizer.build([train_text])
    covered = "".join(c for c in probe if c in set(train_text)) or train_text
    assert tokenizer.decode(tokenizer.encode(covered)) == covered


def test_disk_full_mid_training_keeps_the_previous_checkpoint(
    tiny_book: Path, tmp_path: Path, monkeypatch
):
    import errno

    from bookgen import checkpoint

    out = tmp_path / "run"
    real_write = checkpoint.atomic_write
    saves = {"n": 0}

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write_until_full(path, data):
        if Path(path).name.startswith("model-"):
            saves["n"] += 1
        if saves["n"] >= 3:  # from the third save on, the disk is full
            with monkeypatch.context() as full:
                full.setattr(checkpoint.os, "fsync", no_space)
                real_write(path, data)
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", write_until_full)
    with pytest.raises(BookgenError, match="No space left on device"):
        bookgen.train(tiny_book, out, steps=100, checkpoint_every=10, eval_every=50, **TINY_MODEL)
    monkeypatch.setattr(checkpoint, "atomic_write", real_write)
    saved = load_checkpoint(out, which="model")
    assert saved.manifest["progress"]["step"] == 20  # the last save that fit
    assert not list(out.glob(".*.tmp"))  # the failed write left no temporary file
