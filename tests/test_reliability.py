"""Exact resume, crash safety, signals, divergence and hostile input."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bookgen
from bookgen import step as one_step
from bookgen.checkpoint import MANIFEST, load_checkpoint, read_manifest, read_metrics, read_tensors
from bookgen.cli import app
from bookgen.errors import BookgenError
from bookgen.events import Notice, Saved, Stepped, TrainingInterrupted
from tests import forked
from tests.conftest import TINY_MODEL

RESUME_RUN = dict(TINY_MODEL, steps=60, eval_every=20, dropout=0.1, random_seed=5)
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


def test_a_new_budget_on_resume_reshapes_the_rest_of_the_schedule(tiny_book: Path, tmp_path: Path):
    """A 40-step run resumed with --steps 60 runs steps 41..60 and decays its learning rate
    over 60 steps from there: the rate steps back up, as Trainer.learning_rate documents."""
    out, events = tmp_path / "run", []
    run = dict(TINY_MODEL, eval_every=20, warmup_steps=4, learning_rate=1e-2, min_lr_ratio=0.1)
    bookgen.train(tiny_book, out, steps=40, **run)
    result = bookgen.train(tiny_book, out, resume=True, steps=60, on_event=events.append)

    def cosine(step: int, budget: int) -> float:
        """The rate of `step` (1-based): step - 1 steps are done when it is chosen; past the
        warm-up, lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * done/budget)) / 2)."""
        return 1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / budget)))

    # A tolerance: the same formula, its float operations in another order.
    lrs = {e.step: e.lr for e in events if isinstance(e, Stepped)}
    assert list(lrs) == list(range(41, 61))
    assert list(lrs.values()) == pytest.approx([cosine(s, 60) for s in range(41, 61)], rel=1e-12)
    assert lrs[41] > 3 * cosine(40, 40)  # where the 40-step schedule had ended
    assert [r["step"] for r in result.metrics] == [20, 40, 60]
    assert [r["lr"] for r in result.metrics] == pytest.approx(
        [cosine(20, 40), cosine(40, 40), cosine(60, 60)], rel=1e-12
    )
    assert result.steps == 60


def record_saves(out: Path, events: list):
    """An event hook that keeps every event and, at each save, what was saved by step: the
    weights, the optimizer's moments and the carried state (not the RNG state)."""
    saves: dict[int, dict[str, torch.Tensor]] = {}

    def hook(event):
        events.append(event)
        if isinstance(event, Saved):
            files = read_manifest(out)["files"]
            tensors = {
                **read_tensors(out, files["model"]),
                **read_tensors(out, files["train_state"]),
            }
            saves[event.step] = {k: v for k, v in tensors.items() if not k.startswith("rng.")}

    return saves, hook


def changed(a: dict, b: dict) -> list[str]:
    """The names of the tensors that differ between two saves (all, if the names differ)."""
    if a.keys() != b.keys():
        return sorted(a.keys() | b.keys())
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


def test_absurd_learning_rate_never_reaches_the_saved_weights(tiny_book: Path, tmp_path: Path):
    """At a learning rate of 1e30 the first update is finite, the second overflows the weights
    (AdamW's decay, p *= 1 - lr * wd, with a finite loss and gradient): training stops at that
    step, before it is saved, so every save holds finite weights and the folder's last one is the
    step before.
    (Skipped non-finite steps are the next test's.)"""
    out, events = tmp_path / "diverge", []
    saves, hook = record_saves(out, events)
    run = dict(TINY_MODEL, steps=200, learning_rate=1e30, warmup_steps=1, checkpoint_every=1)
    with pytest.raises(BookgenError, match="training diverged") as error:
        bookgen.train(tiny_book, out, max_bad_steps=5, on_event=hook, **run)
    stepped = [e.step for e in events if isinstance(e, Stepped)]
    last = stepped[-1]  # the last step that was applied and saved
    assert re.fullmatch(
        rf"training diverged: the update of step {last + 1} made the weights infinite or NaN "
        r"\(its loss was [\d.e+-]+\); that step was not saved, and the last good checkpoint is "
        rf"in {re.escape(str(out))}\. Try a lower --learning-rate than 1e\+30",
        str(error.value),
    ), error.value
    assert list(saves) == stepped == list(range(1, last + 1))
    for step, saved in saves.items():
        assert all(t.isfinite().all() for t in saved.values()), f"step {step} saved a non-finite"
    files = read_manifest(out)["files"]
    latest = {**read_tensors(out, files["model"]), **read_tensors(out, files["train_state"])}
    assert changed({k: v for k, v in latest.items() if not k.startswith("rng.")}, saves[last]) == []


def test_a_good_step_resets_the_count_of_bad_ones(tiny_book: Path, tmp_path: Path, monkeypatch):
    """Bad, bad, good, bad, bad, good, bad, bad, bad: with a limit of 3, only the last run of
    bad steps stops training. The bad steps are made so (their loss NaN) on purpose: their
    forward pass is normal, so a carried state kept from them would differ from the old one."""
    bad = {2, 3, 5, 6, 8, 9, 10}
    done = {"steps": 0}
    real_nats = one_step.token_nats

    def nats(logits, window, device):
        values = real_nats(logits, window, device)
        return values * math.nan if done["steps"] + 1 in bad else values

    monkeypatch.setattr(one_step, "token_nats", nats)
    out, events = tmp_path / "run", []
    saves, record = record_saves(out, events)

    def hook(event):
        if isinstance(event, Stepped):
            done["steps"] = event.step
        record(event)

    with pytest.raises(BookgenError, match=r"for 3 steps in a row \(up to step 10\)"):
        bookgen.train(
            tiny_book, out, steps=30, max_bad_steps=3, checkpoint_every=1, on_event=hook,
            **TINY_MODEL,
        )  # fmt: skip
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == [f"step {s}: loss or gradient is nan, step skipped" for s in sorted(bad)]
    losses = {e.step: e.loss for e in events if isinstance(e, Stepped)}
    assert [s for s, loss in losses.items() if loss is None] == [2, 3, 5, 6, 8, 9]
    for step in (2, 3, 5, 6, 8, 9):  # a skipped step keeps weights, moments and state
        assert changed(saves[step], saves[step - 1]) == [], f"step {step} changed these"
    for step in (4, 7):  # the control: a good step changes them
        assert "state.0" in changed(saves[step], saves[step - 1])
        assert "embedding.weight" in changed(saves[step], saves[step - 1])
    for step, saved in saves.items():
        assert all(t.isfinite().all() for t in saved.values()), f"step {step} saved a non-finite"


def training_process(book: Path, out: Path, *extra: str) -> forked.Forked:
    """`python -m bookgen train` into `out` (its outputs in files beside it), forked from a
    server that has imported torch (tests/forked.py): a second, not 5 to 15, to start."""
    args = [
        "-m", "bookgen.cli", "train", str(book), "--out", str(out),
        "--steps", "100000", "--hidden", "32", "--batch-size", "4", "--bptt", "16",
        "--precision", "fp32", "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip
    return forked.python(args, out.parent)


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


# Evaluations at 20, 40 and 60; a periodic save (no evaluation) at 25 and 50.
KILLED_RUN = dict(RESUME_RUN, checkpoint_every=25)


def exact(folder: Path) -> list[dict]:
    return [{k: r[k] for k in EXACT_FIELDS} for r in read_metrics(folder)]


def test_resume_after_kill_9_from_a_periodic_checkpoint_is_exact(tiny_book: Path, tmp_path: Path):
    """A process killed with SIGKILL at step 33 leaves the periodic save of step 25 (no
    evaluation, part of a train_loss summed, mid-epoch, dropout drawing from the RNG). Resumed
    from there, every evaluation equals a straight run's, as do its samples."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    bookgen.train(tiny_book, straight, **KILLED_RUN)
    script = f"""
import os, signal, time
import bookgen
from bookgen.checkpoint import read_manifest
from bookgen.events import Stepped

def kill_at_33(event):
    # Saves are written in the background: at step 33, wait for step 25's to land on disk (a
    # busy disk can hold it past step 40, whose evaluation and save would then be there too).
    if isinstance(event, Stepped) and event.step == 33:
        deadline = time.monotonic() + 60
        while read_manifest({str(killed)!r})["progress"]["step"] != 25:
            assert time.monotonic() < deadline, "step 25's save never landed"
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)

bookgen.train({str(tiny_book)!r}, {str(killed)!r}, on_event=kill_at_33, **{KILLED_RUN!r})
"""
    process = forked.run(["-c", script], tmp_path, timeout=120)  # the test's own bookgen
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert read_manifest(killed)["progress"]["step"] == 25
    assert [r["step"] for r in read_metrics(killed)] == [20]
    bookgen.train(tiny_book, killed, resume=True)
    assert [r["step"] for r in read_metrics(killed)] == [20, 40, 60]
    assert exact(killed) == exact(straight)
    a = "".join(bookgen.load(straight).generate("It was", length=60, random_seed=4))
    b = "".join(bookgen.load(killed).generate("It was", length=60, random_seed=4))
    assert a == b


def test_unwritable_output_folder_is_a_clear_error(tiny_book: Path, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BookgenError, match="exists and is not a folder|cannot create"):
        bookgen.train(tiny_book, blocker / "sub", steps=2, **TINY_MODEL)


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


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_weights(folder: Path) -> None:
    cut_in_half(folder / read_manifest(folder)["files"]["best_model"])


def damage_manifest_text(folder: Path) -> None:
    (folder / MANIFEST).write_text('{"format": "bookgen-checkpoint", "format_')


def damage_manifest_field(folder: Path) -> None:
    manifest = read_manifest(folder)
    del manifest["model_config"]
    (folder / MANIFEST).write_text(json.dumps(manifest))


def damage_tokenizer(folder: Path) -> None:
    cut_in_half(folder / read_manifest(folder)["files"]["tokenizer"])


@pytest.mark.parametrize(
    "damage, message",
    [
        pytest.param(damage_weights, r"model-\d+\.safetensors: damaged or not a safetensors",
                     id="weights cut short"),
        pytest.param(damage_manifest_text, r"checkpoint\.json: damaged checkpoint manifest",
                     id="manifest cut short"),
        pytest.param(damage_manifest_field, r"manifest \(no valid 'model_config'",
                     id="manifest without a field"),
        pytest.param(damage_tokenizer, r"damaged tokenizer", id="tokenizer cut short"),
    ],
)  # fmt: skip
def test_a_damaged_checkpoint_is_one_line_and_exit_2_from_the_cli(
    trained: Path, tiny_book: Path, damage, message
):
    """`sample` and `eval` on a damaged checkpoint: exit 2 and one line on stderr naming what
    is damaged; an exception escaping the CLI would be exit 1 with a traceback."""
    damage(trained)
    runner = CliRunner()
    for args in (["sample", "--seed", "It"], ["eval", str(tiny_book)]):
        result = runner.invoke(app, [*args, "--checkpoint", str(trained)])
        assert result.exit_code == 2, (args, result.exception)
        assert isinstance(result.exception, SystemExit)  # typer's Exit, not the error itself
        assert result.stdout == "" and "Traceback" not in result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: {trained}") and re.search(message, line), line
