"""Train on a 1 GB text: peak memory, tokenizing speed, time to the first step cold and warm.

    .venv/bin/python benchmarks/memory_1gb.py              # 1 GB (about 1000 x Tiny Shakespeare)
    .venv/bin/python benchmarks/memory_1gb.py --size-mb 100

The text is built in a temporary folder (never in the repository) from
../shared/corpora/tinyshakespeare.txt repeated, with a fresh token cache. Training runs twice
in a subprocess, each for a few steps through `bookgen.train` (what `bookgen train` calls): the
first run tokenizes into the cache (cold), the second finds it there (warm). Each child stops
after its last step without the final evaluation (a full pass over 10% of the text). Peak RSS
is the child's VmHWM, which includes the pages of the token memmap it touched.

Writes benchmarks/results/memory-<size>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
MODEL = dict(hidden_size=128, layers=1, batch_size=32, bptt=64, precision="fp32", device="cpu")


def build_text(folder: Path, size_mb: int) -> Path:
    book = SOURCE.read_bytes()
    path = folder / f"shakespeare-{size_mb}mb.txt"
    with open(path, "wb") as file:
        for _ in range(max(1, size_mb * 1_000_000 // len(book))):
            file.write(book)
    return path


def child(text: str, out: str, steps: int) -> None:
    """One training run; prints a JSON line of event times (time.time()) and peak RSS."""
    import bookgen
    from bookgen.events import Started, Stepped, Tokenizing

    times: dict = {"tokenizing": {}}

    def on_event(event) -> None:
        now = time.time()
        if isinstance(event, Tokenizing):
            stage = times["tokenizing"].setdefault(event.stage, {"first": now})
            stage["last"], stage["total"] = now, event.total
        elif isinstance(event, Started):
            times["started"] = now
            times["train_tokens"] = event.train_tokens
        elif isinstance(event, Stepped):
            times.setdefault("first_step", now)
            if event.step >= steps:
                times["last_step"] = now
                times["peak_rss_mb"] = _peak_rss_mb()
                print(json.dumps(times), flush=True)
                os._exit(0)  # skip the final evaluation: a full pass over the held-out tenth

    bookgen.train(
        text, out, steps=steps, eval_every=10**9, checkpoint_every=10**9, force=True,
        on_event=on_event, preview_length=0, **MODEL,
    )  # fmt: skip


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(text: Path, out: Path, cache: Path, steps: int) -> dict:
    env = {**os.environ, "BOOKGEN_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    begin = time.time()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(text), str(out), str(steps)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"the training run failed:\n{done.stderr[-3000:]}")
    times = json.loads(done.stdout.strip().splitlines()[-1])
    result = {
        "peak_rss_mb": round(times["peak_rss_mb"], 1),
        "to_first_step_s": round(times["first_step"] - begin, 2),
        "to_started_s": round(times["started"] - begin, 2),
        "steps_s": round(times["last_step"] - times["first_step"], 2),
        "train_tokens": times["train_tokens"],
    }
    stages = times["tokenizing"]
    if "tokenizing" in stages:  # a cold run: hashing, reading, tokenizing
        seconds = stages["tokenizing"]["last"] - stages["hashing"]["first"]
        result["tokenize_s"] = round(seconds, 2)
        result["tokenize_mb_per_s"] = round(stages["hashing"]["total"] / 1e6 / seconds, 1)
    else:
        result["hash_s"] = round(stages["hashing"]["last"] - stages["hashing"]["first"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="size of the text [1000]")
    parser.add_argument("--steps", type=int, default=5, help="training steps per run [5]")
    args = parser.parse_args()
    if not SOURCE.is_file():
        sys.exit(f"{SOURCE} not found")
    sys.path.insert(0, str(ROOT))
    from bookgen.context import processor_name

    with tempfile.TemporaryDirectory(prefix="bookgen-memory-") as folder:
        folder = Path(folder)
        text = build_text(folder, args.size_mb)
        size = text.stat().st_size
        print(f"{text.name}: {size / 1e6:,.0f} MB; training {args.steps} steps, twice")
        cold = run_once(text, folder / "run", folder / "cache", args.steps)
        print(f"cold: {cold}")
        warm = run_once(text, folder / "run", folder / "cache", args.steps)
        print(f"warm: {warm}")
    record = {
        "benchmark": "memory_1gb",
        "date": datetime.date.today().isoformat(),
        "processor": processor_name(),
        "cpus": os.cpu_count(),
        "text_mb": round(size / 1e6, 1),
        "model": MODEL,
        "steps": args.steps,
        "cold": cold,
        "warm": warm,
    }
    name = "memory-1gb.json" if args.size_mb == 1000 else f"memory-{args.size_mb}mb.json"
    results = ROOT / "benchmarks" / "results" / name
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {results}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit("training ended before the last step")
    main()
