"""Benchmark: what adapting to the text read (`bookgen eval --adapt`) is worth, and its defaults.

1. Tuning: on the held-out 10% of the tuning books (by default Pride and Prejudice and Moby-Dick,
   each with its own small model), a search over the rule, learning rate, decay and segment
   length, one at a time: rule x lr at no decay, then the decay at the best of those, then the
   segment length. The setting whose worst gain over the tuning models (static - adapted, nats
   per character) is largest is chosen.
2. Report: the chosen setting on books NOT used to choose it, each on its own held-out 10%: Tiny
   Shakespeare with the default 10-minute model (the target: at least 0.05 nats/char better than
   static), Sherlock Holmes and Little Women with small models. Each figure is timed static and
   adapted: the cost per token.

Models are given as BOOK=CHECKPOINT (BOOK:LABEL=CHECKPOINT for a second model of a book); the
default tuning models are a 1 x 256 and a 1 x 512 per book, as the learning rate that suits a
model depends on its size (the rms rule moves every weight by about lr). A default checkpoint
folder that does not exist is trained first (`--train-steps` steps: steps, not minutes, so that
a loaded machine trains the same model). Writes benchmarks/results/adapt-<processor>.json (or
--json).

    python benchmarks/adapt.py --runs /work/runs --tune-tokens 20000 --sgd-lrs 0.1 \\
        --decays 0.0003 0.001 --segments 50 --report shakespeare=/work/runs/ts10
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

import bookgen
from bookgen.adapt import Adapter, read_sums
from bookgen.catalog import resolve_inputs
from bookgen.checkpoint import Checkpoint, load_checkpoint
from bookgen.context import inference_context, processor_name
from bookgen.corpus import Reading, open_corpus
from bookgen.settings import AdaptSettings
from bookgen.streams import TokenStream
from bookgen.tokencache import tokenize_corpus

ROOT = Path(__file__).resolve().parents[1]
GUTENBERG = ROOT.parent / "shared" / "corpora" / "gutenberg"
TUNING = ("pride-and-prejudice", "moby-dick")
REPORTED = ("sherlock-holmes", "little-women")
LN2 = math.log(2)


def held_out(loaded: Checkpoint, book: str) -> TokenStream:
    """The book's held-out part, as its model's training split it (the last val_fraction)."""
    fraction = float(loaded.train_config.get("val_fraction", 0.1))
    books = open_corpus(resolve_inputs([book]), Reading())
    split = tokenize_corpus(books, {}, loaded.tokenizer, val_fraction=fraction)
    assert split.val is not None
    return split.val


def first_tokens(stream: TokenStream, count: int | None) -> TokenStream:
    """The stream's first `count` tokens (characters counted in proportion: the ratio only
    matters for a word model; these are character models, one token per character)."""
    if count is None or count >= len(stream):
        return stream
    chars = round(stream.chars * count / len(stream))
    starts = stream.starts[stream.starts < count]
    return TokenStream(np.asarray(stream.tokens[:count]), starts, chars)


def nats_per_char(total: float, stream: TokenStream) -> float:
    return total / stream.chars


def reading(loaded: Checkpoint, stream: TokenStream, settings: AdaptSettings | None) -> dict:
    """One timed reading of the stream: static (`settings` None) or adapted."""
    model = loaded.model
    context = inference_context(torch.device("cpu"), loaded.precision, loaded.model_config.cell)
    segment = settings.adapt_segment if settings is not None else AdaptSettings.adapt_segment
    adapter = Adapter(model, settings) if settings is not None else None
    begin = time.perf_counter()
    total, count = read_sums(model, stream, segment, context, adapter)
    seconds = time.perf_counter() - begin
    if adapter is not None:
        adapter.reset()
    return {
        "nats_per_char": round(nats_per_char(total, stream), 5),
        "nats_per_token": round(total / count, 5),
        "seconds": round(seconds, 2),
        "load": round(os.getloadavg()[0], 1),
    }


def ensure_model(book: str, folder: Path, steps: int, hidden_size: int) -> Path:
    if not (folder / "checkpoint.json").exists():
        print(f"training {folder} ({steps} steps of 1 x {hidden_size} on {book})", flush=True)
        bookgen.train(GUTENBERG / f"{book}.txt", folder, steps=steps, hidden_size=hidden_size)
    return folder


def book_of(label: str) -> str:
    return label.split(":", 1)[0]


def tune(models: dict[str, Path], tokens: int | None, grid: argparse.Namespace) -> dict:
    """The one-at-a-time search; returns every point measured and the chosen settings."""
    loaded = {book: load_checkpoint(path) for book, path in models.items()}
    streams = {
        label: first_tokens(held_out(loaded[label], book_of(label)), tokens) for label in models
    }
    static: dict[tuple[str, int], float] = {}
    measured: dict[AdaptSettings, float] = {}  # settings -> its worst gain over the models
    points: list[dict] = []

    def gain(settings: AdaptSettings) -> float:
        if settings in measured:
            return measured[settings]
        gains = {}
        for book in models:
            key = (book, settings.adapt_segment)
            if key not in static:
                static[key] = reading(loaded[book], streams[book], None)["nats_per_char"]
            adapted = reading(loaded[book], streams[book], settings)
            gains[book] = round(static[key] - adapted["nats_per_char"], 5)
        # The worst model's gain: a default should help every model, not a mean over models
        # where a weak one (which gains most) hides a failure on a strong one.
        measured[settings] = min(gains.values())
        points.append(
            {**asdict(settings), "gain_nats_per_char": gains, "worst": min(gains.values())}
        )
        print(f"  {settings}: gains {gains} (load {os.getloadavg()[0]:.1f})", flush=True)
        return measured[settings]

    first = grid.segments[0]
    best = max(
        (AdaptSettings(adapt_lr=lr, adapt_decay=0.0, adapt_segment=first, adapt_rule=rule)
         for rule in grid.rules for lr in grid.lrs[rule]),
        key=gain,
    )  # fmt: skip
    best = max([best, *(replace(best, adapt_decay=d) for d in grid.decays)], key=gain)
    best = max([best, *(replace(best, adapt_segment=n) for n in grid.segments[1:])], key=gain)
    return {
        "books": {book: str(path) for book, path in models.items()},
        "tokens_per_book": {book: len(stream) for book, stream in streams.items()},
        "static_nats_per_char": {f"{b} (segment {n})": v for (b, n), v in static.items()},
        "points": points,
        "chosen": asdict(best),
    }


def report(models: dict[str, Path], settings: AdaptSettings) -> dict:
    """Static and adapted, timed, on each book's whole held-out part."""
    figures = {}
    for book, path in models.items():
        loaded = load_checkpoint(path)
        stream = held_out(loaded, book_of(book))
        static = reading(loaded, stream, None)
        adapted = reading(loaded, stream, settings)
        figures[book] = {
            "checkpoint": str(path),
            "model": f"{loaded.model_config.layers} x {loaded.model_config.hidden_size}",
            "held_out_tokens": len(stream),
            "held_out_chars": stream.chars,
            "static": static,
            "adapted": adapted,
            "gain_nats_per_char": round(static["nats_per_char"] - adapted["nats_per_char"], 4),
            "gain_bits_per_char": round(
                (static["nats_per_char"] - adapted["nats_per_char"]) / LN2, 4
            ),
            "cost_per_token": round(adapted["seconds"] / static["seconds"], 2),
            "adapted_tokens_per_s": round(len(stream) / adapted["seconds"]),
        }
        print(f"  {book}: {figures[book]}", flush=True)
    return figures


def pairs(values: list[str]) -> dict[str, Path]:
    return {value.split("=", 1)[0]: Path(value.split("=", 1)[1]) for value in values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "checkpoints" / "adapt")
    parser.add_argument("--tune", nargs="*", help="BOOK=CHECKPOINT (default: the tuning books)")
    parser.add_argument("--report", nargs="*", default=[], help="more BOOK=CHECKPOINT to report")
    parser.add_argument("--train-steps", type=int, default=250)
    parser.add_argument("--tune-tokens", type=int, default=None, help="tune on the first N")
    parser.add_argument("--sgd-lrs", type=float, nargs="*", default=[0.1, 0.3])
    parser.add_argument("--rms-lrs", type=float, nargs="*", default=[5e-4, 1e-3, 2e-3, 3e-3])
    parser.add_argument("--decays", type=float, nargs="*", default=[0.0003, 0.001, 0.003])
    parser.add_argument("--segments", type=int, nargs="*", default=[50, 20, 100])
    parser.add_argument("--chosen", help="skip tuning: these settings as JSON")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.rules = [rule for rule in ("sgd", "rms") if getattr(args, f"{rule}_lrs")]
    args.lrs = {"sgd": args.sgd_lrs, "rms": args.rms_lrs}
    processor = processor_name()
    print(f"{processor}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    defaults = {
        f"{book}:1x{size}": (book, args.runs / f"adapt{'' if size == 256 else size}-{book}", size)
        for book in TUNING
        for size in (256, 512)
    } | {book: (book, args.runs / f"adapt-{book}", 256) for book in REPORTED}
    tuning = pairs(args.tune) if args.tune else {k: v[1] for k, v in defaults.items() if ":" in k}
    reported = {book: defaults[book][1] for book in REPORTED} | pairs(args.report)
    for label, folder in itertools.chain(tuning.items(), reported.items()):
        if label in defaults and folder == defaults[label][1]:
            book, _, size = defaults[label]
            ensure_model(book, folder, args.train_steps, size)
    if args.chosen:
        tuned = {"chosen": json.loads(args.chosen)}
    else:
        print("tuning on", ", ".join(tuning), flush=True)
        tuned = tune(tuning, args.tune_tokens, args)
    chosen = AdaptSettings(**tuned["chosen"])
    print("chosen:", chosen, flush=True)
    result = {
        "processor": processor,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": "python benchmarks/adapt.py " + " ".join(sys.argv[1:]),
        "tuning": tuned,
        "reported": report(reported, chosen),
    }
    name = f"adapt-{processor.lower().replace(' ', '-')}.json"
    out = args.json or ROOT / "benchmarks" / "results" / name
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
