"""Benchmark: bookgen's training tokens/s against the stock PyTorch recipe, same model, same run.

The stock recipe is one multi-layer fp32 `nn.LSTM` with embedding, tied output, dropout, AdamW
and gradient clipping (PyTorch's `word_language_model` with bookgen's optimizer); bookgen runs
its own `train_step` in fp32 and in bf16 autocast where that runs. Shapes: the issue's reference
(char, 2 x 512, B 64, T 128) and bookgen's default model (1 x 512, B 32, T 64). Also the
machine's matrix-product peak and the share of it training reaches. Writes
benchmarks/results/throughput-<processor>.json (or --json).

    python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import torch

from bookgen.bench import BenchSettings, run_bench
from bookgen.context import processor_name

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "reference 2 x 512, B 64, T 128": BenchSettings(layers=2, batch_size=64, bptt=128),
    "default 1 x 512, B 32, T 64": BenchSettings(layers=1, batch_size=32, bptt=64),
}


def slug(name: str) -> str:
    words = name.replace("(R)", "").replace("(TM)", "").lower().split()
    return "-".join(w for w in words if w not in ("processor", "cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed per figure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    processor = processor_name()
    print(f"{processor}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    shapes = {}
    for name, shape in SHAPES.items():
        settings = BenchSettings(
            **{**shape.__dict__, "seconds": args.seconds, "rounds": args.rounds}
        )
        r = run_bench(settings)
        shapes[name] = r
        stock = r["baseline_train_tokens_per_s"]
        fp32, bf16 = r["train_tokens_per_s_fp32"], r["train_tokens_per_s_bf16"]
        print(
            f"{name}: stock fp32 {stock:,.0f} tok/s; bookgen fp32 {fp32:,.0f}"
            f" ({fp32 / stock:.2f}x); bookgen bf16 "
            + (f"{bf16:,.0f} ({bf16 / stock:.2f}x)" if bf16 else "does not run")
            + f"; auto picks {r['precision']}; peak {r['peak_gflops']:,.0f} GFLOP/s,"
            f" training reaches {r['utilization']:.0%}"
        )
    report = {
        "benchmark": "training tokens/s, bookgen vs the stock nn.LSTM recipe, same run",
        "command": "python benchmarks/throughput.py",
        "date": date.today().isoformat(),
        "processor": processor,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "shapes": shapes,
    }
    out = args.json or ROOT / "benchmarks" / "results" / f"throughput-{slug(processor)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
