"""Benchmark: what `bookgen train tinyshakespeare.txt --minutes M` reaches with the defaults.

Trains the default model for the same wall-clock budget twice, in bf16 autocast (the default where
the CPU supports it) and in fp32 (the baseline), and reports validation loss (nats/char, the
number nanoGPT and char-rnn quote on this split), bits per character, training tokens/s and the
bf16/fp32 ratios. Writes benchmarks/results/shakespeare.json.

    python benchmarks/train_shakespeare.py --minutes 1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import bookgen

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def run(minutes: float, precision: str, out: Path) -> dict:
    begin = time.perf_counter()
    result = bookgen.train(BOOK, out, minutes=minutes, precision=precision, device="cpu")
    wall = time.perf_counter() - begin
    last = result.metrics[-1]
    sample = "".join(bookgen.load(out).generate("ROMEO:", length=300, random_seed=0))
    return {
        "precision": precision,
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
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/shakespeare.json")
    args = parser.parse_args()
    if not BOOK.exists():
        raise SystemExit(f"{BOOK} not found: this benchmark needs ../shared/corpora")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run(args.minutes, p, Path(tmp) / p) for p in ("bf16", "fp32")]
    bf16, fp32 = runs
    report = {
        "benchmark": "tinyshakespeare, default model, equal wall-clock budget",
        "command": f"python benchmarks/train_shakespeare.py --minutes {args.minutes}",
        "minutes": args.minutes,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        "runs": runs,
        "bf16_over_fp32_tokens_per_s": round(
            bf16["train_tokens_per_s"] / fp32["train_tokens_per_s"], 2
        ),
        "bf16_minus_fp32_val_loss": round(
            bf16["val_loss_nats_per_char"] - fp32["val_loss_nats_per_char"], 4
        ),
    }
    for r in runs:
        print(
            f"{r['precision']}: {r['steps']} steps, "
            f"val {r['val_loss_nats_per_char']:.4f} nats/char "
            f"({r['val_bits_per_char']:.3f} bits/char), {r['train_tokens_per_s']:,.0f} tokens/s"
        )
    print(f"bf16/fp32 speed: {report['bf16_over_fp32_tokens_per_s']}x")
    print(f"bf16 sample:\n{bf16['sample']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
