"""Benchmark: what `bookgen train tinyshakespeare.txt --minutes M` reaches on this machine.

Trains the default model for the same wall-clock budget in each precision, in one run: `auto`
(the default: it measures fp32 and bf16 on this machine and keeps the faster; it starts from an
empty precision cache, so it pays for its probe inside the budget as a first run does), `fp32`
forced and `bf16` forced (recorded as not running where this CPU has no bf16 LSTM kernel).
Reports validation loss (nats/char, the number nanoGPT and char-rnn quote on this split), the
best validation loss (the model `bookgen sample` uses), bits per character and training tokens/s.
Writes benchmarks/results/shakespeare.json (or --json).

    python benchmarks/train_shakespeare.py --minutes 1
    python benchmarks/train_shakespeare.py --minutes 10 --precisions auto
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

import bookgen
from bookgen.context import bf16_runs, processor_name
from bookgen.errors import BookgenError

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def run(minutes: float, precision: str, folder: Path) -> dict:
    os.environ["BOOKGEN_CACHE_DIR"] = str(folder / "cache")  # empty: auto measures afresh
    begin = time.perf_counter()
    try:
        result = bookgen.train(
            BOOK, folder / "model", minutes=minutes, precision=precision, device="cpu"
        )
    except BookgenError as err:
        return {"precision": precision, "runs": False, "why": str(err)}
    wall = time.perf_counter() - begin
    last = result.metrics[-1]
    manifest = json.loads((folder / "model" / "checkpoint.json").read_text())
    sample = "".join(bookgen.load(folder / "model").generate("ROMEO:", length=300, random_seed=0))
    return {
        "precision": precision,
        "runs": True,
        "trained_in": manifest["precision"]["precision"],
        "choice": manifest["precision"],
        "steps": last["step"],
        "val_loss_nats_per_char": round(last["val_loss"], 4),
        "best_val_loss": round(result.best_val_loss, 4),
        "val_bits_per_char": round(last["val_bits_per_char"], 4),
        "train_tokens_per_s": last["tokens_per_s"],
        "wall_s_including_startup": round(wall, 1),
        "sample": "ROMEO:" + sample,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--precisions", default="auto,fp32,bf16", help="comma-separated")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/shakespeare.json")
    args = parser.parse_args()
    if not BOOK.exists():
        raise SystemExit(f"{BOOK} not found: this benchmark needs ../shared/corpora")
    precisions = args.precisions.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run(args.minutes, p, Path(tmp) / p) for p in precisions]
    report = {
        "benchmark": "tinyshakespeare, default model, equal wall-clock budget per precision",
        "command": f"python benchmarks/train_shakespeare.py --minutes {args.minutes:g} "
        f"--precisions {args.precisions}",
        "date": date.today().isoformat(),
        "minutes": args.minutes,
        "processor": processor_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_lstm_kernel": bf16_runs("cpu", "lstm"),
        "runs": runs,
    }
    print(f"{report['processor']}, {report['threads']} threads, torch {torch.__version__}")
    for r in runs:
        if not r["runs"]:
            print(f"{r['precision']}: does not run here ({r['why']})")
            continue
        print(
            f"{r['precision']} (trained in {r['trained_in']}): {r['steps']} steps, "
            f"val {r['val_loss_nats_per_char']:.4f} nats/char, best {r['best_val_loss']:.4f} "
            f"({r['val_bits_per_char']:.3f} bits/char), {r['train_tokens_per_s']:,.0f} tokens/s"
        )
    first = next((r for r in runs if r["runs"]), None)
    if first is not None:
        print(f"{first['precision']} sample:\n{first['sample']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
