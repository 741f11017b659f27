"""Benchmark: what the copy guard costs and what it does, on a real checkpoint.

- speed: sampling tokens/s with the guard off (--max-copy 0) and on (the default), rounds
  interleaved so drift on a shared machine hits both alike; the issue asks for < 20% cost;
- size: the index against the book's size on disk (asked: < 2x), and the time to build it;
- effect: for each --max-copy, the longest verbatim copy in samples (by `bookgen style`'s
  suffix array) and the share of tokens the guard drew again. With the guard off this
  shows how long the copies a normally trained model writes are, i.e. where a default still
  allows common phrases.

    python benchmarks/copy_guard.py --checkpoint checkpoints/tinyshakespeare
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import torch

import bookgen
from bookgen.context import processor_name
from bookgen.corpus import read_recorded_books
from bookgen.guard import build_index, chars_per_token, run_tokens_for
from bookgen.sampler import DEFAULTS
from bookgen.style import Alphabet, copy_lengths

ROOT = Path(__file__).resolve().parents[1]


def longest_copy(text: str, book: str) -> int:
    """The longest run of `text` found in `book`, character for character (`bookgen style`
    folds runs of whitespace first; the guard does not, so neither does this)."""
    alphabet = Alphabet.of([text, book])
    return int(copy_lengths(alphabet.ids(text), [alphabet.ids(book)]).max())


def sampling_rate(writer, max_copy: int, tokens: int, seed: int) -> float:
    writer.copy_guard(max_copy)  # the index is loaded (or built) before the clock starts
    begin = time.perf_counter()
    count = sum(1 for _ in writer.generate("\n", tokens, random_seed=seed, max_copy=max_copy))
    return count / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=4000, help="per timed sample")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5, help="samples per --max-copy")
    parser.add_argument("--length", type=int, default=2000, help="characters per sample")
    parser.add_argument("--max-copies", default="0,20,30,40,60")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    processor = processor_name()
    print(f"{processor}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    writer = bookgen.load(args.checkpoint)
    manifest = writer.checkpoint.manifest
    corpus = manifest["corpus"]
    books = read_recorded_books(corpus, "the benchmark reads the book")
    book_text = "".join(d.text for d in books)
    book_bytes = sum(Path(p).stat().st_size for p in corpus["paths"])

    run_tokens = run_tokens_for(DEFAULTS.max_copy, chars_per_token(corpus))
    begin = time.perf_counter()
    index = build_index(corpus, writer.tokenizer, run_tokens)
    build_s = time.perf_counter() - begin
    size = {
        "book_bytes_on_disk": book_bytes,
        "index_bytes": len(index.data),
        "ratio": round(len(index.data) / book_bytes, 3),
        "build_s": round(build_s, 2),
    }
    print(f"index {len(index.data):,} bytes for a book of {book_bytes:,}: {size['ratio']:.2f}x,"
          f" built in {build_s:.2f} s")  # fmt: skip

    rates: dict[str, list[float]] = {"off": [], "on": []}
    for round_ in range(args.rounds):
        rates["off"].append(sampling_rate(writer, 0, args.tokens, round_))
        rates["on"].append(sampling_rate(writer, DEFAULTS.max_copy, args.tokens, round_))
    off, on = max(rates["off"]), max(rates["on"])
    speed = {
        "off_tokens_per_s": round(off, 1),
        "on_tokens_per_s": round(on, 1),
        "cost": round(1 - on / off, 3),
        "rounds": args.rounds,
    }
    print(f"sampling: guard off {off:,.0f} tok/s, on {on:,.0f} ({speed['cost']:.1%} slower)")

    effect = {}
    for max_copy in (int(x) for x in args.max_copies.split(",")):
        longest, excluded, written = [], 0, 0
        guard = writer.copy_guard(max_copy)
        if guard is not None:
            guard.excluded = 0  # the timed samples above counted too
        for seed in range(args.samples):
            text = "".join(writer.generate("\n", args.length, random_seed=seed, max_copy=max_copy))
            longest.append(longest_copy(text, book_text))
            written += args.length
        excluded = guard.excluded if guard is not None else 0
        effect[str(max_copy)] = {
            "longest_copy_per_sample": longest,
            "tokens_drawn_again_share": round(excluded / written, 4),
        }
        print(f"--max-copy {max_copy}: longest copies {longest}, drawn again "
              f"{excluded / written:.2%} of tokens")  # fmt: skip
    report = {
        "benchmark": "copy guard: sampling cost, index size, copies with and without it",
        "command": "python benchmarks/copy_guard.py --checkpoint " + str(args.checkpoint),
        "date": date.today().isoformat(),
        "processor": processor,
        "threads": torch.get_num_threads(),
        "model": manifest["model_config"],
        "books": [d["name"] for d in corpus["documents"]],
        "default_max_copy": DEFAULTS.max_copy,
        "size": size,
        "speed": speed,
        "effect": effect,
    }
    name = f"copy-guard-{processor.lower().replace(' ', '-')}.json"
    out = args.json or ROOT / "benchmarks" / "results" / name
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
