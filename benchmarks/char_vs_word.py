"""Benchmark: a character model vs word models on the same book and the same time budget.

Trains on Pride and Prejudice (the first 90% of it) for M minutes per model, then scores each
model with `bookgen eval` on the held-out last 10%: bits per character (comparable across
tokenizations), with the state carried and with it reset every 64 tokens (as a windowed,
stateless model would read). Also compares word vocabulary caps. Writes
benchmarks/results/char_vs_word.json.

    python benchmarks/char_vs_word.py --minutes 1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

import bookgen
from bookgen.corpus import read_document
from bookgen.evaluation import evaluate_texts
from bookgen.tokencache import split_point

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT.parent / "shared" / "corpora" / "gutenberg" / "pride-and-prejudice.txt"
WINDOW = 64


def run(name: str, minutes: float, held_out: Path, folder: Path, **options) -> dict:
    out = folder / name
    result = bookgen.train(BOOK, out, minutes=minutes, device="cpu", **options)
    carried = evaluate_texts([held_out], out)
    windowed = evaluate_texts([held_out], out, reset_every=WINDOW)
    seed = "It is a truth universally acknowledged"
    sample = seed + "".join(bookgen.load(out).generate(seed, length=120, random_seed=0))
    return {
        "model": name,
        "options": options,
        "steps": result.steps,
        "vocab_size": bookgen.load(out).tokenizer.vocab_size,
        "tokens_per_s": result.metrics[-1]["tokens_per_s"],
        "held_out_tokens": carried["tokens"],
        "held_out_chars": carried["chars"],
        "bits_per_char_carried_state": round(carried["bits_per_char"], 4),
        f"bits_per_char_reset_every_{WINDOW}": round(windowed["bits_per_char"], 4),
        "sample": sample,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--vocab-sizes", default="2000,5000,20000")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/char_vs_word.json")
    args = parser.parse_args()
    if not BOOK.exists():
        raise SystemExit(f"{BOOK} not found: this benchmark needs ../shared/corpora")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        held_out = folder / "held-out.txt"
        text = read_document(BOOK).text  # the held-out part: what training leaves out
        held_out.write_text(text[split_point(len(text), 0.1) :], encoding="utf-8")
        runs.append(run("char", args.minutes, held_out, folder))
        for size in (int(s) for s in args.vocab_sizes.split(",")):
            runs.append(
                run(f"word-{size}", args.minutes, held_out, folder, level="word", vocab_size=size)
            )
    for r in runs:
        print(
            f"{r['model']:>11}: {r['steps']:5d} steps, vocab {r['vocab_size']:6d}, "
            f"{r['bits_per_char_carried_state']:.4f} bits/char carried, "
            f"{r[f'bits_per_char_reset_every_{WINDOW}']:.4f} reset every {WINDOW} tokens"
        )
    report = {
        "benchmark": "Pride and Prejudice, held-out last 10%, equal wall-clock budget per model",
        "command": f"python benchmarks/char_vs_word.py --minutes {args.minutes}",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
