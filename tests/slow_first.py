"""Started by test_distributed under torchrun (`python -m tests.slow_first BOOK OUT SECONDS`):
a short run on two processes in which rank 0 is made slow, by SECONDS each, where it alone works
while the others wait: tokenizing into the cache, measuring the precision, building the copy
guard's index. Prints "slow: NAME" on rank 0 for each slowed call made."""

from __future__ import annotations

import os
import sys
import time

import bookgen
from bookgen import guard, run


def slowly(module, name: str, seconds: float) -> None:
    real = getattr(module, name)

    def call(*args, **kwargs):
        time.sleep(seconds)
        print(f"slow: {name}", flush=True)
        return real(*args, **kwargs)

    setattr(module, name, call)


def main(book: str, out: str, seconds: str) -> None:
    if os.environ.get("RANK") == "0":
        slowly(run, "prepare_data", float(seconds))
        slowly(run, "run_precision", float(seconds))
        slowly(guard, "ensure_index", float(seconds))
    bookgen.train(
        book, out, steps=3, eval_every=100, checkpoint_every=100, preview_length=0,
        hidden_size=32, batch_size=2, bptt=16, precision="fp32", device="cpu",
    )  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:4])
