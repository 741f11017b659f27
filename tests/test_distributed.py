"""Training on several processes (torchrun + DistributedDataParallel, gloo on the CPU) is exact.

Each test launches real processes through `python -m torch.distributed.run --standalone`, which
talks over the loopback interface only.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bookgen
from bookgen.checkpoint import load_checkpoint, read_metrics
from bookgen.distributed import LostContact, World
from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no torch.distributed gloo backend",
)

# A batch of 4 rows, so 2 processes own 2 rows each; dropout on, so the masks must agree too.
RUN = dict(TINY_MODEL, dropout=0.2, eval_every=10, preview_length=0)
FLAGS = [
    "--hidden", "32", "--batch-size", "4", "--bptt", "16", "--dropout", "0.2",
    "--precision", "fp32", "--device", "cpu", "--eval-every", "10", "--quiet",
]  # fmt: skip
COMPARED = ("step", "tokens", "epoch", "lr", "train_loss", "val_loss")


def torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "bookgen", "train", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def assert_same_run(a: Path, b: Path) -> None:
    """metrics.jsonl agree: counters exactly, losses within 1e-4 relative."""
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for name in COMPARED:
            if isinstance(x[name], float):
                assert math.isclose(x[name], y[name], rel_tol=1e-4), (name, x, y)
            else:
                assert x[name] == y[name], (name, x, y)


def test_two_processes_train_the_model_one_process_trains(tiny_book: Path, tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    bookgen.train(tiny_book, one, steps=30, **RUN)
    done = torchrun(2, str(tiny_book), "--out", str(two), "--steps", "30", *FLAGS)
    assert done.returncode == 0, done.stderr
    assert_same_run(one, two)
    # The saved models agree too, and so does the carried state of all 4 rows.
    wa = load_checkpoint(one, which="model").model.state_dict()
    wb = load_checkpoint(two, which="model").model.state_dict()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5)
    assert read_metrics(two)[-1]["step"] == 30


def test_a_run_resumes_on_another_number_of_processes(tiny_book: Path, tmp_path: Path):
    # Saved by 1 process then resumed by 2, saved by 2 then resumed by 1: both continue the
    # run a single process saves and resumes.
    single, one_two, two_one = tmp_path / "1-1", tmp_path / "1-2", tmp_path / "2-1"
    bookgen.train(tiny_book, single, steps=20, **RUN)
    bookgen.train(tiny_book, single, resume=True, steps=40)
    bookgen.train(tiny_book, one_two, steps=20, **RUN)
    done = torchrun(2, str(tiny_book), "--out", str(one_two), "--resume", "--steps", "40", "-q")
    assert done.returncode == 0, done.stderr
    done = torchrun(2, str(tiny_book), "--out", str(two_one), "--steps", "20", *FLAGS)
    assert done.returncode == 0, done.stderr
    bookgen.train(tiny_book, two_one, resume=True, steps=40)
    assert_same_run(single, one_two)
    assert_same_run(single, two_one)


def test_a_batch_that_does_not_divide_is_refused_once(tiny_book: Path, tmp_path: Path):
    flags = [f if f != "4" else "3" for f in FLAGS]  # --batch-size 3
    done = torchrun(2, str(tiny_book), "--out", str(tmp_path / "m"), "--steps", "5", *flags)
    assert done.returncode != 0
    message = "--batch-size 3 does not divide among 2 training processes"
    assert done.stderr.count(message) == 1, done.stderr  # rank 0 says it; rank 1 is quiet
    # Each process exits 2 with its one line; the only traceback is torchrun's own report after.
    ours = done.stderr.split("failed (exitcode: 2)")[0]
    assert "error: --batch-size 3" in ours and "Traceback" not in ours, done.stderr
    assert "exitcode  : 2" in done.stderr
    assert not (tmp_path / "m").exists()  # nothing written


def test_a_process_that_dies_stops_the_others_with_a_message(tiny_book: Path, tmp_path: Path):
    # Two processes started by hand (as two machines would be), so that no launcher tears the
    # survivor down for us: rank 1 is killed mid-run, and rank 0 must say so and exit 2.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    out = tmp_path / "m"
    command = [sys.executable, "-m", "bookgen", "train", str(tiny_book), "--out", str(out)]
    command += ["--steps", "100000", *FLAGS]
    ranks = []
    for rank in (0, 1):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
        env.update(WORLD_SIZE="2", LOCAL_RANK=str(rank), BOOKGEN_DIST_TIMEOUT="20")
        ranks.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # both are training
            assert time.monotonic() < deadline and ranks[0].poll() is None, ranks[0].stderr
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
