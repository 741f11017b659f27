"""Benchmark: training tokens/s of bookgen's own step at several batch sizes, per model size.

What the batch choice on a GPU rests on (budget.py, `choose_batch`): whether a doubling of the
batch raises tokens/s, and by how much. Each figure times `sizing.probe` (the very step a run's
sizing times: a copy of the model, AdamW, one window of T tokens, fp32 unless --precision) on a
stream of random character ids (65 of them, as Tiny Shakespeare; the speed does not depend on
the text). Each figure is the fastest single step (with a device sync after each, which a run
does not pay: on a GPU the figures are a floor), and the batches are timed in turn, --rounds
times, each keeping its best: on a shared machine other work only ever adds time to a step.
Writes benchmarks/results/batch-<device>.json (or --json).

    python benchmarks/batch_speed.py --sizes 1x256,1x512,2x512 --batches 16,32,64,128
    python benchmarks/batch_speed.py --device cuda --precision bf16 --batches 32,64,128,256,512
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from datetime import date
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from bookgen.context import RunContext, machine_name, processor_name, resolve_device
from bookgen.model import ModelConfig, RecurrentLM
from bookgen.settings import TrainConfig
from bookgen.sizing import probe
from bookgen.streams import StreamBatcher, TokenStream

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 65


def tokens_per_s(step, device: torch.device, precision: str, tokens: int, seconds: float) -> float:
    """Tokens over the fastest single step in `seconds` of steps: on a shared machine other work
    only ever adds time to a step, so the fastest is the closest to the step's own cost."""
    context = RunContext(device, precision)
    step(precision)  # warm-up: first calls allocate and pick kernels
    context.synchronize()
    fastest, begin = math.inf, time.perf_counter()
    while time.perf_counter() - begin < seconds or fastest == math.inf:
        start = time.perf_counter()
        step(precision)
        context.synchronize()
        fastest = min(fastest, time.perf_counter() - start)
    return tokens / fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1x256,1x512,2x512")
    parser.add_argument("--batches", default="16,32,64,128")
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed per figure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    stream = TokenStream(
        rng.integers(0, VOCAB, 4_000_000, dtype=np.uint8), np.zeros(1, np.int64), 4_000_000
    )
    config = TrainConfig(steps=1, bptt=args.bptt)
    name = processor_name() if device.type == "cpu" else machine_name(device)
    print(f"{name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows = []
    for layers, hidden in sizes:
        torch.manual_seed(0)
        model = RecurrentLM(ModelConfig(VOCAB, layers=layers, hidden_size=hidden)).to(device)
        steps = {
            b: probe(model, config, StreamBatcher(stream, b, args.bptt), device) for b in batches
        }
        best = dict.fromkeys(batches, 0.0)
        for _ in range(args.rounds):
            for b in batches:
                rate = tokens_per_s(steps[b], device, args.precision, b * args.bptt, args.seconds)
                best[b] = max(best[b], rate)
        gains = ", ".join(f"{best[b] / best[a]:.2f}x" for a, b in pairwise(batches))
        figures = ", ".join(f"B {b} {best[b]:,.0f}" for b in batches)
        print(f"{layers} x {hidden}: {figures} tok/s; each doubling {gains}", flush=True)
        rows.append({"layers": layers, "hidden_size": hidden, "tokens_per_s": best})
    report = {
        "device": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": args.precision,
        "bptt": args.bptt,
        "load_after": os.getloadavg()[0],
        "date": date.today().isoformat(),
        "rows": rows,
    }
    slug = "-".join(name.lower().replace("(r)", "").split()[:3])
    out = args.json or ROOT / f"benchmarks/results/batch-{slug}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
