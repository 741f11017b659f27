"""Stress: the 2-process training run, repeated, counting the runs that abort at teardown.

The test suite's 2-process runs (tests/test_distributed.py) once aborted in about one CI run of
ten with "terminate called without an active exception" (std::terminate, SIGABRT) as a process
left. This repeats such a run (torchrun, gloo on the CPU, a tiny book and model) `--rounds`
times and counts the rounds whose processes aborted or failed, so that a fix is shown by a
count, not by a lucky run. Outside the suite: it takes minutes.

    python benchmarks/stress_distributed.py --rounds 50 [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import TINY_BOOK  # noqa: E402  (the suite's tiny book)

ABORT = "terminate called"
FLAGS = [
    "--hidden", "32", "--batch-size", "2", "--bptt", "16", "--dropout", "0.2",
    "--precision", "fp32", "--device", "cpu", "--eval-every", "10", "--quiet",
]  # fmt: skip


def one_round(book: Path, out: Path, steps: int) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "bookgen", "train", str(book), "--out", str(out), "--steps", str(steps), *FLAGS,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json", type=Path, help="write the counts here")
    args = parser.parse_args()
    aborts, failures, seconds = 0, 0, []
    with tempfile.TemporaryDirectory() as folder:
        book = Path(folder) / "tiny.txt"
        book.write_text(TINY_BOOK, encoding="utf-8")
        os.environ.setdefault("BOOKGEN_CACHE_DIR", str(Path(folder) / "cache"))
        for round_ in range(1, args.rounds + 1):
            began = time.perf_counter()
            done = one_round(book, Path(folder) / f"run{round_}", args.steps)
            seconds.append(time.perf_counter() - began)
            aborted = ABORT in done.stderr
            aborts += aborted
            failures += done.returncode != 0 and not aborted
            status = "ABORT" if aborted else ("failed" if done.returncode else "ok")
            print(f"round {round_}: {status} ({seconds[-1]:.1f} s)", flush=True)
            if done.returncode or aborted:
                print(done.stderr[-3000:], flush=True)
    summary = {
        "rounds": args.rounds,
        "aborts": aborts,
        "other_failures": failures,
        "mean_s": round(sum(seconds) / len(seconds), 2),
        "load": os.getloadavg()[0],
    }
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
