"""Benchmark: sampling tokens/s at batch 1, bookgen's `generate` against the stock loop.

The stock loop is what PyTorch's `word_language_model/generate.py` does: one call of a
multi-layer `nn.LSTM` per token, softmax, `torch.multinomial`. bookgen's `generate` (the path of
`sample`, `chat` and the training preview) runs its hand-written `StepKernel`. Shapes: character
models 1 x 512 and 2 x 512 (LSTM and GRU) and a 20,000-word model. `--variants` also times the
LSTM step written as one function run eagerly, under TorchScript and under `torch.compile` (what
bookgen would gain from either). Writes benchmarks/results/sampling-<processor>.json (or --json).

    python benchmarks/sampling.py
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from datetime import date
from pathlib import Path

import torch

from bookgen.bench import BenchSettings, _best, _rate, bookgen_sampler, stock_sampler
from bookgen.context import processor_name

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "char 1 x 512 LSTM": BenchSettings(layers=1),
    "char 2 x 512 LSTM": BenchSettings(layers=2),
    "char 2 x 512 GRU": BenchSettings(layers=2, cell="gru"),
    "word 1 x 512 LSTM, 20,000 words": BenchSettings(layers=1, level="word"),
}


def slug(name: str) -> str:
    words = name.replace("(R)", "").replace("(TM)", "").lower().split()
    return "-".join(w for w in words if w not in ("processor", "cpu"))


def lstm_step(row, h, c, w_hh, w_out, b_out):
    gates = torch.addmm(row, h, w_hh)
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c, torch.addmm(b_out, h, w_out)


def step_variants(hidden: int = 512, vocab: int = 65, steps: int = 2000) -> dict:
    """Microseconds per step of one folded LSTM layer and its output layer, three ways."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(vocab, 4 * hidden, generator=generator)
    w_hh = torch.randn(hidden, 4 * hidden, generator=generator) * 0.05
    w_out = torch.randn(hidden, vocab, generator=generator) * 0.05
    b_out = torch.zeros(1, vocab)
    h, c = torch.zeros(1, hidden), torch.zeros(1, hidden)
    out = {}
    with torch.inference_mode():
        begin = time.perf_counter()
        compiled = torch.compile(lstm_step, dynamic=False)
        compiled(table[3:4], h, c, w_hh, w_out, b_out)
        out["torch_compile_build_s"] = round(time.perf_counter() - begin, 1)
        for name, fn in (
            ("eager", lstm_step), ("torchscript", torch.jit.script(lstm_step)),
            ("torch_compile", compiled),
        ):  # fmt: skip
            rate = max(
                _rate(lambda fn=fn: (fn(table[3:4], h, c, w_hh, w_out, b_out), steps)[1], 1.0,
                      torch.device("cpu"))
                for _ in range(3)
            )  # fmt: skip
            out[f"{name}_us_per_step"] = round(1e6 / rate, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed per figure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="also TorchScript/compile")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    processor = processor_name()
    device = torch.device("cpu")
    print(f"{processor}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    shapes = {}
    for name, settings in SHAPES.items():
        samplers = {
            "stock": stock_sampler(settings, device),
            "bookgen": bookgen_sampler(settings, device),
        }
        best = _best(
            {k: (lambda w=w: _rate(w, args.seconds, device)) for k, w in samplers.items()},
            args.rounds,
        )
        ratio = best["bookgen"] / best["stock"]
        shapes[name] = {
            "stock_tokens_per_s": round(best["stock"], 1),
            "bookgen_tokens_per_s": round(best["bookgen"], 1),
            "speedup": round(ratio, 2),
        }
        print(
            f"{name}: stock {best['stock']:,.0f} tok/s, "
            f"bookgen {best['bookgen']:,.0f} ({ratio:.2f}x)"
        )
    report = {
        "benchmark": "sampling tokens/s at batch 1, bookgen generate vs the stock nn.LSTM loop",
        "command": "python benchmarks/sampling.py" + (" --variants" if args.variants else ""),
        "date": date.today().isoformat(),
        "processor": processor,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "shapes": shapes,
    }
    if args.variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report["lstm_step_variants"] = step_variants()
        print("one LSTM step, 1 x 512:", report["lstm_step_variants"])
    out = args.json or ROOT / "benchmarks" / "results" / f"sampling-{slug(processor)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
