"""Training on several processes (torchrun + DistributedDataParallel, gloo on the CPU) is exact.

Each test launches real processes through `python -m torch.distributed.run --standalone`, which
talks over the loopback interface only.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

import bookgen
from bookgen.checkpoint import MANIFEST, load_checkpoint, read_manifest, read_metrics, read_tensors
from bookgen.distributed import LostContact, World
from tests import forked
from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no torch.distributed gloo backend",
)

# A batch of 4 rows for one process; 2 processes at --batch-size 2 (per process) train the same
# 4 rows, 2 each. Dropout on, so the masks must agree too.
RUN = dict(TINY_MODEL, dropout=0.2, eval_every=10, preview_length=0)
FLAGS = [
    "--hidden", "32", "--batch-size", "2", "--bptt", "16", "--dropout", "0.2",
    "--precision", "fp32", "--device", "cpu", "--eval-every", "10", "--quiet",
]  # fmt: skip
COMPARED = ("step", "tokens", "epoch", "lr", "train_loss", "val_loss")
# How closely N processes reproduce one process: not bit for bit. The kernels round differently
# for another number of rows, and DistributedDataParallel adds the processes' gradients in
# another order than one process sums all rows, so the floats differ in their last bits from the
# first step on (the state after one step is already 1 ulp apart). Over 30 steps on 2 or 4
# processes (1 or 2 threads each) every weight and state tensor stayed within 2.3 units in the
# last place (ulps) of its largest entry, and the losses within 1 ulp relative. We allow 8 ulps:
# over 3 times the worst seen, while a row's state or dropout mask mixed up moves a loss or a
# tensor 14 to 2000 times further than that.
# Exact: the counters, the learning rate and the random generator (dropout draws advance it).
TOLERANCE = 8 * torch.finfo(torch.float32).eps  # ~1e-6, relative to a tensor's largest entry


def torchrun(processes: int, logs: Path, *args: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone` of `bookgen train ARGS` on `processes` processes, to its end. The
    launcher is forked from tests/forked.py's server (it imports torch too); the processes it
    starts are new interpreters, as torchrun starts them."""
    command = [
        "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "bookgen", "train", *args,
    ]  # fmt: skip
    return forked.run(command, logs, timeout=240)


def assert_same_run(a: Path, b: Path) -> None:
    """metrics.jsonl agree: counters exactly, losses within TOLERANCE relative."""
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for name in COMPARED:
            if name.endswith("_loss"):
                assert math.isclose(x[name], y[name], rel_tol=TOLERANCE), (name, x, y)
            else:
                assert x[name] == y[name], (name, x, y)


def latest_save(folder: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The manifest, the latest weights and the training tensors (state, RNG) saved in `folder`."""
    manifest = read_manifest(folder)
    weights = read_tensors(folder, manifest["files"]["model"])
    return manifest, weights, read_tensors(folder, manifest["files"]["train_state"])


def assert_same_checkpoint(a: Path, b: Path, where: str) -> None:
    """The latest saves in `a` and `b` agree: the weights and the carried state of all B rows
    within TOLERANCE of each tensor's largest entry; the position and the random state exactly.
    (The optimizer's moments are left out: their effect shows in the next steps' weights.)"""
    (ma, wa, ta), (mb, wb, tb) = latest_save(a), latest_save(b)
    for name in ("step", "epoch", "position", "tokens_seen"):
        assert ma["progress"][name] == mb["progress"][name], (where, name)
    assert torch.equal(ta["rng.torch"], tb["rng.torch"]), f"{where}: other random draws"
    assert wa.keys() == wb.keys()
    pairs = [(name, wa[name], wb[name]) for name in wb]
    rows = mb["train_config"]["batch_size"]
    assert sorted(k for k in ta if k.startswith("state.")) == ["state.0", "state.1"]  # h, c
    for name in ("state.0", "state.1"):  # each (layers, B, hidden)
        assert ta[name].shape == (1, rows, 32), f"{where}: {name} is not all {rows} rows"
        assert tb[name].abs().max() > 0.01, f"{where}: {name} is not a carried state"
        pairs.append((name, ta[name], tb[name]))
    for name, got, expected in pairs:
        bound = TOLERANCE * float(expected.abs().max())
        torch.testing.assert_close(
            got, expected, rtol=0, atol=bound, msg=lambda m, n=name: f"{where}, {n}: {m}"
        )


@pytest.mark.long
def test_two_processes_train_the_model_one_process_trains(tiny_book: Path, tmp_path: Path):
    """2 processes at --batch-size 2 (per process) train what 1 process trains at 4."""
    one, two = tmp_path / "one", tmp_path / "two"
    bookgen.train(tiny_book, one, steps=30, **RUN)
    flags = [f for f in FLAGS if f != "--quiet"]  # the start line says how the rows are shared
    done = torchrun(2, tmp_path, str(tiny_book), "--out", str(two), "--steps", "30", *flags)
    assert done.returncode == 0, done.stderr
    assert "4 streams (2 per process x 2 processes)" in done.stderr, done.stderr
    assert read_metrics(two)[-1]["step"] == 30
    assert_same_run(two, one)
    # The saved models agree too, and so does the carried state of all 4 rows: gathered from
    # both processes, in order.
    assert_same_checkpoint(two, one, "2 processes")


@pytest.mark.long
def test_a_run_resumes_on_another_number_of_processes(tiny_book: Path, tmp_path: Path):
    """Saved by 1 process, resumed by 4, then by 1 again: after each leg the run is the one a
    single process saves and resumes at the same steps. 8 rows, so each of the 4 processes cuts
    2 rows' state out of the saved 8 at its own offset, and the save gathers them back in order.
    (One launch of 4 processes costs less than the two launches of 2 for 1 -> 2 and 2 -> 1 it
    replaced; a save by 2 processes is checked above.) The last leg crosses the epoch's end."""
    single, chain = tmp_path / "single", tmp_path / "chain"
    bookgen.train(tiny_book, single, steps=8, **dict(RUN, batch_size=8))
    shutil.copytree(single, chain)  # the run as 1 process saved it
    bookgen.train(tiny_book, single, resume=True, steps=16)
    resume = ["--resume", "--steps", "16", "-q"]
    done = torchrun(4, tmp_path, str(tiny_book), "--out", str(chain), *resume)
    assert done.returncode == 0, done.stderr
    assert_same_checkpoint(chain, single, "steps 8-16 on 4 processes")
    bookgen.train(tiny_book, single, resume=True, steps=24)
    bookgen.train(tiny_book, chain, resume=True, steps=24)
    assert_same_checkpoint(chain, single, "steps 16-24 on 1 process")
    assert_same_run(chain, single)


@pytest.mark.long
def test_a_step_makes_one_collective_and_the_others_wait_for_rank_0s_solo_work(
    tiny_book: Path, tmp_path: Path
):
    """One run on 2 processes (tests/collectives.py) checks two things: one launch of torchrun,
    not two, since each starts two interpreters that import torch (and two tests reading one
    module fixture may run on both xdist workers, each launching it).

    1. The step's values, the stop decision and the budget travel in one all-reduce, not one
    each (DistributedDataParallel's own all-reduce of the gradients aside).
    2. Rank 0 alone tokenizes into the cache, measures the precision and builds the copy guard's
    index, each here made slower (5 s) than the steps' timeout (2 s): the others wait for it on
    the patient group, and the run completes."""
    command = [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "tests.collectives", str(tiny_book), str(tmp_path / "m"), "5",
    ]  # fmt: skip
    env = dict(os.environ, BOOKGEN_DIST_TIMEOUT="2")
    done = forked.run(command, tmp_path, timeout=240, env=env)  # the launcher forked, as above
    assert done.returncode == 0, done.stderr
    # 1.
    (line,) = [s for s in done.stdout.splitlines() if s.startswith("collectives per step: ")]
    assert json.loads(line.partition(": ")[2]) == [1] * 11, line
    # Each is started asynchronously and waited on inside the guard (on NCCL too, so a lost
    # process fails there); only the object collectives, which torch offers no async form of,
    # are called plainly (gloo, a long timeout: rank 0's settings).
    (line,) = [s for s in done.stdout.splitlines() if s.startswith("synchronous: ")]
    assert json.loads(line.partition(": ")[2]) == ["broadcast_object_list"], line
    # And bookgen.train leaves no process group behind: none of gloo's threads outlive it (the
    # group held alive by torch.distributed.nn.functional's defaults once aborted at exit).
    lines = [s for s in done.stdout.splitlines() if s.startswith("threads left: ")]
    assert len(lines) == 2 and all(json.loads(s.partition(": ")[2]) == [] for s in lines), lines
    # 2.
    slow = sorted(s for s in done.stdout.splitlines() if s.startswith("slow: "))
    assert slow == ["slow: ensure_index", "slow: prepare_data", "slow: run_precision"], slow
    assert read_metrics(tmp_path / "m")[-1]["step"] == 12


def test_a_resume_on_processes_that_do_not_divide_the_rows_is_refused_once(
    tiny_book: Path, tmp_path: Path
):
    """A resumed run keeps the saved run's rows (5); 2 processes cannot share them equally.
    (2 processes, not 3: each starts an interpreter that imports torch.)"""
    out = tmp_path / "m"
    bookgen.train(tiny_book, out, steps=2, **dict(RUN, batch_size=5))
    saved = (out / MANIFEST).read_bytes()
    resume = ["--resume", "--steps", "5", "-q"]
    done = torchrun(2, tmp_path, str(tiny_book), "--out", str(out), *resume)
    assert done.returncode != 0
    message = "--resume: the saved run trains 5 streams, which do not divide among 2 training"
    assert done.stderr.count(message) == 1, done.stderr  # rank 0 says it; the others are quiet
    # Each process exits 2 with its one line; the only traceback is torchrun's own report after.
    ours = done.stderr.split("failed (exitcode: 2)")[0]
    assert "error: --resume: the saved run" in ours and "Traceback" not in ours, done.stderr
    assert "exitcode  : 2" in done.stderr
    assert (out / MANIFEST).read_bytes() == saved  # nothing written


def by_hand(commands: list[list[str]], logs: Path) -> list[forked.Forked]:
    """One process per command (`python` and its arguments, forked from a server that has
    imported torch: tests/forked.py), started as machines would start them: no launcher tears
    the others down when one stops. Each joins as the rank of its place in `commands`."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    ranks = []
    for rank, command in enumerate(commands):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
        env.update(WORLD_SIZE=str(len(commands)), LOCAL_RANK=str(rank), BOOKGEN_DIST_TIMEOUT="20")
        ranks.append(forked.python(command, logs, env=env))
    return ranks


def test_a_process_that_dies_stops_the_others_with_a_message(tiny_book: Path, tmp_path: Path):
    # Rank 1 is killed mid-run, and rank 0 must say so and exit 2 (by hand: torchrun would tear
    # the survivor down for us).
    out = tmp_path / "m"
    command = ["-m", "bookgen", "train", str(tiny_book), "--out", str(out)]
    ranks = by_hand([command + ["--steps", "100000", *FLAGS]] * 2, tmp_path)
    try:
        deadline = time.monotonic() + 120
        # Both are training once a checkpoint is complete (its manifest is written last).
        # Not metrics.jsonl: it is written before the save, and a kill then leaves no checkpoint.
        while not (out / MANIFEST).exists():
            alive = time.monotonic() < deadline and ranks[0].poll() is None
            assert alive, ranks[0].output()[1]
            time.sleep(0.2)
        ranks[1].kill()
        _, stderr = ranks[0].communicate(timeout=90)
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    assert ranks[0].returncode == 2, stderr
    assert "error: training process 0 of 2 lost contact with the others" in stderr
    assert "Traceback" not in stderr
    assert load_checkpoint(out, which="model").model is not None  # the last save is intact


def test_a_failed_collective_is_a_clear_error():
    # No process group: what a collective raises when the others are gone, named plainly.
    with pytest.raises(LostContact, match="training process 1 of 2 lost contact with the others"):
        World(rank=1, size=2).sum(1.0)


def test_a_resume_where_a_process_reads_another_save_is_refused(tiny_book: Path, tmp_path: Path):
    """Every process reads the checkpoint from --out: on two machines, each its own disk. One
    that finds another save there (a stale copy) would train another model: refused, at once."""
    here, there = tmp_path / "here", tmp_path / "there"
    bookgen.train(tiny_book, here, steps=4, **RUN)
    shutil.copytree(here, there)
    bookgen.train(tiny_book, there, resume=True, steps=8)  # the other machine's copy moved on
    saved = (here / MANIFEST).read_bytes()
    resume = ["-m", "bookgen", "train", str(tiny_book), "--resume", "--steps", "12"]
    commands = [resume + ["--out", str(here), "-q"], resume + ["--out", str(there), "-q"]]
    ranks = by_hand(commands, tmp_path)
    try:
        errors = [process.communicate(timeout=120)[1] for process in ranks]
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    assert [process.returncode for process in ranks] == [2, 2], errors
    message = f"error: --resume: training process 1 of 2 does not find in {here} the save"
    assert message in errors[0] and "one folder they all share" in errors[0], errors[0]
    assert "Traceback" not in errors[0] + errors[1]
    assert (here / MANIFEST).read_bytes() == saved  # nothing written


class LostWork:
    """What waiting on a collective gives when another process has gone."""

    def wait(self, timeout=None):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer")


def test_a_collective_is_started_async_and_fails_in_its_wait(monkeypatch):
    """The collective is started with async_op=True and its wait, where NCCL reports a lost
    process, happens inside the guard: a LostContact (one line, exit 2), not a bare error."""
    started = []

    def all_reduce(tensor, op=None, group=None, async_op=False):
        started.append(async_op)
        return LostWork()

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    with pytest.raises(LostContact, match="while agreeing on a step.*Connection closed by peer"):
        World(rank=0, size=2).agree(1.0, 0.5, 0)
    assert started == [True]
