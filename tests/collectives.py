"""Started by test_distributed under torchrun (`python -m tests.collectives BOOK OUT SECONDS`): a
short run on two processes that two tests read (one launch, not two: each costs every process an
import of torch).

It counts every collective bookgen calls through torch.distributed, and prints on rank 0 how
many each training step made (DistributedDataParallel's own gradient all-reduce runs inside
backward, in C++, and is not among them), and which were not started asynchronously
(`async_op=True`, then waited on inside `World.collective`).

And rank 0 is made slow, by SECONDS each, where it alone works while the others wait: tokenizing
into the cache, measuring the precision, building the copy guard's index. It prints
"slow: NAME" for each slowed call made."""

from __future__ import annotations

import glob
import itertools
import json
import os
import sys
import time

import torch.distributed as dist

import bookgen
from bookgen import guard, run
from bookgen.events import Stepped

COLLECTIVES = ("all_reduce", "all_gather", "broadcast", "barrier")
OBJECTS = ("broadcast_object_list", "all_gather_object")  # torch offers no async_op for these
calls = []  # the name of each collective called, in order
synchronous = set()  # the names of those called without async_op=True


def counted(name: str):
    real = getattr(dist, name)

    def call(*args, **kwargs):
        calls.append(name)
        if not kwargs.get("async_op"):
            synchronous.add(name)
        return real(*args, **kwargs)

    return call


def slowly(module, name: str, seconds: float) -> None:
    real = getattr(module, name)

    def call(*args, **kwargs):
        time.sleep(seconds)
        print(f"slow: {name}", flush=True)
        return real(*args, **kwargs)

    setattr(module, name, call)


def main(book: str, out: str, seconds: str) -> None:
    for name in COLLECTIVES + OBJECTS:
        setattr(dist, name, counted(name))
    if os.environ.get("RANK") == "0":
        slowly(run, "prepare_data", float(seconds))
        slowly(run, "run_precision", float(seconds))
        slowly(guard, "ensure_index", float(seconds))
    at_step = []  # the calls made by the time each Stepped event came (rank 0 reports)
    record = lambda event: isinstance(event, Stepped) and at_step.append(len(calls))  # noqa: E731
    bookgen.train(
        book, out, steps=12, eval_every=100, checkpoint_every=100, preview_length=0,
        hidden_size=32, batch_size=4, bptt=16, precision="fp32", device="cpu", on_event=record,
    )  # fmt: skip
    if at_step:
        per_step = [b - a for a, b in itertools.pairwise(at_step)]
        print("collectives per step: " + json.dumps(per_step), flush=True)
        print("synchronous: " + json.dumps(sorted(synchronous)), flush=True)
    # Once training is over, the process group is gone with its threads (gloo names them).
    names = [open(task).read().strip() for task in glob.glob("/proc/self/task/*/comm")]
    print("threads left: " + json.dumps(sorted(n for n in names if "gloo" in n)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
