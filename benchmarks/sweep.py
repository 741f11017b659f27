"""Benchmark: a sweep of training settings at one wall-clock budget, one run after another.

Each setting trains with `bookgen.train(BOOK, minutes=M, **setting)` from scratch (everything
else at its default, a fresh precision cache each time, so a probe is paid inside the budget as a
first run pays it) and reports the best validation loss (nats per token; per character for
character models), the steps and training tokens/s it got. This is how bookgen's budget-adaptive
defaults were chosen: run it on a quiet machine (nothing else running), since it times itself.

    python benchmarks/sweep.py --minutes 1 --setting hidden_size=256 --setting hidden_size=512
    python benchmarks/sweep.py --minutes 10 --book ../shared/corpora/gutenberg/moby-dick.txt \\
        --setting default --setting layers=2

A setting is `default` (nothing given: what `bookgen train BOOK --minutes M` does) or
comma-separated `name=value` pairs of `bookgen.train` options (numbers are read as numbers).
Writes benchmarks/results/sweep.json (or --json), adding to the runs already there.
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
from bookgen.checkpoint import load_checkpoint
from bookgen.context import processor_name
from bookgen.events import Started

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def parse_setting(text: str) -> dict:
    """'hidden_size=256,learning_rate=1e-2' -> {'hidden_size': 256, 'learning_rate': 0.01}."""
    if text == "default":
        return {}
    setting = {}
    for pair in text.split(","):
        name, _, value = pair.partition("=")
        for kind in (int, float):
            try:
                setting[name.strip()] = kind(value)
                break
            except ValueError:
                continue
        else:
            setting[name.strip()] = value.strip()
    return setting


def run(book: Path, minutes: float, setting: dict, folder: Path) -> dict:
    os.environ["BOOKGEN_CACHE_DIR"] = str(folder / "cache")
    events: list = []
    begin = time.perf_counter()
    result = bookgen.train(
        book, folder / "model", minutes=minutes, device="cpu", on_event=events.append, **setting
    )
    wall = time.perf_counter() - begin
    started = next(e for e in events if isinstance(e, Started))
    last = result.metrics[-1]
    best = min(result.metrics, key=lambda r: r["val_loss"])
    config = load_checkpoint(folder / "model", which="model").model_config
    return {
        "setting": setting,
        "model": f"{config.layers} x {config.hidden_size} {config.cell}",
        "size_note": started.size_note,
        "precision": started.precision,
        "steps": last["step"],
        "tokens": last["tokens"],
        "epochs": last["epoch"],
        "best_val_loss": round(result.best_val_loss, 4),
        "best_val_bits_per_char": round(best["val_bits_per_char"], 4),
        "last_val_loss": round(last["val_loss"], 4),
        "last_train_loss": round(last["train_loss"], 4) if last["train_loss"] else None,
        "train_tokens_per_s": last["tokens_per_s"],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--book", type=Path, default=BOOK)
    parser.add_argument("--setting", action="append", default=None, help="repeatable")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/sweep.json")
    args = parser.parse_args()
    if not args.book.exists():
        raise SystemExit(f"{args.book} not found: this benchmark needs ../shared/corpora")
    report = json.loads(args.json.read_text()) if args.json.exists() else {"runs": []}
    processor = processor_name()
    print(f"{processor}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for text in args.setting or ["default"]:
        with tempfile.TemporaryDirectory() as tmp:
            row = run(args.book, args.minutes, parse_setting(text), Path(tmp))
        row.update(
            book=args.book.name,
            minutes=args.minutes,
            processor=processor,
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            date=date.today().isoformat(),
            command=f"python benchmarks/sweep.py --minutes {args.minutes:g} "
            f"--book {args.book.name} --setting {text}",
        )
        report["runs"].append(row)
        print(
            f"{text:45s} {row['model']:14s} best {row['best_val_loss']:.4f} "
            f"last {row['last_val_loss']:.4f} train {row['last_train_loss']} "
            f"steps {row['steps']:,} epochs {row['epochs']:.2f} "
            f"{row['train_tokens_per_s']:,.0f} tok/s {row['precision']}",
            flush=True,
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
